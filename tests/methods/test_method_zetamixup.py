"""zeta-mixup against a port of the official code (kakumarabhishek/zeta-mixup, ``zeta_mixup_weights`` and
``zeta_mixup``): the same weight law, and mixlab's k-way mixing of the official weight matrix equal to its einsum."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import mixlab
from mixlab import MixParams
from mixlab.methods.zetamixup import ZetaMixup


def official_weights(batch_size: int, gamma: float, rs: np.random.RandomState) -> torch.Tensor:
    """Port of the official ``zeta_mixup_weights``: a random permutation of ranks per row, rotated (by an
    FFT phase shift) so rank 1 sits on the diagonal, then ``rank ** -gamma`` normalised per row."""
    idxs = np.argsort(rs.rand(batch_size, batch_size), axis=1) + 1
    _, s = np.where(idxs == 1)
    s = s - np.r_[0:batch_size]
    shifted = np.real(np.fft.ifft(np.fft.fft(idxs, axis=1) * np.exp(2j * np.pi / batch_size * s[:, None]
                                                                    * np.r_[0:batch_size][None, :]), axis=1).round())
    w = torch.reciprocal(torch.pow(torch.tensor(shifted), gamma).float())
    return w / torch.sum(w, dim=1)  # the official broadcast (every row sums to the same value)


def official_mix(x, y, num_classes, weights):
    x_new = torch.einsum("ijkl,pi->pjkl", x, weights)
    y_new = torch.einsum("pq,qj->pj", weights, F.one_hot(y, num_classes).float())
    return x_new, y_new


def dense(params: MixParams) -> torch.Tensor:
    """The (B, B) weight matrix of k-way params (row p: the weight of every batch row in output p)."""
    B = params.batch_size
    return torch.zeros(B, B, dtype=torch.float64).scatter_add_(1, params.index, params.weights.double())


def test_mixing_the_official_weight_matrix_equals_the_official_einsum():
    rs = np.random.RandomState(0)
    B, C = 7, 5
    x, y = torch.rand(B, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(B) % C
    W = official_weights(B, 2.8, rs)
    order = W.argsort(dim=1, descending=True)  # the row itself first (rank 1)
    assert torch.equal(order[:, 0], torch.arange(B))
    params = MixParams.from_weights(W.gather(1, order), order)
    ref_x, ref_y = official_mix(x, y, C, W)
    mixed = mixlab.mix(x, params)
    torch.testing.assert_close(mixed, ref_x)
    torch.testing.assert_close(mixlab.MixedTarget(y, params).soft(C), ref_y)


@pytest.mark.parametrize("B, gamma", [(2, 2.8), (6, 2.8), (16, 1.5)])
def test_weights_follow_the_official_law(B, gamma):
    g = torch.Generator().manual_seed(B)
    params = ZetaMixup(gamma=gamma, generator=g).sample(torch.rand(B, 3), torch.arange(B))
    ours = dense(params)
    theirs = official_weights(B, gamma, np.random.RandomState(B)).double()
    # every row: the same p-series values, the largest on the diagonal, rows sum to 1
    for W in (ours, theirs):
        torch.testing.assert_close(W.sum(1), torch.ones(B, dtype=torch.float64))
        assert torch.equal(W.argmax(1), torch.arange(B))
    torch.testing.assert_close(ours.sort(1).values, theirs.sort(1).values, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(params.lam.double(), theirs.diagonal())


def test_the_other_rows_ranks_are_uniform_like_the_official_rotation():
    # where does rank 2 fall in row 0? uniform over the B - 1 other rows, in both
    B, n = 5, 4000
    g, rs = torch.Generator().manual_seed(0), np.random.RandomState(0)
    t = ZetaMixup(generator=g)
    ours = [int(t.sample(torch.rand(B, 2), torch.arange(B)).index[0, 1]) for _ in range(n)]
    theirs = [int(official_weights(B, 2.8, rs)[0].argsort(descending=True)[1]) for _ in range(n)]
    for seen in (ours, theirs):
        counts = np.bincount(seen, minlength=B)
        assert counts[0] == 0
        assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_k_keeps_the_best_ranked_rows_renormalised_and_p_leaves_rows():
    g = torch.Generator().manual_seed(1)
    params = ZetaMixup(k=3, generator=g).sample(torch.rand(8, 3), torch.arange(8))
    assert params.weights.shape == (8, 3)
    full = torch.arange(1, 4, dtype=torch.float64) ** -2.8
    torch.testing.assert_close(params.weights.double(), (full / full.sum()).expand(8, 3).float().double())
    still = ZetaMixup(p=0.0, generator=g).sample(torch.rand(8, 3), torch.arange(8))
    assert torch.equal(still.lam, torch.ones(8))


def test_options_are_checked():
    with pytest.raises(ValueError, match="gamma must be > 1"):
        ZetaMixup(gamma=1.0)
    with pytest.raises(TypeError, match="ZetaMixup has no option 'pairing'"):
        ZetaMixup(pairing="flip")
    with pytest.raises(ValueError, match="mode must be one of"):
        ZetaMixup(mode="pair")


def test_batch_mode_reads_one_cyclic_order_from_every_row():
    params = ZetaMixup(mode="batch", generator=torch.Generator().manual_seed(3)).sample(torch.rand(6, 2), torch.arange(6))
    order = params.index[0].tolist()  # row 0's order, starting from itself
    for i in range(6):  # every row reads the same cycle, starting from itself
        start = order.index(i)
        assert params.index[i].tolist() == order[start:] + order[:start]
    W = dense(params)
    torch.testing.assert_close(W.sum(1), torch.ones(6, dtype=torch.float64))
    assert torch.equal(W.argmax(1), torch.arange(6))
