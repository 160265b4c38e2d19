"""The mixed loss: smoothing reaches both routes, normalisation matches torch, float32 under autocast."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.losses import MixedLoss, soft_cross_entropy


def _mixed(gen, B=8, C=10, **kw):
    x, y = torch.rand(B, 4, generator=gen), torch.randint(0, C, (B,), generator=gen)
    return mixlab.MixUp(alpha=1.0, mode="sample", generator=gen, **kw)(x, y)[1]


def test_mixer_label_smoothing_reaches_the_loss_route(gen):
    target = _mixed(gen, label_smoothing=0.1)
    logits = torch.randn(8, 10, generator=gen)
    expected = soft_cross_entropy(logits, target.soft(10))  # the soft route smooths
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits), expected)
    torch.testing.assert_close(MixedLoss(nn.CrossEntropyLoss())(logits, target), expected)
    torch.testing.assert_close(target.loss(F.cross_entropy, logits), expected)
    # the same smoothing on both sides is fine; two different values are refused
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(label_smoothing=0.1), logits), expected)
    with pytest.raises(ValueError, match="label_smoothing is set twice"):
        target.loss(nn.CrossEntropyLoss(label_smoothing=0.2), logits)
    with pytest.raises(ValueError, match="label_smoothing=0.1 cannot be applied"):
        target.loss(lambda a, b, reduction: F.cross_entropy(a, b, reduction=reduction), logits)


def test_mixer_label_smoothing_on_float_targets_with_bce(gen):
    B, C = 6, 5
    y = (torch.rand(B, C, generator=gen) < 0.4).float()
    p = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=gen)
    target = MixedTarget(y, p, label_smoothing=0.2)
    logits = torch.randn(B, C, generator=gen)
    torch.testing.assert_close(target.loss(nn.BCEWithLogitsLoss(), logits),
                               F.binary_cross_entropy_with_logits(logits, target.soft()))


@pytest.mark.parametrize("criterion", [
    nn.CrossEntropyLoss(weight=torch.linspace(0.2, 3.0, 10), ignore_index=-100),
    nn.CrossEntropyLoss(weight=torch.linspace(0.2, 3.0, 10), ignore_index=4, label_smoothing=0.1),
    nn.CrossEntropyLoss(ignore_index=4),
    nn.NLLLoss(weight=torch.linspace(0.2, 3.0, 10)),
])
def test_nothing_mixed_equals_the_criterion_exactly(criterion, gen):
    x, y = torch.rand(8, 4, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    y[0], y[3] = -100 if criterion.ignore_index == -100 else 4, 4
    logits = torch.randn(8, 10, generator=gen)
    if isinstance(criterion, nn.NLLLoss):
        logits = logits.log_softmax(1)
    _, target = mixlab.MixUp(alpha=0.0)(x, y)
    torch.testing.assert_close(target.loss(criterion, logits), criterion(logits, y), rtol=1e-6, atol=1e-7)
    dense = torch.randint(0, 10, (8, 3, 3), generator=gen)
    _, target = mixlab.MixUp(alpha=0.0)(torch.rand(8, 1, 3, 3), dense)
    dense_logits = torch.randn(8, 10, 3, 3, generator=gen)
    if isinstance(criterion, nn.NLLLoss):
        dense_logits = dense_logits.log_softmax(1)
    torch.testing.assert_close(target.loss(criterion, dense_logits), criterion(dense_logits, dense), rtol=1e-6, atol=1e-7)


def test_mixed_mean_normalises_by_the_mixed_class_weight(gen):
    B, C = 6, 4
    y = torch.randint(0, C, (B,), generator=gen)
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    p = MixParams(torch.full((B,), 0.7), torch.randperm(B, generator=gen))
    target = MixedTarget(y, p)
    logits = torch.randn(B, C, generator=gen)
    per = 0.7 * F.cross_entropy(logits, y, weight=w, reduction="none") \
        + 0.3 * F.cross_entropy(logits, y[p.index], weight=w, reduction="none")
    norm = (0.7 * w[y] + 0.3 * w[y[p.index]]).sum()
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(weight=w), logits), per.sum() / norm)


@pytest.mark.parametrize("k", [2, 3])
def test_autocast_bf16_logits_give_the_float32_loss(k, gen):
    B, C = 16, 37
    y = torch.randint(0, C, (B,), generator=gen)
    target = MixedTarget(y, mixlab.sample_params(B, alpha=1.0, mode="sample", k=k, generator=gen))
    logits = torch.randn(B, C, generator=gen).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = target.loss(nn.CrossEntropyLoss(), logits)
        ref_plain = F.cross_entropy(logits, y)  # torch's own CE runs in float32 under autocast
    assert got.dtype == torch.float32 and ref_plain.dtype == torch.float32
    want = target.loss(nn.CrossEntropyLoss(), logits.detach().float())
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    per_got = target.loss(nn.CrossEntropyLoss(), logits, reduction="none")
    per_want = target.loss(nn.CrossEntropyLoss(), logits.detach().float(), reduction="none")
    torch.testing.assert_close(per_got, per_want, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(got, logits)
    assert grad.dtype == torch.bfloat16


@pytest.mark.parametrize("smoothing, weight, ignore", [(0.0, None, -100), (0.15, True, 2), (0.0, True, -100)])
def test_fused_gradient_matches_autograd_of_the_reference(smoothing, weight, ignore, gen):
    B, C = 10, 6
    w = torch.linspace(0.5, 2.0, C) if weight else None
    y = torch.randint(0, C, (B,), generator=gen)
    y[1] = ignore if ignore >= 0 else y[1]
    p = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=gen)
    target = MixedTarget(y, p)
    logits = torch.randn(B, C, generator=gen, dtype=torch.float64, requires_grad=True)
    crit = nn.CrossEntropyLoss(weight=None if w is None else w.double(), ignore_index=ignore,
                               label_smoothing=smoothing, reduction="none")
    ref = p.lam * crit(logits, y) + (1 - p.lam.double()) * crit(logits, y[p.index])
    got = target.loss(crit, logits)
    torch.testing.assert_close(got, ref)
    v = torch.randn(B, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((got * v).sum(), logits)[0],
                               torch.autograd.grad((ref * v).sum(), logits)[0])
    assert torch.autograd.gradcheck(lambda z: target.loss(crit, z), (logits,))


def test_label_errors_name_what_came(gen):
    p = mixlab.sample_params(3, alpha=1.0, generator=gen)
    # uint8 class labels work on both routes
    y8 = torch.tensor([1, 2, 3], dtype=torch.uint8)
    t8 = MixedTarget(y8, p)
    torch.testing.assert_close(t8.soft(4), MixedTarget(y8.long(), p).soft(4))
    logits = torch.randn(3, 4, generator=gen)
    torch.testing.assert_close(t8.loss(nn.CrossEntropyLoss(), logits), MixedTarget(y8.long(), p).loss(
        nn.CrossEntropyLoss(), logits))
    # float (B,) labels are regression: said when classes are asked for
    with pytest.raises(ValueError, match=r"float labels of shape \(3,\).*regression.*y.long\(\)"):
        MixedTarget(torch.tensor([0.0, 1.0, 2.0]), p, num_classes=4)
    with pytest.raises(ValueError, match="needs class labels"):
        MixedTarget(torch.tensor([0.0, 1.0, 2.0]), p).soft(label_smoothing=0.1)
    # logits with fewer classes than the labels
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 4\).*got values in \[1, 7\]"):
        MixedTarget(torch.tensor([1, 2, 7]), p).loss(nn.CrossEntropyLoss(), logits)
    # a partner batch smaller than the index range
    with pytest.raises(IndexError, match="partner rows in .* but the partner labels holds 2 rows"):
        MixedTarget(torch.arange(3), MixParams(torch.ones(3), torch.tensor([0, 2, 1])), partner=torch.arange(2))


@pytest.mark.parametrize("shape", [(4, 5, 3, 6), (3, 4, 7), (2, 6, 2, 3, 2), (5, 5), (7,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_cross_entropy_takes_classes_on_dim_1_like_torch(shape, reduction, gen):
    # dense logits (B, C, *S): the classes are dim 1, as in F.cross_entropy with probability targets
    logits = torch.randn(shape, generator=gen, dtype=torch.float64)
    probs = torch.randn(shape, generator=gen, dtype=torch.float64).softmax(1 if len(shape) > 1 else 0)
    torch.testing.assert_close(soft_cross_entropy(logits, probs, reduction=reduction),
                               F.cross_entropy(logits, probs, reduction=reduction))


def _dense_target(gen, method, B=6, C=5, H=4, W=7, ignore=255, smoothing=0.0):
    x = torch.rand(B, 3, H, W, generator=gen)
    mask = torch.randint(0, C, (B, H, W), generator=gen)
    mask[torch.rand(B, H, W, generator=gen) < 0.3] = ignore  # ignored pixels in both sources
    mask[0] = ignore  # a row whose own labels are all ignored
    mixer = {"mixup": mixlab.MixUp(alpha=1.0, mode="sample", generator=gen),
             "cutmix": mixlab.CutMix(alpha=1.0, mode="sample", generator=gen),
             "none": mixlab.MixUp(alpha=0.0)}[method]
    params = mixer.sample(x)
    return mask, MixedTarget(mask, params, ignore_index=ignore, label_smoothing=smoothing)


@pytest.mark.parametrize("method", ["mixup", "cutmix", "none"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_route_equals_loss_route_with_ignored_pixels(method, reduction, smoothing, gen):
    C, ignore = 5, 255
    mask, target = _dense_target(gen, method, C=C, ignore=ignore, smoothing=smoothing)
    logits = torch.randn(mask.shape[0], C, *mask.shape[1:], generator=gen, dtype=torch.float64, requires_grad=True)
    soft = target.soft(C)
    ignored = torch.stack([t == ignore for t in target.targets]).all(0)  # (B, H, W): no source has a label
    assert bool(ignored.any()) and bool((soft.sum(1)[ignored] == 0).all())  # all-zero soft rows
    got = soft_cross_entropy(logits, soft.double(), reduction=reduction)
    crit = nn.CrossEntropyLoss(ignore_index=ignore, reduction=reduction)
    want = target.loss(crit, logits)
    torch.testing.assert_close(got, want)
    v = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((got * v).sum(), logits)[0],
                               torch.autograd.grad((want * v).sum(), logits)[0])
    if method == "none":  # nothing mixed: torch's own mean over the non-ignored pixels
        plain = F.cross_entropy(logits, mask, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
        torch.testing.assert_close(got, plain)


def test_soft_route_equals_functional_loss_route_with_ignore_minus_100(gen):
    mask, target = _dense_target(gen, "cutmix", C=4, ignore=-100)
    logits = torch.randn(mask.shape[0], 4, *mask.shape[1:], generator=gen)
    torch.testing.assert_close(soft_cross_entropy(logits, target.soft(4)), target.loss(F.cross_entropy, logits))
