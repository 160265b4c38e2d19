"""MixPro (Zhao, Wang, Chen, Xie, Xu and Tian, ICLR 2023, "MixPro: Data Augmentation with MaskMix and Progressive
Attention Labeling for Vision Transformer"; official code fistyee/MixPro: ``utils.MaskMix`` and the PAL lines of
``main.train_one_epoch``).

MaskMix: the image is cut into square cells of ``mask_patch_size`` pixels, a whole number of the ViT's patches (the
last row and column of cells cropped to the image, as the official does); each row keeps ``ceil(T * lam)`` of its
``T`` cells, chosen at random per row, and takes the others from its partner.

Progressive Attention Labeling (PAL): the label weight of the original is
``sim * lam_attn + (1 - sim) * lam_area``, with ``lam_attn`` the share of the class token's attention (last block,
mean over heads) that falls on the original's patches of the *mixed* image, ``lam_area`` the share of its area, and
``sim`` the cosine similarity between the area-mixed (smoothed) target and the model's softmax prediction on the
mixed image: the more the model agrees with the area label, the more its attention is trusted.

Convention: ``lam`` weights the original row: the exact share of its pixels kept (the inputs'); with PAL, the labels'
weights are ``(lam_pal, 1 - lam_pal)`` in ``target.params.label_weights``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams
from ..regions import Mask
from ..registry import register
from ..sampling import rng
from ..targets import MixedTarget

__all__ = ["MixPro", "PALMask", "maskmix_cells", "pal_weights", "pal_target", "vit_attention"]


def vit_attention(model: nn.Module, x: torch.Tensor):
    """The logits and the last block's softmax attention of a timm ``VisionTransformer`` (no gradient).

    The attention is recomputed from the last attention module's input (its ``qkv``, ``q_norm``, ``k_norm`` and
    ``scale``), so it works with timm's fused attention, which never forms the matrix; it is the softmax before
    attention dropout, as the official ViTs of MixPro and SMMix return it.

    Returns:
        ``(logits, attn, prefix)``: ``(B, K)``, float32 ``(B, heads, T, T)`` over all tokens, and the number of
        prefix tokens (class and register tokens) before the patches.
    """
    blocks = getattr(model, "blocks", None)
    attn_mod = getattr(blocks[-1], "attn", None) if isinstance(blocks, nn.Sequential) and len(blocks) else None
    if attn_mod is None or not hasattr(attn_mod, "qkv") or not hasattr(attn_mod, "num_heads"):
        raise ValueError(f"vit_attention reads timm VisionTransformers (model.blocks[-1].attn with qkv and num_heads), "
                         f"got {type(model).__name__}; pass the attention per call instead")
    kept = {}
    handle = attn_mod.register_forward_pre_hook(lambda mod, args: kept.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            logits = model(x)
            t = kept["x"]
            B, N, _ = t.shape
            qkv = attn_mod.qkv(t).reshape(B, N, 3, attn_mod.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k = qkv[0], qkv[1]
            q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
            attn = ((q * attn_mod.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)  # (B, heads, T, T)
    finally:
        handle.remove()
    return logits, attn, int(getattr(model, "num_prefix_tokens", 1))


def maskmix_cells(lam: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The official cell choice: row ``i`` keeps the first ``ceil(T * lam_i)`` cells of its permutation ``order[i]``.

    Args:
        lam: ``(B,)`` the share of cells to keep; order: int64 ``(B, T)`` a permutation of the cells per row.

    Returns:
        bool ``(B, T)``: True where the original is kept.
    """
    B, T = order.shape
    count = torch.ceil(lam.to(torch.float64) * T).long()  # (B,)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T, device=order.device).expand(B, T))
    return rank < count[:, None]


