"""Label-side policies: Remix's rule, class-balanced partners, C-Mixup's kernel, RegMixup's loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixParams
from mixlab.policies import CMixup, Remix, balanced_partners, regmixup_loss


def test_remix_label_weights_follow_the_papers_rule(gen):
    counts = [1000, 100, 10]
    remix = Remix(alpha=1.0, class_counts=counts, kappa=3.0, tau=0.5, generator=gen)
    y = torch.tensor([0, 2, 1, 0, 2, 1])
    p = MixParams(torch.tensor([0.3, 0.3, 0.6, 0.8, 0.7, 0.4]), torch.tensor([1, 0, 2, 4, 3, 5]))
    lam_y = remix.label_params(p, y).lam
    # row 0: class 0 (1000) with class 2 (10): ratio 100 >= 3 and lam 0.3 < 0.5 -> label all partner's
    # row 1: class 2 with class 0: ratio 0.01 <= 1/3 and 1 - lam 0.7 >= 0.5 -> lam kept
    # row 2: class 1 (100) with class 1: ratio 1 -> lam kept
    # row 3: class 0 with class 2 (row 4): ratio 100, lam 0.8 >= tau -> kept
    # row 4: class 2 with class 0: ratio 0.01, 1 - lam 0.3 < 0.5 -> label all its own
    # row 5: class 1 with itself -> kept
    torch.testing.assert_close(lam_y, torch.tensor([0.0, 0.3, 0.6, 0.8, 1.0, 0.4]))


def test_remix_call_mixes_inputs_with_lam_and_labels_with_the_rebalanced_weight(gen):
    counts = [500, 5]
    x, y = torch.rand(64, 3, generator=gen), torch.randint(0, 2, (64,), generator=gen)
    remix = Remix(alpha=1.0, class_counts=counts, generator=gen)
    mixed, target = remix(x, y)
    lam_x = remix.last_input_lam
    expected_x = lam_x[:, None] * x + (1 - lam_x[:, None]) * x[target.params.index]
    torch.testing.assert_close(mixed, expected_x)
    minority_wins = (y == 0) & (y[target.params.index] == 1) & (lam_x < 0.5)
    assert bool(minority_wins.any()) and bool((target.lam[minority_wins] == 0).all())
    soft = target.soft(2)
    torch.testing.assert_close(soft.sum(1), torch.ones(64))


def test_balanced_partners_pick_each_class_equally_often(gen):
    y = torch.tensor([0] * 90 + [1] * 10)
    picks = torch.cat([balanced_partners(y, [90, 10], generator=gen) for _ in range(200)])
    share_rare = (y[picks] == 1).float().mean().item()
    assert 0.45 < share_rare < 0.55  # 10% of rows, half the partners
    remix = Remix(alpha=1.0, class_counts=[90, 10], balanced=True, generator=gen)
    with pytest.raises(ValueError, match="needs the labels"):
        remix.sample(torch.rand(100, 2))
    assert (y[remix.sample(torch.rand(100, 2), y).index] == 1).float().mean() > 0.3


def test_cmixup_prefers_partners_with_close_targets(gen):
    B = 200
    y = torch.linspace(0, 10, B)[:, None]
    cm = CMixup(alpha=2.0, bandwidth=0.2, generator=gen)
    idx = cm.partners(y, gen)
    assert (y[idx] - y).abs().mean() < 0.5  # a wide kernel would give ~3.3 (uniform partners)
    x = torch.rand(B, 4, generator=gen)
    mixed, target = cm(x, y)
    lam = target.lam[:, None]
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[target.params.index])
    torch.testing.assert_close(target.soft(), lam * y + (1 - lam) * y[target.params.index])
    with pytest.raises(TypeError, match="regression targets"):
        cm(x, torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        CMixup(bandwidth=0)


def test_regmixup_loss_is_clean_plus_eta_mixed(gen):
    x, y = torch.rand(6, 4, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    mixed, target = mixlab.MixUp(alpha=10.0, generator=gen)(x, y)
    logits = torch.randn(12, 3, generator=gen)
    ce = nn.CrossEntropyLoss()
    expected = F.cross_entropy(logits[:6], y) + 0.5 * target.loss(ce, logits[6:])
    torch.testing.assert_close(regmixup_loss(ce, logits, y, target, eta=0.5), expected)
    with pytest.raises(ValueError, match="12 on dim 0"):
        regmixup_loss(ce, logits[:6], y, target)
