"""Reference: with fixed lam and index, mixlab equals the paper's formulas and article 004's numbers."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.losses import MixedLoss, soft_bce_with_logits, soft_cross_entropy


def paper_mixup_data(x, lam, index):
    """The paper's mixup_data with lam given (per batch or per row) instead of drawn."""
    lam = lam.view(-1, *([1] * (x.ndim - 1)))
    return lam * x + (1 - lam) * x[index, :]


def paper_mixup_criterion(criterion, pred, y_a, y_b, lam):
    return lam * criterion(pred, y_a) + (1 - lam) * criterion(pred, y_b)


@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 4, 4), (5, 2, 9), (4, 1, 3, 3, 3)])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
def test_mix_equals_paper_formula(shape, per_sample, inplace, gen):
    B = shape[0]
    x = torch.randn(shape, generator=gen)
    lam = torch.rand(B, generator=gen) if per_sample else torch.full((B,), 0.37)
    index = torch.randperm(B, generator=gen)
    expected = paper_mixup_data(x, lam, index)
    out = mixlab.mix(x.clone() if inplace else x, MixParams(lam, index), inplace=inplace)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_mix_large_rows_equal_paper_formula(gen):
    # rows large enough to take the CPU per-row kernel, in place and out of place
    x = torch.randn(9, 3, 64, 96, generator=gen)
    lam, index = torch.rand(9, generator=gen), torch.randperm(9, generator=gen)
    expected = paper_mixup_data(x, lam, index)
    torch.testing.assert_close(mixlab.mix(x, MixParams(lam, index)), expected)
    y = x.clone()
    mixlab.mix(y, MixParams(lam, index), inplace=True)
    torch.testing.assert_close(y, expected)


def test_article_004_worked_example():
    # article 004: 4 predictions (used as logits), labels [0, 0, 1, 1], permutation [0, 3, 2, 1], lam 0.3
    pred = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.6, 0.4]])
    y = torch.tensor([0, 0, 1, 1])
    params = MixParams(torch.full((4,), 0.3), torch.tensor([0, 3, 2, 1]))
    target = MixedTarget(y, params)
    printed = torch.tensor([0.4375, 0.7930, 0.5981, 0.6581])
    per_sample = target.loss(nn.CrossEntropyLoss(), pred, reduction="none")
    torch.testing.assert_close(per_sample, printed, atol=1e-4, rtol=0)
    torch.testing.assert_close(target.y_b, torch.tensor([0, 1, 1, 0]))
    torch.testing.assert_close(target.soft(2), torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0], [0.7, 0.3]]))
    torch.testing.assert_close(soft_cross_entropy(pred, target.soft(2), reduction="none"), per_sample)
    paper = paper_mixup_criterion(nn.CrossEntropyLoss(reduction="none"), pred, y, target.y_b, 0.3)
    torch.testing.assert_close(per_sample, paper)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_equals_mixup_criterion_batch_lam(reduction, gen):
    logits = torch.randn(10, 7, generator=gen)
    y = torch.randint(0, 7, (10,), generator=gen)
    params = MixParams(torch.full((10,), 0.62), torch.randperm(10, generator=gen))
    target = MixedTarget(y, params)
    crit = nn.CrossEntropyLoss(reduction=reduction)
    expected = paper_mixup_criterion(crit, logits, y, y[params.index], 0.62)
    torch.testing.assert_close(target.loss(crit, logits), expected)
    torch.testing.assert_close(target.loss(F.cross_entropy, logits, reduction=reduction), expected)
    assert crit.reduction == reduction  # the caller's criterion is not modified


def _random_target(gen, B=12, C=6, per_sample=True):
    y = torch.randint(0, C, (B,), generator=gen)
    lam = torch.rand(B, generator=gen) if per_sample else torch.full((B,), 0.3)
    return y, MixedTarget(y, MixParams(lam, torch.randperm(B, generator=gen)))


