"""zeta-mixup (Abhishek, Brown, Hamarneh 2022, "Multi-Sample zeta-mixup: Richer, More Realistic Synthetic
Samples from a p-Series Interpolant"; official code kakumarabhishek/zeta-mixup): every output row is a
convex combination of many rows of the batch, with weights from a p-series ``n ** -gamma`` over a
random ranking in which the row itself always ranks first.

Convention: ``lam`` weights the original row: the largest weight, ``1 / sum_n n ** -gamma``.
"""
from __future__ import annotations

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams
from ..registry import register
from ..sampling import rng

__all__ = ["ZetaMixup", "zeta_ranks", "zeta_ranks_shared"]


def zeta_ranks_shared(B: int, k: int, *, generator=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ranking for the batch (``mode="batch"``): a single random cyclic order of the rows, read from each row.

    Row ``i`` ranks row ``perm[(pos_i + r) mod B]`` at ``r + 1``: the official rotation of one permutation
    so that each row ranks itself first, applied to one draw instead of one per row.

    Returns:
        As :func:`zeta_ranks`.
    """
    perm = torch.randperm(B, device=device, **rng(generator))
    pos = torch.empty_like(perm).scatter_(0, perm, torch.arange(B, device=device))  # where each row sits
    steps = torch.arange(k, device=device)
    order = perm[(pos[:, None] + steps[None, :]) % B]  # (B, k): the row itself first
    ranks = torch.arange(1, k + 1, device=device, dtype=torch.float64).expand(B, k)
    return ranks, order


def zeta_ranks(B: int, k: int, *, generator=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row, ranks ``1..B`` over the batch with rank 1 on the row itself and the rest uniformly random.

    The official ``zeta_mixup_weights`` draws a random permutation per row and rotates it so that
    rank 1 falls on the diagonal; the ranks of the other rows are then a uniformly random arrangement
    of ``2..B``, which is what is drawn here (one argsort of uniform noise per row).

    Returns:
        ``(ranks, index)``: float64 ``(B, k)`` ranks ``1..k`` and int64 ``(B, k)`` the rows holding them
        (column 0 is the row itself); only the ``k`` best-ranked rows are kept.
    """
    noise = torch.rand(B, B, device=device, dtype=torch.float64, **rng(generator))
    eye = torch.eye(B, dtype=torch.bool, device=device)
    order = noise.masked_fill(eye, -1.0).argsort(dim=1)[:, :k]  # (B, k): the row itself first, then the others
    ranks = torch.arange(1, k + 1, device=device, dtype=torch.float64).expand(B, k)
    return ranks, order


@register("zetamixup", inputs=("images", "sequences", "volumes", "tokens", "vectors"),
          when="Many classes, little data (e.g. medical images): each row mixes many rows with one dominant weight.")
class ZetaMixup(Mixer):
    """zeta-mixup (Abhishek et al. 2022): mix each row with many rows, p-series weights ``rank ** -gamma``.

    Row ``i`` of the output is ``sum_j w_ij x_j`` over the batch (labels likewise), with
    ``w_ij = r_ij ** -gamma / sum_n n ** -gamma``, ``r_ij`` a random ranking of the rows in which ``i``
    itself has rank 1 (so it dominates: with ``gamma = 2.8`` it keeps about 74% of its row). The paper
    shows this avoids the off-manifold averages of whole-batch Dirichlet weights, which it reports at
    94.69% CIFAR-100 error.

    Args:
        gamma: the p-series exponent (the paper's default 2.8; it needs ``gamma > 1`` for the weights
            to stay dominated by the original as ``B`` grows).
        k: how many best-ranked rows enter each output row (default ``None``: the whole batch, as the
            official code). Weights beyond the first few ranks are tiny (rank 8: 0.2% at ``gamma = 2.8``),
            so ``k = 8`` gives nearly the same rows for ``B / 8`` times less mixing work; the kept
            weights are renormalised to sum to 1.
        mode: ``"sample"`` (default, the official: a random ranking per row) or ``"batch"`` (one random
            cyclic order of the rows, which each row reads starting from itself).
        Shared options: see :class:`mixlab.Mixer` (no ``pairing``: the ranking draws the partners).
    """

    modes = ("batch", "sample")
    default_mode = "sample"
    unsupported = ("pairing",)

    def __init__(self, *, gamma=2.8, k=None, **common):
        super().__init__(**common)
        self.gamma = V.real(gamma, "gamma", minimum=0.0)
        if self.gamma <= 1:
            raise ValueError(f"gamma must be > 1 (the p-series must converge so the original row dominates), "
                             f"got {gamma!r}")
        self.k = None if k is None else V.integer(k, "k", minimum=2)

    def draw_pairs(self, B, y, g, device) -> MixParams:
        k = B if self.k is None else min(self.k, B)
        if B < 2:  # nothing to mix with: the row alone
            return MixParams.from_weights(torch.ones(B, 1, device=device), torch.arange(B, device=device)[:, None])
        draw = zeta_ranks if self.mode == "sample" else zeta_ranks_shared
        ranks, index = draw(B, k, generator=g, device=device)
        w = ranks.pow(-self.gamma)
        w = w / w.sum(dim=1, keepdim=True)  # (B, k): rows sum to 1
        if self.p < 1:  # rows p leaves unmixed keep all their weight
            keep = torch.rand(B, device=device, **rng(g)) >= self.p
            w = torch.where(keep[:, None], torch.nn.functional.one_hot(torch.zeros(B, dtype=torch.long, device=device),
                                                                       k).to(w.dtype), w)
        return MixParams.from_weights(w.to(torch.float32), index)
