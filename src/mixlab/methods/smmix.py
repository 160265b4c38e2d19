"""SMMix (Chen, Lin, Zhang, Zhang, Ji, Shen and Wang, ICCV 2023, "SMMix: Self-Motivated Image Mixing for Vision
Transformers"; official code ChenMnZ/SMMix: ``smmix.py``, ``SMMix.smmix`` and ``index_translate``, the attention in
``deit.py``).

A square of ``s x s`` patches (``s`` uniform over ``int(side * 0.25) .. int(side * 0.75)``, one per batch) is cut from
each image where the model's own attention is lowest and filled with the partner's ``s x s`` patches where *its*
attention is highest (the two windows may sit at different places: the content moves). The attention is the last
block's softmax attention among the patch tokens, averaged over heads and queries, of the unmixed batch in eval mode.

The label is the area: ``lam = 1 - s^2 / side^2`` (``mixup_target`` in the official code). SMMix's fine-grained
label assignment and its consistency loss are model-side (extra token heads fed the token masks of
:func:`smmix_token_masks`, and a KL term to the mixed un-mixed predictions) and are not part of the mixer.

Convention: ``lam`` weights the original row: the exact share of its pixels (tokens) kept.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Mask, Region, box_mask
from ..registry import register
from ..sampling import rng
from .mixpro import vit_attention

__all__ = ["SMMix", "MovedMask", "smmix_token_masks", "window_sums"]


@dataclasses.dataclass(frozen=True, eq=False)
class MovedMask(Mask):
    """A binary mask whose partner content moves: at a masked position ``p`` the partner's value at ``source[p]``.

    Attributes:
        values: bool ``(B, *shape)``: True where the partner's content goes.
        source: int64 ``(B, *shape)``: the flat position (over ``shape``) of the partner each position reads.
    """

    source: torch.Tensor = None

    def partner(self, src, index):
        rows = src.index_select(0, index)  # (B, ..., *shape)
        D = len(self.shape)
        flat = rows.flatten(rows.ndim - D)  # (B, ..., P)
        pos = self.source.flatten(1).view((rows.shape[0],) + (1,) * (flat.ndim - 2) + (flat.shape[-1],))
        return flat.gather(-1, pos.expand(flat.shape)).view(rows.shape)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        return Region.apply(self, x, src, lam, index, fast=fast, inplace=inplace)  # through partner()

    def rows(self, sl):
        return MovedMask(self.values[sl].contiguous(), source=self.source[sl].contiguous())

    def to(self, device):
        return MovedMask(self.values.to(device), source=self.source.to(device))


def window_sums(attention: torch.Tensor, grid, s: torch.Tensor) -> torch.Tensor:
    """Sums of ``attention`` over every ``s x s`` window of the patch grid, by top-left patch (float64).

    Args:
        attention: ``(B, N)`` row-major over ``grid = (gh, gw)``; s: int64 ``(B,)`` window sides.

    Returns:
        ``(B, gh * gw)``: the window sum at each top-left position, NaN where the window does not fit.
    """
    B, (gh, gw) = attention.shape[0], grid
    a = attention.to(torch.float64).view(B, gh, gw)
    integral = torch.nn.functional.pad(a.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (B, gh + 1, gw + 1)
    r = torch.arange(gh, device=a.device)[None, :, None]
    c = torch.arange(gw, device=a.device)[None, None, :]
    s3 = s[:, None, None]
    r2, c2 = (r + s3).clamp(max=gh), (c + s3).clamp(max=gw)
    flat = integral.flatten(1)

    def at(i, j):
        return flat.gather(1, (i * (gw + 1) + j).expand(B, gh, gw).flatten(1))
    sums = at(r2, c2) - at(r.expand(B, gh, gw), c2) - at(r2, c.expand(B, gh, gw)) + at(r, c)
    fits = ((r + s3 <= gh) & (c + s3 <= gw)).flatten(1)
    return sums.masked_fill(~fits, float("nan"))


def smmix_token_masks(params, patch_size=None):
    """The official ``(target_mask, source_mask)``, bool ``(B, N)`` over the patch tokens: the original's and the
    partner's tokens of the mixed image (what SMMix's fine-grained token heads pool over). ``patch_size`` for image
    params; ``None`` for token params ``(B, N, D)``."""
    values = params.region.values
    source = values[:, :, 0] if patch_size is None else values[:, ::patch_size, ::patch_size].flatten(1)
    return ~source, source


@register("smmix", inputs=("images", "tokens"),
          when="vision transformers: the partner's most attended patches over the original's least attended (DeiT "
               "and PVT on ImageNet in the paper); needs the model's attention")
class SMMix(Mixer):
    """SMMix (Chen et al. 2023): the partner's most attended patch window replaces the original's least attended.

    Each mixed row takes a square of ``s x s`` patches from its partner (``s`` uniform over the official list,
    ``int(side * min_side_ratio) .. int(side * max_side_ratio)``, at least 1, ``side`` the patch grid's shorter
    side), one ``s`` per batch (``"batch"`` mode, the official) or per row (``"sample"``). Where it goes and where it
    is cut from are read from patch attention ``(B, N)`` (row-major over the patch grid):

    - ``t(x, y, attention=a)``: given per call (the attention of the *unmixed* batch);
    - ``SMMix(model=vit)``: computed by one forward of a timm ViT in eval mode (its mode restored), the last block's
      softmax attention among the patch tokens averaged over heads and queries (the official ``deit.py``);
    - neither: both windows are placed uniformly at random (a patch-aligned CutMix with a moved partner window;
      not SMMix's self-motivation, say so when reporting).

    The labels follow the area, ``lam = 1 - s^2 / N`` (the official ``mixup_target``). The official recipe switches
    between SMMix and MixUp per batch (``switch_prob = 0.5``) and adds model-side losses (see the module docstring).

    Args:
        patch_size: the ViT's patch side in pixels (images); token inputs ``(B, N, D)`` are the ``N`` patch tokens of
            a square grid, without a class token.
        min_side_ratio, max_side_ratio: the window sides as shares of the grid side (official 0.25 and 0.75).
        model: the timm ViT being trained (images only; see above).
        mode: ``"batch"`` (default) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer`.
    """

    def __init__(self, *, patch_size=16, min_side_ratio=0.25, max_side_ratio=0.75, model=None, **common):
        super().__init__(**common)
        self.patch_size = V.integer(patch_size, "patch_size", minimum=1)
        self.min_side_ratio = V.real(min_side_ratio, "min_side_ratio", minimum=0.0, maximum=1.0)
        self.max_side_ratio = V.real(max_side_ratio, "max_side_ratio", minimum=self.min_side_ratio, maximum=1.0)
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a timm VisionTransformer (nn.Module), got {V.describe(model)}")
        self.model = model

    def _grid(self, leaf):
        if leaf.ndim == 4:
            H, W = leaf.shape[-2:]
            P = self.patch_size
            if H % P or W % P:
                raise ValueError(f"SMMix: image size {H}x{W} is not a multiple of patch_size={P}")
            return H // P, W // P
        if leaf.ndim == 3:
            side = math.isqrt(leaf.shape[1])
            if side * side != leaf.shape[1]:
                raise ValueError(f"SMMix: {leaf.shape[1]} tokens are not a square patch grid (give the patch tokens "
                                 f"without a class token)")
            return side, side
        raise ValueError(f"SMMix needs images (B, C, H, W) or patch tokens (B, N, D), got shape {tuple(leaf.shape)}")

    def _attention(self, leaf, attention, grid):
        B, N = leaf.shape[0], grid[0] * grid[1]
        if attention is not None:
            if not isinstance(attention, torch.Tensor) or not attention.is_floating_point() \
                    or tuple(attention.shape) != (B, N):
                raise ValueError(f"attention must be a float tensor (B, N) = {(B, N)} over the patch grid {grid}, got "
                                 f"{V.describe(attention)}")
            return attention.detach()
        if self.model is None or B == 0:
            return None
        if leaf.ndim != 4:
            raise ValueError("SMMix(model=...) runs the ViT on images; for token inputs pass attention= per call")
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError("SMMix(model=...) cannot run in a DataLoader worker (the worker's model is a stale "
                               "copy); mix in the training loop, or pass t(x, y, attention=a)")
        was = self.model.training
        self.model.eval()
        try:
            _, attn, prefix = vit_attention(self.model, leaf if leaf.is_floating_point() else leaf.float())
        finally:
            self.model.train(was)
        if attn.shape[-1] - prefix != N:
            raise ValueError(f"SMMix: the model has {attn.shape[-1] - prefix} patch tokens, the images {N} patches of "
                             f"{self.patch_size} pixels")
        return attn[:, :, prefix:, prefix:].mean(dim=(1, 2))

    def draw(self, leaf, lam, index, g, *, y=None, attention=None):
        grid = self._grid(leaf)
        attention = self._attention(leaf, attention, grid)
        B, device, (gh, gw) = leaf.shape[0], leaf.device, grid
        side = min(gh, gw)
        lo = max(1, int(side * self.min_side_ratio))
        hi = max(lo, int(side * self.max_side_ratio))
        n = self.distinct(B)
        s = torch.randint(lo, hi + 1, (n,), device=device, **rng(g))
        s = (s.expand(B) if n != B else s) * (lam < 1)  # rows left alone: an empty window
        if attention is None:  # no attention: both windows uniformly random
            u = torch.rand(B, 2, 2, device=device, **rng(g))
            room = torch.stack([gh - s, gw - s], 1)[:, None, :] + 1  # (B, 1, 2)
            corners = torch.minimum((u * room).long(), room - 1)  # (B, 2 windows, 2 dims)
            target, source = corners[:, 0], corners[:, 1]
        else:
            sums = window_sums(attention, grid, s)
            low = sums.nan_to_num(nan=float("inf")).argmin(1)
            high = sums.nan_to_num(nan=float("-inf")).index_select(0, index).argmax(1)
            target = torch.stack([low // gw, low % gw], 1)
            source = torch.stack([high // gw, high % gw], 1)
        return self._region(leaf, grid, s, target, source)

    def _region(self, leaf, grid, s, target, source):
        B, (gh, gw) = leaf.shape[0], grid
        shift = source - target  # (B, 2) in patches
        if leaf.ndim == 4:
            P, (H, W) = self.patch_size, leaf.shape[-2:]
            box = torch.stack([target * P, (target + s[:, None]) * P], 2)  # (B, 2, 2) pixels
            take = box_mask(box, (H, W), 3)  # (B, H, W)
            h = torch.arange(H, device=leaf.device)[None, :, None]
            w = torch.arange(W, device=leaf.device)[None, None, :]
            dh, dw = (shift[:, 0] * P)[:, None, None], (shift[:, 1] * P)[:, None, None]
            pos = torch.where(take, (h + dh) * W + (w + dw), h * W + w)  # (B, H, W)
            return MovedMask(take, source=pos)
        D = leaf.shape[2]
        box = torch.stack([target, target + s[:, None]], 2)
        cells = box_mask(box, (gh, gw), 3).flatten(1)  # (B, N)
        t = torch.arange(gh * gw, device=leaf.device)[None, :]
        moved = torch.where(cells, t + shift[:, :1] * gw + shift[:, 1:], t)  # (B, N)
        d = torch.arange(D, device=leaf.device)[None, None, :]
        return MovedMask(cells[:, :, None].expand(B, gh * gw, D), source=moved[:, :, None] * D + d)
