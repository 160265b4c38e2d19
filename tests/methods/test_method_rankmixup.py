"""RankMixup's losses (Noh et al., ICCV 2023) against a port of the official code (cvlab-yonsei/RankMixup,
``calibrate/losses/rankmixup.py`` ``RankMixup_MRL`` / ``RankMixup_MNDCG``, and ``mixup_process`` from
``calibrate/net/resnet_mixup.py``): the same values and gradients on the same draws, with the mixed batches
made by a mixlab mixer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixlab
from mixlab import MixParams
from mixlab.rankmixup import mixup_ndcg_loss, mixup_ranking_loss


# -- the port ------------------------------------------------------------------------------------------------------
def official_mixup_process(out, target_reweighted, lam, indices):
    """``mixup_process`` with its draws (``np.random.beta``, ``np.random.permutation``) given."""
    out = out * lam + out[indices] * (1 - lam)
    target_shuffled_onehot = target_reweighted[indices]
    return out, target_reweighted * lam + target_shuffled_onehot * (1 - lam), lam


class OfficialMRL(nn.Module):
    def __init__(self, margin=0.1, alpha=0.1):
        super().__init__()
        self.margin, self.alpha = margin, alpha
        self.cross_entropy = nn.CrossEntropyLoss()

    def get_logit_diff(self, inputs, mixup):
        max_values = inputs.max(dim=1)[0].unsqueeze(dim=1)
        max_values_mixup = mixup.max(dim=1)[0].unsqueeze(dim=1)
        return max_values_mixup - max_values

    def get_conf_diff(self, inputs, mixup):
        max_values = F.softmax(inputs, dim=1).max(dim=1)[0].unsqueeze(dim=1)
        max_values_mixup = F.softmax(mixup, dim=1).max(dim=1)[0].unsqueeze(dim=1)
        return max_values_mixup - max_values

    def forward(self, inputs, targets, mixup, target_re, lam, probs=False):
        loss_ce = self.cross_entropy(inputs, targets)
        self_mixup_mask = (target_re == 1.0).sum(dim=1).reshape(1, -1)
        self_mixup_mask = (self_mixup_mask.sum(dim=0) == 0.0)
        diff = self.get_conf_diff(inputs, mixup) if probs else self.get_logit_diff(inputs, mixup)
        loss_mixup = (self_mixup_mask * F.relu(diff + self.margin)).mean()
        return loss_ce + self.alpha * loss_mixup, loss_ce, loss_mixup


class OfficialMNDCG(nn.Module):
    def __init__(self, num_classes=10, alpha=0.1):
        super().__init__()
        self.alpha, self.num_classes = alpha, num_classes
        self.cross_entropy = nn.CrossEntropyLoss()

    def get_indcg(self, inputs, mixup, lam, target_re):
        mixup = mixup.reshape(len(lam), -1, self.num_classes)
        target_re = target_re.reshape(len(lam), -1, self.num_classes)
        mixup = F.softmax(mixup, dim=2)
        inputs = F.softmax(inputs, dim=1)
        inputs_lam = torch.ones(inputs.size(0), 1, device=inputs.device)
        max_values = inputs.max(dim=1, keepdim=True)[0]
        max_mixup = mixup.max(dim=2)[0].t()
        max_lam = target_re.max(dim=2)[0].t()
        sort_index = torch.argsort(max_lam, descending=True)
        max_mixup_sorted = torch.gather(max_mixup, 1, sort_index)
        order = torch.arange(1, 2 + len(lam), device=max_mixup.device)
        dcg_order = torch.log2(order + 1)
        max_mixup_sorted = torch.cat((max_values, max_mixup_sorted), dim=1)
        dcg = (max_mixup_sorted / dcg_order).sum(dim=1)
        max_lam_sorted = torch.gather(max_lam, 1, sort_index)
        max_lam_sorted = torch.cat((inputs_lam, max_lam_sorted), dim=1)
        idcg = (max_lam_sorted / dcg_order).sum(dim=1)
        ndcg = dcg / idcg
        inv_ndcg = idcg / dcg
        ndcg_mask = (idcg > dcg)
        return ndcg_mask * ndcg + (~ndcg_mask) * inv_ndcg

    def forward(self, inputs, targets, mixup, target_re, lam):
        loss_ce = self.cross_entropy(inputs, targets)
        loss_mixup = (1.0 - self.get_indcg(inputs, mixup, lam, target_re)).mean()
        return loss_ce + self.alpha * loss_mixup, loss_ce, loss_mixup


# -- helpers -------------------------------------------------------------------------------------------------------
B, C = 8, 10


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.fc = nn.Linear(12, C)

    def forward(self, x):
        return self.fc(x.flatten(1)) * 3


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, 2, 2, generator=g), torch.arange(B) % C  # labels all different: no self-mix row


def fixed(lam, index):
    return MixParams(torch.full((B,), lam), index)


LAMS = (0.71, 0.23, 0.48)
PERMS = [torch.roll(torch.arange(B), s) for s in (1, 3, 5)]


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("margin", [2.0, 0.1])
def test_mrl_equals_the_official_loss_and_gradients(probs, margin):
    x, y = data()
    net = Net()
    # official: the raw and the mixed forward passes, CE on the raw batch plus alpha * MRL
    outputs = net(x)
    xm, target_re, lam = official_mixup_process(x, F.one_hot(y, C).float(), LAMS[0], PERMS[0])
    ref, ref_ce, ref_term = OfficialMRL(margin=margin, alpha=0.1)(outputs, y, net(xm), target_re, [lam], probs)
    ref.backward()
    ref_grads = grads(net)
    net.zero_grad()
    # mixlab: the mixed batch and its target from mixlab.mix / MixedTarget with the same draws
    params = fixed(LAMS[0], PERMS[0])
    mixed, target = mixlab.mix(x, params), mixlab.MixedTarget(y, params, num_classes=C)
    torch.testing.assert_close(mixed, xm)
    logits = net(x)
    term = mixup_ranking_loss(logits, net(mixed), target, margin=margin, scores="probs" if probs else "logits")
    loss = F.cross_entropy(logits, y) + 0.1 * term
    loss.backward()
    torch.testing.assert_close(term, ref_term)
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads(net), ref_grads):
        torch.testing.assert_close(a, b)


def test_mrl_soft_rows_as_the_target_and_rows_mixed_with_their_own_class():
    x, _ = data(1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    index = torch.tensor([1, 0, 2, 5, 4, 3, 7, 6])  # rows 0, 1, 6, 7 take a partner of their own class; 2, 4 itself
    net = Net()
    logits, mixed_logits = net(x), net(mixlab.mix(x, fixed(0.3, index)))
    target = mixlab.MixedTarget(y, fixed(0.3, index), num_classes=C)
    term = mixup_ranking_loss(logits, mixed_logits, target, margin=2.0)
    hinge = F.relu(mixed_logits.max(1).values - logits.max(1).values + 2.0)
    mixed_rows = torch.tensor([0, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    torch.testing.assert_close(term, (hinge * mixed_rows).mean())  # the official line's intent, row by row
    torch.testing.assert_close(mixup_ranking_loss(logits, mixed_logits, target.soft(), margin=2.0), term)
    # the official line broadcasts the (B,) mask against the (B, 1) hinge: mean(mask) * mean(hinge)
    soft = F.one_hot(y, C).float() * 0.3 + F.one_hot(y[index], C).float() * 0.7
    official = OfficialMRL(margin=2.0)(logits, y, mixed_logits, soft, [0.3])[2]
    torch.testing.assert_close(official, mixed_rows.float().mean() * hinge.mean())
    torch.testing.assert_close(mixup_ranking_loss(logits, mixed_logits, None, margin=2.0), hinge.mean())
    none = mixup_ranking_loss(logits, mixed_logits, target, margin=2.0, reduction="none")
    assert none.shape == (B,) and torch.equal(none == 0, ~mixed_rows | (hinge == 0))


@pytest.mark.parametrize("k", [1, 3])
def test_mndcg_equals_the_official_loss_and_gradients(k):
    x, y = data(2)
    net = Net()
    outputs = net(x)
    mixes = [official_mixup_process(x, F.one_hot(y, C).float(), LAMS[j], PERMS[j]) for j in range(k)]
    xm = torch.cat([m[0] for m in mixes])
    target_re = torch.cat([m[1] for m in mixes])
    lam = [m[2] for m in mixes]
    ref, _, ref_term = OfficialMNDCG(num_classes=C)(outputs, y, net(xm), target_re, lam)
    ref.backward()
    ref_grads = grads(net)
    net.zero_grad()
    # mixlab: k mixed batches, one forward pass over their concatenation (as the official model does)
    params = [fixed(LAMS[j], PERMS[j]) for j in range(k)]
    mixed = torch.cat([mixlab.mix(x, p) for p in params])
    targets = [mixlab.MixedTarget(y, p, num_classes=C) for p in params]
    logits = net(x)
    term = mixup_ndcg_loss(logits, net(mixed).view(k, B, C), targets)
    loss = F.cross_entropy(logits, y) + 0.1 * term
    loss.backward()
    torch.testing.assert_close(term, ref_term)
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads(net), ref_grads):
        torch.testing.assert_close(a, b)
    # the same with a list of (B, C) logits and soft rows
    listed = mixup_ndcg_loss(logits, list(net(mixed).view(k, B, C)), target_re.view(k, B, C))
    torch.testing.assert_close(listed, ref_term)


def test_with_any_mixer_the_training_step_runs():
    x, y = data(3)
    net = Net()
    mixer = mixlab.CutMix(1.0, generator=torch.Generator().manual_seed(0), num_classes=C)
    x_img = torch.rand(B, 3, 2, 2)
    logits = net(x_img)
    mixed, target = mixer(x_img, y)
    mrl = mixup_ranking_loss(logits, net(mixed), target)
    draws = [mixer(x_img, y) for _ in range(3)]
    mixed_logits = net(torch.cat([m for m, _ in draws])).view(3, B, C)
    ndcg = mixup_ndcg_loss(logits, mixed_logits, [t for _, t in draws])
    (F.cross_entropy(logits, y) + 0.1 * mrl + 0.1 * ndcg).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_arguments_are_checked():
    logits = torch.randn(B, C)
    with pytest.raises(ValueError, match="mixed_logits"):
        mixup_ranking_loss(logits, torch.randn(B + 1, C))
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        mixup_ranking_loss(torch.randn(B, C, 4), torch.randn(B, C, 4))
    with pytest.raises(ValueError, match="scores"):
        mixup_ranking_loss(logits, logits, scores="max")
    with pytest.raises(ValueError, match="targets"):
        mixup_ndcg_loss(logits, torch.randn(2, B, C), torch.rand(3, B, C))
