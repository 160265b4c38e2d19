"""Similarity Kernel Mixup against ports of the two implementations of Bouniot et al. 2023 ("Tailoring Mixup to
Data for Calibration"): torch-uncertainty's ``WarpingMixup`` (ENSTA-U2IS-AI/torch-uncertainty,
``src/torch_uncertainty/transforms/mixup.py``, the kernel it ships) and the paper's own ``KernelMixup`` with
``warping="beta_cdf"`` (qbouniot/sim_kernel_mixup, ``classification/torch_uncertainty/transforms/mixup.py``).
The ports take the draws (``lam`` before warping, the partners) as arguments; mixlab's are read from the same
generator through the ``draw_pairs`` hook, so both warp the same numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import mixlab
from mixlab.methods.skmixup import SimilarityKernelMixup, symmetric_beta_cdf


# -- the ports ----------------------------------------------------------------------------------------------------
def beta_warping(x, alpha_cdf=1.0, eps=1e-12):
    return stats.beta.cdf(x, a=alpha_cdf + eps, b=alpha_cdf + eps)


def tu_sim_gauss_kernel(dist, tau_max=1.0, tau_std=0.5):
    """torch-uncertainty: ``tau_max * exp(-(dist - 1) / (mean(dist) * 2 tau_std^2))`` on the raw distances."""
    dist_rate = tau_max * np.exp(-(dist - 1) / (np.mean(dist) * 2 * tau_std * tau_std))
    return 1 / (dist_rate + 1e-12)


def paper_sim_gauss_kernel(dist, tau_max=1.0, tau_std=0.5):
    """sim_kernel_mixup (``inverse_cdf=False``): the caller has divided ``dist`` by its batch mean."""
    dist_rate = tau_max * np.exp(-(dist - 1) / (2 * tau_std * tau_std))
    return 1 / (dist_rate + 1e-12)


def port_mix(x, y, feats, lam, index, num_classes, *, kernel, tau_max=1.0, tau_std=0.5):
    """``WarpingMixup.__call__`` (kernel="torch-uncertainty") / ``KernelMixup.__call__`` (kernel="paper") after
    ``_get_params``: ``lam`` a float (batch mode) or a numpy array (elem mode), ``index`` the permutation."""
    l2_dist = (feats - feats[index]).pow(2).sum([i for i in range(len(feats.size())) if i > 0]).cpu().numpy()
    if kernel == "paper":
        warp_param = paper_sim_gauss_kernel(l2_dist / l2_dist.mean(), tau_max, tau_std)
    else:
        warp_param = tu_sim_gauss_kernel(l2_dist, tau_max, tau_std)
    k_lam = torch.as_tensor(beta_warping(lam, warp_param), device=x.device)
    lam_v = k_lam.view(-1, *[1 for _ in range(x.ndim - 1)]).float()
    mixed_x = lam_v * x + (1 - lam_v) * x[index, :]
    y1, y2 = F.one_hot(y, num_classes), F.one_hot(y[index], num_classes)
    lam_y = k_lam.view(-1, 1).float()
    return mixed_x, lam_y * y1 + (1 - lam_y) * y2, k_lam


# -- helpers -------------------------------------------------------------------------------------------------------
def draws(mixer, B, y, seed):
    """The draws mixlab warps (the draw_pairs hook with the generator at the same state)."""
    return mixer.draw_pairs(B, y, torch.Generator().manual_seed(seed), torch.device("cpu"))


def batch(B=16, C=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, 8, 8, generator=g)
    x[: B // 2] *= 0.2  # some close pairs, some far ones: a spread of warping parameters
    return x, torch.arange(B) % C


@pytest.mark.parametrize("kernel", ["paper", "torch-uncertainty"])
@pytest.mark.parametrize("mode", ["sample", "batch"])
@pytest.mark.parametrize("tau_max, tau_std", [(1.0, 0.5), (2.0, 0.25)])
def test_equals_the_ports_on_the_same_draws_with_input_distances(kernel, mode, tau_max, tau_std):
    x, y = batch()
    B, C = x.shape[0], 10
    for seed in range(5):
        mixer = SimilarityKernelMixup(1.0, kernel=kernel, tau_max=tau_max, tau_std=tau_std, mode=mode,
                                      generator=torch.Generator().manual_seed(seed), num_classes=C)
        raw = draws(mixer, B, y, seed)
        lam = float(raw.lam[0]) if mode == "batch" else raw.lam.double().numpy()
        ref_x, ref_y, ref_lam = port_mix(x, y, x, lam, raw.index, C, kernel=kernel, tau_max=tau_max,
                                         tau_std=tau_std)
        mixed, target = mixer(x, y)
        assert torch.equal(target.params.index, raw.index)
        torch.testing.assert_close(target.params.lam.double(), ref_lam, atol=2e-7, rtol=0)
        torch.testing.assert_close(mixed, ref_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(target.soft(), ref_y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel", ["paper", "torch-uncertainty"])
def test_embeddings_given_as_features_set_the_distances(kernel):
    x, y = batch(12, seed=1)
    feats = torch.randn(12, 32, generator=torch.Generator().manual_seed(4)) * 3.0  # an embedding's scale
    mixer = SimilarityKernelMixup(kernel=kernel, generator=torch.Generator().manual_seed(7), num_classes=10)
    raw = draws(mixer, 12, y, 7)
    _, _, ref_lam = port_mix(x, y, feats, raw.lam.double().numpy(), raw.index, 10, kernel=kernel)
    mixed, target = mixer(x, y, features=feats)
    torch.testing.assert_close(target.params.lam.double(), ref_lam, atol=2e-7, rtol=0)
    # the same draws with the inputs' distances warp differently
    _, other = SimilarityKernelMixup(kernel=kernel, generator=torch.Generator().manual_seed(7), num_classes=10)(x, y)
    assert not torch.allclose(other.params.lam, target.params.lam)


def test_close_pairs_are_pulled_to_one_half_far_pairs_to_their_own_row():
    # the kernel's effect: similar rows mix more (lam towards 1/2), distant rows less (lam towards 0 or 1)
    B = 6
    x = torch.zeros(B, 4)
    x[1] = 1e-3  # row 0's partner is row 1: almost the same
    x[2], x[3] = 0.0, 10.0  # row 2's partner is row 3: far apart
    x[4], x[5] = 1.0, 1.2
    index = torch.tensor([1, 0, 3, 2, 5, 4])
    lam = torch.full((B,), 0.2, dtype=torch.float32)
    warped = SimilarityKernelMixup().warp(lam, x, index)
    assert abs(float(warped[0]) - 0.5) < abs(0.2 - 0.5)
    assert float(warped[2]) < 1e-6


def test_symmetric_beta_cdf_equals_scipy():
    a = torch.tensor(np.concatenate([np.logspace(-3, 8, 90), [1e12 + 1e-12]]))
    x = torch.tensor(np.concatenate([np.linspace(0, 1, 201), 0.5 + np.logspace(-9, -1, 30),
                                     0.5 - np.logspace(-9, -1, 30), [1e-12, 1 - 1e-12]]))
    A, X = torch.meshgrid(a, x, indexing="ij")
    ours = symmetric_beta_cdf(X, A)
    ref = torch.tensor(stats.beta.cdf(X.numpy(), A.numpy(), A.numpy()))
    close = A <= 1e8  # beyond, scipy's own value near 1/2 loses digits (see the next test)
    torch.testing.assert_close(ours[close], ref[close], atol=1e-9, rtol=0)
    assert ours.dtype == torch.float64 and bool(torch.isfinite(ours).all())


def test_symmetric_beta_cdf_is_the_normal_limit_for_huge_parameters():
    # Beta(a, a) -> N(1/2, 1 / (8a + 4)); scipy 1.17 gives 0.4812 at a=1e13, x=1/2-1.5e-12 where the limit is
    # 0.49999452
    for a, d in ((1e10, -3e-6), (1e12, 2e-7), (1e12, -1e-6)):
        x = torch.tensor([0.5 + d], dtype=torch.float64)
        normal = stats.norm.cdf(d * math.sqrt(8 * a + 4))
        assert abs(float(symmetric_beta_cdf(x, torch.tensor([a], dtype=torch.float64))) - normal) < 1e-9


def test_options_are_checked_and_the_method_is_registered():
    assert "skmixup" in mixlab.methods.available()
    assert mixlab.methods.get("skmixup").cls is SimilarityKernelMixup
    with pytest.raises(ValueError, match="tau_max"):
        SimilarityKernelMixup(tau_max=0.0)
    with pytest.raises(ValueError, match="tau_std"):
        SimilarityKernelMixup(tau_std=-1.0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        SimilarityKernelMixup(kernel="gauss")
    with pytest.raises(ValueError, match="features"):
        SimilarityKernelMixup()(torch.rand(4, 3), torch.arange(4), features=torch.rand(3, 2))


def test_a_row_p_leaves_unmixed_and_a_batch_of_identical_rows_stay_finite():
    x, y = batch(8)
    _, target = SimilarityKernelMixup(p=0.0, generator=torch.Generator().manual_seed(0))(x, y)
    assert torch.equal(target.params.lam, torch.ones(8))
    same = torch.ones(4, 3, 4, 4)  # every distance 0: the batch mean is 0
    mixed, target = SimilarityKernelMixup(generator=torch.Generator().manual_seed(0))(same, torch.arange(4))
    assert bool(torch.isfinite(target.params.lam).all()) and torch.equal(mixed, same)
