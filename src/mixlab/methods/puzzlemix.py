"""PuzzleMix (Kim, Choo and Song, ICML 2020, "Puzzle Mix: Exploiting Saliency and Local Statistics
for Optimal Mixup"; official code snu-mllab/PuzzleMix, ``mixup.py``): a port of its algorithm.

Per row, the image is cut into a ``block_num x block_num`` grid. A discrete labelling of the
blocks (``n_labels`` levels: the original's weight ``1 - l / (n_labels - 1)``) minimises

    sum_blocks unary(l) + sum_neighbours (beta' + data_smoothness) * (l - l')^2 / (n_labels - 1)^2

where ``unary(l)`` is the saliency each row loses (block-pooled, normalised to sum 1), plus
the local-statistics terms (``gamma``) and a binomial prior on ``lam`` (``eta``); the official
code solves it with gco's alpha-beta swap (``gco.cut_grid_graph(..., algorithm='swap')``).
Then (``transport=True``) the salient blocks of each image are moved, by the official
greedy transport (``mask_transport``), to the places where the mask shows that image, and the
mixed image is ``mask * T1(x) + (1 - mask) * T2(x[index])``; ``lam`` is the mean of the final
mask (the official ``ratio``), and the labels are weighted ``lam`` / ``1 - lam`` per row, as the
official ``mixup_process`` weights ``target_reweighted``.

Where each part runs:

- saliency (:func:`input_saliency`: one forward and backward of the model), the pooled unary
  and pairwise terms, the transport and the mixing: torch, batched, on the batch's device;
- the graph cut: on the host (numpy + ``scipy.sparse.csgraph.maximum_flow``), one max-flow
  problem per swap move for all rows of the batch at once (no per-row Python loop, no process
  pool). This needs the unary/pairwise terms and ``lam`` on the host: one device-to-host copy of
  ``(B, block_num, block_num)`` arrays per call (a sync on accelerators, which the algorithm
  needs), and the labelling copied back.

The graph cut is exact where the official one is: every swap move is solved exactly by a min
cut, moves run in gco's order ``(0, L-1), (0, L-2), ..., (1, L-1)...`` from the all-zero labelling
until a cycle leaves a row's energy unchanged, on gco's integer energy (the official ``int32``
truncations and gco-wrapper's ``10**5`` / ``10**3`` / ``10**2`` float scalings), and ties between
equal-energy cuts are broken as gco's Boykov-Kolmogorov max-flow breaks them (a block takes the
higher label only when it can reach the sink in the residual graph). ``n_labels=2`` is a single
min cut: the global optimum. The tests check the labellings against gco itself and against
brute-force enumeration.

Departures from the official code (all documented in :class:`PuzzleMix`): any image size whose
sides ``block_num`` divides (the official assumes square images: here blocks are
``H / block_num x W / block_num`` and the transport grid may be non-square); the energy is
summed in int64 (gco-wrapper multiplies the int32 unary costs by ``10**5`` in int32, which wraps
for a block holding more than about ``21474 / (1000 block_num^2)`` of the saliency, 8% at
``block_num=16``); a row whose saliency sums to 0 gets a zero unary term (officially NaN);
negative smoothness weights (possible only for inputs outside [0, 1] after ``mean``/``std``,
where gco raises) are clipped to 0; the adversarial-noise option (``adv_p``) and the clean-loss
regulariser (``clean_lam``) belong to the training loop and are not part of the transform.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

try:  # the graph cut runs on the host in numpy + scipy: the `puzzlemix` extra (the core needs torch alone)
    import numpy as np
except ImportError:  # pragma: no cover - exercised by the library-alone wheel test
    np = None
import torch
import torch.nn.functional as F

from .. import _validate as V
from .._fast import cast_back, memory_format
from ..mixer import Mixer
from ..regions import Region
from ..registry import register
from ..sampling import rng

__all__ = ["PuzzleMix", "PuzzleRegion", "input_saliency", "cost_matrix", "mask_transport", "transport_blocks",
           "graphcut_costs", "swap_graphcut"]

SOLVERS = ("builtin", "gco")


# ----------------------------------------------------------------------------------------------
# saliency (device)

def input_saliency(model, x: torch.Tensor, y: torch.Tensor, criterion=None, *, eval_mode: bool = True
                   ) -> torch.Tensor:
    """The official PuzzleMix saliency: ``sqrt(mean_c (d loss / d x)^2)``, ``(B, H, W)``.

    As ``main.py`` computes it (``clean_lam == 0``): the model in eval mode, the batch-mean
    cross-entropy of ``model(x)`` against ``y``, its gradient with respect to the input, the root
    mean square over channels. One forward and one backward, on ``x``'s device.

    The gradient is taken with :func:`torch.autograd.grad` with respect to a detached copy of
    ``x`` only: the model's ``.grad`` fields are neither created nor changed, ``x`` keeps its
    ``requires_grad``, and the model's train/eval mode is restored.

    Args:
        model: the network being trained.
        x: the inputs ``(B, C, H, W)``.
        y: the labels the criterion takes (class indices for the default cross-entropy).
        criterion: ``criterion(logits, y)`` -> loss (per-sample losses are averaged); default
            ``F.cross_entropy`` (the official ``CrossEntropyLoss``).
        eval_mode: run the model in eval mode (official, ``clean_lam == 0``); False keeps its
            current mode (the official ``clean_lam > 0`` path runs it in train mode).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"input_saliency needs float images shaped (B, C, H, W), got {V.describe(x)}")
    was_training = model.training
    xg = x.detach().clone().requires_grad_(True)
    if eval_mode:
        model.eval()
    try:
        with torch.enable_grad():
            out = model(xg)
            loss = F.cross_entropy(out, y) if criterion is None else criterion(out, y)
            if loss.ndim:
                loss = loss.mean()
            (grad,) = torch.autograd.grad(loss, xg)
    finally:
        model.train(was_training)
    return torch.sqrt(torch.mean(grad ** 2, dim=1))


