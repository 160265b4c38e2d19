"""SmoothMix (Lee et al. 2020, "SmoothMix: a Simple Yet Effective Data Augmentation to Train Robust
Classifiers"; OpenMixup's ``smoothmix``): a soft Gaussian blob of the partner.

Convention: ``lam`` weights the original row: the mean of its per-pixel weight, exactly.
"""
from __future__ import annotations

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Mask
from ..registry import register
from ..sampling import rng

__all__ = ["SmoothMix"]


@register("smoothmix", inputs=("images",),
          when="When box edges hurt: a soft blob instead of a sharp box; reported more robust to image corruptions.")
class SmoothMix(Mixer):
    """SmoothMix (Lee et al. 2020): blend in the partner under a soft Gaussian blob.

    The partner's weight at pixel ``(y, x)`` is ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``
    with the centre uniform over the pixels and ``sigma ~ U(sigma_range) * H`` (OpenMixup's
    ``smoothmix``: ``U(0.25, 0.5)``); ``lam = 1 - mean(weight)``, the original's exact share.

    Differences from OpenMixup's code, on purpose: its kernel is ``H x H`` (wrong for non-square
    images; here ``H x W``), and it returns the partner's share as ``lam`` beside ``y_a`` (here
    ``lam`` weights the original, as everywhere in mixlab). No Beta draw: OpenMixup draws one
    and then overwrites it with the kernel's mean, so the blob alone sets the share.

    Args:
        sigma: range of sigma as a share of the image height (default (0.25, 0.5)).
        mode: ``"batch"`` (one blob for the batch, as OpenMixup) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer` (2-D images ``(B, C, H, W)``; integer maps
            cannot follow a soft blob: pass them as the target).
    """

    def __init__(self, *, sigma=(0.25, 0.5), **common):
        super().__init__(**common)
        if not isinstance(sigma, (tuple, list)) or len(sigma) != 2:
            raise ValueError(f"sigma must be a pair (low, high) of shares of the height, got {sigma!r}")
        low, high = (V.real(v, "sigma", positive=True) for v in sigma)
        if low > high:
            raise ValueError(f"sigma must be a pair (low, high) with low <= high, got {sigma!r}")
        self.sigma = (low, high)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim != 4:
            raise ValueError(f"SmoothMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        H, W = leaf.shape[-2:]
        n = self.distinct(B)
        u = torch.rand(n, 3, device=device, **rng(g))
        cy, cx = torch.floor(u[:, 0] * H), torch.floor(u[:, 1] * W)  # uniform pixel centres
        low, high = self.sigma
        sigma = (low + (high - low) * u[:, 2]) * H  # (n,)
        yy = torch.arange(H, device=device, dtype=torch.float32)
        xx = torch.arange(W, device=device, dtype=torch.float32)
        d2 = (yy[None, :, None] - cy[:, None, None]) ** 2 + (xx[None, None, :] - cx[:, None, None]) ** 2
        weight = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))  # (n, H, W): the partner's weight
        weight = torch.where((lam[:n] < 1)[:, None, None], weight, torch.zeros_like(weight))  # p's unmixed rows
        if n != B:
            weight = weight.expand(B, H, W)
        return Mask(weight)
