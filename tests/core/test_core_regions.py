"""Leaf roles and regions: what mix does with every kind of leaf, and the region protocol.

Labels are made unique per row (row i holds the value i, as torchvision's tests do), so every
output position names the row it came from.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.regions import Box, Mask


def rows_labelled(B, shape, dtype=torch.float32):
    return torch.arange(B, dtype=dtype).view(B, *[1] * len(shape)).expand(B, *shape).clone()


# ---- item 1: no mixable leaf means nothing is mixed, labels included ---------------------------------

@pytest.mark.parametrize("x", [torch.randint(0, 1000, (8, 16)),                       # token ids
                               torch.randint(0, 255, (8, 3, 4, 4), dtype=torch.int64),  # int64 images
                               {"ids": torch.randint(0, 9, (8, 5)), "label": torch.arange(8)}])
def test_integer_only_batch_is_refused_and_labels_are_not_mixed(x):
    mixup = mixlab.MixUp(alpha=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"no leaf that can be mixed.*int64.*ManifoldMixup"):
        mixup(x, torch.arange(8))
    with pytest.raises(TypeError, match="no leaf that can be mixed"):
        mixlab.mix(x, mixlab.sample_params(8, alpha=1.0))


def test_int64_images_are_pasted_exactly_under_cutmix(gen):
    x = torch.randint(0, 255, (6, 3, 8, 8), generator=gen)
    out, target = mixlab.CutMix(mode="sample", generator=gen)(x, torch.arange(6))
    p = target.params
    assert out.dtype == torch.int64
    assert torch.equal(out, torch.where(p.region.mask(4), x[p.index], x))


# ---- item 2: integer maps follow the region -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_cutmix_pastes_segmentation_masks_with_the_image(mode, gen):
    B, H, W = 8, 12, 10
    batch = {"image": rows_labelled(B, (3, H, W)), "mask": rows_labelled(B, (H, W), torch.int64),
             "valid": torch.ones(B, H, W, dtype=torch.bool), "label": torch.arange(B)}
    out, target = mixlab.CutMix(mode=mode, generator=gen)(batch, batch["label"])
    p = target.params
    # every mask position names the row its image pixel came from
    assert torch.equal(out["mask"], out["image"][:, 0].long())
    assert torch.equal(out["valid"], torch.ones(B, H, W, dtype=torch.bool))
    assert out["label"] is batch["label"]  # class labels and ids are returned untouched
    kept = (out["mask"] == torch.arange(B).view(B, 1, 1)).flatten(1).float().mean(1)
    moved = p.index != torch.arange(B)
    torch.testing.assert_close(kept[moved], p.lam[moved])


def test_mask_order_in_the_dict_does_not_change_the_region(gen):
    B = 4
    batch = {"mask": rows_labelled(B, (6, 7), torch.int64), "image": rows_labelled(B, (3, 6, 7))}
    p = mixlab.CutMix(mode="sample", generator=gen).sample(batch)
    assert p.region.shape == (6, 7)  # from the image, not from the first leaf


def test_integer_map_under_mixup_is_an_error_when_marked_or_kept_otherwise(gen):
    B = 4
    batch = {"image": torch.rand(B, 3, 5, 5, generator=gen), "mask": torch.zeros(B, 5, 5, dtype=torch.long)}
    p = mixlab.sample_params(B, alpha=1.0, generator=gen)
    # a map laid out like the image's positions is never left unmixed beside mixed images (0.2 kept it silently)
    with pytest.raises(ValueError, match=r"batch\['mask'\].*blend whole rows.*MixedTarget.*roles="):
        mixlab.mix(batch, p)
    assert mixlab.mix(batch, p, roles={"mask": "keep"})["mask"] is batch["mask"]  # asked for: kept
    with pytest.raises(ValueError, match=r"batch\['mask'\].*blend whole rows.*MixedTarget"):
        mixlab.mix(batch, p, roles={"mask": "paste"})
    both = mixlab.MixUpOrCutMix(mode="sample", generator=gen).sample(batch)
    with pytest.raises(ValueError, match="blends some rows"):
        mixlab.mix(batch, both)  # per-row MixUp rows cannot carry integer maps


def test_roles_override_and_unknown_keys_are_errors(gen):
    B = 4
    batch = {"image": torch.rand(B, 3, 5, 5, generator=gen), "aux": {"heat": torch.rand(B, 5, 5, generator=gen)}}
    p = mixlab.CutMix(mode="sample", generator=gen).sample(batch)
    out = mixlab.mix(batch, p, roles={"batch['aux']['heat']": "keep"})
    assert out["aux"]["heat"] is batch["aux"]["heat"]
    with pytest.raises(ValueError, match=r"roles names \[\"batch\['imgae'\]\"\], which match no leaf"):
        mixlab.mix(batch, p, roles={"imgae": "keep"})
    with pytest.raises(ValueError, match="roles"):
        mixlab.mix(batch, p, roles={"image": "blend"})
    with pytest.raises(TypeError, match="cannot be blended"):
        mixlab.mix({"x": torch.rand(B, 2), "ids": torch.arange(B)}, p, roles={"ids": "mix"})


def test_tv_tensors_mask_is_pasted_and_boxes_are_refused(gen):
    tv = pytest.importorskip("torchvision.tv_tensors")
    B = 4
    image = tv.Image(rows_labelled(B, (3, 6, 6)))
    mask = tv.Mask(rows_labelled(B, (6, 6), torch.float32))  # a float mask is still a mask: pasted, not blended
    p = mixlab.CutMix(mode="sample", generator=gen).sample(image)
    out = mixlab.mix({"image": image, "mask": mask}, p)
    assert isinstance(out["mask"], tv.Mask) and isinstance(out["image"], tv.Image)
    assert torch.equal(out["mask"].as_subclass(torch.Tensor), out["image"].as_subclass(torch.Tensor)[:, 0])
    with pytest.raises(ValueError, match="blend whole rows"):
        mixlab.mix({"image": image, "mask": mask}, mixlab.sample_params(B, alpha=1.0, generator=gen))
    boxes = tv.BoundingBoxes(torch.zeros(B, 4), format="XYXY", canvas_size=(6, 6))
    with pytest.raises(TypeError, match="BoundingBoxes"):
        mixlab.mix({"image": image, "boxes": boxes}, p)
    out = mixlab.mix({"image": image, "boxes": boxes}, p, roles={"boxes": "keep"})
    assert out["boxes"] is boxes


# ---- item 3: dense targets -----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda g: mixlab.CutMix(mode="sample", generator=g),
                                  lambda g: mixlab.CutMix(mode="batch", generator=g)])
def test_class_maps_follow_the_box_in_soft_and_loss(make, gen):
    B, C, H, W = 6, 5, 8, 9
    x = torch.rand(B, 3, H, W, generator=gen)
    seg = torch.randint(0, C, (B, H, W), generator=gen)
    seg[0, 0, 0] = 255
    mixed, target = make(gen)({"image": x, "mask": seg}, seg)
    target = MixedTarget(seg, target.params, ignore_index=255)
    pasted = torch.where(target.params.region.mask(3), seg[target.params.index], seg)  # (B, H, W)
    assert torch.equal(mixed["mask"], pasted)
    soft = target.soft(C)
    assert soft.shape == (B, C, H, W)
    keep = pasted != 255
    torch.testing.assert_close(soft.permute(0, 2, 3, 1)[keep], F.one_hot(pasted[keep], C).float())
    assert bool((soft.permute(0, 2, 3, 1)[~keep] == 0).all())
    logits = torch.randn(B, C, H, W, generator=gen, requires_grad=True)
    crit = nn.CrossEntropyLoss(ignore_index=255, weight=torch.linspace(0.5, 2, C))
    got, want = target.loss(crit, logits), crit(logits, pasted)  # exact: a pasted map is a plain map
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(want, logits)[0])


def test_class_maps_under_mixup_are_weighted_per_row(gen):
    B, C, H, W = 5, 4, 3, 4
    seg = torch.randint(0, C, (B, H, W), generator=gen)
    p = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=gen)
    target = MixedTarget(seg, p)
    lam = p.lam.view(B, 1, 1, 1)
    onehot = F.one_hot(seg, C).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(target.soft(C), lam * onehot + (1 - lam) * onehot[p.index])
    logits = torch.randn(B, C, H, W, generator=gen)
    lam3 = p.lam.view(B, 1, 1)
    expected = (lam3 * F.cross_entropy(logits, seg, reduction="none")
                + (1 - lam3) * F.cross_entropy(logits, seg[p.index], reduction="none")).mean()
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits), expected)
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits),
                               F.cross_entropy(logits, target.soft(C)))  # both routes


def test_float_maps_are_pasted_under_a_region_and_blended_under_mixup(gen):
    B, C, H, W = 4, 3, 6, 6
    probs = torch.rand(B, C, H, W, generator=gen).softmax(1)
    p = mixlab.CutMix(mode="sample", generator=gen).sample(torch.rand(B, 3, H, W))
    soft = MixedTarget(probs, p).soft()
    torch.testing.assert_close(soft, torch.where(p.region.mask(4), probs[p.index], probs))
    logits = torch.randn(B, C, H, W, generator=gen)
    torch.testing.assert_close(MixedTarget(probs, p).loss(nn.CrossEntropyLoss(), logits),
                               F.cross_entropy(logits, soft))


def test_class_map_of_another_size_is_refused_under_a_region(gen):
    p = mixlab.CutMix(mode="sample", generator=gen).sample(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"trailing dims must be the region's"):
        MixedTarget(torch.zeros(4, 4, 4, dtype=torch.long), p)


def test_int_map_needs_logits_of_matching_shape(gen):
    p = mixlab.sample_params(2, alpha=1.0, generator=gen)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, C, 3, 4\)"):
        MixedTarget(torch.zeros(2, 3, 4, dtype=torch.long), p).loss(nn.CrossEntropyLoss(), torch.randn(2, 5))


# ---- the region protocol: a new region type is one class ---------------------------------------------

def test_binary_mask_region_mixes_pastes_and_labels_exactly(gen):
    B, H, W, C = 6, 5, 7, 4
    values = torch.rand(B, H, W, generator=gen) < 0.3  # True: take the partner
    region = Mask(values)
    index = torch.randperm(B, generator=gen)
    p = MixParams(region.lam, index, region)
    torch.testing.assert_close(p.lam, 1 - values.flatten(1).float().mean(1))
    x, seg = rows_labelled(B, (3, H, W)), rows_labelled(B, (H, W), torch.int64)
    out = mixlab.mix({"x": x, "seg": seg, "vec": torch.ones(B, 2)}, p)
    assert torch.equal(out["x"], torch.where(values[:, None], x[index], x))
    assert torch.equal(out["seg"], torch.where(values, seg[index], seg))
    y = torch.randint(0, C, (B,), generator=gen)
    logits = torch.randn(B, C, generator=gen)
    target = MixedTarget(y, p)
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits),
                               mixlab.losses.soft_cross_entropy(logits, target.soft(C)))
    half = p.rows(2, 5)  # sharding slices the region with the rows
    assert torch.equal(half.region.values, values[2:5]) and torch.equal(half.index, index[2:5])


def test_soft_mask_region_blends_floats_and_refuses_integer_maps(gen):
    B, H, W = 4, 6, 6
    weights = torch.rand(B, H, W, generator=gen)
    p = MixParams(Mask(weights).lam, torch.randperm(B, generator=gen), Mask(weights))
    x = torch.rand(B, 3, H, W, generator=gen)
    w = weights[:, None]
    torch.testing.assert_close(mixlab.mix(x, p), (1 - w) * x + w * x[p.index])
    torch.testing.assert_close(p.lam, 1 - weights.flatten(1).mean(1))
    with pytest.raises(ValueError, match="soft weights"):
        mixlab.mix({"x": x, "seg": torch.zeros(B, H, W, dtype=torch.long)}, p)


def test_region_params_are_validated(gen):
    box = Box(torch.zeros(3, 2, 2, dtype=torch.long), (4, 4))
    with pytest.raises(ValueError, match="region holds 3 rows, lam holds 4"):
        MixParams(torch.ones(4), torch.arange(4), box)
    with pytest.raises(TypeError, match="Region"):
        MixParams(torch.ones(3), torch.arange(3), region=torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"Box.box must be an int64 tensor of shape \(B, 2, 2\)"):
        Box(torch.zeros(3, 1, 2, dtype=torch.long), (4, 4))
    with pytest.raises(ValueError, match="Mask.values"):
        Mask(torch.zeros(3, 4, dtype=torch.long))


def test_global_mixer_slices_any_region(gen):
    # the distributed slicing goes through MixParams.rows: a Mask region is sliced like a Box
    values = torch.rand(6, 4, 4, generator=gen) < 0.5
    p = MixParams(Mask(values).lam, torch.randperm(6, generator=gen), Mask(values))
    from mixlab.distributed import local_params

    local = local_params(p, 2, 3)
    assert torch.equal(local.region.values, values[2:5]) and torch.equal(local.lam, p.lam[2:5])
    x = torch.rand(6, 1, 4, 4, generator=gen)
    torch.testing.assert_close(mixlab.mix(x[2:5], local, partner=x), mixlab.mix(x, p)[2:5])
