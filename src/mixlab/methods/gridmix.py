"""GridMix (Baek et al. 2021, "GridMix: Strong regularization through local context mapping"; the
GridMixup code that OpenMixup ports): a grid of square holes over a cut region takes the partner,
each hole ``sqrt(1 - lam)`` of its cell's side.

Convention: ``lam`` weights the original row: the exact share it keeps.
"""
from __future__ import annotations

import math

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Mask
from ..registry import register
from ..sampling import rng

__all__ = ["GridMix"]


def _range(value, name, *, integer=False, minimum=0.0):
    """A fixed value or a ``(low, high)`` range, as a pair."""
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair (low, high), got {value!r}")
    check = (lambda v: V.integer(v, name, minimum=int(minimum))) if integer else \
        (lambda v: V.real(v, name, minimum=minimum))
    low, high = check(pair[0]), check(pair[1])
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high



@register("gridmix", inputs=("images",),
          when="Images where one box hides too much of one object: a grid of holes; reported above CutMix on CIFAR.")
class GridMix(Mixer):
    """GridMix (Baek et al. 2021): a grid of holes over a cut region takes the partner.

    A cut region of ``cut_area_ratio`` of the image (aspect ``cut_aspect_ratio``, placed
    uniformly) is divided into cells ``ceil(width / n_holes)`` wide and ``hole_aspect_ratio`` times
    as tall; in each cell the top-left hole of side ``int(cell * sqrt(1 - lam))`` (at least 1
    pixel, at most the cell less 1) is the partner's. ``lam`` is then the exact kept share.
    Ranges ``(low, high)`` draw each value per batch (or per row in ``"sample"`` mode), as
    OpenMixup's ``gridmix``.

    Args:
        alpha: Beta concentration for the hole size.
        n_holes: holes across the cut region's width (int or range); at most half its width.
        hole_aspect_ratio, cut_area_ratio, cut_aspect_ratio: floats or ranges (default 1.0:
            square holes over the whole image, OpenMixup's defaults).
        mode: ``"batch"`` (one grid, as the reference) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer` (2-D images ``(B, C, H, W)``).
    """

    def __init__(self, alpha=1.0, *, n_holes=8, hole_aspect_ratio=1.0, cut_area_ratio=1.0, cut_aspect_ratio=1.0,
                 **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.n_holes = _range(n_holes, "n_holes", integer=True, minimum=1)
        self.hole_aspect_ratio = _range(hole_aspect_ratio, "hole_aspect_ratio", minimum=1e-6)
        self.cut_area_ratio = _range(cut_area_ratio, "cut_area_ratio", minimum=1e-6)
        if self.cut_area_ratio[1] > 1:
            raise ValueError(f"cut_area_ratio must lie in (0, 1], got {cut_area_ratio!r}")
        self.cut_aspect_ratio = _range(cut_aspect_ratio, "cut_aspect_ratio", minimum=1e-6)

    def _uniform(self, bounds, n, g, device):
        low, high = bounds
        return low + (high - low) * torch.rand(n, device=device, dtype=torch.float64, **rng(g))

    def check_size(self, H: int, W: int) -> None:
        """Refuse, for any device and mode, a configuration whose holes can outnumber half the cut width.

        The check is static (from ``H``, ``W`` and the option ranges, no tensor read): the narrowest
        cut region the ranges allow must hold at least two pixels per hole.
        """
        area = math.floor(H * W * self.cut_area_ratio[0])
        narrowest = min(max(math.floor(math.sqrt(area / self.cut_aspect_ratio[1])), 1), W)
        if self.n_holes[1] > narrowest // 2:
            raise ValueError(f"GridMix: n_holes up to {self.n_holes[1]} is more than half the narrowest cut region's "
                             f"width ({narrowest} pixels on {H}x{W} images with cut_area_ratio={self.cut_area_ratio} "
                             f"and cut_aspect_ratio={self.cut_aspect_ratio}); lower n_holes")

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim != 4:
            raise ValueError(f"GridMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        H, W = leaf.shape[-2:]
        self.check_size(H, W)
        n = self.distinct(B)
        lo, hi = self.n_holes
        holes = torch.randint(lo, hi + 1, (n,), device=device, **rng(g))
        hole_ar = self._uniform(self.hole_aspect_ratio, n, g, device)
        area = torch.floor(H * W * self._uniform(self.cut_area_ratio, n, g, device))
        cut_ar = self._uniform(self.cut_aspect_ratio, n, g, device)
        cut_w = torch.floor(torch.sqrt(area / cut_ar)).clamp(1, W).long()
        cut_h = torch.floor(cut_w * cut_ar).clamp(1, H).long()
        u = torch.rand(n, 2, device=device, dtype=torch.float64, **rng(g))
        x0 = torch.floor((W - cut_w) * u[:, 0]).long()
        y0 = torch.floor((H - cut_h) * u[:, 1]).long()
        pw = torch.ceil(cut_w / holes).long().clamp(min=2)  # cell width
        ph = torch.floor(pw * hole_ar).long().clamp(min=2)  # cell height
        ratio = torch.sqrt(1 - lam[:n].to(torch.float64))
        hw = torch.floor(pw * ratio).long().clamp(min=1)
        hw = torch.minimum(hw, pw - 1)
        hh = torch.minimum(torch.floor(ph * ratio).long().clamp(min=1), ph - 1)
        unmixed = lam[:n] >= 1  # p's unmixed rows (and alpha 0): no holes
        rx = torch.arange(W, device=device)[None, :] - x0[:, None]  # (n, W)
        ry = torch.arange(H, device=device)[None, :] - y0[:, None]  # (n, H)
        in_x = (rx >= 0) & (rx < cut_w[:, None]) & (rx.remainder(pw[:, None]) < hw[:, None])
        in_y = (ry >= 0) & (ry < cut_h[:, None]) & (ry.remainder(ph[:, None]) < hh[:, None])
        take = in_y[:, :, None] & in_x[:, None, :] & ~unmixed[:, None, None]  # (n, H, W)
        if n != B:
            take = take.expand(B, H, W)
        return Mask(take)
