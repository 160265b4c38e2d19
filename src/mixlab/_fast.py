"""Kernels behind :func:`mixlab.mix`: one reference-exact formula, several execution forms.

Every form computes ``torch.lerp(src[index], x, lam)`` row by row, i.e.
``src[index] + lam * (x - src[index])`` (fastai's lerp form of
``lam * x + (1 - lam) * src[index]``); uint8 is computed in float32 and rounded back.
The form is chosen from static facts only (device, dtype, sizes, compiling or not), never
from tensor values, so it is free of host-device syncs on accelerators:

- compiled / accelerator: one vectorised gather + lerp, which inductor fuses into one pass.
- CPU eager, large rows: a Python loop of per-row ``lerp(out=...)`` that reads each source
  row once and writes each output row once, with no full-size temporary.
- CPU eager in place: the permutation is walked cycle by cycle with one spare row, so the
  batch is overwritten without a full-size temporary.
"""
from __future__ import annotations

import torch

# Rows at least this large (elements) take the per-row CPU loop; below it the Python
# overhead per row outweighs the saved temporary.
ROW_LOOP_MIN_NUMEL = 1 << 14


def memory_format(x: torch.Tensor) -> torch.memory_format:
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


def _use_row_loop(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and x.dtype != torch.uint8
        and x.shape[0] > 0
        and x[0].numel() >= ROW_LOOP_MIN_NUMEL
    )


def lerp_gather(
    x: torch.Tensor, src: torch.Tensor, lam: torch.Tensor, index: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``lerp(src[index], x, lam)`` row-wise; writes into ``out`` when given (may be ``x``)."""
    if _use_row_loop(x) and not (out is x and src is x):
        dst = torch.empty_like(x) if out is None else out
        lams, idx = lam.tolist(), index.tolist()  # CPU tensors: no device sync
        for i, (j, w) in enumerate(zip(idx, lams)):
            torch.lerp(src[j], x[i], w, out=dst[i])
        return dst
    if x.dtype == torch.uint8:
        xf = x.float()
        sf = xf if src is x else src.float()
        res = cast_back(torch.lerp(sf[index], xf, _view_b(lam.float(), x.ndim)), x)
    else:
        res = torch.lerp(src[index], x, _view_b(lam.to(x.dtype), x.ndim))
        res = res.contiguous(memory_format=memory_format(x))
    if out is not None:
        return out.copy_(res)
    return res


def lerp_perm_inplace(x: torch.Tensor, lam: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """In place ``x[i] = lerp(x[index[i]], x[i], lam[i])`` for every row, reading old rows only."""
    if x.device.type != "cpu" or x.dtype == torch.uint8 or x.shape[0] == 0:
        return x.copy_(lerp_gather(x, x, lam, index))
    idx, lams = index.tolist(), lam.tolist()
    n = len(idx)
    seen = [False] * n
    spare = None
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        if idx[start] == start:
            continue  # a fixed point mixes with itself: unchanged
        if spare is None:
            spare = torch.empty_like(x[0])
        spare.copy_(x[start])
        i = start
        while True:
            j = idx[i]
            end = spare if j == start else x[j]
            torch.lerp(end, x[i], lams[i], out=x[i])  # reads old x[i], old x[j] (or the spare)
            if j == start:
                break
            seen[j] = True
            i = j
    return x