# ----------------------------------------------------------------------------------------------
# unary and pairwise terms (device): the torch part of the official ``mixup_graph``

def _neigh_penalty(input1, input2, kh, kw):
    """Official ``neigh_penalty`` (data local smoothness), with the pooling factor per axis."""
    pw_x = input1[:, :, :-1, :] - input2[:, :, 1:, :]
    pw_y = input1[:, :, :, :-1] - input2[:, :, :, 1:]
    pw_x = pw_x[:, :, kh - 1::kh, :]
    pw_y = pw_y[:, :, :, kw - 1::kw]
    pw_x = F.avg_pool2d(pw_x.abs().mean(1), kernel_size=(1, kw))
    pw_y = F.avg_pool2d(pw_y.abs().mean(1), kernel_size=(kh, 1))
    return pw_x, pw_y


def _normalised_pool(sal: torch.Tensor, size: tuple) -> torch.Tensor:
    """Official ``grad1_pool / grad1_pool.sum()`` per row (a row summing to 0 stays 0)."""
    B = sal.shape[0]
    pool = F.avg_pool2d(sal, size)  # (B, H, W) pooled as (C, H, W), as the official call
    total = pool.reshape(B, -1).sum(1).reshape(B, 1, 1)
    return pool / torch.where(total > 0, total, torch.ones_like(total))


def _graph_terms(x_den, sal, index, block_num, neigh_size, beta, gamma):
    """The official ``mixup_graph`` up to ``.cpu().numpy()``, for every row of the batch.

    Returns the original's and the partner's unaries ``(B, n, n)`` (pairwise parts folded in),
    the reduced pairwise weights ``pw_x (B, n-1, n)``, ``pw_y (B, n, n-1)`` and the pooled,
    normalised saliency ``(B, n, n)`` (the transport's unary).
    """
    B, _, H, W = x_den.shape
    bh, bw = H // block_num, W // block_num
    nh, nw = min(neigh_size, bh), min(neigh_size, bw)
    beta = beta / block_num / 16  # official normalisation

    unary1_torch = _normalised_pool(sal, (bh, bw))
    unary2_torch = unary1_torch[index]
    input1_pool = F.avg_pool2d(x_den, (nh, nw))
    input2_pool = input1_pool[index]

    pw_x = torch.zeros([B, 2, 2, block_num - 1, block_num], device=x_den.device)
    pw_y = torch.zeros([B, 2, 2, block_num, block_num - 1], device=x_den.device)
    kh, kw = bh // nh, bw // nw
    pw_x[:, 0, 0], pw_y[:, 0, 0] = _neigh_penalty(input2_pool, input2_pool, kh, kw)
    pw_x[:, 0, 1], pw_y[:, 0, 1] = _neigh_penalty(input2_pool, input1_pool, kh, kw)
    pw_x[:, 1, 0], pw_y[:, 1, 0] = _neigh_penalty(input1_pool, input2_pool, kh, kw)
    pw_x[:, 1, 1], pw_y[:, 1, 1] = _neigh_penalty(input1_pool, input1_pool, kh, kw)
    pw_x = beta * gamma * pw_x
    pw_y = beta * gamma * pw_y

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
    return unary1, unary2, pw_x, pw_y, unary1_torch, beta


# ----------------------------------------------------------------------------------------------
# graph cut (host)

def graphcut_costs(unary_partner, unary_orig, pw_x, pw_y, lam, beta, eta, n_labels, eps=1e-8):
    """The integer costs the official ``graphcut_multi`` hands to ``gco.cut_grid_graph``.

    Args are one row's float32 arrays (``unary_partner`` is the official ``unary1`` argument:
    ``graphcut_multi(unary2[i], unary1[i], ...)`` swaps them), ``lam`` the original's weight,
    ``beta`` the normalised ``beta / block_num / 16``. The float arithmetic is float32 as under
    the numpy 1.x the official code ran with (a float64 scalar times a float32 array stays float32).

    Returns:
        ``unary_cost`` int32 ``(n, n, L)``, ``pairwise_cost`` float32 ``(L, L)``, ``pw_x`` int32
        ``(n-1, n)`` and ``pw_y`` int32 ``(n, n-1)``: gco's arguments. Label ``l`` gives the
        original the weight ``1 - l / (L - 1)``.
    """
    block_num = unary_partner.shape[0]
    large_val = 1000 * block_num ** 2
    L = n_labels
    prior = np.array([-np.log(math.comb(L - 1, i) * lam ** (L - 1 - i) * (1 - lam) ** i + eps) for i in range(L)])
    prior = eta * prior / block_num ** 2
    f32 = np.float32
    unary_cost = (f32(large_val) * np.stack([f32(1 - lv) * unary_partner + f32(lv) * unary_orig + f32(prior[i])
                                             for i, lv in enumerate(np.linspace(0, 1, L))], axis=-1)).astype(np.int32)
    pairwise_cost = np.zeros(shape=[L, L], dtype=np.float32)
    for i in range(L):
        for j in range(L):
            pairwise_cost[i, j] = (i - j) ** 2 / (L - 1) ** 2
    pw_x = (f32(large_val) * (pw_x + f32(beta))).astype(np.int32)
    pw_y = (f32(large_val) * (pw_y + f32(beta))).astype(np.int32)
    return unary_cost, pairwise_cost, pw_x, pw_y


