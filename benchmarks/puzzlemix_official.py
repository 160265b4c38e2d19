"""PuzzleMix per batch: the official implementation (gco's graph cut) against mixlab's, on the same draws.

Issue 20 item 4. ``python benchmarks/puzzlemix_official.py`` times, per case (batch shape, ``block_num``,
``n_labels``, transport off / on), interleaved round after round as ``mixlab bench`` does
(:func:`mixlab_lab.bench.timing.run_group`; median and min per row):

whole call (ratio to the official form):
  - ``official mixup_graph (gco)``: a port of snu-mllab/PuzzleMix ``mixup.py``'s ``mixup_graph`` /
    ``graphcut_multi`` / ``neigh_penalty`` / ``mask_transport`` / ``transport_image`` / ``cost_matrix``, line for
    line but on the CPU, calling ``gco.cut_grid_graph(..., algorithm='swap')`` row by row as the official does
    (``mp=None``; ``--mp N`` adds a row with the official ``multiprocessing.Pool(N).starmap``);
  - ``mixlab PuzzleMix call``: ``t(x, y, saliency=s)`` (the drawing, the graph cut on the host, the transport,
    the mix and the target);
  - ``mixlab PuzzleMix(solver='gco') call``: the same pipeline with gco's cut instead of the host one.

graph cut alone (ratio to gco), on the same integer costs (those ``graphcut_multi`` hands to gco):
  - ``gco.cut_grid_graph per row``: the official loop over the batch;
  - ``mixlab swap_graphcut (host, batched)``: mixlab's exact swap moves, all rows in one max-flow per move.

Both sides get the same inputs and draws: the same ``lam`` (one per batch, Beta(1, 1), passed to both as the
same float), the same partner permutation (``--draws`` such pairs per case, every row taking them in turn, call
after call, so each median covers the same lam values), the same ``block_num``, the same saliency (the official
``sqrt(mean_c grad^2)`` input gradient of a small random CNN, computed once, not timed), the official CIFAR
options (``main.py``: beta 1.2, gamma 0.5, eta 0.2, neigh_size 4, t_eps 0.8, t_size -1; ``mixup_alpha`` 1;
``n_labels`` 3 in main.py and the README's commands, 2 the binary mask; both by default). The official
arithmetic is float32 as under the numpy 1.x it ran with (numpy 2 would compute ``graphcut_multi``'s costs in
float64 and can round a cost differently; ``--numpy2-costs`` keeps the literal numpy-2 arithmetic).

Agreement per case: the share of mask blocks on which the two graph cuts agree (gco's labels vs mixlab's on
the same costs), rows that differ and whether their energies tie, the max abs difference between the official
and mixlab mixed images and between the official ``ratio`` and mixlab's ``lam``.

Run it on a quiet machine (see docs/BENCHMARKS.md); ``--json PATH`` writes the header, every group and the
agreement figures (atomically). Example::

    nice -n 19 python benchmarks/puzzlemix_official.py --rounds 30 --json benchmarks/results/puzzlemix-official.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mixlab import MixParams
from mixlab import puzzlemix as pm

try:
    import gco
except ImportError:  # rows that need it are skipped with the reason
    gco = None

GCO_MISSING = "gco is not importable (pip install gco-wrapper: wheels for CPython 3.10/3.11, manylinux x86_64)"
OFFICIAL = dict(beta=1.2, gamma=0.5, eta=0.2, neigh_size=4, t_eps=0.8, t_size=-1)  # main.py's defaults
NUMPY1_COSTS = True  # set from --numpy2-costs


# ---------------------------------------------------------------------------------------------
# the official code (snu-mllab/PuzzleMix mixup.py at e2dbf3a), ported line for line; device='cpu'

def cost_matrix(width, device='cpu'):
    '''transport cost'''
    C = np.zeros([width**2, width**2], dtype=np.float32)

    for m_i in range(width**2):
        i1 = m_i // width
        j1 = m_i % width
        for m_j in range(width**2):
            i2 = m_j // width
            j2 = m_j % width
            C[m_i, m_j] = abs(i1 - i2)**2 + abs(j1 - j2)**2

    C = C / (width - 1)**2
    C = torch.tensor(C)
    return C


cost_matrix_dict = {str(w): cost_matrix(w).unsqueeze(0) for w in (2, 4, 8, 16)}


def graphcut_multi(unary1, unary2, pw_x, pw_y, alpha, beta, eta, n_labels=2, eps=1e-8):
    '''alpha-beta swap algorithm'''
    block_num = unary1.shape[0]
    unary_cost, pairwise_cost, pw_x, pw_y = graphcut_multi_costs(unary1, unary2, pw_x, pw_y, alpha, beta, eta,
                                                                 n_labels, eps)
    labels = 1.0 - gco.cut_grid_graph(unary_cost, pairwise_cost, pw_x, pw_y,
                                      algorithm='swap') / (n_labels - 1)
    mask = labels.reshape(block_num, block_num)

    return mask


def graphcut_multi_costs(unary1, unary2, pw_x, pw_y, alpha, beta, eta, n_labels=2, eps=1e-8):
    '''graphcut_multi's lines up to its gco call (split out so the cut can be timed alone on the same costs)'''
    block_num = unary1.shape[0]

    large_val = 1000 * block_num**2

    if n_labels == 2:
        prior = np.array([-np.log(alpha + eps), -np.log(1 - alpha + eps)])
    elif n_labels == 3:
        prior = np.array([
            -np.log(alpha**2 + eps), -np.log(2 * alpha * (1 - alpha) + eps),
            -np.log((1 - alpha)**2 + eps)
        ])
    elif n_labels == 4:
        prior = np.array([
            -np.log(alpha**3 + eps), -np.log(3 * alpha**2 * (1 - alpha) + eps),
            -np.log(3 * alpha * (1 - alpha)**2 + eps), -np.log((1 - alpha)**3 + eps)
        ])

    prior = eta * prior / block_num**2
    if NUMPY1_COSTS:  # numpy 1.x: a float64 scalar times a float32 array stays float32
        f = np.float32
        unary_cost = (f(large_val) * np.stack([f(1 - lam) * unary1 + f(lam) * unary2 + f(prior[i])
                                               for i, lam in enumerate(np.linspace(0, 1, n_labels))],
                                              axis=-1)).astype(np.int32)
    else:  # the literal line under numpy 2 (NEP 50: float64)
        unary_cost = (large_val * np.stack([(1 - lam) * unary1 + lam * unary2 + prior[i]
                                            for i, lam in enumerate(np.linspace(0, 1, n_labels))],
                                           axis=-1)).astype(np.int32)
    pairwise_cost = np.zeros(shape=[n_labels, n_labels], dtype=np.float32)

    for i in range(n_labels):
        for j in range(n_labels):
            pairwise_cost[i, j] = (i - j)**2 / (n_labels - 1)**2

    pw_x = (large_val * (pw_x + beta)).astype(np.int32)
    pw_y = (large_val * (pw_y + beta)).astype(np.int32)
    return unary_cost, pairwise_cost, pw_x, pw_y


def neigh_penalty(input1, input2, k):
    '''data local smoothness term'''
    pw_x = input1[:, :, :-1, :] - input2[:, :, 1:, :]
    pw_y = input1[:, :, :, :-1] - input2[:, :, :, 1:]

    pw_x = pw_x[:, :, k - 1::k, :]
    pw_y = pw_y[:, :, :, k - 1::k]

    pw_x = F.avg_pool2d(pw_x.abs().mean(1), kernel_size=(1, k))
    pw_y = F.avg_pool2d(pw_y.abs().mean(1), kernel_size=(k, 1))

    return pw_x, pw_y


def graph_terms(input1, grad1, indices, block_num, beta, gamma, neigh_size, mean, std):
    '''mixup_graph up to the graph cut: (unary1, unary2, pw_x, pw_y) as numpy, the normalised beta, unary1_torch'''
    batch_size, _, _, width = input1.shape
    block_size = width // block_num
    neigh_size = min(neigh_size, block_size)

    # normalize
    beta = beta / block_num / 16

    # unary term
    grad1_pool = F.avg_pool2d(grad1, block_size)
    unary1_torch = grad1_pool / grad1_pool.reshape(batch_size, -1).sum(1).reshape(batch_size, 1, 1)
    unary2_torch = unary1_torch[indices]

    # calculate pairwise terms
    input1_pool = F.avg_pool2d(input1 * std + mean, neigh_size)
    input2_pool = input1_pool[indices]

    pw_x = torch.zeros([batch_size, 2, 2, block_num - 1, block_num])
    pw_y = torch.zeros([batch_size, 2, 2, block_num, block_num - 1])

    k = block_size // neigh_size

    pw_x[:, 0, 0], pw_y[:, 0, 0] = neigh_penalty(input2_pool, input2_pool, k)
    pw_x[:, 0, 1], pw_y[:, 0, 1] = neigh_penalty(input2_pool, input1_pool, k)
    pw_x[:, 1, 0], pw_y[:, 1, 0] = neigh_penalty(input1_pool, input2_pool, k)
    pw_x[:, 1, 1], pw_y[:, 1, 1] = neigh_penalty(input1_pool, input1_pool, k)

    pw_x = beta * gamma * pw_x
    pw_y = beta * gamma * pw_y

    # re-define unary and pairwise terms to draw graph
    unary1 = unary1_torch.clone()
    unary2 = unary2_torch.clone()

    unary2[:, :-1, :] += (pw_x[:, 1, 0] + pw_x[:, 1, 1]) / 2.
    unary1[:, :-1, :] += (pw_x[:, 0, 1] + pw_x[:, 0, 0]) / 2.
    unary2[:, 1:, :] += (pw_x[:, 0, 1] + pw_x[:, 1, 1]) / 2.
    unary1[:, 1:, :] += (pw_x[:, 1, 0] + pw_x[:, 0, 0]) / 2.

    unary2[:, :, :-1] += (pw_y[:, 1, 0] + pw_y[:, 1, 1]) / 2.
    unary1[:, :, :-1] += (pw_y[:, 0, 1] + pw_y[:, 0, 0]) / 2.
    unary2[:, :, 1:] += (pw_y[:, 0, 1] + pw_y[:, 1, 1]) / 2.
    unary1[:, :, 1:] += (pw_y[:, 1, 0] + pw_y[:, 0, 0]) / 2.

    pw_x = (pw_x[:, 1, 0] + pw_x[:, 0, 1] - pw_x[:, 1, 1] - pw_x[:, 0, 0]) / 2
    pw_y = (pw_y[:, 1, 0] + pw_y[:, 0, 1] - pw_y[:, 1, 1] - pw_y[:, 0, 0]) / 2

    unary1 = unary1.detach().cpu().numpy()
    unary2 = unary2.detach().cpu().numpy()
    pw_x = pw_x.detach().cpu().numpy()
    pw_y = pw_y.detach().cpu().numpy()
    return unary1, unary2, pw_x, pw_y, beta, unary1_torch, unary2_torch


def mixup_graph(input1, grad1, indices, block_num=2, alpha=0.5, beta=0., gamma=0., eta=0.2, neigh_size=2,
                n_labels=2, mean=None, std=None, transport=False, t_eps=10.0, t_size=16, mp=None):
    '''Puzzle Mix (the official mixup_graph without its adversarial-noise branch, adv_mask1 = adv_mask2 = 0)'''
    input2 = input1[indices].clone()

    batch_size, _, _, width = input1.shape
    block_size = width // block_num
    t_size = min(t_size, block_size)

    unary1, unary2, pw_x, pw_y, beta, unary1_torch, unary2_torch = graph_terms(
        input1, grad1, indices, block_num, beta, gamma, neigh_size, mean, std)

    # solve graphcut
    if mp is None:
        mask = []
        for i in range(batch_size):
            mask.append(
                graphcut_multi(unary2[i], unary1[i], pw_x[i], pw_y[i], alpha, beta, eta, n_labels))
    else:
        input_mp = []
        for i in range(batch_size):
            input_mp.append((unary2[i], unary1[i], pw_x[i], pw_y[i], alpha, beta, eta, n_labels))
        mask = mp.starmap(graphcut_multi, input_mp)

    # optimal mask
    mask = torch.tensor(mask, dtype=torch.float32)  # a list of arrays, as officially (torch warns: slow)
    mask = mask.unsqueeze(1)

    # tranport
    if transport:
        if t_size == -1:
            t_block_num = block_num
            t_size = block_size
        elif t_size < block_size:
            # block_size % t_size should be 0
            t_block_num = width // t_size
            mask = F.interpolate(mask, size=t_block_num)
            grad1_pool = F.avg_pool2d(grad1, t_size)
            unary1_torch = grad1_pool / grad1_pool.reshape(batch_size, -1).sum(1).reshape(
                batch_size, 1, 1)
            unary2_torch = unary1_torch[indices]
        else:
            t_block_num = block_num

        # input1
        plan = mask_transport(mask, unary1_torch, eps=t_eps)
        input1 = transport_image(input1, plan, batch_size, t_block_num, t_size)

        # input2
        plan = mask_transport(1 - mask, unary2_torch, eps=t_eps)
        input2 = transport_image(input2, plan, batch_size, t_block_num, t_size)

    # final mask and mixed ratio
    mask = F.interpolate(mask, size=width)
    ratio = mask.reshape(batch_size, -1).mean(-1)

    return mask * input1 + (1 - mask) * input2, ratio


def mask_transport(mask, grad_pool, eps=0.01):
    '''optimal transport plan'''
    block_num = mask.shape[-1]

    n_iter = int(block_num)
    C = cost_matrix_dict[str(block_num)]

    z = (mask > 0).float()
    cost = eps * C - grad_pool.reshape(-1, block_num**2, 1) * z.reshape(-1, 1, block_num**2)

    # row and col
    for _ in range(n_iter):
        row_best = cost.min(-1)[1]
        plan = torch.zeros_like(cost).scatter_(-1, row_best.unsqueeze(-1), 1)

        # column resolve
        cost_fight = plan * cost
        col_best = cost_fight.min(-2)[1]
        plan_win = torch.zeros_like(cost).scatter_(-2, col_best.unsqueeze(-2), 1) * plan
        plan_lose = (1 - plan_win) * plan

        cost += plan_lose

    return plan_win


def transport_image(img, plan, batch_size, block_num, block_size):
    '''apply transport plan to images'''
    input_patch = img.reshape([batch_size, 3, block_num, block_size,
                               block_num * block_size]).transpose(-2, -1)
    input_patch = input_patch.reshape([batch_size, 3, block_num, block_num, block_size,
                                       block_size]).transpose(-2, -1)
    input_patch = input_patch.reshape([batch_size, 3, block_num**2, block_size,
                                       block_size]).permute(0, 1, 3, 4, 2).unsqueeze(-1)

    input_transport = plan.transpose(
        -2, -1).unsqueeze(1).unsqueeze(1).unsqueeze(1).matmul(input_patch).squeeze(-1).permute(
            0, 1, 4, 2, 3)
    input_transport = input_transport.reshape(
        [batch_size, 3, block_num, block_num, block_size, block_size])
    input_transport = input_transport.transpose(-2, -1).reshape(
        [batch_size, 3, block_num, block_num * block_size, block_size])
    input_transport = input_transport.transpose(-2, -1).reshape(
        [batch_size, 3, block_num * block_size, block_num * block_size])

    return input_transport


# ---------------------------------------------------------------------------------------------
# the graph cut's inputs, both solvers, and the energy they minimise

def official_costs(unary1, unary2, pw_x, pw_y, alpha, beta, eta, n_labels):
    """Per row, the arguments ``graphcut_multi(unary2[i], unary1[i], ...)`` hands to ``gco.cut_grid_graph``."""
    return [graphcut_multi_costs(unary2[i], unary1[i], pw_x[i], pw_y[i], alpha, beta, eta, n_labels)
            for i in range(unary1.shape[0])]


def gco_cut(costs):
    return np.stack([gco.cut_grid_graph(u, pc, px, py, algorithm='swap').reshape(u.shape[0], u.shape[1])
                     for u, pc, px, py in costs])


def host_cut(costs):
    return pm.swap_graphcut(np.stack([c[0] for c in costs]), np.stack([c[2] for c in costs]),
                            np.stack([c[3] for c in costs]), costs[0][1])


def energy(lab, unary, px, py, pc):
    """The integer energy both minimise (gco-wrapper's divided by 1000): 100 unary + w int(100 pairwise)."""
    Vq = (pc * 100).astype(np.intc).astype(np.int64)
    lab = np.asarray(lab)
    u = unary.astype(np.int64)
    e = 100 * np.take_along_axis(u, lab[..., None], -1).sum()
    e += (np.maximum(px, 0).astype(np.int64) * Vq[lab[:-1, :], lab[1:, :]]).sum()
    e += (np.maximum(py, 0).astype(np.int64) * Vq[lab[:, :-1], lab[:, 1:]]).sum()
    return int(e)


# ---------------------------------------------------------------------------------------------
# inputs and draws

class _SalNet(nn.Module):
    """A small random CNN: its input gradient is the saliency both sides get."""

    def __init__(self, classes=10):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
                               nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x):
        return self.f(x)


