"""Shared by the ViT methods' tests (MixPro, SMMix): a timm ViT's last-block softmax attention as the official
code reads it, from timm's unfused attention (``attn_drop``'s input), independent of mixlab's own reader."""
from __future__ import annotations

import torch


def last_block_attention(model, x):
    """``(logits, attn)``: the no-grad forward's output and the last block's ``(B, heads, N, N)`` attention."""
    attn_mod = model.blocks[-1].attn
    kept = {}
    fused, attn_mod.fused_attn = attn_mod.fused_attn, False
    h = attn_mod.attn_drop.register_forward_pre_hook(lambda m, a: kept.__setitem__("a", a[0].detach().clone()))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        h.remove()
        attn_mod.fused_attn = fused
    return out, kept["a"]