def _grid_edges(n: int):
    """gco's grid edges: vertical ``(i, j)-(i+1, j)`` then horizontal ``(i, j)-(i, j+1)``, row-major ids."""
    ids = np.arange(n * n).reshape(n, n)
    return (np.concatenate([ids[:-1, :].ravel(), ids[:, :-1].ravel()]),
            np.concatenate([ids[1:, :].ravel(), ids[:, 1:].ravel()]))


_INT32_BUDGET = 2 ** 30  # scipy's max-flow counts in int32: the flow out of the source must stay below this


def _max_flow_sink_side(m, heads, tails, caps, group=None):
    """Min cut of a graph on ``m`` nodes plus source ``m`` and sink ``m + 1``: True for the nodes
    that can reach the sink in the residual graph of a maximum flow (gco's ``SINK`` segment).

    ``group`` (int ``(m,)``, optional) names independent components (rows of the batch, no edge
    between them): when the source's capacity would overflow scipy's int32 flow, they are solved
    in chunks.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    keep = caps > 0
    heads, tails, caps = heads[keep], tails[keep], caps[keep]
    side = np.zeros(m, dtype=bool)
    if caps.size == 0:
        return side
    out_of_source = caps[heads == m]
    if caps.max() >= _INT32_BUDGET:
        raise OverflowError("PuzzleMix: a graph-cut capacity exceeds int32 (saliency or smoothness far larger than "
                            "the official normalisation allows)")
    if out_of_source.sum() >= _INT32_BUDGET and group is not None:
        load = np.zeros(int(group.max()) + 1, dtype=np.int64)
        np.add.at(load, group[tails[heads == m]], out_of_source)
        chunk_of_group = np.cumsum(load) // (_INT32_BUDGET // 2)
        node_chunk = chunk_of_group[group]
        end = np.where(heads < m, heads, tails)  # every edge touches a site of its own row
        for ch in np.unique(node_chunk):
            nodes = np.flatnonzero(node_chunk == ch)
            local = np.full(m + 2, -1, dtype=np.int64)
            local[nodes] = np.arange(nodes.size)
            local[m], local[m + 1] = nodes.size, nodes.size + 1
            sel = node_chunk[end] == ch
            side[nodes] = _max_flow_sink_side(nodes.size, local[heads[sel]], local[tails[sel]], caps[sel])
        return side
    if out_of_source.sum() >= _INT32_BUDGET:
        raise OverflowError("PuzzleMix: the graph cut's total capacity exceeds int32")
    n = m + 2
    cap = csr_array((caps.astype(np.int32), (heads, tails)), shape=(n, n))
    cap.sum_duplicates()
    flow = maximum_flow(cap, m, m + 1).flow
    residual = (cap - flow).tocsr()
    residual.eliminate_zeros()
    reach = breadth_first_order(residual.T.tocsr(), m + 1, directed=True, return_predecessors=False)
    full = np.zeros(n, dtype=bool)
    full[reach] = True
    return full[:m]


def swap_graphcut(unary, pw_x, pw_y, pairwise):
    """Alpha-beta swap (gco's ``swap(-1)``) on a batch of grid graphs, from the all-zero labelling.

    Args:
        unary: int ``(R, n, n, L)`` data costs (gco's ``unary_cost``).
        pw_x: int ``(R, n-1, n)`` weights of the vertical edges; ``pw_y`` int ``(R, n, n-1)``
            of the horizontal ones (negative weights are clipped to 0).
        pairwise: float32 ``(L, L)`` smoothness (gco's ``pairwise_cost``).

    The energy is gco-wrapper's integer one divided by 1000, summed in int64:
    ``100 * unary + w * int(100 * pairwise)`` (divided by a common factor of its terms). Every move ``(a, b)`` with ``a < b`` in gco's order
    is solved exactly by one max-flow over all rows still running; a site takes ``b`` only when it
    can reach the sink in the residual graph (gco's tie-breaking); a row stops after the first cycle
    that does not lower its energy.

    Returns:
        int64 labels ``(R, n, n)``.
    """
    unary = np.asarray(unary, dtype=np.int64)
    R, n, _, L = unary.shape
    G = n * n
    S = R * G
    Vq = (np.asarray(pairwise, dtype=np.float32) * 100).astype(np.intc).astype(np.int64)
    scale = math.gcd(100, *[int(v) for v in np.unique(Vq)])  # a common factor: same minimisers, smaller numbers
    D = (100 // scale) * unary.reshape(S, L)
    Vq = Vq // scale
    eu, ev = _grid_edges(n)
    off = (np.arange(R) * G)[:, None]
    eu, ev = (eu[None] + off).ravel(), (ev[None] + off).ravel()
    w = np.concatenate([np.asarray(pw_x, dtype=np.int64).reshape(R, -1),
                        np.asarray(pw_y, dtype=np.int64).reshape(R, -1)], axis=1).ravel()
    w = np.maximum(w, 0)
    row_of = np.repeat(np.arange(R), G)
    lab = np.zeros(S, dtype=np.int64)
    sites_all = np.arange(S)

    def energy():
        e = np.zeros(R, dtype=np.int64)
        np.add.at(e, row_of, D[sites_all, lab])
        np.add.at(e, row_of[eu], w * Vq[lab[eu], lab[ev]])
        return e

    running = np.ones(R, dtype=bool)
    current = energy()
    pairs = [(a, b) for a in range(L) for b in range(L - 1, -1, -1) if a < b]
    while running.any():
        for a, b in pairs:
            inm = running[row_of] & ((lab == a) | (lab == b))
            sites = np.flatnonzero(inm)
            m = sites.size
            if m == 0:
                continue
            local = np.full(S, -1, dtype=np.int64)
            local[sites] = np.arange(m)
            e0, e1 = D[sites, a].copy(), D[sites, b].copy()
            iu, iv = inm[eu], inm[ev]
            for inside, outside, sel in ((eu, ev, iu & ~iv), (ev, eu, iv & ~iu)):
                lo = lab[outside[sel]]
                np.add.at(e0, local[inside[sel]], w[sel] * Vq[a, lo])
                np.add.at(e1, local[inside[sel]], w[sel] * Vq[b, lo])
            both = iu & iv
            pu, pv, c = local[eu[both]], local[ev[both]], w[both] * Vq[a, b]
            d = e1 - e0  # > 0: taking b costs more (source -> site); < 0: keeping a does (site -> sink)
            pos, neg = np.flatnonzero(d > 0), np.flatnonzero(d < 0)
            heads = np.concatenate([pu, pv, np.full(pos.size, m), neg])
            tails = np.concatenate([pv, pu, pos, np.full(neg.size, m + 1)])
            caps = np.concatenate([c, c, d[pos], -d[neg]])
            to_b = _max_flow_sink_side(m, heads, tails, caps, row_of[sites])
            lab[sites] = np.where(to_b, b, a)
        new = energy()
        running &= new < current
        current = new
    return lab.reshape(R, n, n)


def _gco_labels(costs):
    """The official call itself, ``gco.cut_grid_graph(..., algorithm='swap')``, row by row."""
    try:
        import gco
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("PuzzleMix(solver='gco') needs gco-wrapper: pip install gco-wrapper") from err
    out = []
    for unary_cost, pairwise_cost, pw_x, pw_y in costs:
        n = unary_cost.shape[0]
        out.append(gco.cut_grid_graph(unary_cost, pairwise_cost, pw_x, pw_y, algorithm="swap").reshape(n, n))
    return np.stack(out).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# transport (device)

@functools.lru_cache(maxsize=32)
def _cost_matrix_np(gh: int, gw: int) -> np.ndarray:
    i = np.arange(gh * gw) // gw
    j = np.arange(gh * gw) % gw
    C = ((i[:, None] - i[None, :]) ** 2 + (j[:, None] - j[None, :]) ** 2).astype(np.float32)
    return C / (max(gh, gw) - 1) ** 2


def cost_matrix(gh: int, gw: int | None = None, device=None) -> torch.Tensor:
    """The official transport ``cost_matrix``: squared block distance over ``(width - 1)^2``.

    For a ``gh x gw`` grid (the official is square, ``gw = gh``), normalised by
    ``(max(gh, gw) - 1)^2``. float32 ``(gh * gw, gh * gw)``.
    """
    gw = gh if gw is None else gw
    return torch.from_numpy(_cost_matrix_np(int(gh), int(gw))).to(device)


def mask_transport(mask: torch.Tensor, grad_pool: torch.Tensor, eps: float) -> torch.Tensor:
    """The official greedy transport plan (``mask_transport``), batched on the device.

    Args:
        mask: ``(B, 1, gh, gw)`` the weight of the image being moved at each destination block.
        grad_pool: ``(B, gh, gw)`` its normalised block saliency.
        eps: the transport cost's weight (``t_eps``).

    Returns:
        float ``(B, N, N)`` 0/1 plan, ``plan[i, j] = 1`` when block ``i`` moves to ``j``; a column
        holds at most one 1 (a destination nobody won stays empty, as officially).
    """
    gh, gw = mask.shape[-2:]
    N = gh * gw
    n_iter = int(max(gh, gw))
    C = cost_matrix(gh, gw, mask.device).unsqueeze(0)
    z = (mask > 0).float()
    cost = eps * C - grad_pool.reshape(-1, N, 1) * z.reshape(-1, 1, N)
    for _ in range(n_iter):
        row_best = cost.min(-1)[1]
        plan = torch.zeros_like(cost).scatter_(-1, row_best.unsqueeze(-1), 1)
        cost_fight = plan * cost
        col_best = cost_fight.min(-2)[1]
        plan_win = torch.zeros_like(cost).scatter_(-2, col_best.unsqueeze(-2), 1) * plan
        plan_lose = (1 - plan_win) * plan
        cost += plan_lose
    return plan_win


def plan_sources(plan: torch.Tensor) -> torch.Tensor:
    """int64 ``(B, N)``: the block that lands on each destination block, -1 where none does."""
    return torch.where(plan.sum(1) > 0, plan.argmax(1), torch.full_like(plan[:, 0], -1, dtype=torch.long))


def transport_blocks(img: torch.Tensor, src: torch.Tensor, grid: tuple) -> torch.Tensor:
    """Move blocks: destination block ``j`` of row ``b`` takes block ``src[b, j]`` (zeros for -1).

    The official ``transport_image`` (``plan^T @ patches``) as a gather: exact for every dtype.
    ``img`` ``(B, ..., H, W)`` with ``H``, ``W`` multiples of the ``grid`` ``(gh, gw)``.
    """
    gh, gw = grid
    B, H, W = img.shape[0], img.shape[-2], img.shape[-1]
    if img.numel() == 0:
        return img.clone()
    lead = img.shape[1:-2]
    th, tw = H // gh, W // gw
    blocks = img.reshape(B, -1, gh, th, gw, tw).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, -1)
    idx = src.clamp(min=0)
    out = blocks.gather(1, idx[:, :, None].expand(-1, -1, blocks.shape[2]))
    out = torch.where((src >= 0)[:, :, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    out = out.reshape(B, gh, gw, -1, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(B, *lead, H, W)
    return out


# ----------------------------------------------------------------------------------------------
# the region

@dataclasses.dataclass(frozen=True, eq=False)
class PuzzleRegion(Region):
    """PuzzleMix's rule: ``keep * T1(x) + (1 - keep) * T2(partner)`` position by position.

    Attributes:
        keep: ``(B, H, W)``: the original's weight at each pixel (the official final ``mask``):
            float32 in [0, 1] (levels ``1 - l / (n_labels - 1)``), or bool (True = original) when
            ``n_labels == 2``.
        src: int64 ``(B, 2, gh * gw)`` or None (no transport): for each block of the transport
            grid, the block of the original (``src[:, 0]``) and of the partner (``src[:, 1]``)
            moved there; -1 where no block lands (the official transport leaves zeros there).
        grid: ``(gh, gw)``, the transport grid.

    ``lam`` is ``keep``'s mean per row (the official ``ratio``). Leaves over ``(H, W)`` follow
    the same transport and mask (integer maps too when the mask is binary). With transport, the
    original's content moves, so a dense *target* map cannot be weighted per position by
    :class:`mixlab.MixedTarget` (it would pair moved pixels with unmoved labels): put the map in
    the batch instead (``t({"image": x, "mask": m}, y)`` moves and pastes it exactly).
    """

    keep: torch.Tensor
    src: Optional[torch.Tensor] = None
    grid: tuple = (1, 1)

    def __post_init__(self):
        k = self.keep
        if not isinstance(k, torch.Tensor) or k.ndim != 3 or not (k.dtype == torch.bool or k.is_floating_point()):
            raise ValueError(f"PuzzleRegion.keep must be a bool or float tensor (B, H, W), got {V.describe(k)}")
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if self.src is not None:
            gh, gw = self.grid
            if not isinstance(self.src, torch.Tensor) or self.src.dtype != torch.int64 \
                    or self.src.shape != (k.shape[0], 2, gh * gw):
                raise ValueError(f"PuzzleRegion.src must be int64 of shape ({k.shape[0]}, 2, {gh * gw}), got "
                                 f"{V.describe(self.src)}")
            if k.shape[1] % gh or k.shape[2] % gw:
                raise ValueError(f"PuzzleRegion.grid {self.grid} does not divide the mask's {tuple(k.shape[1:])}")

    @property
    def shape(self) -> tuple:  # type: ignore[override]
        return tuple(self.keep.shape[1:])

    @property
    def binary(self) -> bool:  # type: ignore[override]
        return self.keep.dtype == torch.bool

    @property
    def batch_size(self) -> int:
        return self.keep.shape[0]

    def mask(self, ndim: int) -> torch.Tensor:
        k = self.keep
        m = ~k if self.binary else 1 - k
        return m.view((m.shape[0],) + (1,) * (ndim - 3) + tuple(m.shape[1:]))

    @property
    def lam(self) -> torch.Tensor:
        return self.keep.to(torch.float32).flatten(1).mean(-1)

    def partner_share(self, lam, ndim):
        if self.src is not None:
            raise ValueError("PuzzleMix moves blocks of the original rows too (transport), so a dense target map "
                             "cannot be weighted per position (moved pixels would keep unmoved labels): mix the map "
                             "inside the batch (t({'image': x, 'mask': m}, y) moves and pastes it; n_labels=2 for "
                             "integer maps), or use transport=False")
        return self.mask(ndim).to(torch.float32)

    def rows(self, sl: slice) -> "PuzzleRegion":
        src = None if self.src is None else self.src[sl].contiguous()
        return PuzzleRegion(self.keep[sl].contiguous(), src, self.grid)

    def to(self, device) -> "PuzzleRegion":
        return PuzzleRegion(self.keep.to(device), None if self.src is None else self.src.to(device), self.grid)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        xp = src.index_select(0, index)
        x1 = x
        if self.src is not None:
            x1 = transport_blocks(x, self.src[:, 0], self.grid)
            xp = transport_blocks(xp, self.src[:, 1], self.grid)
        if self.binary:
            out = torch.where(self.mask(x.ndim), xp, x1)
        else:
            acc = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
            k = self.keep.view((x.shape[0],) + (1,) * (x.ndim - 3) + self.shape).to(acc)
            out = cast_back(k * x1.to(acc) + (1 - k) * xp.to(acc), x)  # the official formula
        return out.contiguous(memory_format=memory_format(x))


def _refine(src: torch.Tensor, grid: tuple, fine: tuple) -> torch.Tensor:
    """A transport on ``grid`` expressed on the finer ``fine`` grid (each block split evenly)."""
    (gh, gw), (fh, fw) = grid, fine
    if (gh, gw) == (fh, fw):
        return src
    rh, rw = fh // gh, fw // gw
    I = torch.arange(fh, device=src.device)[:, None].expand(fh, fw).reshape(-1)
    J = torch.arange(fw, device=src.device)[None, :].expand(fh, fw).reshape(-1)
    s = src[:, (I // rh) * gw + J // rw]  # (n, F)
    fine_src = ((s // gw) * rh + I % rh) * fw + (s % gw) * rw + J % rw
    return torch.where(s >= 0, fine_src, s)


# ----------------------------------------------------------------------------------------------
# the transform

def _channel_stat(value, name):
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.ndim > 1 or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a number or a sequence of per-channel numbers, got {value!r}")
    return t


def _require_host_solver() -> None:
    """PuzzleMix's graph cut needs numpy and scipy (the ``puzzlemix`` extra): say so at construction."""
    try:
        import scipy.sparse.csgraph  # noqa: F401
    except ImportError:
        np_missing = np is None
        raise ImportError("PuzzleMix solves its graph cut on the host with numpy and scipy"
                          f"{' (numpy is not installed)' if np_missing else ' (scipy is not installed)'}: "
                          "pip install \"mixlab[puzzlemix]\"") from None


@register("puzzlemix", inputs=("images",), needs=("saliency",),
          when="Images, when a saliency pass per batch is affordable: better accuracy and calibration than CutMix.")
class PuzzleMix(Mixer):
    """PuzzleMix (Kim et al. 2020): saliency-guided graph-cut masks plus optimal block transport.

    ``t(x, y, saliency=s) -> (mixed, MixedTarget)`` with ``s`` the ``(B, H, W)`` saliency of the
    images (``t.saliency(model, x, y)``: the official input gradient), or ``PuzzleMix(model=net)``
    and ``t(x, y)`` (one extra forward and backward per call). ``t.sample(x, saliency=s)`` draws
    the :class:`MixParams`; its region is a :class:`PuzzleRegion` (the mask and both transports).

    Per batch (``mode="batch"``, the official): ``lam ~ Beta(alpha, alpha)``, a partner
    permutation and ``block_num`` drawn uniformly from the choices; per row: the graph-cut
    labelling of the ``block_num x block_num`` blocks (exact alpha-beta swap moves, on the host,
    see :mod:`mixlab.puzzlemix`), the transport of both images (``transport=True``, on the
    device), the mixed image ``mask * T1(x) + (1 - mask) * T2(x[index])``. ``lam`` is the mean of
    the final mask per row (the official ``ratio``), the labels are weighted ``lam`` and
    ``1 - lam`` per row (the official ``target_reweighted``); ``MixedTarget.params.lam`` is it.
    ``mode="sample"`` draws ``lam`` and ``block_num`` per row.

    Defaults are the official CIFAR settings (``main.py``'s argparse defaults and the README's
    CIFAR-100 / Tiny-ImageNet commands):

    Args:
        alpha: Beta concentration (``--mixup_alpha 1.0`` in every PuzzleMix command).
        block_num: the grid side, or a tuple of sides to draw from; default ``(2, 4, 8, 16)``:
            the official ``2 ** np.random.randint(1, 5)``. Every side must divide ``H`` and ``W``.
        beta: label smoothness (``--beta 1.2``; divided by ``block_num * 16`` as officially).
        gamma: data local smoothness (``--gamma 0.5``).
        eta: prior weight (``--eta 0.2``).
        neigh_size: the pooling side of the local statistics (``--neigh_size 4``; the official
            ImageNet code uses 2). It must divide the block side (``min(neigh_size, block side)``).
        n_labels: mask levels, 2 to 4 (``--n_labels 3``: weights 1, 0.5, 0 per block). With 2 the
            mask is binary and integer maps in the batch follow it exactly.
        transport: move the salient blocks (``--transport True``).
        t_eps: the transport cost's weight (``--t_eps 0.8``).
        t_size: the transport block side in pixels, -1 for the graph cut's blocks (``main.py``'s
            default -1; the README's CIFAR-100 commands pass ``--t_size 4``).
        mean, std: per-channel statistics the inputs were normalised with: the local-statistics
            term is computed on ``x * std + mean`` as officially (default: ``x`` as it is, i.e.
            images in [0, 1]).
        solver: ``"builtin"`` (scipy max-flow, exact swap moves) or ``"gco"`` (the official
            ``gco.cut_grid_graph`` from gco-wrapper, row by row; it patches ``numpy.int`` and
            friends back into numpy on import).
        model, criterion: optional: compute the saliency in the call (:func:`input_saliency`).
        mode: ``"batch"`` (official) or ``"sample"``.
        Other arguments as :class:`mixlab.MixUp`.

    Not part of the transform: the adversarial noise (``--adv_p``) and the clean-loss regulariser
    (``--clean_lam``) belong to the training loop; for ``clean_lam > 0`` compute the saliency with
    ``eval_mode=False`` and add the clean loss yourself.
    """

    def __init__(self, alpha=1.0, *, block_num=(2, 4, 8, 16), beta=1.2, gamma=0.5, eta=0.2, neigh_size=4,
                 n_labels=3, transport=True, t_eps=0.8, t_size=-1, mean=None, std=None, solver="builtin",
                 model=None, criterion=None, **common):
        super().__init__(**common)
        _require_host_solver()
        self.alpha = V.alpha(alpha)
        choices = block_num if isinstance(block_num, (tuple, list)) else (block_num,)
        if not choices:
            raise ValueError("block_num must be an int >= 2 or a non-empty tuple of them, got ()")
        self.block_num = tuple(V.integer(b, "block_num", minimum=2) for b in choices)
        self.beta = V.real(beta, "beta", minimum=0.0)
        self.gamma = V.real(gamma, "gamma", minimum=0.0)
        self.eta = V.real(eta, "eta", minimum=0.0)
        self.neigh_size = V.integer(neigh_size, "neigh_size", minimum=1)
        self.n_labels = V.integer(n_labels, "n_labels", minimum=2)
        if self.n_labels > 4:
            raise ValueError(f"n_labels must be 2, 3 or 4 (the official graphcut_multi's), got {self.n_labels}")
        self.transport = bool(transport)
        self.t_eps = V.real(t_eps, "t_eps", minimum=0.0)
        self.t_size = V.integer(t_size, "t_size", minimum=-1)
        if self.t_size == 0:
            raise ValueError("t_size must be -1 (the graph cut's blocks) or a block side >= 1, got 0")
        self.mean = _channel_stat(mean, "mean")
        self.std = _channel_stat(std, "std")
        self.solver = V.choice(solver, "solver", SOLVERS)
        if model is not None and not callable(model):
            raise TypeError(f"model must be a torch.nn.Module (callable), got {V.describe(model)}")
        if criterion is not None and not callable(criterion):
            raise TypeError(f"criterion must be a callable (logits, y) -> loss, got {V.describe(criterion)}")
        self.model = model
        self.criterion = criterion

    # -- saliency ---------------------------------------------------------------------------
    def saliency(self, model, x, y, criterion=None, *, eval_mode=True) -> torch.Tensor:
        """The official input-gradient saliency ``(B, H, W)`` (see :func:`input_saliency`)."""
        return input_saliency(model, x, y, criterion if criterion is not None else self.criterion,
                              eval_mode=eval_mode)

    # -- drawing ------------------------------------------------------------------------------
    def _check(self, leaf, saliency):
        if leaf.ndim != 4 or not leaf.is_floating_point():
            raise ValueError(f"PuzzleMix needs float images shaped (B, C, H, W), got {V.describe(leaf)}")
        B, _, H, W = leaf.shape
        if saliency is None:
            raise ValueError("PuzzleMix needs each image's saliency: t(x, y, saliency=t.saliency(model, x, y)), "
                             "t.sample(x, saliency=s), or PuzzleMix(model=net)")
        if not isinstance(saliency, torch.Tensor) or not saliency.is_floating_point() \
                or tuple(saliency.shape) != (B, H, W):
            raise ValueError(f"saliency must be a float tensor of shape {(B, H, W)} (one map per image), got "
                             f"{V.describe(saliency)}")
        if saliency.device != leaf.device:
            raise ValueError(f"saliency is on {saliency.device}, the images on {leaf.device}")
        for bn in self.block_num:
            if H % bn or W % bn:
                raise ValueError(f"PuzzleMix: block_num={bn} does not divide the image size {H}x{W}; pass block_num "
                                 f"choices that divide both sides")
            bh, bw = H // bn, W // bn
            nh, nw = min(self.neigh_size, bh), min(self.neigh_size, bw)
            if bh % nh or bw % nw:
                raise ValueError(f"PuzzleMix: neigh_size={self.neigh_size} does not divide the {bh}x{bw} blocks of "
                                 f"block_num={bn} on {H}x{W} images; pass a neigh_size that does (the official "
                                 f"ImageNet code uses 2)")
            if self.transport and self.t_size != -1:
                th, tw = min(self.t_size, bh), min(self.t_size, bw)
                if bh % th or bw % tw:
                    raise ValueError(f"PuzzleMix: t_size={self.t_size} does not divide the {bh}x{bw} blocks of "
                                     f"block_num={bn} on {H}x{W} images")

    def _denormalised(self, leaf):
        x = leaf.float()
        view = (1, -1, 1, 1)
        if self.std is not None:
            x = x * self.std.to(x.device).view(view)
        if self.mean is not None:
            x = x + self.mean.to(x.device).view(view)
        return x

    def draw(self, leaf, lam, index, g, *, y=None, saliency=None):
        """The graph-cut mask and transports; ``saliency`` ``(B, H, W)``, or computed by ``self.model`` from ``y``."""
        B, device = leaf.shape[0], leaf.device
        if saliency is None and self.model is not None:
            if torch.utils.data.get_worker_info() is not None:
                raise RuntimeError("PuzzleMix(model=...) cannot run in a DataLoader worker: the worker's model is a "
                                   "copy frozen when the worker started (its saliency would come from stale "
                                   "weights), and autograd does not run in forked workers; mix in the training "
                                   "loop, or compute the saliency there and pass t(x, y, saliency=s)")
            if y is None:
                raise ValueError("PuzzleMix(model=...) needs the labels for the saliency: call t(x, y)")
            saliency = input_saliency(self.model, leaf, y, self.criterion)
        self._check(leaf, saliency)
        H, W = leaf.shape[-2:]
        n = self.distinct(B)
        choice = torch.randint(len(self.block_num), (n,), device=device, **rng(g))
        if n != B:
            choice = choice.expand(B)
        lam_host = lam.tolist()  # host sync: the graph cut's prior needs lam (and the rows that mix)
        bn_rows = [self.block_num[c] for c in choice.tolist()]
        keep = torch.ones(B, H, W, device=device)
        mixed = [i for i in range(B) if lam_host[i] < 1]
        groups: dict = {}
        for i in mixed:
            groups.setdefault(bn_rows[i], []).append(i)
        sal = saliency.detach().float()
        x_den = self._denormalised(leaf.detach()) if groups else None

        # graph-cut terms per block size (device), then one host solve for every row
        costs, order, terms = [], [], {}
        for bn, rows in groups.items():
            u1, u2, pwx, pwy, u_sal, beta_n = _graph_terms(x_den, sal, index, bn, self.neigh_size, self.beta,
                                                           self.gamma)
            r = torch.tensor(rows, device=device)
            host = [t.index_select(0, r).cpu().numpy() for t in (u1, u2, pwx, pwy)]
            if not all(np.isfinite(h).all() for h in host) or (host[0] < 0).any():
                raise ValueError("saliency must be finite and non-negative (PuzzleMix pools it as block weights)")
            terms[bn] = (r, u_sal)
            for j, i in enumerate(rows):
                costs.append(graphcut_costs(host[1][j], host[0][j], host[2][j], host[3][j], lam_host[i], beta_n,
                                            self.eta, self.n_labels))
                order.append((bn, j))
        labels = {}
        if costs:
            by_size: dict = {}
            for (bn, j), c in zip(order, costs):
                by_size.setdefault(bn, []).append(c)
            for bn, cs in by_size.items():
                if self.solver == "gco":
                    labels[bn] = _gco_labels(cs)
                else:
                    labels[bn] = swap_graphcut(np.stack([c[0] for c in cs]), np.stack([c[2] for c in cs]),
                                               np.stack([c[3] for c in cs]), cs[0][1])

        # masks and transport (device)
        srcs = []
        for bn, (r, u_sal) in terms.items():
            mask = torch.tensor(1.0 - labels[bn] / (self.n_labels - 1), dtype=torch.float32, device=device)
            mask = mask.unsqueeze(1)  # (n, 1, bn, bn): the original's weight per block
            if self.transport:
                grid, mask, u_t = self._transport_grid(bn, mask, sal, H, W, u_sal)
                plan1 = mask_transport(mask, u_t.index_select(0, r), eps=self.t_eps)
                plan2 = mask_transport(1 - mask, u_t.index_select(0, index.index_select(0, r)), eps=self.t_eps)
                srcs.append((r, grid, torch.stack([plan_sources(plan1), plan_sources(plan2)], 1)))
            keep[r] = F.interpolate(mask, size=(H, W))[:, 0]
        if self.n_labels == 2:
            keep = keep > 0.5
        src, grid = None, (1, 1)
        if self.transport:
            grid = self._common_grid([s[1] for s in srcs], H, W)
            G = grid[0] * grid[1]
            src = torch.arange(G, device=device).expand(B, 2, G).clone()  # unmixed rows: nothing moves
            for r, gr, s in srcs:
                src[r] = torch.stack([_refine(s[:, 0], gr, grid), _refine(s[:, 1], gr, grid)], 1)
        return PuzzleRegion(keep, src, grid)

    def _transport_grid(self, bn, mask, sal, H, W, u_sal):
        """The official ``t_size`` logic: the graph cut's grid, or a finer one of ``t_size`` pixels."""
        bh, bw = H // bn, W // bn
        if self.t_size == -1:
            return (bn, bn), mask, u_sal
        th, tw = min(self.t_size, bh), min(self.t_size, bw)
        if (th, tw) == (bh, bw):
            return (bn, bn), mask, u_sal
        grid = (H // th, W // tw)
        return grid, F.interpolate(mask, size=grid), _normalised_pool(sal, (th, tw))

    @staticmethod
    def _common_grid(grids, H, W):
        if not grids:
            return (1, 1)
        ch = functools.reduce(math.gcd, [H // g[0] for g in grids])
        cw = functools.reduce(math.gcd, [W // g[1] for g in grids])
        return (H // ch, W // cw)
