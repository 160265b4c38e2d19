"""PuzzleMix: against a port of the official snu-mllab/PuzzleMix ``mixup.py``, gco, and brute force."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import MixParams
from mixlab import puzzlemix as pm


# ---------------------------------------------------------------------------------------------
# the official code (snu-mllab/PuzzleMix mixup.py): benchmarks/puzzlemix_official.py's port, line for line but
# for device='cpu', the one port the tests and the timing share (the `official` fixture, tests/methods/conftest.py)

def official_mixup_graph(official, input1, grad1, indices, block_num, alpha, beta, gamma, eta, neigh_size,
                         n_labels, mean, std, transport, t_eps, t_size):
    """The official ``mixup_graph``'s mixed images and ratio, and its final mask (the graph cut's labels, upsampled
    to the image as ``mixup_graph`` does), from the port's own functions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: the official torch.tensor(list of arrays) is slow
        mixed, ratio = official.mixup_graph(input1, grad1, indices, block_num=block_num, alpha=alpha, beta=beta,
                                            gamma=gamma, eta=eta, neigh_size=neigh_size, n_labels=n_labels,
                                            mean=mean, std=std, transport=transport, t_eps=t_eps, t_size=t_size)
    unary1, unary2, pw_x, pw_y, beta_n, _, _ = official.graph_terms(input1, grad1, indices, block_num, beta, gamma,
                                                                   neigh_size, mean, std)
    mask = np.stack([official.graphcut_multi(unary2[i], unary1[i], pw_x[i], pw_y[i], alpha, beta_n, eta, n_labels)
                     for i in range(input1.shape[0])])
    mask = F.interpolate(torch.tensor(mask, dtype=torch.float32).unsqueeze(1), size=input1.shape[-1])
    return mixed, ratio, mask


def fixed(t: pm.PuzzleMix, lam: float, index):
    """Make ``t`` draw the given lam and partners (the official code's np.random draws)."""
    B = len(index)
    params = MixParams(torch.full((B,), float(lam)), torch.tensor(index))
    object.__setattr__(t, "draw_pairs", lambda B_, y, g, device: params)  # the test's lam and partners
    return t


def images(B, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, H, W, generator=g)
    sal = torch.rand(B, H, W, generator=g) ** 3  # peaky, non-negative
    return x, sal


# ---------------------------------------------------------------------------------------------
# (1) the whole algorithm against the official code (with gco)

@pytest.mark.parametrize("block_num, n_labels, t_size, lam", [
    (2, 3, -1, 0.4), (4, 3, -1, 0.7), (4, 2, -1, 0.55), (8, 3, -1, 0.3), (4, 3, 4, 0.5), (2, 2, 8, 0.8),
])
def test_matches_the_official_mixup_graph(official, block_num, n_labels, t_size, lam):
    pytest.importorskip("gco")
    B, H = 6, 32
    x, sal = images(B, H, H, seed=block_num * 10 + n_labels)
    index = [3, 0, 5, 1, 2, 4]
    t = fixed(pm.PuzzleMix(block_num=block_num, n_labels=n_labels, t_size=t_size, neigh_size=4), lam, index)
    params = t.sample(x, saliency=sal)
    mixed = mixlab.mix(x, params)
    ref, ratio, mask = official_mixup_graph(official, x, sal, np.array(index), block_num, lam, 1.2, 0.5, 0.2, 4,
                                            n_labels, 0.0, 1.0, True, 0.8, t_size)
    keep = params.region.keep.float()
    assert torch.equal(keep, mask[:, 0])
    assert torch.equal(params.lam, ratio)
    assert torch.equal(mixed, ref)


def test_official_without_transport_and_with_normalised_inputs(official):
    pytest.importorskip("gco")
    x, sal = images(4, 16, 16, seed=3)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    xn = (x - mean[:, None, None]) / std[:, None, None]
    index = [1, 2, 3, 0]
    t = fixed(pm.PuzzleMix(block_num=4, transport=False, mean=mean, std=std), 0.45, index)
    params = t.sample(xn, saliency=sal)
    ref, ratio, _ = official_mixup_graph(official, xn, sal, np.array(index), 4, 0.45, 1.2, 0.5, 0.2, 4, 3,
                                         mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1), False, 0.8, -1)
    assert torch.equal(mixlab.mix(xn, params), ref) and torch.equal(params.lam, ratio)