def test_weighted_and_smoothed_ce_routes_agree(gen):
    logits = torch.randn(12, 6, generator=gen)
    _, target = _random_target(gen)
    w = torch.rand(6, generator=gen) + 0.5
    for reduction in ("sum", "none"):  # per element the routes agree exactly
        crit = nn.CrossEntropyLoss(weight=w, reduction=reduction)
        torch.testing.assert_close(target.loss(crit, logits), F.cross_entropy(logits, target.soft(6), weight=w,
                                                                              reduction=reduction))
    # "mean" divides by the mixed class weight (torch's class-index convention), not by B
    mixed_weight = (target.weights * w[torch.stack(target.targets, 1)]).sum()
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(weight=w), logits),
                               F.cross_entropy(logits, target.soft(6), weight=w, reduction="sum") / mixed_weight)
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(target.loss(smooth, logits), soft_cross_entropy(logits, target.soft(6, label_smoothing=0.1)))


def test_label_smoothing_commutes_with_mixing(gen):
    y, target = _random_target(gen)
    eps, C = 0.2, 6
    smoothed_then_mixed = MixedTarget(F.one_hot(y, C).float() * (1 - eps) + eps / C, target.params).soft()
    torch.testing.assert_close(target.soft(C, label_smoothing=eps), smoothed_then_mixed)


def test_bce_routes_agree_for_multi_hot(gen):
    B, C = 9, 5
    y = (torch.rand(B, C, generator=gen) < 0.4).float()
    logits = torch.randn(B, C, generator=gen)
    target = MixedTarget(y, MixParams(torch.rand(B, generator=gen), torch.randperm(B, generator=gen)))
    soft_route = soft_bce_with_logits(logits, target.soft())
    torch.testing.assert_close(target.loss(nn.BCEWithLogitsLoss(), logits), soft_route)
    torch.testing.assert_close(target.loss(F.binary_cross_entropy_with_logits, logits), soft_route)
    pw = torch.rand(C, generator=gen) + 0.5
    torch.testing.assert_close(
        target.loss(nn.BCEWithLogitsLoss(pos_weight=pw), logits), soft_bce_with_logits(logits, target.soft(), pos_weight=pw)
    )


def test_mse_loss_route_has_the_soft_route_gradient(gen):
    B = 8
    y = torch.randn(B, 1, generator=gen)
    target = MixedTarget(y, MixParams(torch.rand(B, generator=gen), torch.randperm(B, generator=gen)))
    pred = torch.randn(B, 1, generator=gen, requires_grad=True)
    (g_loss,) = torch.autograd.grad(target.loss(nn.MSELoss(), pred), pred)
    (g_soft,) = torch.autograd.grad(F.mse_loss(pred, target.soft()), pred)
    torch.testing.assert_close(g_loss, g_soft)
    lam = target.lam[:, None]
    gap = (lam * (1 - lam) * (target.y_a - target.y_b) ** 2).mean()
    mixed_losses = (lam * (pred - target.y_a) ** 2 + (1 - lam) * (pred - target.y_b) ** 2).mean()
    # MSE takes the label-mixing route (the loss on the mixed label): loss mixing would add lam(1-lam)(y_a-y_b)^2
    torch.testing.assert_close(mixed_losses - target.loss(nn.MSELoss(), pred), gap)
    torch.testing.assert_close(target.loss(nn.MSELoss(), pred), F.mse_loss(pred, target.soft()))


def test_mixed_loss_adapter(gen):
    logits = torch.randn(12, 6, generator=gen)
    y, target = _random_target(gen)
    loss = MixedLoss(nn.CrossEntropyLoss())
    torch.testing.assert_close(loss(logits, target), soft_cross_entropy(logits, target.soft(6)))
    torch.testing.assert_close(loss(logits, y), F.cross_entropy(logits, y))


def test_kway_mix_and_targets(gen):
    B, k, C = 10, 3, 4
    params = mixlab.sample_params(B, alpha=0.7, mode="sample", k=k, generator=gen)
    assert params.weights.shape == (B, k) and params.index.shape == (B, k)
    assert params.lam.shape == (B,) and torch.equal(params.lam, params.weights[:, 0])
    torch.testing.assert_close(params.index[:, 0], torch.arange(B))
    x = torch.randn(B, 3, 5, generator=gen)
    expected = sum(params.weights[:, j, None, None] * x[params.index[:, j]] for j in range(k))
    torch.testing.assert_close(mixlab.mix(x, params), expected)
    y = torch.randint(0, C, (B,), generator=gen)
    target = MixedTarget(y, params)
    onehot = F.one_hot(y, C).float()
    expected_soft = sum(params.weights[:, j, None] * onehot[params.index[:, j]] for j in range(k))
    torch.testing.assert_close(target.soft(C), expected_soft)
    logits = torch.randn(B, C, generator=gen)
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits), soft_cross_entropy(logits, expected_soft))


