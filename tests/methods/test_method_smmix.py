"""SMMix against a port of the official code (ChenMnZ/SMMix, ``smmix.py``: ``SMMix.smmix`` and ``index_translate``;
the attention from ``deit.py``), with the same draws: equal mixed images and token masks for a given attention and
region size, and the attention of a timm ViT (CPU) equal to the official ViT's."""
from __future__ import annotations

import pytest
import torch

import mixlab
from mixlab.methods.mixpro import vit_attention
from mixlab.methods.smmix import SMMix, smmix_token_masks
from _timm_attention import last_block_attention

timm = pytest.importorskip("timm")


# ------------------------------------------------------------------------------------------------
# the official code, ported (``.cuda()`` dropped)

def batch_index_generate(x, idx):
    B, N, C = x.size()
    offset = torch.arange(B, dtype=torch.long, device=x.device).view(B, 1) * N
    return (idx + offset).reshape(-1)


def index_translate(rectangle_index, rectangle_size=(3, 3), token_size=(7, 7)):
    total_index = torch.arange(token_size[0] * token_size[1]).reshape(1, 1, token_size[0], token_size[1])
    total_index_list = torch.nn.functional.unfold(total_index.float(), rectangle_size, stride=1).transpose(1, 2).long()
    return total_index_list.index_select(dim=1, index=rectangle_index).squeeze(0)


def official_smmix(inputs, attn, rectangle_size, side):
    inputs_side = inputs.shape[2]
    patch_size = inputs_side // side
    inputs = torch.nn.functional.unfold(inputs, patch_size, stride=patch_size).transpose(1, 2)
    source_image = inputs.flip(0)
    attn = attn.reshape(-1, side, side).unsqueeze(1)
    rectangle_attn = torch.nn.functional.unfold(attn, rectangle_size, stride=1)
    rectangle_attn = rectangle_attn.sum(dim=1)
    min_region_center_index = torch.argmin(rectangle_attn, dim=1)
    max_region_center_index = torch.argmax(rectangle_attn, dim=1)
    min_region_index = index_translate(min_region_center_index, rectangle_size, token_size=(side, side))
    max_region_index = index_translate(max_region_center_index, rectangle_size, token_size=(side, side))
    min_region_index = batch_index_generate(inputs, min_region_index)
    max_region_index = batch_index_generate(inputs, max_region_index.flip(0))
    B, N, C = inputs.shape
    inputs = inputs.reshape(B * N, C)
    source_image = source_image.reshape(B * N, C)
    inputs[min_region_index] = source_image[max_region_index]
    inputs = inputs.reshape(B, N, C)
    inputs = torch.nn.functional.fold(inputs.transpose(1, 2), inputs_side, patch_size, stride=patch_size)
    source_mask = torch.zeros_like(attn).bool()
    source_mask = source_mask.reshape(-1)
    source_mask[min_region_index] = True
    source_mask = source_mask.reshape(B, N)
    return inputs, ~source_mask, source_mask


def official_rectangle_sizes(side, min_side_ratio=0.25, max_side_ratio=0.75):
    return [(i, i) for i in range(int(side * min_side_ratio), int(side * max_side_ratio) + 1)]


def official_patch_attention(model, x):
    """``deit.py``: the last block's softmax attention, ``attn[:, :, 1:, 1:].mean(dim=(1, 2))``, from the eval-mode
    forward the official runs (``motivat_model.eval()``), read from timm's unfused attention."""
    out, attn = last_block_attention(model, x)
    return out, attn[:, :, 1:, 1:].mean(dim=(1, 2))


def tiny_vit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                                 depth=2)


def drawn_size(params, N):
    """The region side the mixer drew (its one random draw), read back from the exact area share."""
    return int(round(float(((1 - params.lam[0]) * N).sqrt())))


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_mixing_equals_the_official_for_a_given_attention(seed):
    B, H, P = 6, 32, 4
    side = H // P
    gen = torch.Generator().manual_seed(100 + seed)
    x, attn = torch.rand(B, 3, H, H, generator=gen), torch.rand(B, side * side, generator=gen).softmax(1)
    mixer = SMMix(patch_size=P, pairing="flip", generator=torch.Generator().manual_seed(seed))
    mixed, target = mixer(x, torch.arange(B), attention=attn)
    s = drawn_size(target.params, side * side)
    assert (s, s) in official_rectangle_sizes(side)
    ref, target_mask, source_mask = official_smmix(x.clone(), attn, (s, s), side)
    torch.testing.assert_close(mixed, ref, rtol=0, atol=0)
    ours_target, ours_source = smmix_token_masks(target.params, P)
    assert torch.equal(ours_target, target_mask) and torch.equal(ours_source, source_mask)
    lam = (side ** 2 - s * s) / side ** 2  # the official label weight: the area (mixup_target(target, ..., lam))
    torch.testing.assert_close(target.params.lam, torch.full((B,), lam))
    assert target.params.label_weights is None