def test_builtin_solver_equals_gco_on_random_energies():
    gco = pytest.importorskip("gco")
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, L, hi = int(rng.choice([2, 3, 4, 6])), int(rng.choice([2, 3, 4])), int(rng.choice([3, 50, 5000]))
        u = rng.integers(0, hi, size=(n, n, L)).astype(np.int32)  # small ranges: many ties
        px = rng.integers(0, hi, size=(n - 1, n)).astype(np.int32)
        py = rng.integers(0, hi, size=(n, n - 1)).astype(np.int32)
        pc = np.array([[(i - j) ** 2 / (L - 1) ** 2 for j in range(L)] for i in range(L)], dtype=np.float32)
        ref = gco.cut_grid_graph(u, pc, px, py, algorithm="swap").reshape(n, n)
        assert np.array_equal(pm.swap_graphcut(u[None], px[None], py[None], pc)[0], ref)


# ---------------------------------------------------------------------------------------------
# graph cut against brute force (no gco needed)

def energy(lab, u, px, py, Vq):
    lab = np.asarray(lab)
    e = 100 * u[np.arange(u.shape[0])[:, None], np.arange(u.shape[1])[None, :], lab].sum()
    e += (px * Vq[lab[:-1, :], lab[1:, :]]).sum() + (py * Vq[lab[:, :-1], lab[:, 1:]]).sum()
    return int(e)


def random_problem(rng, h, L, hi=60):
    u = rng.integers(0, hi, size=(h, h, L)).astype(np.int64)
    px = rng.integers(0, hi, size=(h - 1, h)).astype(np.int64)
    py = rng.integers(0, hi, size=(h, h - 1)).astype(np.int64)
    pc = np.array([[(i - j) ** 2 / (L - 1) ** 2 for j in range(L)] for i in range(L)], dtype=np.float32)
    return u, px, py, pc, (pc * 100).astype(np.intc).astype(np.int64)


def test_two_labels_is_the_global_minimum_with_the_smallest_foreground():
    rng = np.random.default_rng(1)
    for trial in range(40):
        u, px, py, pc, Vq = random_problem(rng, 3, 2, hi=8 if trial % 2 else 200)
        ours = pm.swap_graphcut(u[None], px[None], py[None], pc)[0]
        all_labs = [np.array(bits).reshape(3, 3) for bits in itertools.product([0, 1], repeat=9)]  # 512
        energies = np.array([energy(lab, u, px, py, Vq) for lab in all_labs])
        assert energy(ours, u, px, py, Vq) == energies.min()
        minimisers = [lab for lab, e in zip(all_labs, energies) if e == energies.min()]
        assert np.array_equal(ours, np.logical_and.reduce(minimisers).astype(int))  # gco's tie-break


def test_three_labels_is_swap_optimal():
    rng = np.random.default_rng(2)
    for _ in range(25):
        h, w = 2, 3
        u = rng.integers(0, 80, size=(h, w, 3)).astype(np.int64)
        px = rng.integers(0, 80, size=(h - 1, w)).astype(np.int64)
        py = rng.integers(0, 80, size=(h, w - 1)).astype(np.int64)
        pc = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)], dtype=np.float32)
        Vq = (pc * 100).astype(np.intc).astype(np.int64)
        ours = _swap_rect(u, px, py, pc)
        e_ours = energy(ours, u, px, py, Vq)
        e_all = [energy(np.array(c).reshape(h, w), u, px, py, Vq) for c in itertools.product(range(3), repeat=6)]
        assert e_ours >= min(e_all)
        for a, b in itertools.combinations(range(3), 2):  # no single swap move improves it
            movable = np.flatnonzero((ours == a) | (ours == b))
            for bits in itertools.product([a, b], repeat=movable.size):
                lab = ours.copy().ravel()
                lab[movable] = bits
                assert energy(lab.reshape(h, w), u, px, py, Vq) >= e_ours


def _swap_rect(u, px, py, pc):
    """The 2x3 grid embedded in a 3x3 one whose last row is pinned by huge unaries to label 0 and cut off."""
    h, w, L = u.shape
    big = np.zeros((3, 3, L), dtype=np.int64)
    big[:h, :w] = u
    big[h:, :, 1:] = 10 ** 6  # padding sites: label 0
    bpx = np.zeros((2, 3), dtype=np.int64)
    bpx[:h - 1, :w] = px  # no edge to the padding row
    bpy = np.zeros((3, 2), dtype=np.int64)
    bpy[:h, :w - 1] = py
    return pm.swap_graphcut(big[None], bpx[None], bpy[None], pc)[0][:h, :w]