def make_case(B, C, H, W, seed, draws=1):
    """A batch, its labels and saliency, and ``draws`` official draws ``(lam, partner index)``.

    With ``draws=1``: ``(x, y, sal, lam, index)``; else ``(x, y, sal, [(lam, index), ...])``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, H, W, generator=g)  # images in [0, 1]: mean 0, std 1 (nothing to undo)
    y = torch.randint(0, 10, (B,), generator=g)
    with torch.random.fork_rng():  # the caller's global stream is left alone
        torch.manual_seed(seed)
        sal = pm.input_saliency(_SalNet(), x, y)
        lams = [float(v) for v in torch.distributions.Beta(1.0, 1.0).sample((draws,))]  # mixup_alpha 1.0 (float32s)
    pairs = [(lam, torch.randperm(B, generator=g)) for lam in lams]
    return (x, y, sal, *pairs[0]) if draws == 1 else (x, y, sal, pairs)


def _cycling(fns):
    """One callable that runs ``fns`` in turn, call after call (each timed row sees every draw equally often)."""
    it = itertools.cycle(fns)
    return lambda: next(it)()


class _FixedDraws(pm.PuzzleMix):
    """mixlab's PuzzleMix whose ``draw_pairs`` hook returns the given ``lam`` and partners (the official draws)."""

    def __init__(self, lam, index, **kw):
        super().__init__(**kw)
        self._params = MixParams(torch.full((len(index),), lam, dtype=torch.float32), index)

    def draw_pairs(self, B, y, g, device):
        return self._params