def pal_weights(kept: torch.Tensor, attention: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                index: torch.Tensor, lam_area: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """The official PAL weight of the original, ``sim * lam_attn + (1 - sim) * lam_area``, float32 ``(B,)``.

    Args:
        kept: ``(B, N)`` 1 where the patch is the original's; attention: ``(B, N)`` the class token's attention to
            the patches of the mixed image; logits: ``(B, K)`` the model's output on it; y: ``(B,)`` class indices;
            index: ``(B,)`` partners; lam_area: ``(B,)`` the original's area share; smoothing: of the area target.
    """
    K = logits.shape[-1]
    off, on = smoothing / K, 1.0 - smoothing + smoothing / K
    y1 = torch.full((len(y), K), off, device=logits.device).scatter_(1, y[:, None], on)
    y2 = torch.full((len(y), K), off, device=logits.device).scatter_(1, y[index][:, None], on)
    area = lam_area.to(torch.float32)
    mixed_target = y1 * area[:, None] + y2 * (1 - area[:, None])
    kept, attention = kept.to(torch.float32), attention.to(torch.float32)
    w1, w2 = (kept * attention).sum(1), ((1 - kept) * attention).sum(1)
    lam_attn = w1 / (w1 + w2)
    sim = torch.cosine_similarity(mixed_target, F.softmax(logits.float(), dim=-1), dim=1)
    return sim * lam_attn + (1 - sim) * area


@dataclasses.dataclass(frozen=True, eq=False)
class PALMask(Mask):
    """MaskMix's binary mask (True = partner), with PAL's label weights ``(B, 2)`` when a model gave them."""

    label_weights: Optional[torch.Tensor] = None

    def rows(self, sl):
        lw = None if self.label_weights is None else self.label_weights[sl].contiguous()
        return PALMask(self.values[sl].contiguous(), label_weights=lw)

    def to(self, device):
        lw = None if self.label_weights is None else self.label_weights.to(device)
        return PALMask(self.values.to(device), label_weights=lw)


def _label_params(params: MixParams, weights: torch.Tensor) -> MixParams:
    return MixParams(params.lam, params.index, params.region, label_weights=weights)


def pal_target(target: MixedTarget, attention: torch.Tensor, logits: torch.Tensor, *, patch_size: int) -> MixedTarget:
    """PAL from the training forward itself (the official order: one forward gives the logits and the attention).

    ``x, target = MixPro(...)(x, y)``; ``logits, attn = model(x)`` (class-token attention to the patches, mean over
    heads, ``(B, N)``); ``target = pal_target(target, attn, logits.detach(), patch_size=P)``. Gives the weights
    ``MixPro(model=...)`` computes with its extra forward.
    """
    region = target.params.region
    if not isinstance(region, Mask) or len(region.shape) != 2:
        raise ValueError("pal_target re-weights a MixPro target (an image mask); got one without it")
    P = V.integer(patch_size, "patch_size", minimum=1)
    kept = ~region.values[:, ::P, ::P].flatten(1)  # (B, N): the original's patches
    if attention.shape != kept.shape:
        raise ValueError(f"attention must be (B, N) = {tuple(kept.shape)} (class token to the patches), got "
                         f"{V.describe(attention)}")
    lam = pal_weights(kept, attention.detach(), logits.detach(), target.y, target.params.index, target.params.lam,
                      target.label_smoothing)
    params = _label_params(target.params, torch.stack([lam, 1 - lam], 1))
    return MixedTarget(target.y, params, num_classes=target.num_classes, label_smoothing=target.label_smoothing)


@register("mixpro", inputs=("images", "tokens"),
          when="vision transformers: patch-aligned random cells, labels from the model's attention as it grows confident "
               "(DeiT and Swin on ImageNet in the paper)")
class MixPro(Mixer):
    """MixPro (Zhao et al. 2023): MaskMix's patch-aligned random cells, labels by Progressive Attention Labeling.

    ``lam ~ Beta(alpha, alpha)``; each row keeps ``ceil(T * lam)`` of the ``T`` cells of ``mask_patch_size`` pixels
    (random per row, also in ``"batch"`` mode, where the rows share ``lam``, as the official) and takes the rest
    from its partner. ``lam`` is the exact share of pixels kept (the official's ``mask_ratio`` when the cells tile
    the image).

    With ``model=`` (a timm ViT whose patches are ``patch_size`` pixels, with a class token), each call runs one
    extra forward of the model on the mixed images (no gradient, its current mode) and weighs the labels by PAL
    (:func:`pal_weights`): ``target.params.label_weights = (lam_pal, 1 - lam_pal)``; the area-mixed target that
    ``sim`` compares with uses the mixer's ``label_smoothing``. The official computes PAL from the training forward
    itself; to do that, call without a model and re-weight with :func:`pal_target`. Without either, the labels
    follow the area (``lam``): MixPro's ``PAL_ATTN = False`` setting.

    Args:
        alpha: Beta concentration (the official ``MASKMIX_ALPHA``, 1.0).
        patch_size: the ViT's patch side in pixels. Token inputs ``(B, N, D)`` are the ``N`` patch tokens of a
            square grid (no class token), cut into cells of ``mask_patch_size / patch_size`` tokens a side.
        mask_patch_size: the cell side in pixels, a multiple of ``patch_size`` (default: ``patch_size``, one patch a
            cell; the official configs use 4 patches for DeiT, ``56`` with patch 14, and 7 to 14 for Swin: pass
            ``mask_patch_size=4 * patch_size`` for the DeiT recipe).
        model: the timm ViT being trained, for PAL (see above).
        mode: ``"batch"`` (default: one ``lam`` for the batch, the official) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer` (images ``(B, C, H, W)``).
    """

    def __init__(self, alpha=1.0, *, patch_size=16, mask_patch_size=None, model=None, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.patch_size = V.integer(patch_size, "patch_size", minimum=1)
        self.mask_patch_size = self.patch_size if mask_patch_size is None else \
            V.integer(mask_patch_size, "mask_patch_size", minimum=1)
        if self.mask_patch_size % self.patch_size:
            raise ValueError(f"mask_patch_size={mask_patch_size} must be a multiple of patch_size={patch_size} "
                             f"(MaskMix's cells are whole patches)")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a timm VisionTransformer (nn.Module), got {V.describe(model)}")
        self.model = model

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim == 4:  # images: cells of mask_patch_size pixels
            (H, W), S = leaf.shape[-2:], self.mask_patch_size
        elif leaf.ndim == 3:  # patch tokens on a square grid: cells of mask_patch_size / patch_size tokens
            H = W = math.isqrt(leaf.shape[1])
            S = self.mask_patch_size // self.patch_size
            if H * H != leaf.shape[1]:
                raise ValueError(f"MixPro: {leaf.shape[1]} tokens are not a square patch grid (give the patch tokens "
                                 f"without a class token)")
            if self.model is not None:
                raise ValueError("MixPro(model=...) runs the ViT on images; for token inputs use pal_target")
        else:
            raise ValueError(f"MixPro needs images (B, C, H, W) or patch tokens (B, N, D), got shape "
                             f"{tuple(leaf.shape)}")
        grid = (-(-H // S), -(-W // S))
        order = torch.rand(B, grid[0] * grid[1], device=device, **rng(g)).argsort(dim=1)  # a permutation per row
        kept = maskmix_cells(lam, order).view(B, *grid)
        take = ~kept.repeat_interleave(S, 1).repeat_interleave(S, 2)[:, :H, :W]  # (B, H, W): True = partner
        if leaf.ndim == 3:
            return PALMask(take.flatten(1)[:, :, None].expand(B, H * W, leaf.shape[2]))
        if self.model is None or B == 0:
            return PALMask(take)
        return PALMask(take, label_weights=self._pal(leaf, take, lam, index, y))

    def _pal(self, leaf, take, lam, index, y):
        B, (H, W), P = leaf.shape[0], leaf.shape[-2:], self.patch_size
        if not isinstance(y, torch.Tensor) or y.shape != (B,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"MixPro(model=...) weighs the labels by the model's prediction: call t(x, y) with class "
                             f"indices y of shape ({B},), got {V.describe(y)}")
        if H % P or W % P:
            raise ValueError(f"MixPro: image size {H}x{W} is not a multiple of patch_size={P}")
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError("MixPro(model=...) cannot run in a DataLoader worker (the worker's model is a stale "
                               "copy); mix in the training loop, or use pal_target after the training forward")
        mixed = torch.where(take[:, None], leaf.index_select(0, index), leaf)
        logits, attn, prefix = vit_attention(self.model, mixed if mixed.is_floating_point() else mixed.float())
        if prefix < 1 or attn.shape[-1] - prefix != (H // P) * (W // P):
            raise ValueError(f"MixPro: the model must be a ViT with a class token over {(H // P) * (W // P)} patches "
                             f"of {P} pixels; it has {attn.shape[-1] - prefix} patch tokens after {prefix} prefix ones")
        kept = ~take[:, ::P, ::P].flatten(1)  # (B, N)
        w = pal_weights(kept, attn[:, :, 0, prefix:].mean(1), logits, y, index, 1 - take.flatten(1).double().mean(1),
                        self.label_smoothing)
        return torch.stack([w, 1 - w], 1).contiguous()

    def target_params(self, params: MixParams, y: torch.Tensor) -> MixParams:
        """The labels' parameters: PAL's weights when a model gave them, else the inputs' own (the area)."""
        region = params.region
        if not isinstance(region, PALMask) or region.label_weights is None:
            return params
        return _label_params(params, region.label_weights)
