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

import contextlib
import os
import time

import torch

__all__ = [
    "lerp", "paste", "select", "resized_paste", "box_mean3", "gauss5", "eager_cpu", "ROW_LOOP_MIN_NUMEL", "CHUNK_NUMEL", "memory_format", "cast_back", "choose_form",
    "lerp_gather", "lerp_perm_inplace", "lerp_flip_inplace", "compiled_lerp_gather",
    "paced", "paced_call", "row_threads", "ROW_THREADS_POLICIES", "huge_pages", "empty_out", "clone_out", "consts", "to_device",
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


# -- pacing the row loops: torch's threads, or one thread when the cores are shared ----------------------------------
# A row loop issues one op per row (or per box, per cycle step). With torch's intra-op threads every op is its own
# parallel region that waits for all of its threads; when another process holds one of the cores (DataLoader
# workers, a second job), each op waits for a time slice, and a batch of 128 rows costs up to 20x the copy floor.
# One thread issues the same ops with no hand-off at all, but on a quiet machine it reaches only part of the
# memory bandwidth. The loop is therefore run in segments of about SEGMENT_NUMEL elements, each timed (host time:
# CPU only, so no device sync), and each kind of loop keeps what it measured with both settings: the faster one
# runs, and the other is tried again after a number of segments that doubles while it keeps losing (reset when the
# running one suddenly slows down, so a change of load is noticed within a segment or two). The thread count
# changes no number: every op is elementwise, each element computed by the same kernel either way.

ROW_THREADS_POLICIES = ("auto", "torch", "one")
SEGMENT_NUMEL = 1 << 21
_MAX_GAP = 1024  # segments between tries of the losing setting, at most
_POLICY = [os.environ.get("MIXLAB_ROW_THREADS", "auto")]
if _POLICY[0] not in ROW_THREADS_POLICIES:  # pragma: no cover - environment typo
    raise ValueError(f"MIXLAB_ROW_THREADS must be one of {ROW_THREADS_POLICIES}, got {_POLICY[0]!r}")


def row_threads(policy: str | None = None) -> str:
    """Get, or set, how the CPU row loops use threads; returns the policy in force before the call.

    Args:
        policy: ``"auto"`` (default; also ``MIXLAB_ROW_THREADS``): each loop measures torch's thread count
            against one thread while it runs and keeps the faster (one thread wins when other work holds the
            cores); ``"torch"``: always torch's :func:`torch.get_num_threads`; ``"one"``: always one thread.
            ``None`` only reads the policy.

    The results are the same bits under every policy; only the time differs.
    """
    old = _POLICY[0]
    if policy is not None:
        if policy not in ROW_THREADS_POLICIES:
            raise ValueError(f"row_threads: policy must be one of {ROW_THREADS_POLICIES}, got {policy!r}")
        _POLICY[0] = policy
    return old


class _Tune:
    """What one kind of loop measured: seconds per element with torch's threads (mode 0) and one thread (1).

    The two tries are not alike. One thread is never much slower than several (at most by the share of the
    memory bandwidth one core cannot reach), so it is tried as soon as the threaded loop slows down. Torch's
    threads can be a hundred times slower than one thread when the cores are shared, so while they lose they
    are tried on short segments only, ever more rarely (the gap grows fourfold each time, up to _MAX_GAP).
    """

    __slots__ = ("rate", "wait", "gap", "slow")

    def __init__(self):
        self.rate = [None, None]
        self.wait = [0, 0]  # segments until the losing mode is tried again
        self.gap = [1, 1]
        self.slow = 0  # consecutive threaded segments much slower than their average

    def best(self) -> int:
        r0, r1 = self.rate
        return 0 if r1 is None or (r0 is not None and r0 <= r1) else 1

    def choose(self) -> tuple[int, bool]:
        """The mode of the next segment, and whether it is a try of the losing one."""
        if self.rate[1] is None:  # one thread first: never far off, and the threads' try is then a short one
            return 1, False
        if self.rate[0] is None:
            return 0, True
        best = self.best()
        other = 1 - best
        if self.wait[other] <= 0:
            return other, True
        self.wait[other] -= 1
        return best, False

    def record(self, mode: int, rate: float, tried: bool) -> None:
        other = 1 - mode
        if not tried:
            old = self.rate[mode]
            self.rate[mode] = rate if old is None else 0.7 * old + 0.3 * rate
            if mode == 0 and old is not None and self.rate[1] is not None:
                self.slow = self.slow + 1 if rate > 2.0 * old else 0
                if self.slow >= 2:  # the threads stayed slow two segments running: the load changed, try one thread
                    self.wait[1], self.gap[1], self.slow = 0, 1, 0
            return
        self.rate[mode] = rate  # a try of the losing mode: its old figure is stale
        if rate < 0.9 * self.rate[other]:  # it wins clearly: it runs from now on, the other is tried again soon
            self.gap[mode], self.gap[other], self.wait[other] = 1, 1, 1
        else:
            self.gap[mode] = min((4 if mode == 0 else 2) * self.gap[mode], _MAX_GAP)
            self.wait[mode] = self.gap[mode]


_TUNES: dict = {}


class _Pace:
    """One paced loop: :meth:`over` yields its items and switches the thread count between segments."""

    def __init__(self, kind: str, step_numel: int, clock=time.perf_counter):
        self.threads = torch.get_num_threads()
        self.set_to = None
        policy = _POLICY[0]
        self.auto = self.threads > 1 and policy == "auto"
        if self.threads > 1 and policy == "one":
            self._set(1)
        if self.auto:
            self.tune = _TUNES.setdefault(kind, _Tune())
            self.numel = max(1, step_numel)
            self.full = self.seg = max(1, SEGMENT_NUMEL // self.numel)
            self.short = max(1, SEGMENT_NUMEL // 8 // self.numel)
            self.clock = clock
            self.mode = None
            self.tried = False
            self.done = 0
            self.t0 = 0.0

    def _set(self, n: int) -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.set_to = n

    def over(self, items):
        """Iterate ``items``, timing every segment of steps; a step's work runs between two items."""
        return self._paced(items) if self.auto else items

    def _paced(self, items):
        for item in items:
            if self.mode is None or self.done == self.seg:
                self._boundary()
            self.done += 1
            yield item

    def _boundary(self) -> None:
        now = self.clock()
        if self.mode is not None:
            self.tune.record(self.mode, (now - self.t0) / (self.done * self.numel), self.tried)
        self.mode, self.tried = self.tune.choose()
        self._set(self.threads if self.mode == 0 else 1)
        # threads on trial after losing badly (shared cores: up to 100x slower): a short segment; else a full one
        r0, r1 = self.tune.rate
        badly = r0 is None or (r1 is not None and r0 > 3.0 * r1)
        self.seg = self.short if self.tried and self.mode == 0 and badly else self.full
        self.done = 0
        self.t0 = self.clock()

    def close(self) -> None:
        if self.auto and self.mode is not None and self.done:
            self.tune.record(self.mode, (self.clock() - self.t0) / (self.done * self.numel), self.tried)
        if self.set_to is not None and self.set_to != self.threads:
            torch.set_num_threads(self.threads)


def paced_call(kind: str, t: torch.Tensor, numel: int, fn):
    """``fn()`` run once as one paced step (torch's threads or one thread, whichever is faster now for ``kind``)
    when ``t`` is a CPU tensor outside tracing; else simply ``fn()``. For whole calls of a few parallel ops."""
    if not eager_cpu(t):
        return fn()
    with paced(kind, numel) as pace:
        for _ in pace.over((None,)):
            out = fn()
    return out


@contextlib.contextmanager
def paced(kind: str, step_numel: int, *, clock=time.perf_counter):
    """Run a CPU row loop with the thread count that is fastest now (see :func:`row_threads`).

    Use as ``with paced("rows", row.numel()) as pace: for item in pace.over(items): work(item)``; torch's thread
    count is restored on leaving, also on an error.

    Args:
        kind: the loop's name (its measurements are kept apart from other loops'), with the dtype if it matters.
        step_numel: elements one step touches (sets the segment length and the per-element rate).
        clock: the timer (tests pass a fake one).
    """
    pace = _Pace(kind, step_numel, clock)
    try:
        yield pace
    finally:
        pace.close()


# -- outputs on huge pages ----------------------------------------------------------------------------------------
# A fresh output is written once, page by page: with 4 KiB pages the kernel takes ~19,000 page faults for a
# 128x3x224x224 float32 batch, which costs more than the mixing itself (x.clone() is 3x the copy floor here).
# Where Linux's transparent huge pages are in "madvise" or "always" mode, an output of at least HUGE_MIN_BYTES is
# advised MADV_HUGEPAGE before its first write, so it faults in 2 MiB pages (torch's own CPU allocator does the
# same under THP_MEM_ALLOC_ENABLE=1). Opt out with MIXLAB_HUGE_PAGES=0 or huge_pages(False). Its pages are then
# faulted in by one single-threaded strided write, so the row loops that fill it time clean segments (page faults
# taken by two threads at once wait on each other and made the paced loop misjudge the threads).

HUGE_MIN_BYTES = 8 << 20
_MADV_HUGEPAGE = 14
_HUGE = {"on": os.environ.get("MIXLAB_HUGE_PAGES", "1") != "0", "madvise": None, "page": 0}


def _thp_setup():
    """``(madvise, page size)`` where transparent huge pages can be advised, else ``(False, 0)``."""
    if _HUGE["madvise"] is None:
        _HUGE["madvise"] = False
        try:
            with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
                mode = f.read()
            if "[never]" not in mode:
                with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
                    page = int(f.read())
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.madvise
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
                _HUGE["madvise"], _HUGE["page"] = fn, page
        except (OSError, ValueError, AttributeError):
            pass
    return _HUGE["madvise"], _HUGE["page"]


def huge_pages(enabled: bool | None = None) -> bool:
    """Get, or set, whether fresh CPU outputs of at least :data:`HUGE_MIN_BYTES` are advised onto transparent huge
    pages (Linux); returns the setting before the call. Only the time to first write them changes."""
    old = _HUGE["on"]
    if enabled is not None:
        _HUGE["on"] = bool(enabled)
    return old


def empty_out(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)`` (its memory format kept), advised onto huge pages where that pays (see above)."""
    out = torch.empty_like(x)
    nbytes = out.numel() * out.element_size()
    if _HUGE["on"] and nbytes >= HUGE_MIN_BYTES and eager_cpu(out):
        madvise, page = _thp_setup()
        if madvise:
            p = out.data_ptr()
            lo, hi = -(-p // page) * page, (p + nbytes) // page * page
            if hi > lo:
                madvise(lo, hi - lo, _MADV_HUGEPAGE)  # advice only: a refusal leaves 4 KiB pages
        # Fault every page in now, in one single-threaded op (a write every 4 KiB; the kernel zeroes the pages):
        # the faults then cost what x.clone()'s do, and the row loops that fill the output time clean segments.
        if out.is_contiguous() or out.is_contiguous(memory_format=memory_format(out)):  # one run of memory
            out.as_strided((out.numel(),), (1,))[:: max(1, 4096 // out.element_size())].zero_()
    return out


def clone_out(x: torch.Tensor) -> torch.Tensor:
    """``x.clone()`` in its memory format, into :func:`empty_out`."""
    return empty_out(x).copy_(x)


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
    big_rows = x.ndim > 1 and x.shape[0] > 0 and x[0].numel() >= ROW_LOOP_MIN_NUMEL
    row_dtype = x.dtype in _FLOAT_ROW_DTYPES or x.dtype == torch.uint8
    if not (eager_cpu(x) and row_dtype):  # the one CPU switch (tests force the other devices' forms with it)
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
        return (empty_out(x) if out is None else out).copy_(partner)
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
        return _chunked_lerp_gather(x, src, lam, index, empty_out(x) if out is None else out)
    if form == "rows":
        dst = empty_out(x) if out is None else out  # empty_like keeps channels_last
        kernel = _RowLerp(x[0])
        xs, ss, ds = x.unbind(0), src.unbind(0), dst.unbind(0)
        with paced(f"rows:{x.dtype}", xs[0].numel()) as pace:
            for i, (j, w) in pace.over(enumerate(zip(index.tolist(), lam.tolist()))):  # CPU tensors: no sync
                kernel(ss[j], xs[i], w, ds[i])
        return dst
    return _vector_lerp_gather(x, src, lam, index, out=out)


def lerp_perm_inplace(x: torch.Tensor, lam: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """In place ``x[i] = lerp(x[index[i]], x[i], lam[i])`` for every row, reading old rows only.

    On CPU each cycle of the permutation is walked with one spare row (no full-size
    temporary); a 2-cycle (a ``flip`` pair) reads both rows and writes both once; partner rows
    drawn with repeats (not a permutation) are written readers first (:func:`_cycle_steps`).
    Elsewhere the partner rows are gathered first, then lerped into ``x``.

    Returns:
        ``x``, overwritten with ``lam * x + (1 - lam) * x[index]``.
    """
    if choose_form(x, inplace=True) != "cycles" or x.shape[0] == 0:
        return _vector_lerp_gather(x, x, lam, index, out=x)  # partner rows gathered before x is written
    idx, lams = index.tolist(), lam.tolist()
    rows = x.unbind(0)
    kernel = _RowLerp(rows[0])
    spare = torch.empty_like(rows[0])
    with paced(f"cycles:{x.dtype}", rows[0].numel()) as pace:
        for i, j in pace.over(_cycle_steps(idx)):
            if j == _TO_SPARE:
                spare.copy_(rows[i])
            else:  # old x[j] (or the spare holding the cycle's first row), old x[i]
                kernel(spare if j == _FROM_SPARE else rows[j], rows[i], lams[i], rows[i])
    return x


_TO_SPARE, _FROM_SPARE = -2, -1


def _cycle_steps(idx: list):
    """The in-place walk of ``x[i] = f(old x[idx[i]], old x[i])`` for any partner rows ``idx``.

    A row may be overwritten only once every other row that reads it is done. Rows no other row reads go first,
    then the rows whose readers are all done, and so on; what is left lies on cycles of the permutation, each row
    read by its predecessor alone, and each cycle is walked with one spare row. Yields ``(start, _TO_SPARE)``
    (save a cycle's first row), or ``(i, j)``: write row ``i`` from old row ``j`` (``_FROM_SPARE``: the saved
    row). Rows that are their own partner are unchanged and skipped.
    """
    n = len(idx)
    readers = [0] * n
    for k, j in enumerate(idx):
        if j != k:
            readers[j] += 1
    done = [False] * n
    ready = [i for i in range(n) if readers[i] == 0]
    while ready:  # rows off the cycles (partners drawn with repeats): readers first
        i = ready.pop()
        done[i] = True
        j = idx[i]
        if j == i:
            continue
        yield i, j
        readers[j] -= 1
        if readers[j] == 0:
            ready.append(j)
    for start in range(n):  # the rest: cycles of length >= 2
        if done[start]:
            continue
        done[start] = True
        yield start, _TO_SPARE
        i = start
        while True:
            j = idx[i]
            if j == start:
                yield i, _FROM_SPARE
                break
            yield i, j
            done[j] = True
            i = j


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
        out = x if inplace else clone_out(x)
        sel = (slice(None),) + regions[0]
        out[sel] = src[sel][index]  # gathers the box region only
        return out
    if inplace:  # patches first: later rows may read rows already written
        box_numel = x[0].numel() * sum(_volume(b) for b in boxes) // max(1, B * _volume_of(x.shape[x.ndim - D:]))
        with paced(f"paste:{x.dtype}", box_numel) as pace:
            patches = [src[j][regions[i]].clone() for i, j in pace.over(enumerate(idx))]
            for i, patch in pace.over(enumerate(patches)):
                x[i][regions[i]] = patch
        return x
    out = empty_out(x)
    kernel = _RowLerp(x[0]) if any(lin) else None
    lams = lam.tolist()
    with paced(f"paste-rows:{x.dtype}", x[0].numel()) as pace:
        for i, j in pace.over(enumerate(idx)):
            if lin[i]:
                kernel(src[j], x[i], lams[i], out[i])
            else:
                out[i].copy_(x[i])
                out[i][regions[i]] = src[j][regions[i]]
    return out


def _volume(box: list) -> int:
    v = 1
    for lo, hi in box:
        v *= max(0, hi - lo)
    return v


def _volume_of(shape) -> int:
    v = 1
    for n in shape:
        v *= n
    return max(1, v)


# -- the CPU fast paths of the mask methods (FMix's select, ResizeMix's paste, SaliencyMix's filters) ------------
# Each takes the generic form's inputs and returns the same bits, or ``None`` where it does not apply
# (the caller then runs the generic torch form). Whether a form applies is decided here, from static facts.

def consts(values, *, device, dtype) -> torch.Tensor:
    """A small 1-D tensor of Python numbers on ``device`` with no host-to-device copy.

    ``torch.tensor(values, device=cuda)`` copies from pageable host memory, which waits for the device (CUDA's
    sync debug mode reports it); a fill per value passes the number as a kernel argument instead (the same on
    every device: a few microseconds on the CPU).
    """
    return torch.stack([torch.full((), v, dtype=dtype, device=device) for v in values])


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` (a small CPU tensor) on ``device`` without waiting for the device: through pinned memory,
    asynchronously, off the CPU (where the copy is a no-op or pageable copies would sync)."""
    if torch.compiler.is_compiling():
        return t.to(device)
    device = torch.device(device)
    if t.device == device:
        return t
    if eager_cpu(t) and torch.cuda.is_available() and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
    out = torch.index_select(src, 0, index, out=empty_out(x))  # (B, ...) the partners
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
    out = x if inplace else clone_out(x)
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
    with paced(f"resized-paste:{x.dtype}", x[0].numel() // 2) as pace:
        for i, (b, j) in pace.over(enumerate(zip(boxes, idx))):  # patches first: in place, rows may read written ones
            sizes = [hi - lo for lo, hi in b]
            if min(sizes) > 0:
                patches.append((i, b, resize(src[j:j + 1], sizes)[0].to(x.dtype)))
        for i, b, patch in pace.over(patches):
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
