"""Regression targets: ``MixedTarget.loss`` is the loss on the mixed labels for losses not affine in the target."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.losses import mixed_cross_entropy

LABEL_MIXED = [
    nn.L1Loss(), nn.HuberLoss(), nn.HuberLoss(delta=0.3), nn.SmoothL1Loss(), nn.SmoothL1Loss(beta=0.4), nn.MSELoss(),
    F.l1_loss, F.huber_loss, F.smooth_l1_loss, F.mse_loss,
]


def _call(fn, pred, y, reduction):
    if isinstance(fn, nn.Module):
        fn = type(fn)(**{k: getattr(fn, k) for k in ("delta", "beta") if hasattr(fn, k)}, reduction=reduction)
        return fn(pred, y)
    return fn(pred, y, reduction=reduction)


@pytest.mark.parametrize("fn", LABEL_MIXED, ids=lambda f: getattr(f, "__name__", repr(f)))
@pytest.mark.parametrize("shape", [(8,), (8, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_is_the_loss_on_mixed_labels(fn, shape, reduction, gen):
    y = torch.randn(shape, generator=gen) * 3
    params = MixParams(torch.rand(shape[0], generator=gen), torch.randperm(shape[0], generator=gen))
    target = MixedTarget(y, params)
    pred = torch.randn(shape, generator=gen, requires_grad=True)
    lam = params.lam.view(-1, *([1] * (y.ndim - 1)))
    mixed = lam * y + (1 - lam) * y[params.index]
    got, want = target.loss(fn, pred, reduction=reduction), _call(fn, pred, mixed, reduction)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, pred)[0], torch.autograd.grad(want, pred)[0])
    torch.testing.assert_close(mixed, mixlab.mix(y, params))  # the labels mixed as the inputs are
    # "none": per-sample means of the element-wise loss on the mixed labels, (B,)
    per = target.loss(fn, pred, reduction="none")
    torch.testing.assert_close(per, _call(fn, pred, mixed, "none").reshape(shape[0], -1).mean(1))


@pytest.mark.parametrize("fn", [nn.L1Loss(), nn.HuberLoss(), nn.SmoothL1Loss(), nn.MSELoss()],
                         ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("k", [2, 3])
def test_kway_and_module_reduction(fn, k, gen):
    B = 9
    y = torch.randn(B, 2, generator=gen)
    params = mixlab.sample_params(B, alpha=1.0, mode="sample", k=k, generator=gen)
    target = MixedTarget(y, params)
    pred = torch.randn(B, 2, generator=gen)
    w, idx = params.kway()
    mixed = sum(w[:, j, None] * y[idx[:, j]] for j in range(k))
    torch.testing.assert_close(target.loss(fn, pred), fn(pred, mixed))
    summed = type(fn)(reduction="sum")
    torch.testing.assert_close(target.loss(summed, pred), summed(pred, mixed))
    assert summed.reduction == "sum"  # the caller's criterion is not modified


@pytest.mark.parametrize("fn", [nn.L1Loss(), nn.HuberLoss(delta=0.5), nn.MSELoss()], ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("method", [mixlab.MixUp, mixlab.CutMix])
def test_dense_float_maps_are_mixed_like_the_inputs(fn, method, gen):
    # depth-like maps (B, 1, H, W): blended under MixUp, pasted with the box under CutMix
    x, depth = torch.rand(6, 3, 8, 8, generator=gen), torch.rand(6, 1, 8, 8, generator=gen) * 10
    params = method(alpha=1.0, mode="sample", generator=gen).sample(x)
    target = MixedTarget(depth, params)
    pred = torch.rand(6, 1, 8, 8, generator=gen) * 10
    torch.testing.assert_close(target.loss(fn, pred), fn(pred, mixlab.mix(depth, params)))


def test_routes_differ_where_it_matters(gen):
    # L1 of the mixed labels is not the mix of the L1 losses: the old loss-mixing value is gone
    y = torch.tensor([0.0, 10.0])
    params = MixParams(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    pred = torch.tensor([5.0, 5.0])
    assert float(MixedTarget(y, params).loss(nn.L1Loss(), pred)) == 0.0  # |5 - 5|, not 0.5 * 5 + 0.5 * 5


def test_cross_entropy_keeps_the_fused_loss_route(gen):
    B, C = 10, 7
    y = torch.randint(0, C, (B,), generator=gen)
    params = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=gen)
    target = MixedTarget(y, params)
    logits = torch.randn(B, C, generator=gen)
    w, idx = params.kway()
    fused = mixed_cross_entropy(logits, y[idx], w, reduction="mean")
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits), fused, rtol=0, atol=0)
    paper = params.lam * F.cross_entropy(logits, y, reduction="none") \
        + (1 - params.lam) * F.cross_entropy(logits, y[params.index], reduction="none")
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits, reduction="none"), paper)
    # float one-hot rows with BCE / soft CE: affine in the target, both routes give the same value
    onehot = MixedTarget(F.one_hot(y, C).float(), params)
    torch.testing.assert_close(onehot.loss(nn.BCEWithLogitsLoss(), logits),
                               F.binary_cross_entropy_with_logits(logits, onehot.soft()))
    torch.testing.assert_close(onehot.loss(nn.CrossEntropyLoss(), logits), F.cross_entropy(logits, onehot.soft()))


def test_label_smoothing_on_regression_values_is_refused(gen):
    y = torch.randn(4, generator=gen)
    target = MixedTarget(y, mixlab.sample_params(4, alpha=1.0, generator=gen), label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"label_smoothing=0.1 needs class labels.*shape \(4,\)"):
        target.loss(nn.L1Loss(), torch.randn(4, generator=gen))
