"""Kernels behind :func:`mixlab.mix`: one reference formula, several execution forms.

Every form computes, row by row, ``torch.lerp(src[index[i]], x[i], lam[i])``, which is
``lam * x[i] + (1 - lam) * src[index[i]]`` (the paper's weighted sum, in fastai's ``lerp``
form) evaluated in float32 or wider and rounded once to the batch's dtype; ``uint8`` is
computed in float32, rounded to nearest and clamped to [0, 255].

Convention: ``lam`` weights the ORIGINAL row ``x[i]``; ``src`` is ``x`` itself unless a
partner batch is given (two-stream mixing).

The form is chosen from static facts only (device, dtype, sizes, compiling or not), never
from tensor values on an accelerator, so no form syncs the host with the device:

- ``"rows"`` (CPU eager, rows of at least :data:`ROW_LOOP_MIN_NUMEL` elements): a Python loop
  of per-row ``lerp(out=...)`` that reads each source row once and writes each output row once,
  with no full-size temporary. Reading ``lam`` and ``index`` with ``.tolist()`` is free on CPU.
- ``"cycles"`` (CPU eager, in place, the same row sizes): the permutation is walked cycle by cycle with one spare
  row, so the batch is overwritten without a full-size temporary; 2-cycles (``flip`` pairs)
  are the pair mode, where each pair is read and written once.
- ``"chunks"`` (CPU eager, smaller rows, out of place): the vector form below on groups of
  rows of about :data:`CHUNK_NUMEL` elements, so temporaries stay small and every op is big
  enough to be worth a parallel region.
- ``"vector"`` (accelerators, small batches, compiling): one gather and one ``lerp``; under
  ``torch.compile`` inductor fuses them into a single pass. :func:`compiled_lerp_gather`
  compiles that form explicitly.
"""
from __future__ import annotations

import torch

__all__ = [
    "lerp", "paste", "select", "resized_paste", "box_mean3", "gauss5", "eager_cpu", "ROW_LOOP_MIN_NUMEL", "CHUNK_NUMEL", "memory_format", "cast_back", "choose_form",
    "lerp_gather", "lerp_perm_inplace", "lerp_flip_inplace", "compiled_lerp_gather",
]

# Rows at least this large (elements) take the per-row CPU loop / cycle walk: each row op is
# then big enough for torch's intra-op parallelism (its grain is 32768 elements), so a row op
# costs one parallel region. Smaller rows are processed in chunks of about CHUNK_NUMEL
# elements (many rows per op): with tiny per-row ops the cost is the thread hand-off of
# every op, which on a loaded machine reaches milliseconds. See docs/BENCHMARKS.md and
# `python benchmarks/row_threshold.py`.
ROW_LOOP_MIN_NUMEL = 1 << 15
CHUNK_NUMEL = 1 << 20
_FLOAT_ROW_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``x`` is laid out in (channels_last kept through every form)."""
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def cast_back(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast a float computation back to ``like``'s dtype (uint8: round and clamp)."""
    if like.dtype == torch.uint8:
        out = out.round().clamp_(0, 255)
    return out.to(like.dtype).contiguous(memory_format=memory_format(like))