# ---------------------------------------------------------------------------------------------

def run_case(a, shape, bn, n_labels, transport, pool):
    from mixlab_lab.bench.timing import Skip, make_row, run_group  # the lab's interleaved timing (mixlab bench's)

    B, C, H, W = shape
    x, y, sal, draws = make_case(B, C, H, W, a.seed, draws=max(a.draws, 2))
    draws = draws[:a.draws]
    opts = dict(block_num=bn, n_labels=n_labels, transport=transport, **OFFICIAL)
    cases = []
    for lam, index in draws:  # per draw: both sides' arguments and the graph cut's integer costs
        off_kw = dict(block_num=bn, alpha=lam, beta=OFFICIAL["beta"], gamma=OFFICIAL["gamma"], eta=OFFICIAL["eta"],
                      neigh_size=OFFICIAL["neigh_size"], n_labels=n_labels, mean=0.0, std=1.0, transport=transport,
                      t_eps=OFFICIAL["t_eps"], t_size=OFFICIAL["t_size"])
        u1, u2, pwx, pwy, beta_n, _, _ = graph_terms(x, sal, index.numpy(), bn, OFFICIAL["beta"], OFFICIAL["gamma"],
                                                     OFFICIAL["neigh_size"], 0.0, 1.0)
        cases.append(dict(lam=lam, idx=index.numpy(), off_kw=off_kw, ours=_FixedDraws(lam, index, **opts),
                          ours_gco=_FixedDraws(lam, index, solver="gco", **opts),
                          costs=official_costs(u1, u2, pwx, pwy, lam, beta_n, OFFICIAL["eta"], n_labels)))
    lams = ", ".join(f"{c['lam']:.3f}" for c in cases)
    title = (f"{B}x{C}x{H}x{W} float32, block_num {bn}, n_labels {n_labels}, transport {'on' if transport else 'off'}"
             f", lam {lams}")

    def need_gco():
        if gco is None:
            raise Skip(GCO_MISSING)

    def official(mp=None):
        need_gco()
        return _cycling([lambda c=c: mixup_graph(x, sal, c["idx"], mp=mp, **c["off_kw"]) for c in cases])

    whole = [make_row("official mixup_graph (gco)", official, "per row, mp=None")]
    if pool is not None:
        whole.append(make_row(f"official mixup_graph (gco, Pool({a.mp}))", lambda: official(pool),
                              "mp.starmap(graphcut_multi)"))
    whole.append(make_row("mixlab PuzzleMix call",
                          lambda: _cycling([lambda c=c: c["ours"](x, y, saliency=sal) for c in cases]),
                          "host graph cut"))
    whole.append(make_row("mixlab PuzzleMix(solver='gco') call",
                          lambda: (need_gco(), _cycling([lambda c=c: c["ours_gco"](x, y, saliency=sal)
                                                         for c in cases]))[1], "gco row by row"))
    cut = [make_row("gco.cut_grid_graph per row",
                    lambda: (need_gco(), _cycling([lambda c=c: gco_cut(c["costs"]) for c in cases]))[1],
                    "the official loop"),
           make_row("mixlab swap_graphcut (host, batched)",
                    lambda: _cycling([lambda c=c: host_cut(c["costs"]) for c in cases]),
                    "one max-flow per move, all rows")]
    run_group(whole, runs=a.rounds, warmup=a.warmup, device=torch.device("cpu"))
    run_group(cut, runs=a.rounds, warmup=a.warmup, device=torch.device("cpu"))

    agree = [agreement(x, y, sal, c["idx"], c["lam"], c["costs"], c["ours"], c["off_kw"]) for c in cases]
    total = {"draws": len(agree), "blocks": sum(d["blocks"] for d in agree),
             "costs_equal_mixlab_graphcut_costs": all(d["costs_equal_mixlab_graphcut_costs"] for d in agree)}
    if gco is None:
        total["note"] = GCO_MISSING
    else:
        total.update({
            "block_agreement": sum(d["block_agreement"] * d["blocks"] for d in agree) / total["blocks"],
            "rows_differing": sum(d["rows_differing"] for d in agree),
            "rows_differing_with_equal_energy": sum(d["rows_differing_with_equal_energy"] for d in agree),
            "max_abs_diff_mixed": max(d["max_abs_diff_mixed"] for d in agree),
            "max_abs_diff_lam_vs_ratio": max(d["max_abs_diff_lam_vs_ratio"] for d in agree),
        })
    return title, whole, cut, total, [c["lam"] for c in cases]