def test_mix_pair_is_the_keras_two_stream_formula(gen):
    x1, x2 = torch.rand(6, 1, 4, 4, generator=gen), torch.rand(6, 1, 4, 4, generator=gen)
    y1, y2 = torch.randint(0, 3, (6,), generator=gen), torch.randint(0, 3, (6,), generator=gen)
    mixed, target = mixlab.mix_pair(x1, y1, x2, y2, alpha=0.2, generator=gen)
    lam = target.lam
    torch.testing.assert_close(mixed, lam.view(-1, 1, 1, 1) * x1 + (1 - lam.view(-1, 1, 1, 1)) * x2)
    expected = lam[:, None] * F.one_hot(y1, 3).float() + (1 - lam[:, None]) * F.one_hot(y2, 3).float()
    torch.testing.assert_close(target.soft(3), expected)


def test_two_way_mixup_transform_matches_its_params(gen):
    x, y = torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    mixup = mixlab.MixUp(alpha=0.4, mode="sample", generator=gen)
    mixed, target = mixup(x, y)
    p = target.params
    torch.testing.assert_close(mixed, paper_mixup_data(x, p.lam, p.index))
    torch.testing.assert_close(target.y_b, y[p.index])


def test_partner_batch_may_be_larger(gen):
    # partners drawn from a larger batch (e.g. gathered from every rank): index points into it
    x, y = torch.randn(3, 4, generator=gen), torch.tensor([0, 1, 2])
    big_x, big_y = torch.randn(7, 4, generator=gen), torch.tensor([3, 4, 0, 1, 2, 3, 4])
    params = MixParams(torch.tensor([0.2, 0.5, 0.9]), torch.tensor([6, 0, 3]))
    lam = params.lam[:, None]
    torch.testing.assert_close(mixlab.mix(x, params, partner=big_x), lam * x + (1 - lam) * big_x[params.index])
    soft = MixedTarget(y, params, partner=big_y).soft(5)
    expected = lam * F.one_hot(y, 5).float() + (1 - lam) * F.one_hot(big_y[params.index], 5).float()
    torch.testing.assert_close(soft, expected)
    with pytest.raises(ValueError, match="partner labels must have y's trailing shape"):
        MixedTarget(y, params, partner=torch.rand(7, 2))


@pytest.mark.parametrize("make", [
    lambda g: mixlab.MixUp(alpha=0.4, mode="sample", generator=g),
    lambda g: mixlab.MixUp(alpha=0.4, k=3, generator=g),
    lambda g: mixlab.CutMix(mode="sample", generator=g),
    lambda g: mixlab.MixUpOrCutMix(mode="sample", generator=g),
])
@pytest.mark.parametrize("rows", [(3, 4, 4), (3, 80, 80)])  # small rows and rows that take the row loop
def test_mix_is_differentiable(make, rows, gen):
    # hidden states and learned inputs require grad: mixing must pass gradients to both partners
    x = torch.randn(5, *rows, generator=gen, requires_grad=True)
    mixed, target = make(gen)(x, torch.arange(5))
    p = target.params
    expected = mixlab.mix(x.detach(), p)
    torch.testing.assert_close(mixed.detach(), expected)
    (grad,) = torch.autograd.grad(mixed.sum(), x)
    # d(sum mixed)/dx[r] = total weight row r carries across all outputs
    w, idx = p.kway()
    if p.region is None:
        total = torch.zeros(5).index_add_(0, idx.flatten(), w.flatten())
        torch.testing.assert_close(grad.flatten(1).mean(1), total)
    else:
        torch.testing.assert_close(grad.sum(), torch.tensor(float(mixed.numel())))
    base = torch.randn(5, *rows, generator=gen, requires_grad=True)
    h = base * 1.0  # a non-leaf, mixed in place
    expected_h = mixlab.mix(h.detach().clone(), p)
    out = mixlab.mix(h, p, inplace=True)
    assert out is h
    torch.testing.assert_close(out.detach(), expected_h)
    (grad_base,) = torch.autograd.grad(out.sum(), base)
    torch.testing.assert_close(grad_base, grad)