def test_batched_rows_equal_rows_alone_and_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    probs = [random_problem(rng, 4, 3, hi=500) for _ in range(5)]
    pc = probs[0][3]
    stack = [np.stack([p[k] for p in probs]) for k in range(3)]
    together = pm.swap_graphcut(*stack, pc)
    alone = np.stack([pm.swap_graphcut(p[0][None], p[1][None], p[2][None], pc)[0] for p in probs])
    assert np.array_equal(together, alone)
    monkeypatch.setattr(pm, "_INT32_BUDGET", 20000)  # force the per-row chunks of the int32 guard
    assert np.array_equal(pm.swap_graphcut(*stack, pc), together)


# ---------------------------------------------------------------------------------------------
# (2) transport

@pytest.mark.parametrize("bn", [2, 4, 8])
def test_transport_equals_the_official_mask_transport(official, bn):
    g = torch.Generator().manual_seed(bn)
    B = 5
    mask = (torch.randint(0, 3, (B, 1, bn, bn), generator=g) / 2.0)
    grad = torch.rand(B, bn, bn, generator=g)
    grad = grad / grad.sum((1, 2), keepdim=True)
    ours = pm.mask_transport(mask, grad, eps=0.8)
    ref = official.mask_transport(mask, grad, eps=0.8)
    assert torch.equal(ours, ref)
    img = torch.rand(B, 3, 8 * bn, 8 * bn, generator=g)
    moved = pm.transport_blocks(img, pm.plan_sources(ours), (bn, bn))
    assert torch.equal(moved, official.transport_image(img, ref, B, bn, 8))
    assert torch.equal(pm.cost_matrix(bn), official.cost_matrix(bn))


