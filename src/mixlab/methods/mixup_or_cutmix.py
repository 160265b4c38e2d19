"""Either MixUp or CutMix per batch or per row (what timm's ``Mixup`` does with both alphas set).

Convention: ``lam`` weights the original row; the CutMix rows' lam is the exact kept share.
"""
from __future__ import annotations

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Box
from ..registry import register
from ..sampling import rng, sample_beta
from .cutmix import cut_boxes, region_shape

__all__ = ["MixUpOrCutMix"]


@register("mixup-or-cutmix", inputs=("images", "sequences", "volumes"), alpha=True,
          when="ImageNet-style recipes (DeiT, timm) that switch between the two per batch; the ViT default.")
class MixUpOrCutMix(Mixer):
    """Either MixUp or CutMix, CutMix with probability ``switch_prob`` (what timm's ``Mixup`` does).

    In ``"batch"`` mode one choice is made for the whole batch; in ``"sample"`` mode each row
    chooses, and both kinds of row share one call (MixUp rows carry an empty box marked
    ``Box.linear``, with their own lam in ``Box.linear_lam``). The choice is drawn on the device: no
    host sync. Because some rows may be blended, integer maps in the batch are refused (pass
    them as the target instead).

    Args:
        mixup_alpha, cutmix_alpha: Beta concentrations; 0 turns that branch off.
        switch_prob: probability of CutMix when both are on.
        box_dims: how many trailing dims CutMix cuts (default ``x.ndim - 2``).
        Shared options: see :class:`mixlab.Mixer`.
    """

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=1.0, *, switch_prob=0.5, box_dims=None, **common):
        super().__init__(**common)
        self.mixup_alpha = V.alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_alpha = V.alpha(cutmix_alpha, "cutmix_alpha")
        self.switch_prob = V.probability(switch_prob, "switch_prob")
        self.box_dims = None if box_dims is None else V.integer(box_dims, "box_dims", minimum=1)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        shape = region_shape(leaf, self.box_dims, type(self).__name__)
        n = self.distinct(B)
        active = lam[:n] < 1  # p's coin (lam 0: mix, 1: leave)
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            active = torch.zeros_like(active)
        ones = torch.ones(n, device=device)
        lam_mix = sample_beta(n, self.mixup_alpha, generator=g, device=device) if self.mixup_alpha > 0 else ones
        lam_cut = sample_beta(n, self.cutmix_alpha, generator=g, device=device) if self.cutmix_alpha > 0 else ones
        if self.mixup_alpha == 0:
            use_cut = torch.ones(n, dtype=torch.bool, device=device)
        elif self.cutmix_alpha == 0:
            use_cut = torch.zeros(n, dtype=torch.bool, device=device)
        else:
            use_cut = torch.rand(n, device=device, **rng(g)) < self.switch_prob
        lam_mix = torch.where(active, lam_mix, ones)
        lam_cut = torch.where(active, lam_cut, ones)
        if n != B:
            lam_mix, lam_cut, use_cut = lam_mix.expand(B), lam_cut.expand(B), use_cut.expand(B)
        box = cut_boxes(lam_cut, B, shape, self.mode, g)
        boxes = torch.where(use_cut[:, None, None], box.box, torch.zeros_like(box.box))  # MixUp rows: empty box
        return Box(boxes, shape, linear=(~use_cut).contiguous(), linear_lam=lam_mix.contiguous())