def agreement(x, y, sal, idx_np, lam, costs, ours, off_kw):
    """How close the outputs are on one draw: graph-cut labels on the same costs, mixed images, lam against ratio."""
    host = host_cut(costs)
    mixed, target = ours(x, y, saliency=sal)
    out = {"blocks": int(host.size), "costs_equal_mixlab_graphcut_costs": costs_equal(costs, ours, x, sal, idx_np,
                                                                                      lam)}
    if gco is None:
        out["note"] = GCO_MISSING
        return out
    ref = gco_cut(costs)
    same = host == ref
    rows_diff = [i for i in range(host.shape[0]) if not same[i].all()]
    ties = sum(energy(host[i], *costs[i][:1], costs[i][2], costs[i][3], costs[i][1])
               == energy(ref[i], *costs[i][:1], costs[i][2], costs[i][3], costs[i][1]) for i in rows_diff)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.tensor(list of arrays) is slow: the official line, kept
        official_mixed, ratio = mixup_graph(x, sal, idx_np, **off_kw)
    out.update({
        "block_agreement": float(same.mean()),
        "rows_differing": len(rows_diff),
        "rows_differing_with_equal_energy": int(ties),
        "max_abs_diff_mixed": float((mixed - official_mixed).abs().max()),
        "max_abs_diff_lam_vs_ratio": float((target.params.lam - ratio).abs().max()),
    })
    return out