def test_the_region_sizes_are_the_officials_uniformly():
    side, P = 8, 4
    mixer = SMMix(patch_size=P, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, side * P, side * P)
    seen = [drawn_size(mixer.sample(x, attention=torch.rand(2, side * side)), side * side) for _ in range(400)]
    sizes = [s for s, _ in official_rectangle_sizes(side)]
    assert sorted(set(seen)) == sizes
    counts = torch.bincount(torch.tensor(seen))[sizes].float()
    assert counts.min() > 400 / len(sizes) * 0.6


def test_the_vit_hook_gives_the_officials_attention_and_mix():
    B, H, P = 4, 32, 4
    model = tiny_vit().train()
    x = torch.rand(B, 3, H, H, generator=torch.Generator().manual_seed(7))
    _, official = official_patch_attention(model.eval(), x)
    model.train()
    logits, attn, prefix = vit_attention(model.eval(), x)
    model.train()
    torch.testing.assert_close(attn[:, :, prefix:, prefix:].mean(dim=(1, 2)), official, rtol=1e-5, atol=1e-7)
    mixer = SMMix(patch_size=P, model=model, pairing="flip", generator=torch.Generator().manual_seed(1))
    mixed, target = mixer(x, torch.arange(B))
    assert model.training  # the official's eval() forward, its mode restored
    s = drawn_size(target.params, (H // P) ** 2)
    ref, _, _ = official_smmix(x.clone(), official, (s, s), H // P)
    torch.testing.assert_close(mixed, ref, rtol=0, atol=0)


def test_without_attention_the_windows_are_random_and_lam_is_the_area():
    B, H, P = 5, 32, 4
    x = torch.rand(B, 3, H, H)
    params = SMMix(patch_size=P, mode="sample", generator=torch.Generator().manual_seed(3)).sample(x)
    torch.testing.assert_close(params.lam, 1 - params.region.values.float().mean((1, 2)))
    mixed = mixlab.mix(x, params)
    moved = mixed[:, :, params.region.values.any(0)]
    assert moved.numel() > 0
    assert SMMix(patch_size=P, p=0.0).sample(x).lam.eq(1).all()


def test_tokens_and_label_maps_follow_the_same_move():
    B, side, D, P = 4, 6, 5, 4
    gen = torch.Generator().manual_seed(0)
    attn = torch.rand(B, side * side, generator=gen)
    img = torch.rand(B, 3, side * P, side * P, generator=gen)
    tokens = torch.nn.functional.unfold(img, P, stride=P).transpose(1, 2)  # (B, N, 3 * P * P)
    t = dict(patch_size=P, pairing="flip")
    mixed_img, _ = SMMix(generator=torch.Generator().manual_seed(2), **t)(img, torch.arange(B), attention=attn)
    mixed_tok, _ = SMMix(generator=torch.Generator().manual_seed(2), **t)(tokens, torch.arange(B), attention=attn)
    torch.testing.assert_close(mixed_tok, torch.nn.functional.unfold(mixed_img, P, stride=P).transpose(1, 2))
    seg = torch.arange(B * 24 * 24).view(B, 24, 24)  # every pixel its own id: moves are exact
    out = SMMix(generator=torch.Generator().manual_seed(2), **t)({"img": img, "seg": seg}, torch.arange(B),
                                                               attention=attn)[0]
    src = seg.flatten(1)[torch.arange(B).flip(0)]  # ids taken from the partner come from the partner's row
    taken = out["seg"] != seg
    assert torch.isin(out["seg"][taken], src).all()


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SMMix(patch_size=16)(torch.rand(2, 3, 24, 24), torch.arange(2))
    with pytest.raises(ValueError, match="attention must be"):
        SMMix(patch_size=4)(torch.rand(2, 3, 16, 16), torch.arange(2), attention=torch.rand(2, 5))
    with pytest.raises(ValueError, match="square"):
        SMMix(patch_size=4)(torch.rand(2, 5, 3), torch.arange(2))
    assert "smmix" in mixlab.methods.available()
