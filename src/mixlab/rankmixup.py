"""RankMixup's losses (Noh, Park, Lee, Ham, "RankMixup: Ranking-Based Mixup Training for Network Calibration",
ICCV 2023; official code cvlab-yonsei/RankMixup, ``calibrate/losses/rankmixup.py``): calibration by ranking.
A mixed sample should be predicted with less confidence than a raw one (MRL), and the confidences of several
mixed samples should be ordered as their label weights are (M-NDCG).

RankMixup does not train on the mixed labels: its loss is cross-entropy on the *raw* batch plus ``alpha`` times
one of these terms on the model's outputs for mixed batches. So a training step runs the model on both, with any
mixlab mixer making the mixed batches::

    logits = model(x)                                             # (B, C): the raw batch
    mixed, target = mixer(x, y)                                   # any mixer: MixUp, CutMix, ...
    loss = F.cross_entropy(logits, y) + 0.1 * mixup_ranking_loss(logits, model(mixed), target, margin=2.0)

    # M-NDCG: k mixed batches (the official uses k = 3), one forward pass over their concatenation
    draws = [mixer(x, y) for _ in range(3)]
    mixed_logits = model(torch.cat([m for m, _ in draws])).view(3, *logits.shape)  # (k, B, C)
    loss = F.cross_entropy(logits, y) + 0.1 * mixup_ndcg_loss(logits, mixed_logits, [t for _, t in draws])

The official settings: MRL with ``margin=2.0`` on CIFAR (1.0 on Tiny-ImageNet), ``alpha=0.1``, mixup
``alpha=2.0`` (1.0 on Tiny-ImageNet), one mixed batch; M-NDCG with three mixed batches.

Convention: the targets are mixlab's (``lam`` the weight of the original row); only their largest label weight
per row is read, so any two-way or k-way target works.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .losses import _reduce

__all__ = ["mixup_ranking_loss", "mixup_ndcg_loss"]

_ONE = 1 - 1e-6  # a label weight this close to 1: the row is one class (the official compares with exactly 1.0)


def _check_logits(logits, name: str) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must be (B, C) classification logits, got shape {tuple(logits.shape)} (the "
                         "official losses rank one confidence per sample)")


def _relevance(target, num_classes: int) -> torch.Tensor:
    """The largest label weight of each row ``(B,)``: from a :class:`~mixlab.MixedTarget` (its soft rows, without
    smoothing) or from ``(B, C)`` soft rows."""
    if isinstance(target, torch.Tensor):
        if target.ndim != 2 or target.shape[1] != num_classes or not target.is_floating_point():
            raise ValueError(f"targets must be MixedTargets or (B, {num_classes}) float soft rows, got "
                             f"{target.dtype} of shape {tuple(target.shape)}")
        return target.max(1).values
    soft = getattr(target, "soft", None)
    if not callable(soft):
        raise TypeError(f"targets must be mixlab.MixedTarget or soft rows, got {type(target).__name__}")
    return soft(num_classes, label_smoothing=0.0).max(1).values


def mixup_ranking_loss(logits: torch.Tensor, mixed_logits: torch.Tensor, target=None, *, margin: float = 2.0,
                       scores: str = "logits", reduction: str = "mean") -> torch.Tensor:
    """RankMixup's mixup ranking loss (MRL): ``relu(max(mixed) - max(raw) + margin)`` per row.

    A mixed sample's top score must sit at least ``margin`` below its raw sample's. Rows whose mixed label is one
    class (a partner of the same class, or ``lam`` 1) are left out, as the official ``self_mixup_mask`` does.

    Args:
        logits: ``(B, C)``: the model's outputs on the raw batch.
        mixed_logits: ``(B, C)``: its outputs on the mixed batch (row ``i`` mixes raw row ``i``).
        target: the mixed batch's :class:`~mixlab.MixedTarget` or ``(B, C)`` soft rows (to find the rows mixed
            with their own class), or ``None`` (every row counts).
        margin: the official 2.0 on CIFAR, 1.0 on Tiny-ImageNet (in logits).
        scores: ``"logits"`` (the official ``get_logit_diff``) or ``"probs"`` (its ``get_conf_diff``: softmax
            confidences, the paper's wording; set ``margin`` below 1 then).
        reduction: ``"mean"`` over the ``B`` rows (left-out rows count as 0), ``"sum"`` or ``"none"`` ``(B,)``.

    Returns:
        The term to add, times the official ``alpha = 0.1``, to cross-entropy on ``logits``.

    Reference: Noh et al. 2023, Eq. (4); cvlab-yonsei/RankMixup ``RankMixup_MRL``. Deviation: the official line
    multiplies the ``(B,)`` mask by the ``(B, 1)`` hinge, which broadcasts to ``(B, B)``, so its mean is
    ``mean(mask) * mean(hinge)``; here each row's hinge is masked by its own row (equal when no row is mixed with
    its own class; tests/methods/test_method_rankmixup.py checks both).
    """
    _check_logits(logits, "logits")
    _check_logits(mixed_logits, "mixed_logits")
    if mixed_logits.shape != logits.shape:
        raise ValueError(f"mixed_logits must have the logits' shape {tuple(logits.shape)} (one mixed row per raw "
                         f"row), got {tuple(mixed_logits.shape)}")
    if scores == "logits":
        top, top_mixed = logits.max(1).values, mixed_logits.max(1).values
    elif scores == "probs":
        top, top_mixed = F.softmax(logits, 1).max(1).values, F.softmax(mixed_logits, 1).max(1).values
    else:
        raise ValueError(f"scores must be 'logits' or 'probs', got {scores!r}")
    hinge = F.relu(top_mixed - top + margin)  # (B,)
    if target is not None:
        hinge = hinge * (_relevance(target, logits.shape[1]) < _ONE)
    return _reduce(hinge, reduction)


def mixup_ndcg_loss(logits: torch.Tensor, mixed_logits, targets, *, reduction: str = "mean") -> torch.Tensor:
    """RankMixup's M-NDCG loss: ``1 - NDCG`` of the confidences of a raw sample and its ``k`` mixed versions.

    Per raw row, the list is the raw sample (relevance 1) then its ``k`` mixed versions sorted by relevance (the
    largest label weight of each mixed row, ``max(lam, 1 - lam)`` for two distinct classes); the gain of each is
    its top softmax confidence, discounted by ``log2(rank + 1)``. ``NDCG = DCG / IDCG`` with the relevances as
    the ideal gains, taken as ``IDCG / DCG`` when the confidences exceed them, so overconfidence is penalised too.

    Args:
        logits: ``(B, C)``: the model's outputs on the raw batch.
        mixed_logits: ``(k, B, C)`` or a sequence of ``k`` ``(B, C)`` outputs on the mixed batches.
        targets: ``k`` :class:`~mixlab.MixedTarget` (one per mixed batch) or ``(k, B, C)`` soft rows.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` ``(B,)``.

    Returns:
        The term to add, times the official ``alpha = 0.1``, to cross-entropy on ``logits``.

    Reference: Noh et al. 2023, Eqs. (5)-(7); cvlab-yonsei/RankMixup ``RankMixup_MNDCG.get_indcg``. Mixed rows of
    equal relevance keep their order (a stable sort; the official ``argsort`` does not promise one).
    """
    _check_logits(logits, "logits")
    if not isinstance(mixed_logits, torch.Tensor):
        mixed_logits = torch.stack(list(mixed_logits))
    B, C = logits.shape
    if mixed_logits.ndim != 3 or mixed_logits.shape[1:] != (B, C):
        raise ValueError(f"mixed_logits must be (k, {B}, {C}) or k tensors of shape ({B}, {C}), got "
                         f"{tuple(mixed_logits.shape)}")
    k = mixed_logits.shape[0]
    if isinstance(targets, torch.Tensor):
        targets = list(targets) if targets.ndim == 3 else [targets]
    if not isinstance(targets, Sequence) or len(targets) != k:
        got = len(targets) if isinstance(targets, Sequence) else type(targets).__name__
        raise ValueError(f"targets must hold one target per mixed batch ({k}), got {got}")
    rel = torch.stack([_relevance(t, C) for t in targets], 1).to(logits.dtype)  # (B, k)
    conf = F.softmax(mixed_logits, 2).max(2).values.t()  # (B, k)
    order = torch.sort(rel, dim=1, descending=True, stable=True).indices
    discount = torch.log2(torch.arange(2, k + 3, device=logits.device, dtype=logits.dtype))  # log2(rank + 1)
    top = F.softmax(logits, 1).max(1, keepdim=True).values  # (B, 1)
    dcg = (torch.cat([top, conf.gather(1, order)], 1) / discount).sum(1)  # (B,)
    idcg = (torch.cat([torch.ones_like(top), rel.gather(1, order)], 1) / discount).sum(1)
    ndcg = torch.where(idcg > dcg, dcg / idcg, idcg / dcg)
    return _reduce(1 - ndcg, reduction)
