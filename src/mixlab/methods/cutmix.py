"""CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features"; official code clovaai/CutMix-PyTorch): paste a box of the partner.

Convention: ``lam`` weights the original row: the exact share of positions outside the box.
"""
from __future__ import annotations

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..params import sample_box
from ..regions import Box
from ..registry import register

__all__ = ["CutMix", "region_shape", "cut_boxes"]


def region_shape(leaf: torch.Tensor, box_dims, name: str) -> tuple:
    """The trailing sizes a box or mask covers: the last ``box_dims`` dims (default all but batch and channel)."""
    D = leaf.ndim - 2 if box_dims is None else box_dims
    if D < 1 or D > leaf.ndim - 1:
        raise ValueError(
            f"{name} needs inputs shaped (B, C, *spatial) with 1 to 3 spatial dims (or box_dims set), "
            f"got shape {tuple(leaf.shape)} with box_dims={box_dims!r}"
        )
    return tuple(leaf.shape[-D:])


def cut_boxes(lam, B, shape, mode, generator):
    """Boxes for the requested ``lam`` ``(B,)``: one shared box in batch mode, else one per row."""
    if mode == "batch":
        box, _ = sample_box(lam[:1], shape, generator=generator)
        return Box(box.box.expand(B, -1, -1).contiguous(), shape)
    box, _ = sample_box(lam, shape, generator=generator)
    return box


@register("cutmix", inputs=("images", "sequences", "volumes"),
          when="Image classification (CNN or ViT): beats MixUp and Cutout on ImageNet; helps localisation, transfer.")
class CutMix(Mixer):
    """CutMix (Yun et al. 2019): paste a box of the partner into each row, on 1-D, 2-D or 3-D data.

    The box's volume fraction is ``1 - lam`` (up to rounding and clipping); the returned ``lam``
    is exactly ``1 - pasted / total`` (the region's kept share). The last ``box_dims`` dimensions
    are cut (default: all but batch and channel, so ``(B, C, T)`` audio, ``(B, C, H, W)`` images
    and ``(B, C, D, H, W)`` volumes all work). Integer maps over the same dims (segmentation
    masks) are pasted with the same boxes, and dense targets follow them (see
    :class:`mixlab.MixedTarget`).

    Args:
        alpha: Beta concentration; default 1.0 (the CutMix paper).
        box_dims: how many trailing dims are cut (default ``x.ndim - 2``).
        patch_size: snap boxes to a vision transformer's patch grid (boxes of whole patches, so
            every token comes from one image); the cut dims must be multiples of it.
        mode: ``"batch"`` (one box for the batch, as timm and torchvision) or ``"sample"`` (one
            box per row).
        Shared options: see :class:`mixlab.Mixer`.

    timm's ``correct_lam=False`` (keep the drawn lam, which mislabels clipped boxes) is not
    offered: the label weight is always the share actually kept.

    Example:
        >>> import torch, mixlab
        >>> audio = torch.randn(4, 1, 16000)                      # (B, C, T): CutMix along time
        >>> mixed, target = mixlab.CutMix(alpha=1.0, mode="sample")(audio, torch.tensor([0, 1, 2, 3]))
        >>> mixed.shape, target.params.region.box.shape
        (torch.Size([4, 1, 16000]), torch.Size([4, 1, 2]))
    """

    def __init__(self, alpha=1.0, *, box_dims=None, patch_size=None, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.box_dims = None if box_dims is None else V.integer(box_dims, "box_dims", minimum=1)
        self.patch_size = None if patch_size is None else V.integer(patch_size, "patch_size", minimum=1)

    def draw(self, leaf, lam, index, g, *, y=None):
        B = leaf.shape[0]
        shape = region_shape(leaf, self.box_dims, type(self).__name__)
        P = self.patch_size
        if P is None:
            return cut_boxes(lam, B, shape, self.mode, g)
        if any(s % P for s in shape):
            raise ValueError(f"CutMix(patch_size={P}): the cut dims {shape} must be multiples of the patch size")
        grid = cut_boxes(lam, B, tuple(s // P for s in shape), self.mode, g)  # on the ViT's grid
        return Box(grid.box * P, shape)  # whole patches: every token is one image's
