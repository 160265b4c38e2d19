"""CutMix: exact lam after clipping, 1-D/2-D/3-D, reachable boxes, MixUp-or-CutMix rows.

Every test runs on the session's ``--device`` (``device`` fixture, conftest.py): inputs are
built on the CPU and moved, boxes and ``lam`` are drawn on the device.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mixlab
from mixlab import MixParams
from mixlab.losses import soft_cross_entropy


def labelled_batch(B, shape, device="cpu"):
    """Row i is filled with the value i, so each output element names the row it came from."""
    return torch.arange(B, dtype=torch.float32, device=device).view(B, *[1] * len(shape)).expand(B, *shape).clone()


@pytest.mark.parametrize("shape", [(2, 17), (3, 9, 11), (1, 5, 6, 7)])  # (C,T), (C,H,W), (C,D,H,W)
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_lam_is_the_exact_kept_fraction(shape, mode, device, dgen):
    B = 8
    x = labelled_batch(B, shape, device)
    rows = torch.arange(B, device=device)
    cut = mixlab.CutMix(alpha=1.0, mode=mode, generator=dgen)
    for _ in range(5):
        out, target = cut(x, rows)
        p = target.params
        box = p.region.box
        assert box.shape == (B, len(shape) - 1, 2) and p.region.shape == shape[1:]
        own = (out == x).flatten(1).float().mean(1)
        moved = p.index != rows
        torch.testing.assert_close(own[moved], p.lam[moved])  # exact fraction of the original kept
        from_partner = (out == p.index.float().view(B, *[1] * len(shape))).flatten(1).float().mean(1)
        torch.testing.assert_close(from_partner[moved], 1 - p.lam[moved])
        vol = (box[..., 1] - box[..., 0]).prod(1).float()
        torch.testing.assert_close(p.lam, 1 - vol / torch.tensor(shape[1:], device=device).prod().float())
        torch.testing.assert_close(p.lam, p.region.lam)
        if mode == "batch":
            assert bool((box == box[:1]).all())


def test_loss_routes_agree_for_cutmix(gen, device, dgen):
    x, y = torch.randn(10, 3, 8, 8, generator=gen).to(device), torch.randint(0, 4, (10,), generator=gen).to(device)
    _, target = mixlab.CutMix(mode="sample", generator=dgen)(x, y)
    logits = torch.randn(10, 4, generator=gen).to(device)
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits), soft_cross_entropy(logits, target.soft(4)))


def test_every_box_position_is_reachable(device):
    # T = 7, lam 0.5: the unclipped cut is floor(3.5) = 3 long; centres 0..6 give 7 distinct clipped boxes
    T, n = 7, 4000
    lam = torch.full((n,), 0.5, device=device)
    region, lam_c = mixlab.sample_box(lam, (T,), generator=torch.Generator(device=device).manual_seed(0))
    box = region.box
    seen = {tuple(b) for b in box[:, 0].tolist()}
    expected = {(max(c - 1, 0), min(c + 2, T)) for c in range(T)}
    assert seen == expected
    torch.testing.assert_close(lam_c, 1 - (box[:, 0, 1] - box[:, 0, 0]).float() / T)


def test_box_lam_extremes(device):
    region, lam = mixlab.sample_box(torch.tensor([0.0, 1.0], device=device), (6, 4),
                                    generator=torch.Generator(device=device).manual_seed(1))
    box = region.box
    # lam 0: a full-size box centred anywhere, clipped; lam is corrected to the clipped area
    vol = (box[0, :, 1] - box[0, :, 0]).prod().item()
    assert (box[0, :, 1] - box[0, :, 0]).tolist() != [0, 0] and lam[0].item() == pytest.approx(1 - vol / 24)
    assert (box[1, :, 1] - box[1, :, 0]).prod() == 0 and lam[1] == 1  # lam 1: nothing pasted


def test_lam_is_always_the_kept_share_correct_lam_is_gone(gen, device):
    # 0.3 offered correct_lam=False (timm's drawn lam, wrong for clipped boxes); the contract derives lam from the box
    x = torch.rand(6, 1, 5, 5, generator=gen).to(device)
    _, t = mixlab.CutMix(mode="sample", generator=gen)(x, torch.arange(6, device=device))
    assert torch.equal(t.params.lam, t.params.region.lam)
    with pytest.raises(TypeError, match="CutMix has no option 'correct_lam'"):
        mixlab.CutMix(correct_lam=False)

def test_mixup_or_cutmix_rows(device, dgen):
    B, shape = 64, (1, 6, 6)
    x = labelled_batch(B, shape, device)
    rows = torch.arange(B, device=device)
    both = mixlab.MixUpOrCutMix(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, mode="sample", generator=dgen)
    out, target = both(x, rows)
    p = target.params
    linear = p.region.linear
    assert 10 < int(linear.sum()) < 54  # both kinds of row in one batch
    lam4 = p.lam.view(B, 1, 1, 1)
    expected_linear = lam4 * x + (1 - lam4) * x[p.index]
    torch.testing.assert_close(out[linear], expected_linear[linear])
    assert bool(((p.region.box[linear][..., 1] - p.region.box[linear][..., 0]).prod(1) == 0).all())
    cut = ~linear & (p.index != rows)
    torch.testing.assert_close((out == x).flatten(1).float().mean(1)[cut], p.lam[cut])


def test_mixup_or_cutmix_batch_mode_picks_one_kind(device, dgen):
    both = mixlab.MixUpOrCutMix(mode="batch", generator=dgen)
    kinds = set()
    for _ in range(20):
        p = both.sample(torch.rand(8, 3, 8, 8).to(device))
        linear = p.region.linear
        assert bool((linear == linear[0]).all())
        kinds.add(bool(linear[0]))
    assert kinds == {True, False}


def test_box_applies_to_matching_leaves_only(gen, device, dgen):
    B = 6
    batch = {"img": labelled_batch(B, (2, 5, 5), device), "vec": torch.randn(B, 3, generator=gen).to(device)}
    p = mixlab.CutMix(mode="sample", generator=dgen).sample(batch["img"])
    out = mixlab.mix(batch, p)
    lam = p.lam[:, None]
    torch.testing.assert_close(out["vec"], lam * batch["vec"] + (1 - lam) * batch["vec"][p.index])


def test_cutmix_needs_spatial_dims(device):
    with pytest.raises(ValueError, match="spatial"):
        mixlab.CutMix()(torch.rand(4, 3).to(device), torch.arange(4).to(device))
