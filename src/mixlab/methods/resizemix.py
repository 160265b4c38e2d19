"""ResizeMix (Qin et al. 2020, "ResizeMix: Mixing Data with Preserved Object Information and True
Labels"; OpenMixup's ``resizemix``): the whole partner, resized, pasted into a box of side
``tau * S`` with ``tau ~ U(scale)``; ``lam = 1 - box area``. The region (:class:`ResizedBox`)
moves the partner's content, so segmentation maps and dense targets are resized the same way
(nearest neighbour, values exact).

Convention: ``lam`` weights the original row: the exact share outside the box.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .. import _fast
from .. import _validate as V
from ..mixer import Mixer
from ..regions import Box
from ..registry import register
from ..sampling import rng
from .cutmix import region_shape

__all__ = ["ResizeMix", "ResizedBox", "INTERPOLATIONS"]

INTERPOLATIONS = ("nearest", "bilinear")


@dataclasses.dataclass(frozen=True, eq=False)
class ResizedBox(Box):
    """A box into which the whole partner is resized (ResizeMix), over the last ``D`` dims.

    ``partner`` returns full-size rows whose box holds the resized partner; ``apply`` pastes
    them. Nearest neighbour (PyTorch's ``F.interpolate(mode="nearest")`` indices) keeps values
    exact, so integer maps and dense labels follow; ``"bilinear"`` (2-D, float leaves only)
    equals ``F.interpolate(mode="bilinear", align_corners=False)``.
    """

    interpolation: str = "nearest"

    def partner(self, src, index):
        xp = src.index_select(0, index)  # (B, ..., *S)
        if self.interpolation == "bilinear" and xp.is_floating_point() and len(self.shape) == 2 and xp.ndim == 4:
            return self._bilinear(xp)
        D, ndim = len(self.shape), xp.ndim
        lo = self.box[..., 0]  # (B, D)
        size = (self.box[..., 1] - lo).clamp(min=1)
        for d, S in enumerate(self.shape):
            pos = torch.arange(S, device=xp.device)
            i = (pos[None, :] - lo[:, d:d + 1]).clamp(min=0)  # (B, S): position inside the box
            scale = S / size[:, d:d + 1].to(torch.float32)  # input / output size, as interpolate computes it
            src_i = torch.floor(i.to(torch.float32) * scale).long().clamp(max=S - 1)
            view = [xp.shape[0]] + [1] * (ndim - 1)
            view[ndim - D + d] = S
            xp = xp.gather(ndim - D + d, src_i.view(view).expand(xp.shape))
        return xp

    def _bilinear(self, xp):
        B, _, H, W = xp.shape
        lo = self.box[..., 0].to(torch.float32)
        size = (self.box[..., 1] - self.box[..., 0]).clamp(min=1).to(torch.float32)
        ys = (2 * (torch.arange(H, device=xp.device)[None] - lo[:, 0:1]) + 1) / size[:, 0:1] - 1  # (B, H)
        xs = (2 * (torch.arange(W, device=xp.device)[None] - lo[:, 1:2]) + 1) / size[:, 1:2] - 1  # (B, W)
        grid = torch.stack([xs[:, None, :].expand(B, H, W), ys[:, :, None].expand(B, H, W)], dim=-1)
        return F.grid_sample(xp, grid.to(xp.dtype), mode="bilinear", padding_mode="border", align_corners=False)

    def _resized(self, rows: torch.Tensor, sizes: list) -> torch.Tensor:
        """``rows`` ``(n, ..., *S)`` resized to ``sizes`` over the last D dims (as ``F.interpolate``)."""
        D, ndim = len(self.shape), rows.ndim
        if self.interpolation == "bilinear" and rows.is_floating_point() and D == 2 and ndim == 4:
            return F.interpolate(rows, size=tuple(sizes), mode="bilinear", align_corners=False)
        for d, (S, b) in enumerate(zip(self.shape, sizes)):  # nearest: select source lines, box-sized first
            src_i = torch.floor(torch.arange(b, dtype=torch.float32) * (S / torch.tensor(b, dtype=torch.float32)))
            rows = rows.index_select(ndim - D + d, src_i.long().clamp(max=S - 1))
        return rows

    @property
    def pasteable(self) -> bool:
        return True  # integer leaves are resized by nearest neighbour: values stay exact

    def rows(self, sl):
        return ResizedBox(self.box[sl].contiguous(), self.shape, interpolation=self.interpolation)

    def to(self, device):
        return ResizedBox(self.box.to(device), self.shape, interpolation=self.interpolation)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        if self.interpolation == "bilinear" and not x.is_floating_point():
            region = ResizedBox(self.box, self.shape, interpolation="nearest")  # labels and ids: nearest keeps them exact
            return region.apply(x, src, lam, index, fast=fast, inplace=inplace)
        if fast:  # resize only into the box, no full-size partner or mask (the door decides where it applies)
            nearest = self.interpolation == "nearest" or not x.is_floating_point()
            out = _fast.resized_paste(x, src, index, self.box, self._resized, nearest=nearest, inplace=inplace)
            if out is not None:
                return out
        out = torch.where(self.mask(x.ndim), self.partner(src, index).to(x.dtype), x)
        return out.contiguous(memory_format=_fast.memory_format(x))


@register("resizemix", inputs=("images", "sequences", "volumes"),
          when="Images whose partner must stay whole: pastes the resized partner, as good as saliency at CutMix cost.")
class ResizeMix(Mixer):
    """ResizeMix (Qin et al. 2020): paste the whole partner, resized, into a box.

    The box's side is ``floor(tau * S_d)`` in each covered dim with ``tau ~ U(scale)``, its
    centre uniform, its ends ``centre -+ side // 2`` clipped to the tensor (OpenMixup's
    ``rand_bbox_tao``); ``lam = 1 - box volume / prod(S)`` exactly. No Beta draw: the box scale
    sets the share.

    Args:
        scale: range of ``tau``, the box side as a share of the image side (default (0.1, 0.8),
            the paper's).
        interpolation: ``"nearest"`` (default, OpenMixup's; exact for any dtype) or
            ``"bilinear"`` (2-D float leaves; integer leaves still use nearest).
        box_dims: how many trailing dims the box covers (default ``x.ndim - 2``).
        mode: ``"batch"`` (one box for the batch, as the official code) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer`.
    """

    def __init__(self, *, scale=(0.1, 0.8), interpolation="nearest", box_dims=None, **common):
        super().__init__(**common)
        if not isinstance(scale, (tuple, list)) or len(scale) != 2:
            raise ValueError(f"scale must be a pair (low, high) with 0 <= low <= high <= 1, got {scale!r}")
        low, high = (V.real(v, "scale", minimum=0.0, maximum=1.0) for v in scale)
        if low > high:
            raise ValueError(f"scale must be a pair (low, high) with 0 <= low <= high <= 1, got {scale!r}")
        self.scale = (low, high)
        self.interpolation = V.choice(interpolation, "interpolation", INTERPOLATIONS)
        self.box_dims = None if box_dims is None else V.integer(box_dims, "box_dims", minimum=1)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        shape = region_shape(leaf, self.box_dims, type(self).__name__)
        n = self.distinct(B)
        low, high = self.scale
        tau = low + (high - low) * torch.rand(n, device=device, **rng(g))  # (n,)
        tau = torch.where(lam[:n] < 1, tau, torch.zeros_like(tau))  # rows p leaves unmixed: no box
        sizes = _fast.consts(shape, device=device, dtype=torch.float32)  # (D,), no host-to-device copy
        cut = torch.floor(tau[:, None] * sizes).long()  # (n, D)
        centre = torch.floor(torch.rand(n, len(shape), device=device, **rng(g)) * sizes).long()
        centre = torch.minimum(centre, sizes.long() - 1)
        lo = (centre - cut // 2).clamp(min=0)
        hi = torch.minimum(centre + cut // 2, sizes.long())
        hi = torch.where(cut > 0, hi, lo)  # tau * S below one pixel: no box
        box = torch.stack([lo, torch.maximum(lo, hi)], dim=2)  # (n, D, 2)
        if n != B:
            box = box.expand(B, -1, -1).contiguous()
        return ResizedBox(box, shape, interpolation=self.interpolation)
