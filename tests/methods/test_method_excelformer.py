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


def _frame(B=8, n_num=4, n_cat=3, y=None):
    torch_frame = pytest.importorskip("torch_frame")
    g = torch.Generator().manual_seed(5)
    x_num = torch.randn(B, n_num, generator=g)
    x_cat = torch.randint(0, 6, (B, n_cat), generator=g)
    cols = {torch_frame.stype.numerical: [f"n{i}" for i in range(n_num)],
            torch_frame.stype.categorical: [f"c{i}" for i in range(n_cat)]}
    frame = torch_frame.TensorFrame({torch_frame.stype.numerical: x_num, torch_frame.stype.categorical: x_cat},
                                    cols, y=y)
    return torch_frame, frame, x_num, x_cat


@pytest.mark.parametrize("seed", range(3))
def test_featmix_mixes_a_tensor_frame_as_the_tensor_of_its_columns(seed):
    torch_frame, frame, x_num, x_cat = _frame()
    B, n_num = x_num.shape
    y = torch.arange(B) % 3
    w = [1.0, 2.0, 0.5, 1.0, 3.0, 0.0, 1.0]
    out, target = FeatMix(feature_weights=w, generator=torch.Generator().manual_seed(seed))(frame, y)
    ref, ref_target = FeatMix(feature_weights=w, generator=torch.Generator().manual_seed(seed))(
        torch.cat([x_num, x_cat.float()], 1), y)
    assert isinstance(out, torch_frame.TensorFrame) and out.col_names_dict == frame.col_names_dict
    num, cat = out.feat_dict[torch_frame.stype.numerical], out.feat_dict[torch_frame.stype.categorical]
    assert torch.equal(num, ref[:, :n_num]) and cat.dtype == x_cat.dtype and torch.equal(cat, ref[:, n_num:].long())
    index = target.params.index
    lam, _, u = replay(seed, B, n_num + x_cat.shape[1], 0.5)
    take = ((u <= (1 - lam)[:, None]) & (lam < 1)[:, None])[:, n_num:]  # FeatMix's rule: the partner's features
    assert torch.equal(cat, torch.where(take, x_cat[index], x_cat))  # each code whole from exactly one row
    assert bool(((cat == x_cat) | (cat == x_cat[index])).all())
    assert torch.equal(index, ref_target.params.index)
    torch.testing.assert_close(target.lam, ref_target.lam)


def test_a_tensor_frame_labels_its_own_y_and_mixlab_imports_without_torch_frame():
    import subprocess
    import sys

    torch_frame, frame, x_num, x_cat = _frame(y=torch.arange(8) % 2)
    out = FeatMix(generator=torch.Generator().manual_seed(1))(frame)
    _, tensor_target = FeatMix(generator=torch.Generator().manual_seed(1))(torch.cat([x_num, x_cat.float()], 1),
                                                                            frame.y)
    assert isinstance(out.y, mixlab.MixedTarget)
    torch.testing.assert_close(out.y.lam, tensor_target.lam)
    assert torch.equal(out.y.params.index, tensor_target.params.index)
    torch_frame, bare, *_ = _frame()
    with pytest.raises(ValueError, match="found no labels"):
        FeatMix()(bare)
    assert FeatMix(labels_getter=None)(bare).y is None
    with pytest.raises(TypeError, match="does not take a torch_frame.TensorFrame"):
        HiddenMix()(bare, torch.arange(8))
    code = "import sys, mixlab; mixlab.FeatMix(); assert 'torch_frame' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
