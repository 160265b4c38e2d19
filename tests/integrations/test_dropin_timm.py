"""mixlab.timm.Mixup / FastCollateMixup: timm's constructor, attributes and outputs, timm's numbers for
fixed lams with flip pairing, odd batches, and timm's own loss and train-loop pattern."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mixlab
from mixlab import timm as mt

tm = pytest.importorskip("timm.data.mixup")
tloss = pytest.importorskip("timm.loss")


def _fix_lams(monkeypatch, lams):
    """The same lam sequence for timm (numpy) and mixlab (torch)."""
    lams = np.asarray(lams, dtype=np.float64)

    def np_beta(a, b, size=None):
        return lams[:size].copy() if size is not None else float(lams[0])

    monkeypatch.setattr(np.random, "beta", np_beta)
    monkeypatch.setattr(mt, "sample_beta", lambda n, alpha, generator=None, device=None:
                        torch.tensor(lams[:n], dtype=torch.float32, device=device))


@pytest.mark.parametrize("mode, smoothing", [("batch", 0.1), ("elem", 0.0), ("pair", 0.2)])
def test_mixup_rows_equal_timms_for_fixed_lams(monkeypatch, mode, smoothing, gen):
    B, C = 6, 5
    x, y = torch.rand(B, 3, 8, 8, generator=gen), torch.randint(0, C, (B,), generator=gen)
    _fix_lams(monkeypatch, [0.3, 0.8, 0.55, 0.9, 0.1, 0.6])
    kw = dict(mixup_alpha=0.8, cutmix_alpha=0.0, mode=mode, label_smoothing=smoothing, num_classes=C)
    tx, ty = tm.Mixup(**kw)(x.clone(), y.clone())
    ox, oy = mt.Mixup(**kw)(x.clone(), y.clone())
    torch.testing.assert_close(ox, tx)
    torch.testing.assert_close(oy, ty)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("alphas", [(0.8, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_in_place_pair_kernel_gives_mixs_numbers(mode, dtype, alphas):
    """On CPU the call mixes flip pairs in place (mixlab._timm_fast); the numbers are mixlab.mix's with the
    same params, odd batches and channels_last included."""
    for seed, B in ((0, 8), (1, 7), (2, 6)):
        x = torch.rand(B, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
        x = (x * 255).to(dtype) if dtype == torch.uint8 else x.to(dtype)
        if seed == 2:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.arange(B) % 5
        kw = dict(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode, prob=0.8, num_classes=5)
        out, target = mt.Mixup(generator=torch.Generator().manual_seed(seed), **kw)(x.clone(), y)
        params = mt.Mixup(generator=torch.Generator().manual_seed(seed), **kw).params(x)
        ref = mixlab.mix(x.clone(), params, inplace=True)
        assert out.dtype == dtype and out.stride() == x.stride()
        if dtype == torch.uint8:
            assert (out.int() - ref.int()).abs().max() <= 1
        else:
            torch.testing.assert_close(out, ref)
        torch.testing.assert_close(target, mt.mixup_target(y, 5, params.lam, 0.1))


def test_defaults_and_attributes_are_timms():
    ours, theirs = mt.Mixup(), tm.Mixup()
    for name in ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "mix_prob", "switch_prob", "mode", "correct_lam",
                 "label_smoothing", "num_classes", "mixup_enabled"):
        assert getattr(ours, name) == getattr(theirs, name), name
    # timm's train.py builds a dict of these and passes it on
    args = dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=0.1, num_classes=10)
    mt.Mixup(**args)
    with pytest.raises(ValueError, match="mode must be one of"):
        mt.Mixup(mode="row")


def test_mixup_enabled_false_stops_mixing_and_odd_batches_work(gen):
    m = mt.Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, num_classes=4, label_smoothing=0.1)
    x, y = torch.rand(7, 3, 8, 8, generator=gen), torch.randint(0, 4, (7,), generator=gen)
    out, target = m(x.clone(), y)  # timm asserts an even batch
    assert out.shape == x.shape and target.shape == (7, 4)
    torch.testing.assert_close(target.sum(1), torch.ones(7))
    m.mixup_enabled = False
    out, target = m(x.clone(), y)
    assert torch.equal(out, x)
    torch.testing.assert_close(target, mt.mixup_target(y, 4, 1.0, 0.1))


def test_cutmix_rows_have_exact_lam_and_minmax_boxes(gen):
    B, H, W = 8, 20, 24
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, H, W).clone()
    y = torch.arange(B) % 4
    m = mt.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_minmax=(0.2, 0.8), mode="elem", num_classes=4,
                 label_smoothing=0.0)
    params = m.params(x)
    box = params.region.box
    sides = box[..., 1] - box[..., 0]
    moved = params.index != torch.arange(B)
    assert bool((sides[moved, 0] >= int(H * 0.2)).all()) and bool((sides[moved, 0] < int(H * 0.8)).all())
    out, target = m(x.clone(), y)
    own = (out[:, 0] == torch.arange(B).view(B, 1, 1).float()).flatten(1).float().mean(1)
    lam_from_target = target[torch.arange(B), y]  # original class weight (classes differ within flip pairs here)
    differ = y != y.flip(0)
    torch.testing.assert_close(own[differ & moved], lam_from_target[differ & moved])


def test_fast_collate_mixup_equals_timms_for_a_fixed_lam(monkeypatch):
    rs = np.random.RandomState(0)
    batch = [(rs.randint(0, 256, (3, 8, 8), dtype=np.uint8), int(i % 3)) for i in range(6)]
    _fix_lams(monkeypatch, [0.37])
    kw = dict(mixup_alpha=1.0, cutmix_alpha=0.0, mode="batch", label_smoothing=0.1, num_classes=3)
    tx, ty = tm.FastCollateMixup(**kw)([(a.copy(), b) for a, b in batch])
    ox, oy = mt.FastCollateMixup(**kw)([(a.copy(), b) for a, b in batch])
    assert ox.dtype == torch.uint8 and torch.equal(ox, tx)
    torch.testing.assert_close(oy, ty)
    hx, hy = mt.FastCollateMixup(mixup_alpha=1.0, mode="half", num_classes=3)(batch)
    assert hx.shape == (3, 3, 8, 8) and hy.shape == (3, 3)


def test_timms_train_loop_pattern_learns(one_thread):
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    mixup_fn = mt.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10,
                        generator=torch.Generator().manual_seed(0))
    criterion = tloss.SoftTargetCrossEntropy()
    losses = []
    for epoch in range(4):
        for i in range(0, 1400, 64):
            xb, yb = mixup_fn(x[i:i + 64].clone(), y[i:i + 64])
            loss = criterion(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5
    acc = (model(x[1400:]).argmax(1) == y[1400:]).float().mean()
    assert acc > 0.7  # chance: 0.1
