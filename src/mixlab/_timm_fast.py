"""The CPU kernel behind :class:`mixlab.timm.Mixup`: flip pairs mixed in place, pair by pair.

timm's ``Mixup`` always pairs row ``i`` with row ``B - 1 - i`` and gives every row one of three
fates: left as it is (``lam == 1``), blended with its partner (``lam * x[i] + (1 - lam) * x[j]``)
or a box of the partner pasted in. Going through :func:`mixlab.mix` with a per-row MixUp-or-CutMix
region costs several full-size passes (a lerp of every row, a full-size mask, a gather of every
partner row, a ``where`` and a copy back). Here each pair is read and written once with row-sized
ops and no full-size temporary:

- both rows blended: one spare row holds the old ``x[i]`` (a 2-cycle of the permutation walk);
- one row blended, one pasted: only the pasted box of the blended row is saved first;
- both pasted: only one box is saved first; a row left as it is costs nothing.

Numbers are those of :mod:`mixlab._fast`'s row forms: ``torch.lerp(x[j], x[i], lam)`` in the batch's
dtype with a Python-float weight (uint8 through float32 scratch rows, rounded to nearest), and
exact copies for the boxes. Convention: ``lam`` weights the original row.
"""
from __future__ import annotations

import torch

from . import _fast
from ._fast import paced

__all__ = ["applies", "mix_flip_inplace"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.uint8)


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`mix_flip_inplace` may take ``x``: CPU eager, no autograd, float or uint8."""
    return (isinstance(x, torch.Tensor) and x.dtype in _DTYPES and x.ndim >= 2 and _fast.eager_cpu(x)
            and not (torch.is_grad_enabled() and x.requires_grad))


class _Lerp:
    """``out = lerp(start, end, w)`` for one row; uint8 rows through two float32 scratch rows."""

    def __init__(self, row: torch.Tensor):
        self.uint8 = row.dtype == torch.uint8
        self.a = self.b = None
        self.shape = row.shape

    def __call__(self, start: torch.Tensor, end: torch.Tensor, w: float, out: torch.Tensor) -> None:
        if not self.uint8:
            torch.lerp(start, end, w, out=out)
            return
        if self.a is None:
            self.a = torch.empty(self.shape, dtype=torch.float32)
            self.b = torch.empty_like(self.a)
        self.a.copy_(end)
        self.b.copy_(start)
        torch.lerp(self.b, self.a, w, out=self.a)
        out.copy_(self.a.round_())  # a lerp of values in [0, 255] stays there: no clamp needed


def mix_flip_inplace(x: torch.Tensor, lam: list, boxes: list | None, linear: list | None) -> torch.Tensor:
    """Mix ``x`` with its flip in place: ``x[i]`` with ``x[B - 1 - i]``, reading old rows only.

    Args:
        x: the batch ``(B, ..., *S)`` on CPU, overwritten.
        lam: ``B`` floats, the weight of the original row of each blended row.
        boxes: ``None`` (every row blended), or ``B`` boxes ``[[lo, hi], ...]`` over the last ``D`` dims
            (``D`` pairs each): the partner's box is pasted into the row.
        linear: with ``boxes``, ``None`` (every row pasted) or ``B`` bools: True rows are blended instead.

    Rows with ``lam == 1`` that are blended, rows with an empty box that are pasted, and the middle
    row of an odd batch (its own partner) are left untouched.

    Returns:
        ``x``.
    """
    B = x.shape[0]
    if B < 2:
        return x
    lerp = _Lerp(x[0])
    D = len(boxes[0]) if boxes is not None else 0
    lead = (slice(None),) * (x.ndim - 1 - D)

    def fate(i):
        """``None`` (untouched), a float (blend with that lam) or a tuple of slices (paste that box)."""
        if boxes is None or (linear is not None and linear[i]):
            return None if lam[i] == 1.0 else lam[i]
        b = boxes[i]
        if any(hi <= lo for lo, hi in b):
            return None
        return lead + tuple(slice(lo, hi) for lo, hi in b)

    rows = x.unbind(0)
    with paced(f"timm-flip:{x.dtype}", 2 * rows[0].numel()) as pace:
        _walk_pairs(pace.over(range(B // 2)), B, rows, fate, lerp)
    return x


def _walk_pairs(pairs, B, rows, fate, lerp) -> None:
    """Each flip pair ``(i, B - 1 - i)`` read and written once (see :func:`mix_flip_inplace`)."""
    spare = None
    for i in pairs:
        j = B - 1 - i
        fi, fj = fate(i), fate(j)
        if fi is None and fj is None:
            continue
        xi, xj = rows[i], rows[j]
        if fi is None or fj is None:  # one row changes: it reads the other, which stays old
            r, p, f = (j, i, fj) if fi is None else (i, j, fi)
            if isinstance(f, float):
                lerp(rows[p], rows[r], f, rows[r])
            else:
                rows[r][f] = rows[p][f]
            continue
        if isinstance(fi, float) and isinstance(fj, float):  # both blended: a 2-cycle with one spare row
            if spare is None:
                spare = torch.empty_like(xi)
            spare.copy_(xi)
            lerp(xj, xi, fi, xi)
            lerp(spare, xj, fj, xj)
        elif isinstance(fi, float):  # i blended, j pasted: save j's box of old x[i], then blend i
            patch = xi[fj].clone()
            lerp(xj, xi, fi, xi)
            xj[fj] = patch
        elif isinstance(fj, float):  # i pasted, j blended
            patch = xj[fi].clone()
            lerp(xi, xj, fj, xj)
            xi[fi] = patch
        else:  # both pasted
            patch = xj[fi].clone()
            xj[fj] = xi[fj]
            xi[fi] = patch