def costs_equal(costs, ours, x, sal, idx_np, lam):
    """Whether mixlab's terms and integer costs (what its host cut solves) are the official ones, row by row."""
    bn, L = ours.block_num[0], ours.n_labels
    u1, u2, pwx, pwy, _, beta_n = pm._graph_terms(x, sal, torch.as_tensor(idx_np), bn, ours.neigh_size, ours.beta,
                                                  ours.gamma)
    u1, u2, pwx, pwy = (t.numpy() for t in (u1, u2, pwx, pwy))
    for i, ref in enumerate(costs):
        mine = pm.graphcut_costs(u2[i], u1[i], pwx[i], pwy[i], lam, beta_n, ours.eta, L)
        if not all(np.array_equal(m, r) for m, r in zip(mine, ref)):
            return False
    return True


def _parse_shapes(text):
    out = []
    for part in text.split(","):
        dims = tuple(int(v) for v in part.lower().split("x"))
        if len(dims) != 4 or dims[1] != 3:
            raise argparse.ArgumentTypeError(f"shape {part!r}: want BxCxHxW with C=3 (the official code's)")
        out.append(dims)
    return out


def main(argv=None) -> int:
    from mixlab_lab.bench.timing import format_group, group_json, header

    global NUMPY1_COSTS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=_parse_shapes, default=_parse_shapes("64x3x32x32,32x3x64x64"),
                   help="comma-separated BxCxHxW (square images, C=3); default 64x3x32x32,32x3x64x64")
    p.add_argument("--block-nums", default="4", help="comma-separated grid sides (official draws 2,4,8,16); default 4")
    p.add_argument("--n-labels", default="2,3", help="comma-separated mask levels; default 2,3 (main.py: 3)")
    p.add_argument("--transport", default="off,on", help="off, on, or off,on (default)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds per group (default 30)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--mp", type=int, default=0, help="also time the official multiprocessing.Pool(N) graph cut")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=4,
                   help="official draws (lam, partners) per case, taken in turn call after call (default 4)")
    p.add_argument("--numpy2-costs", action="store_true",
                   help="the official cost lines' literal numpy-2 (float64) arithmetic instead of numpy 1.x's float32")
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    a = p.parse_args(argv)
    if a.draws < 1 or a.rounds < 1:
        p.error("--draws and --rounds must be at least 1")
    NUMPY1_COSTS = not a.numpy2_costs
    if a.threads:
        torch.set_num_threads(a.threads)
    block_nums = [int(v) for v in a.block_nums.split(",")]
    n_labels = [int(v) for v in a.n_labels.split(",")]
    transports = [{"off": False, "on": True}[v.strip()] for v in a.transport.split(",")]
    for (_, _, H, W) in a.shapes:
        for bn in block_nums:
            if H != W or H % bn or (H // bn) % min(OFFICIAL["neigh_size"], H // bn):
                p.error(f"block_num {bn} on {H}x{W}: the official code needs square images that block_num divides")

    info = header(torch.device("cpu"))
    info.update({"gco": getattr(gco, "__version__", None) if gco is not None else None, "numpy": np.__version__,
                 "official_cost_arithmetic": "float32 (numpy 1.x)" if NUMPY1_COSTS else "numpy 2 (float64)",
                 "rounds": a.rounds, "warmup": a.warmup, "mp": a.mp, "official_options": OFFICIAL,
                 "command": " ".join([os.path.basename(sys.executable), *sys.argv])})
    try:
        from importlib.metadata import version
        info["gco"] = version("gco-wrapper")
    except Exception:
        pass
    print(f"# PuzzleMix: official (gco) vs mixlab, {info['date_utc']} UTC")
    print(f"# machine {info['machine']}; cpu {info['cpu']} x{info['cpu_count']}; torch {info['torch']} "
          f"threads {info['threads']}; numpy {info['numpy']}; gco-wrapper {info['gco']}")
    print(f"# load average at start {info['loadavg_start']}; {a.rounds} rounds, warm-up {a.warmup}; "
          f"official costs {info['official_cost_arithmetic']}")
    if gco is None:
        print(f"# {GCO_MISSING}: the official rows are skipped")

    pool = None
    if a.mp > 0:
        from multiprocessing import Pool
        pool = Pool(a.mp)
    groups, cases = [], []
    try:
        for shape in a.shapes:
            for bn in block_nums:
                for L in n_labels:
                    for tr in transports:
                        title, whole, cut, agree, lams = run_case(a, shape, bn, L, tr, pool)
                        print(format_group(f"{title}: whole call", whole, "official mixup_graph (gco)"))
                        print(format_group(f"{title}: graph cut alone", cut, "gco.cut_grid_graph per row"))
                        print("agreement: " + ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in agree.items()))
                        case = dict(shape=list(shape), block_num=bn, n_labels=L, transport=tr, lams=lams)
                        groups.append(group_json("puzzlemix-whole", f"{title}: whole call", whole,
                                                 "official mixup_graph (gco)", **case))
                        groups.append(group_json("puzzlemix-cut", f"{title}: graph cut alone", cut,
                                                 "gco.cut_grid_graph per row", **case))
                        cases.append({**case, "title": title, "agreement": agree})
                        sys.stdout.flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    load_end = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    info["loadavg_end"] = load_end
    print(f"\n# load average at end {load_end}")
    if a.json:
        tmp = f"{a.json}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"header": info, "groups": groups, "cases": cases}, f, indent=1)
        os.replace(tmp, a.json)
        print(f"# wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
