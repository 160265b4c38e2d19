"""Token-level mixing (after Liu et al. 2022, "TokenMix: Rethinking Image Mixing for Data
Augmentation in Vision Transformers"): a random set of ``round((1 - lam) * N)`` tokens taken from
the partner, on the patch grid of ``(B, C, H, W)`` images or over ``(B, N, D)`` token sequences.

Convention: ``lam`` weights the original row: the exact share of tokens it keeps.
"""
from __future__ import annotations

import math

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Mask
from ..registry import register
from ..sampling import rng

__all__ = ["TokenMix"]


@register("tokenmix", inputs=("images", "tokens"),
          when="Vision transformers: scattered patch-aligned tokens help ViTs (DeiT) more than CutMix's single box.")
class TokenMix(Mixer):
    """Token-level mixing for vision transformers: a random token set taken from the partner.

    For images ``(B, C, H, W)`` the tokens are the ``patch_size`` x ``patch_size`` patches of the
    ViT's grid (``H`` and ``W`` multiples of it); for token sequences ``(B, N, D)`` (embeddings,
    without a class token) they are the ``N`` positions. Each row takes ``k = round((1 - lam) * N)``
    tokens, chosen uniformly at random, from its partner; ``lam = 1 - k / N`` exactly.

    TokenMix's paper draws block-wise token masks and re-weights the label with a teacher's
    attention; here the set is uniform and the label follows the token share (for an
    attention-based label, re-weight the target with :func:`mixlab.policies.transmix_target`).

    Args:
        alpha: Beta concentration for ``lam``.
        patch_size: the ViT's patch side, for image inputs.
        mode: ``"sample"`` (a set per row, default) or ``"batch"`` (one set for the batch).
        Shared options: see :class:`mixlab.Mixer`.
    """

    default_mode = "sample"

    def __init__(self, alpha=1.0, *, patch_size=16, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.patch_size = V.integer(patch_size, "patch_size", minimum=1)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim == 4:
            H, W = leaf.shape[-2:]
            P = self.patch_size
            if H % P or W % P:
                raise ValueError(f"TokenMix: image size {H}x{W} is not a multiple of patch_size={P}")
            grid = (H // P, W // P)
        elif leaf.ndim == 3:
            grid = (leaf.shape[1],)
        else:
            raise ValueError(f"TokenMix needs images (B, C, H, W) or token sequences (B, N, D), got shape "
                             f"{tuple(leaf.shape)}")
        n = self.distinct(B)
        N = math.prod(grid)
        k = torch.round((1 - lam[:n].to(torch.float64)) * N).long()  # tokens from the partner
        order = torch.rand(n, N, device=device, **rng(g)).argsort(dim=1)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(n, N))
        take = (rank < k[:, None]).view((n,) + grid)  # (n, *grid)
        if leaf.ndim == 4:
            take = take.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2)  # (n, H, W)
        else:
            take = take[:, :, None].expand(n, grid[0], leaf.shape[2])  # (n, N, D): whole tokens
        if n != B:
            take = take.expand((B,) + tuple(take.shape[1:]))
        return Mask(take)
