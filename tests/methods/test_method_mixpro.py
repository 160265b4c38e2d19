"""MixPro against a port of the official code (fistyee/MixPro: ``utils.MaskMix`` and the Progressive Attention
Labeling lines of ``main.train_one_epoch``), with the same draws: equal masks, equal area ratios, equal label weights
from a timm ViT's last-block class attention (CPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mixlab
from mixlab.methods.mixpro import MixPro, pal_target, vit_attention
from _timm_attention import last_block_attention

timm = pytest.importorskip("timm")


# ------------------------------------------------------------------------------------------------
# the official code, ported: numpy's draws replaced by given ones (ratio, one permutation per row)

def official_maskmix(samples, flip_samples, ratio, perms, mask_num, scale_, scale):
    """``utils.MaskMix`` with ``np.random.beta`` -> ``ratio`` and ``np.random.permutation`` -> ``perms[i]``."""
    batch_size = samples.size(0)
    token_count = mask_num ** 2
    mask_ratio = [ratio for i in range(batch_size)]
    mask_count = [int(np.ceil(token_count * mask_ratio[i])) for i in range(batch_size)]
    mask_ratio = [mask_count[i] / token_count for i in range(batch_size)]
    mask_idx = [perms[i][:mask_count[i]] for i in range(batch_size)]
    mask = np.zeros((batch_size, token_count), dtype=int)
    for i in range(batch_size):
        mask[i][mask_idx[i]] = 1
    mask = [mask[i].reshape((mask_num, mask_num)) for i in range(batch_size)]
    mask_ = [mask[i].repeat(scale_, axis=0).repeat(scale_, axis=1) for i in range(batch_size)]
    mask = [mask[i].repeat(scale, axis=0).repeat(scale, axis=1) for i in range(batch_size)]
    mask = torch.from_numpy(np.array(mask)).to(samples.device)
    mask = mask.unsqueeze(1).repeat(1, 3, 1, 1)
    mask = mask[:, :, :samples.shape[2], :samples.shape[2]]
    samples = samples * mask + flip_samples * (1 - mask)
    return samples, np.array(mask_), torch.Tensor(mask_ratio)


def official_pal(mask_, mask_ratio, attn, outputs, targets, flip_targets, num_classes, smoothing, patch_num):
    """The PAL lines of ``train_one_epoch`` (``maskmix and ATTN``): the label weight of the original."""
    off, on = smoothing / num_classes, 1.0 - smoothing + smoothing / num_classes
    y1 = torch.full((len(targets), num_classes), off).scatter_(1, targets[:, None], on)
    y2 = torch.full((len(targets), num_classes), off).scatter_(1, flip_targets[:, None], on)
    mix_targets = y1 * mask_ratio[:, None] + y2 * (1 - mask_ratio[:, None])
    lam_old = mask_ratio
    mask = torch.from_numpy(mask_)
    mask = mask[:, :patch_num, :patch_num]
    mask = torch.flatten(mask, 1)
    w1, w2 = torch.sum((mask) * attn, dim=1), torch.sum((1 - mask) * attn, dim=1)
    lam = w1 / (w1 + w2)
    sim = torch.cosine_similarity(mix_targets, F.softmax(outputs, dim=-1), dim=1)
    return (sim) * lam + (1. - sim) * lam_old


def official_cls_attention(model, x):
    """The official ViT's ``attn[:, :, 0, 1:]`` averaged over heads (last block, softmax before dropout), read from
    timm's unfused attention (``attn_drop``'s input), and the logits of the same forward."""
    out, attn = last_block_attention(model, x)
    return out, torch.mean(attn[:, :, 0, 1:], dim=1), attn


def tiny_vit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                                 depth=2).eval()


def replay(mixer, B, grid, seed):
    """The mixer's draws, replayed from its seed: the ratio (lam; one per batch in "batch" mode) and one cell order
    per row (the official draws a permutation per row in either case)."""
    g = torch.Generator().manual_seed(seed)
    lam = mixer.draw_pairs(B, None, g, torch.device("cpu")).lam
    return lam, torch.rand(B, grid * grid, generator=g).argsort(dim=1)


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, cell, H", [("batch", 8, 32), ("sample", 8, 32), ("batch", 12, 32), ("sample", 16, 32)])
def test_maskmix_equals_the_official_with_the_same_draws(mode, cell, H):
    B, seed = 6, 3
    x = torch.rand(B, 3, H, H, generator=torch.Generator().manual_seed(1))
    y = torch.arange(B) % 10
    mixer = MixPro(patch_size=4, mask_patch_size=cell, mode=mode, pairing="flip",
                   generator=torch.Generator().manual_seed(seed))
    mixed, target = mixer(x, y)
    params = target.params
    mask_num = math.ceil(H / cell)
    lam, order = replay(MixPro(patch_size=4, mask_patch_size=cell, mode=mode, pairing="flip"), B, mask_num, seed)
    ref = []
    for i in range(B):  # the official draws one ratio per batch: row by row for "sample" mode
        out, mask_, ratio = official_maskmix(x[i:i + 1], x.flip(0)[i:i + 1], float(lam[i]), order[i:i + 1].numpy(),
                                             mask_num, cell // 4, cell)
        ref.append((out, mask_, ratio))
    torch.testing.assert_close(mixed, torch.cat([r[0] for r in ref]).float(), rtol=0, atol=0)
    kept = torch.cat([torch.from_numpy(r[1]) for r in ref]).bool()  # (B, cells*scale_) at patch resolution
    assert torch.equal(~params.region.values[:, ::4, ::4], kept[:, :H // 4, :H // 4])
    if H % cell == 0:  # the cells tile the image: the pixel share is the official mask_ratio
        torch.testing.assert_close(params.lam, torch.cat([r[2] for r in ref]))
    assert target.params.label_weights is None  # no model: MaskMix alone, labels by the area


def test_p_and_alpha_zero_leave_rows_and_lam_is_the_exact_share():
    x = torch.rand(5, 3, 32, 32)
    params = MixPro(patch_size=4, mask_patch_size=8, p=0.0).sample(x)
    assert torch.equal(params.lam, torch.ones(5)) and not params.region.values.any()
    params = MixPro(patch_size=4, mask_patch_size=8, mode="sample", generator=torch.Generator().manual_seed(0)).sample(x)
    torch.testing.assert_close(params.lam, 1 - params.region.values.float().mean((1, 2)))
    cells = params.region.values.view(5, 4, 8, 4, 8)  # every 8 x 8 cell wholly from one row
    assert torch.equal(cells.all(4).all(2), cells.any(4).any(2))


def test_vit_attention_is_the_official_cls_attention():
    model, x = tiny_vit(), torch.rand(4, 3, 32, 32)
    logits, attn, prefix = vit_attention(model, x)
    out, cls, full = official_cls_attention(model, x)
    assert prefix == 1 and attn.shape == (4, 3, 65, 65)
    torch.testing.assert_close(logits, out)
    torch.testing.assert_close(attn, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attn[:, :, 0, 1:].mean(1), cls, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_pal_label_weights_equal_the_official_with_a_timm_vit(smoothing):
    B, seed, cell, H = 6, 5, 8, 32
    model = tiny_vit()
    x = torch.rand(B, 3, H, H, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 1, 5])
    mixer = MixPro(patch_size=4, mask_patch_size=cell, model=model, pairing="flip", label_smoothing=smoothing,
                   num_classes=10, generator=torch.Generator().manual_seed(seed))
    mixed, target = mixer(x, y)
    lam, order = replay(MixPro(patch_size=4, mask_patch_size=cell, pairing="flip"), B, H // cell, seed)
    ref, mask_, ratio = official_maskmix(x, x.flip(0), float(lam[0]), order.numpy(), H // cell, cell // 4, cell)
    ref = ref.float()
    torch.testing.assert_close(mixed, ref, rtol=0, atol=0)
    outputs, attn, _ = official_cls_attention(model, ref)  # the official reads the mixed batch's forward
    expected = official_pal(mask_, ratio, attn, outputs, y, y.flip(0), 10, smoothing, H // 4)
    weights = target.params.label_weights
    torch.testing.assert_close(weights[:, 0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(1), torch.ones(B))
    # the official loss: lam * ce(y) + (1 - lam) * ce(y[flip]), batch mean (label_smoothing 0)
    if smoothing == 0:
        logits = torch.randn(B, 10)
        official = (expected * F.cross_entropy(logits, y, reduction="none")
                    + (1 - expected) * F.cross_entropy(logits, y.flip(0), reduction="none")).mean()
        torch.testing.assert_close(target.loss(F.cross_entropy, logits), official)


def test_pal_target_from_the_training_forward_equals_the_model_hook():
    B, cell, H = 6, 8, 32
    model = tiny_vit()
    x, y = torch.rand(B, 3, H, H), torch.tensor([0, 1, 2, 3, 1, 5])
    hooked = MixPro(patch_size=4, mask_patch_size=cell, model=model, generator=torch.Generator().manual_seed(1))
    _, with_model = hooked(x, y)
    plain = MixPro(patch_size=4, mask_patch_size=cell, generator=torch.Generator().manual_seed(1))
    mixed, target = plain(x, y)  # area labels; then one training forward gives logits and attention
    logits, attn, prefix = vit_attention(model, mixed)
    relabelled = pal_target(target, attn[:, :, 0, prefix:].mean(1), logits, patch_size=4)
    torch.testing.assert_close(relabelled.params.label_weights, with_model.params.label_weights)
    torch.testing.assert_close(relabelled.soft(10), with_model.soft(10))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MixPro(patch_size=16, mask_patch_size=56)
    with pytest.raises(ValueError, match="class indices"):
        MixPro(patch_size=4, mask_patch_size=8, model=tiny_vit()).sample(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MixPro(patch_size=4, mask_patch_size=8, model=tiny_vit())(torch.rand(2, 3, 30, 30), torch.arange(2))
    assert "mixpro" in mixlab.methods.available()


def test_tokens_take_the_cells_of_the_image_grid():
    B, P, side = 4, 4, 6
    img = torch.rand(B, 3, side * P, side * P)
    tokens = torch.nn.functional.unfold(img, P, stride=P).transpose(1, 2)  # (B, N, 3 * P * P)
    opts = dict(patch_size=P, mask_patch_size=2 * P, mode="sample")
    mixed_img, _ = MixPro(generator=torch.Generator().manual_seed(4), **opts)(img, torch.arange(B))
    mixed_tok, _ = MixPro(generator=torch.Generator().manual_seed(4), **opts)(tokens, torch.arange(B))
    torch.testing.assert_close(mixed_tok, torch.nn.functional.unfold(mixed_img, P, stride=P).transpose(1, 2))
    assert MixPro(patch_size=16).mask_patch_size == 16
