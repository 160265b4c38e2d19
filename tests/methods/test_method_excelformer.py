"""Feat-Mix and Hidden-Mix against ports of the official code (WhatAShot/ExcelFormer, ``lib/aug_utils.py``:
``batch_feat_shuffle`` and ``batch_dim_shuffle``; the label weights and losses of ``run_default_config_excel.py``),
with the same draws: the same mixed rows, label weights and losses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixlab
from mixlab import sample_params
from mixlab.methods.excelformer import FeatMix, HiddenMix


# ---------------------------------------------------------------------------------------------- the port
def batch_feat_shuffle(Xs, shuffle_rates, uniform, shuffled_sample_ids):
    """``batch_feat_shuffle`` with its numpy draws given: rates ``(b, 1)``, uniforms ``(b, f)``, a permutation."""
    feat_masks = uniform > shuffle_rates  # b f
    Xs_shuffled = Xs[shuffled_sample_ids]
    feat_masks = feat_masks.unsqueeze(-1) if Xs.ndim == 3 else feat_masks
    Xs_mixup = feat_masks * Xs + ~feat_masks * Xs_shuffled
    return Xs_mixup, feat_masks.squeeze(-1), shuffled_sample_ids


def batch_dim_shuffle(Xs, shuffle_rates, uniform, shuffled_sample_ids):
    """``batch_dim_shuffle`` with its numpy draws given."""
    dim_masks = uniform < shuffle_rates  # b d
    Xs_shuffled = Xs[shuffled_sample_ids]
    dim_masks = dim_masks.unsqueeze(1)  # b 1 d
    Xs_mixup = dim_masks * Xs + ~dim_masks * Xs_shuffled
    return Xs_mixup, shuffle_rates[:, 0].float(), shuffled_sample_ids


def official_loss(preds, y, lambdas, shuffled_ids, regression=False):
    lambdas2 = 1 - lambdas
    if regression:
        return F.mse_loss(preds, lambdas * y + lambdas2 * y[shuffled_ids])
    loss = lambdas * F.cross_entropy(preds, y, reduction='none') + \
        lambdas2 * F.cross_entropy(preds, y[shuffled_ids], reduction='none')
    return loss.mean()


def replay(seed, B, n_uniform, alpha):
    """The draws a mixer seeded with ``seed`` makes, in its order: lam and partners, then the uniforms."""
    g = torch.Generator().manual_seed(seed)
    params = sample_params(B, alpha=alpha, mode="sample", generator=g)
    return params.lam, params.index, torch.rand(B, n_uniform, generator=g)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("shape", [(8, 7), (8, 7, 4)], ids=["columns", "tokens"])
@pytest.mark.parametrize("seed", range(3))
def test_featmix_equals_the_official_with_the_same_draws(shape, seed):
    B, nf = shape[:2]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed))
    y = torch.arange(B) % 3
    mi = torch.rand(nf, generator=torch.Generator().manual_seed(7)).double()
    sorted_mi_scores = (mi / mi.sum()).float()  # the official normalised mutual information
    mixed, target = FeatMix(feature_weights=mi.tolist(), generator=torch.Generator().manual_seed(seed))(x, y)
    lam, index, u = replay(seed, B, nf, 0.5)
    ref, feat_masks, ids = batch_feat_shuffle(x, (1 - lam)[:, None], u, index)  # rate = 1 - lam
    assert torch.equal(mixed, ref)
    assert torch.equal(target.params.index, ids)
    lambdas = (sorted_mi_scores * feat_masks).sum(1)
    torch.testing.assert_close(target.lam, lambdas)
    preds = torch.randn(B, 3, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(target.loss(F.cross_entropy, preds), official_loss(preds, y, lambdas, ids))
    # regression targets: the official mixes the labels, as mixlab's MSE route does
    yr = torch.randn(B)
    reg = mixlab.MixedTarget(yr, FeatMix(feature_weights=mi.tolist()).target_params(target.params, yr))
    torch.testing.assert_close(reg.loss(F.mse_loss, preds[:, 0]), official_loss(preds[:, 0], yr, lambdas, ids, True))


def test_featmix_without_scores_weighs_labels_by_the_share_kept():
    x = torch.randn(6, 10)
    mixed, target = FeatMix(generator=torch.Generator().manual_seed(0))(x, torch.arange(6))
    kept = (mixed == x).float().mean(1)
    moved = target.params.index != torch.arange(6)
    torch.testing.assert_close(target.lam[moved], kept[moved])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("label", ["rate", "kept"])
def test_hiddenmix_equals_the_official_with_the_same_draws(seed, label):
    B, nf, d = 8, 5, 16
    x = torch.randn(B, nf, d, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(B) % 4
    mixed, target = HiddenMix(label=label, generator=torch.Generator().manual_seed(seed))(x, y)
    lam, index, u = replay(seed, B, d, 0.5)
    ref, lambdas, ids = batch_dim_shuffle(x, lam[:, None].double(), u, index)  # rate = lam
    assert torch.equal(mixed, ref)
    if label == "rate":  # the official label weight: the drawn rate
        torch.testing.assert_close(target.lam, lambdas)
        preds = torch.randn(B, 4, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(target.loss(F.cross_entropy, preds), official_loss(preds, y, lambdas, ids))
    else:  # the exact share of dimensions kept
        kept = (mixed == x).all(1).float().mean(1)
        moved = index != torch.arange(B)
        torch.testing.assert_close(target.lam[moved], kept[moved])


def test_every_token_takes_the_same_dimensions_and_options_are_checked():
    x = torch.randn(4, 6, 32)
    mixed, target = HiddenMix(alpha=1.0, generator=torch.Generator().manual_seed(1))(x, torch.arange(4))
    same = mixed == x  # (B, F, d)
    assert torch.equal(same, same[:, :1].expand_as(same))
    with pytest.raises(ValueError, match="label must be one of"):
        HiddenMix(label="expected")
    with pytest.raises(ValueError, match="token embeddings"):
        HiddenMix()(torch.randn(4, 6), torch.arange(4))
    with pytest.raises(ValueError, match="feature_weights must be"):
        FeatMix(feature_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="feature_weights holds 3 scores"):
        FeatMix(feature_weights=[1.0, 1.0, 1.0])(torch.randn(4, 6), torch.arange(4))


def test_batch_mode_shares_one_mask_and_p_zero_leaves_rows():
    x = torch.randn(5, 9)
    mixed, target = FeatMix(mode="batch", generator=torch.Generator().manual_seed(2))(x, torch.arange(5))
    take = target.params.region.values
    assert torch.equal(take, take[:1].expand_as(take))
    mixed, target = FeatMix(p=0.0)(x, torch.arange(5))
    assert torch.equal(mixed, x) and torch.equal(target.lam, torch.ones(5))


def test_reachable_and_registered():
    assert mixlab.FeatMix is FeatMix and mixlab.HiddenMix is HiddenMix
    assert "vectors" in mixlab.methods.get("featmix").inputs and mixlab.methods.get("hiddenmix").inputs == ("tokens",)