def _view_b(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w.view(w.shape[0], *([1] * (ndim - 1)))


def choose_form(x: torch.Tensor, *, inplace: bool = False) -> str:
    """Pick ``"rows"``, ``"cycles"``, ``"chunks"`` or ``"vector"`` from static facts about ``x`` only.

    Args:
        x: the batch ``(B, ...)``; only its device, dtype and shape are looked at.
        inplace: whether ``x`` itself is overwritten with its own mix.

    Returns:
        The name of the form :func:`lerp_gather` / :func:`lerp_perm_inplace` will run.
    """
    eager_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
    big_rows = x.ndim > 1 and x.shape[0] > 0 and x[0].numel() >= ROW_LOOP_MIN_NUMEL
    row_dtype = x.dtype in _FLOAT_ROW_DTYPES or x.dtype == torch.uint8
    if not (eager_cpu and row_dtype):
        return "vector"
    if big_rows:
        return "cycles" if inplace else "rows"
    many = x.ndim > 1 and x.numel() > CHUNK_NUMEL
    return "chunks" if many and not inplace else "vector"


class _RowLerp:
    """``out = lerp(start, end, w)`` for one row; uint8 rows go through float32 scratch rows."""

    def __init__(self, row: torch.Tensor):
        self.uint8 = row.dtype == torch.uint8
        if self.uint8:
            self.a = torch.empty(row.shape, dtype=torch.float32, device=row.device)
            self.b = torch.empty_like(self.a)

    def __call__(self, start: torch.Tensor, end: torch.Tensor, w: float, out: torch.Tensor) -> None:
        if not self.uint8:
            torch.lerp(start, end, w, out=out)
            return
        self.a.copy_(end)
        self.b.copy_(start)
        torch.lerp(self.b, self.a, w, out=self.a)
        out.copy_(self.a.round_())  # lerp of values in [0, 255] stays in [0, 255]: no clamp needed


def _vector_lerp_gather(x, src, lam, index, out=None) -> torch.Tensor:
    """One gather and one lerp over the whole batch (fusable by inductor), into ``out`` if given."""
    if x.dtype not in (torch.float32, torch.float64):  # reduced precision and uint8: computed in float32
        acc = x.dtype if x.is_complex() else torch.float32
        xf = x.to(acc)
        partner = xf.index_select(0, index) if src is x else src.index_select(0, index).to(acc)  # (B, ...)
        torch.lerp(partner, xf, _view_b(lam.to(acc), x.ndim), out=partner)
        if x.dtype == torch.uint8:
            partner.round_()  # a lerp of values in [0, 255] stays there: the cast below is exact
        return (torch.empty_like(x) if out is None else out).copy_(partner)
    w = _view_b(lam.to(x.dtype), x.ndim)  # (B, 1, ...): lerp needs the weight in x's dtype
    partner = src.index_select(0, index)  # (B, ...): the only temporary
    if out is not None:
        return torch.lerp(partner, x, w, out=out)
    return torch.lerp(partner, x, w, out=partner).contiguous(memory_format=memory_format(x))


def _chunked_lerp_gather(x, src, lam, index, out) -> torch.Tensor:
    """The vector form on groups of rows of about ``CHUNK_NUMEL`` elements (small temporaries)."""
    step = max(1, CHUNK_NUMEL // max(1, x[0].numel()))
    for i0 in range(0, x.shape[0], step):
        sl = slice(i0, i0 + step)
        _vector_lerp_gather(x[sl], src, lam[sl], index[sl], out=out[sl])
    return out


def lerp(x: torch.Tensor, src: torch.Tensor, lam: torch.Tensor, index: torch.Tensor, *,
         out: torch.Tensor | None = None, fast: bool = True) -> torch.Tensor:
    """The lerp door: ``lam * x + (1 - lam) * src[index]`` row by row, into ``out`` when given.

    ``fast=False`` gives the same numbers from differentiable ops only (the ``out=`` kernels
    are not differentiable); otherwise the form is chosen by :func:`choose_form`, and
    ``out is x is src`` walks the permutation in place.
    """
    if not fast:
        res = _fused_math(x, src, lam, index)
        return res if out is None else out.copy_(res)
    return lerp_gather(x, src, lam, index, out=out)


def lerp_gather(
    x: torch.Tensor, src: torch.Tensor, lam: torch.Tensor, index: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Row-wise ``lerp(src[index], x, lam)``, into ``out`` when given.

    Args:
        x: original rows ``(B, ...)``, float or uint8.
        src: partner rows ``(N, ...)`` (``x`` itself for one-batch mixup).
        lam: ``(B,)`` weights of the original rows.
        index: int64 ``(B,)`` partner row of each row.
        out: optional buffer shaped like ``x`` to reuse; may be ``x`` itself when ``src`` is
            another tensor (two-stream in place). For ``out is x is src`` use
            :func:`lerp_perm_inplace`.

    Returns:
        ``lam * x + (1 - lam) * src[index]`` with ``x``'s dtype, device and memory format
        (``out`` itself when given).
    """
    if out is x and src is x:
        return lerp_perm_inplace(x, lam, index)
    form = choose_form(x)
    if form == "chunks":
        return _chunked_lerp_gather(x, src, lam, index, torch.empty_like(x) if out is None else out)
    if form == "rows":
        dst = torch.empty_like(x) if out is None else out  # empty_like keeps channels_last
        kernel = _RowLerp(x[0])
        xs, ss, ds = x.unbind(0), src.unbind(0), dst.unbind(0)
        for i, (j, w) in enumerate(zip(index.tolist(), lam.tolist())):  # CPU tensors: no device sync
            kernel(ss[j], xs[i], w, ds[i])
        return dst
    return _vector_lerp_gather(x, src, lam, index, out=out)


def lerp_perm_inplace(x: torch.Tensor, lam: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """In place ``x[i] = lerp(x[index[i]], x[i], lam[i])`` for every row, reading old rows only.

    On CPU each cycle of the permutation is walked with one spare row (no full-size
    temporary); a 2-cycle (a ``flip`` pair) reads both rows and writes both once. Elsewhere
    the partner rows are gathered first, then lerped into ``x``.

    Returns:
        ``x``, overwritten with ``lam * x + (1 - lam) * x[index]``.
    """
    if choose_form(x, inplace=True) != "cycles" or x.shape[0] == 0:
        return _vector_lerp_gather(x, x, lam, index, out=x)  # partner rows gathered before x is written
    idx, lams = index.tolist(), lam.tolist()
    rows = x.unbind(0)
    kernel = _RowLerp(rows[0])
    seen = [False] * len(idx)
    spare = None
    for start in range(len(idx)):
        if seen[start]:
            continue
        seen[start] = True
        if idx[start] == start:
            continue  # a fixed point mixes with itself: unchanged
        if spare is None:
            spare = torch.empty_like(rows[0])
        spare.copy_(rows[start])
        i = start
        while True:
            j = idx[i]
            kernel(spare if j == start else rows[j], rows[i], lams[i], rows[i])  # old x[j] (or spare), old x[i]
            if j == start:
                break
            seen[j] = True
            i = j
    return x


def lerp_flip_inplace(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """In place mix with ``flip`` pairing (``index[i] = B - 1 - i``), pair by pair.

    Each pair ``(i, B-1-i)`` is read and written once; the middle row of an odd batch is its
    own partner and stays unchanged. Needs no index, so it is the same on every device.

    Args:
        x: the batch ``(B, ...)``, overwritten.
        lam: ``(B,)`` weights of the original rows (per row; equal within a pair in pair mode).

    Returns:
        ``x``, overwritten with ``lam * x + (1 - lam) * x.flip(0)``.
    """
    B = x.shape[0]
    h = B // 2
    if h == 0:
        return x
    if choose_form(x, inplace=True) == "cycles":
        return lerp_perm_inplace(x, lam, torch.arange(B - 1, -1, -1))
    top, bottom = x[:h], x[B - h:]  # (h, ...) each; bottom's row k pairs with top's row h-1-k
    old_top = top.flip(0)  # (h, ...) copy of the top half, in bottom's order
    lerp_gather(top, bottom, lam[:h], torch.arange(h - 1, -1, -1, device=x.device), out=top)
    lerp_gather(bottom, old_top, lam[B - h:], torch.arange(h, device=x.device), out=bottom)
    return x


_COMPILED = {}


def compiled_lerp_gather(x: torch.Tensor, src: torch.Tensor, lam: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``lerp(src[index], x, lam)`` as one ``torch.compile``-d kernel fusing gather and mix.

    Compiled once per process (the first call pays the compile; inductor needs a C++
    compiler on CPU). Same numbers as :func:`lerp_gather` to float tolerance.
    """
    fn = _COMPILED.get("lerp_gather")
    if fn is None:
        fn = _COMPILED["lerp_gather"] = torch.compile(_fused_math, fullgraph=True, dynamic=False)
    return fn(x, src, lam, index)


def _fused_math(x, src, lam, index):
    """Gather and lerp in float32 (or wider) with ``lam`` at full precision, rounded once."""
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) or x.is_complex() else torch.float32
    res = torch.lerp(src[index].to(acc), x.to(acc), _view_b(lam.to(acc), x.ndim))
    return cast_back(res, x)


def paste(x, src, lam, index, box, linear, *, inplace: bool) -> torch.Tensor | None:
    """The paste door: CutMix boxes on CPU by slice copies, without a full-size mask or a full-size gather.

    Reads ``box``/``linear``/``index`` values (CPU only). Rows with ``linear`` set are blended
    with ``lam`` instead. The box covers the last ``D`` dims of ``x``.

    Returns:
        The mixed batch (``x`` itself when ``inplace``), or ``None`` when this form does not
        apply (off the CPU, under tracing, an empty batch, in place with blended rows), so the
        caller takes the generic route.
    """
    B, D = x.shape[0], box.shape[1]
    if not eager_cpu(x) or B == 0:
        return None
    boxes = box.tolist()  # (B, D, 2) as lists
    lin = [False] * B if linear is None else linear.tolist()
    if inplace and any(lin):
        return None
    lead = (slice(None),) * (x.ndim - 1 - D)
    regions = [lead + tuple(slice(lo, hi) for lo, hi in b) for b in boxes]
    idx = index.tolist()
    if not any(lin) and all(b == boxes[0] for b in boxes):  # one box for the batch (batch mode)
        out = x if inplace else x.clone(memory_format=memory_format(x))
        sel = (slice(None),) + regions[0]
        out[sel] = src[sel][index]  # gathers the box region only
        return out
    if inplace:  # patches first: later rows may read rows already written
        patches = [src[j][regions[i]].clone() for i, j in enumerate(idx)]
        for i, patch in enumerate(patches):
            x[i][regions[i]] = patch
        return x
    out = torch.empty_like(x)
    kernel = _RowLerp(x[0]) if any(lin) else None
    lams = lam.tolist()
    for i, j in enumerate(idx):
        if lin[i]:
            kernel(src[j], x[i], lams[i], out[i])
        else:
            out[i].copy_(x[i])
            out[i][regions[i]] = src[j][regions[i]]
    return out


# -- the CPU fast paths of the mask methods (FMix's select, ResizeMix's paste, SaliencyMix's filters) ------------
# Each takes the generic form's inputs and returns the same bits, or ``None`` where it does not apply
# (the caller then runs the generic torch form). Whether a form applies is decided here, from static facts.

def eager_cpu(t: torch.Tensor) -> bool:
    """True for a CPU tensor outside ``torch.compile`` tracing: where host reads are free and loops pay."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def select(x, src, index, take, *, inplace: bool) -> torch.Tensor | None:
    """``torch.where(take, src[index], x)`` as a bitwise select on integer views (CPU eager).

    ``x ^ ((src[index] ^ x) & -take)`` picks every element's bits from one of the two rows, so the
    result is the same bits as ``torch.where`` (NaNs, signed zeros included), in three vectorised
    in-place passes after the partner gather (``torch.where``'s CPU kernel is scalar: several
    times slower at 64x3x64x64). ``take`` is bool, broadcastable to ``x`` (a batch-level mask is
    passed as one row). Returns ``None`` where the form does not apply: other devices, tracing,
    dtypes or layouts that differ, non-contiguous leaves, an empty batch.
    """
    itype = _BITS.get(x.element_size())
    if (itype is None or not eager_cpu(x) or x.shape[0] == 0 or x.dtype != src.dtype or x.is_complex()
            or not x.is_contiguous() or not src.is_contiguous() or x.shape[1:] != src.shape[1:]):
        return None
    bits = take.to(itype).neg_()  # all ones where the partner is taken
    out = src.index_select(0, index)  # (B, ...) the partners
    o, xi = out.view(itype), x.view(itype)
    o.bitwise_xor_(xi).bitwise_and_(bits)  # (partner ^ x) where taken, else 0
    if inplace:  # x's own rows were read by the gather already
        xi.bitwise_xor_(o)
        return x
    o.bitwise_xor_(xi)
    return out


def resized_paste(x, src, index, box, resize, *, nearest: bool, inplace: bool) -> torch.Tensor | None:
    """ResizeMix on CPU eager: resize each partner only into its box (no full-size partner or mask).

    Args:
        x, src, index: the leaf, the partner batch and the partner rows.
        box: int64 ``(B, D, 2)`` boxes over the last ``D`` dims (host reads are free on CPU).
        resize: ``resize(rows, sizes) -> rows resized over the last D dims`` (the region's rule).
        nearest: nearest-neighbour resizing (rows may then be selected after the shrink).
        inplace: write into ``x``.

    Returns:
        The mixed leaf, or ``None`` off the CPU, under tracing, or for an empty batch.
    """
    if not eager_cpu(x) or x.shape[0] == 0:
        return None
    out = x if inplace else x.clone(memory_format=memory_format(x))
    boxes, idx = box.tolist(), index.tolist()
    D = box.shape[1]
    lead = (slice(None),) * (x.ndim - D)
    if all(b == boxes[0] for b in boxes):  # batch mode: one box, one resize
        sizes = [hi - lo for lo, hi in boxes[0]]
        if min(sizes) > 0:
            rows = src if nearest else src.index_select(0, index)
            patch = resize(rows, sizes)
            patch = patch.index_select(0, index) if nearest else patch  # select rows after the shrink
            out[lead + tuple(slice(lo, hi) for lo, hi in boxes[0])] = patch.to(x.dtype)
        return out
    patches = []
    for i, (b, j) in enumerate(zip(boxes, idx)):  # patches first: in place, later rows may read written ones
        sizes = [hi - lo for lo, hi in b]
        if min(sizes) > 0:
            patches.append((i, b, resize(src[j:j + 1], sizes)[0].to(x.dtype)))
    for i, b, patch in patches:
        out[i][lead[1:] + tuple(slice(lo, hi) for lo, hi in b)] = patch
    return out


def box_mean3(padded: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(padded, 3, stride=1)`` of ``(B, 1, s + 2, s + 2)`` maps, as ``(B, s, s)``.

    On CPU eager the nine slice adds run in ``avg_pool2d``'s order (row by row), then ``/ 9``: the
    same bits, several times faster than the CPU pooling kernel on these 1-channel maps.
    """
    if not eager_cpu(padded):
        return torch.nn.functional.avg_pool2d(padded, 3, stride=1)[:, 0]
    p = padded[:, 0]
    s = p.shape[-1] - 2
    avg = p[:, 0:s, 0:s].clone()
    for i in range(3):
        for j in range(3):
            if i or j:
                avg += p[:, i:i + s, j:j + s]
    return avg.div_(9)


def gauss5(padded: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable 5-tap filter ``taps`` over ``(B, 1, s + 4, s + 4)`` maps (rows, then columns), ``(B, s, s)``.

    On CPU eager: five multiply-adds per direction in the convolution's order (same bits as the two
    ``conv2d`` calls, which cost several times more on 1-channel maps).
    """
    if not eager_cpu(padded):
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(padded, taps.view(1, 1, 1, 5)),
                                          taps.view(1, 1, 5, 1))[:, 0]
    m = padded[:, 0]
    s = m.shape[-1] - 4
    g, gl = taps.unbind(), taps.tolist()
    rows = torch.mul(m[:, :, 0:s], gl[0])  # (B, s + 4, s)
    for j in range(1, 5):
        rows.addcmul_(m[:, :, j:j + s], g[j])
    out = torch.mul(rows[:, 0:s], gl[0])  # (B, s, s)
    for i in range(1, 5):
        out.addcmul_(rows[:, i:i + s], g[i])
    return out