def test_transport_blocks_on_non_square_grids_and_integer_maps():
    img = torch.arange(2 * 6 * 9).view(2, 1, 6, 9)  # a 2 x 3 grid of 3 x 3 blocks
    src = torch.tensor([[5, 4, 3, 2, 1, 0], [-1, 1, 2, 3, 4, 0]])
    out = pm.transport_blocks(img, src, (2, 3))
    for b in range(2):
        for j in range(6):
            dest = out[b, 0, (j // 3) * 3:(j // 3) * 3 + 3, (j % 3) * 3:(j % 3) * 3 + 3]
            s = int(src[b, j])
            want = torch.zeros_like(dest) if s < 0 else img[b, 0, (s // 3) * 3:(s // 3) * 3 + 3,
                                                             (s % 3) * 3:(s % 3) * 3 + 3]
            assert torch.equal(dest, want)
    fine = pm._refine(src, (2, 3), (4, 9))  # the same move on a grid of 3 x 1 blocks
    assert torch.equal(pm.transport_blocks(img, fine, (4, 9)) if False else pm.transport_blocks(
        img.repeat_interleave(2, 2), fine, (4, 9)), out.repeat_interleave(2, 2))


# ---------------------------------------------------------------------------------------------
# (3) exact lam, the mixed image, shapes

@pytest.mark.parametrize("B, H, W, mode, n_labels", [
    (1, 16, 16, "batch", 3), (3, 16, 16, "batch", 2), (5, 16, 32, "sample", 3), (4, 8, 32, "batch", 3),
    (0, 16, 16, "batch", 3), (7, 32, 16, "sample", 2),
])
def test_lam_is_the_mean_of_the_mask_and_the_image_is_exact(B, H, W, mode, n_labels):
    x, sal = images(B, H, W, seed=B + H)
    t = pm.PuzzleMix(block_num=(2, 4, 8), neigh_size=2, n_labels=n_labels, mode=mode,
                     generator=torch.Generator().manual_seed(B))
    y = torch.arange(B) % 10
    mixed, target = t(x, y, saliency=sal)
    region = target.params.region
    keep = region.keep.float()
    assert target.params.lam.dtype == torch.float32 and target.params.lam.shape == (B,)
    assert torch.equal(target.params.lam, keep.flatten(1).mean(-1))
    assert region.binary == (n_labels == 2)
    idx = target.params.index
    x1 = pm.transport_blocks(x, region.src[:, 0], region.grid)
    x2 = pm.transport_blocks(x[idx], region.src[:, 1], region.grid)
    assert torch.equal(mixed, keep[:, None] * x1 + (1 - keep[:, None]) * x2)
    soft = target.soft(10)
    lam = target.params.lam
    expected = lam[:, None] * F.one_hot(y, 10) + (1 - lam[:, None]) * F.one_hot(y[idx], 10)
    torch.testing.assert_close(soft, expected.float())
    if B > 1:
        assert (lam < 1).any()  # some partner content came in


def test_unmixed_rows_and_p_zero_leave_the_batch_alone():
    x, sal = images(4, 16, 16, seed=0)
    mixed, target = pm.PuzzleMix(block_num=4, p=0.0)(x, torch.arange(4), saliency=sal)
    assert torch.equal(mixed, x) and torch.equal(target.params.lam, torch.ones(4))


def test_integer_maps_follow_a_binary_mask_and_dense_targets_are_refused():
    x, sal = images(4, 16, 16, seed=5)
    seg = torch.arange(4).view(4, 1, 1).expand(4, 16, 16).clone()  # each row's map holds its row id
    t = pm.PuzzleMix(block_num=4, n_labels=2, generator=torch.Generator().manual_seed(0))
    out, target = t({"image": x, "mask": seg}, torch.arange(4), saliency=sal)
    region, idx = target.params.region, target.params.index
    expect = torch.where(region.keep, torch.arange(4).view(4, 1, 1), idx.view(4, 1, 1))
    moved = pm.transport_blocks(seg, region.src[:, 0], region.grid)
    moved_p = pm.transport_blocks(seg[idx], region.src[:, 1], region.grid)
    assert torch.equal(out["mask"], torch.where(region.keep, moved, moved_p))
    holes = (region.src < 0).any()
    if not holes:
        assert torch.equal(out["mask"], expect)
    with pytest.raises(ValueError, match="dense target"):
        mixlab.MixedTarget(seg, target.params)


# ---------------------------------------------------------------------------------------------
# (4) saliency

def test_saliency_is_the_input_gradient_of_a_linear_model():
    torch.manual_seed(0)
    B, C, H, W, K = 3, 2, 4, 4, 5
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K))
    model.train()
    x = torch.rand(B, C, H, W)
    y = torch.tensor([0, 3, 1])
    s = pm.PuzzleMix().saliency(model, x, y)
    lin = model[1]
    probs = torch.softmax(x.flatten(1) @ lin.weight.T + lin.bias, dim=1)
    grad = ((probs - F.one_hot(y, K)) @ lin.weight / B).view(B, C, H, W)  # d mean CE / dx
    torch.testing.assert_close(s, torch.sqrt((grad ** 2).mean(1)), rtol=1e-5, atol=1e-8)
    assert model.training and not x.requires_grad
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# (5) a few training steps

def test_a_tiny_cnn_trains_with_puzzlemix():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    t = pm.PuzzleMix(block_num=(2, 4), model=net, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
        mixed, target = t(x, y)
        opt.zero_grad()
        loss = target.loss(nn.CrossEntropyLoss(), net(mixed))
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# (6) errors

@pytest.mark.parametrize("kwargs, match", [
    ({"block_num": 1}, "block_num must be an int >= 2"),
    ({"block_num": ()}, "block_num must be"),
    ({"n_labels": 5}, "n_labels must be 2, 3 or 4"),
    ({"t_size": 0}, "t_size must be -1"),
    ({"beta": -1.0}, "beta must be a finite number"),
    ({"solver": "maxflow"}, "solver must be one of"),
    ({"mode": "pair"}, "mode must be one of"),
    ({"alpha": -1}, "alpha must be"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pm.PuzzleMix(**kwargs)


def test_bad_calls_say_what_is_wrong():
    x, sal = images(2, 16, 16, seed=0)
    with pytest.raises(ValueError, match="needs each image's saliency"):
        pm.PuzzleMix(block_num=4)(x, torch.arange(2))
    with pytest.raises(ValueError, match=r"saliency must be a float tensor of shape \(2, 16, 16\)"):
        pm.PuzzleMix(block_num=4)(x, torch.arange(2), saliency=sal[:, None])
    with pytest.raises(ValueError, match="block_num=3 does not divide the image size 16x16"):
        pm.PuzzleMix(block_num=3)(x, torch.arange(2), saliency=sal)
    with pytest.raises(ValueError, match="neigh_size=3 does not divide"):
        pm.PuzzleMix(block_num=2, neigh_size=3)(x, torch.arange(2), saliency=sal)
    with pytest.raises(ValueError, match="finite and non-negative"):
        pm.PuzzleMix(block_num=2)(x, torch.arange(2), saliency=-sal)
    with pytest.raises(ValueError, match="float images shaped"):
        pm.PuzzleMix(block_num=2)(torch.rand(2, 16), torch.arange(2), saliency=sal)


def test_exported_and_repr():
    assert mixlab.PuzzleMix is pm.PuzzleMix and "PuzzleMix" in mixlab.__all__
    assert repr(pm.PuzzleMix()).startswith("PuzzleMix(alpha=1.0, block_num=(2, 4, 8, 16)")
