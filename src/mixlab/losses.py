"""Losses for soft (mixed) targets, the fused mixed cross-entropy, and an adapter for :class:`MixedTarget`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["soft_cross_entropy", "soft_bce_with_logits", "mixed_cross_entropy", "MixedLoss"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(logits, target, name="target_probs"):
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target_probs must be tensors")
    if logits.shape != target.shape:
        raise ValueError(f"{name} must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    if not target.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of probabilities, got dtype {target.dtype}")


def soft_cross_entropy(
    logits: torch.Tensor, target_probs: torch.Tensor, *, dim: int = -1, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against probability rows: ``-sum_c q_c log softmax(logits)_c``.

    Args:
        logits: ``(B, C)`` (or any shape with classes on ``dim``).
        target_probs: same shape, rows of probabilities (mixed one-hot labels).
        reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"`` (per sample).

    Equals ``F.cross_entropy(logits, target_probs)``, and with mixed one-hot rows equals the
    paper's ``lam * ce(logits, y_a) + (1 - lam) * ce(logits, y_b)``.
    """
    _check_pair(logits, target_probs)
    loss = -(target_probs * F.log_softmax(logits.float(), dim=dim)).sum(dim)
    return _reduce(loss, reduction)


def soft_bce_with_logits(
    logits: torch.Tensor, target_probs: torch.Tensor, *, pos_weight=None, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy with logits against soft targets in [0, 1] (multi-label mixup).

    Numerically stable (no sigmoid then log, unlike a hand-written
    ``-(t * log(sigmoid(z)) + (1 - t) * log(1 - sigmoid(z)))``, which needs an ``eps``); ``"mean"`` averages over every element.
    """
    _check_pair(logits, target_probs)
    return F.binary_cross_entropy_with_logits(
        logits.float(), target_probs.float(), pos_weight=pos_weight, reduction=reduction
    )


def _class_view(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w.view((1, -1) + (1,) * (ndim - 2))


def mixed_cross_entropy(logits: torch.Tensor, targets, weights, *, class_weight=None, ignore_index: int = -100,
                        label_smoothing: float = 0.0, log_probs: bool = False):
    """Per-element mixed cross-entropy over class indices, and its normaliser.

    ``sum_j w_j * ce(logits, t_j)`` per element, the same numbers as calling
    ``F.cross_entropy(..., weight=class_weight, ignore_index=..., label_smoothing=...,
    reduction="none")`` once per target and weighting, but with one ``log_softmax`` and one
    gather (no dense target is built). Computed in float32 under autocast (float64 for float64).

    Args:
        logits: ``(B, C)`` or ``(B, C, *S)`` (log-probabilities with ``log_probs=True``: NLL).
        targets: the ``k`` integer class tensors ``(B,)`` or ``(B, *S)`` (original row first).
        weights: ``k`` weights broadcastable to a target (``(B, 1..)`` per row or ``(B, *S)``
            per position); each target's share of the element.
        class_weight: optional ``(C,)`` class weights (``CrossEntropyLoss(weight=...)``).
        ignore_index: targets equal to it contribute nothing.
        label_smoothing: eps of ``CrossEntropyLoss(label_smoothing=...)``.

    Returns:
        ``(loss, norm)``, both ``(B, *S)``: the mixed per-element loss, and the mixed weight
        ``sum_j w_j * class_weight[t_j] * (t_j != ignore_index)`` that torch's class-index
        ``"mean"`` divides by (``loss.sum() / norm.sum()`` equals ``F.cross_entropy(logits, y)``
        when nothing is mixed).
    """
    t = torch.stack([x.long() for x in targets], 1)  # (B, k, *S)
    keep = t != ignore_index
    safe = torch.where(keep, t, torch.zeros_like(t))  # an ignored target's index only has to be valid
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 under autocast, as torch's CE
    w = torch.stack([x.to(acc).expand(targets[0].shape) for x in weights], 1)  # (B, k, *S)
    share = w * keep
    coef = share if class_weight is None else share * class_weight.to(acc)[safe]
    z = logits.to(acc)
    logp = z if log_probs else F.log_softmax(z, dim=1)  # (B, C, *S)
    # autograd's backward of this (gather -> zeros + scatter, then log_softmax's fused backward) is the
    # same work as plain cross-entropy's; a hand-written Function measured slower here
    loss = -(coef * logp.gather(1, safe)).sum(1)  # (B, *S)
    if label_smoothing:
        full = logp if class_weight is None else logp * _class_view(class_weight.to(acc), logp.ndim)
        smooth = share.sum(1)  # (B, *S): the smoothing term's weight (0 where every source is ignored)
        loss = loss * (1 - label_smoothing) - full.sum(1) * smooth * (label_smoothing / logits.shape[1])
    return loss, coef.sum(1)


class MixedLoss(nn.Module):
    """Wrap a loss so it takes either plain targets or a :class:`MixedTarget`.

    ``MixedLoss(nn.CrossEntropyLoss())(logits, target)`` is ``criterion(logits, target)`` for
    a tensor target (validation) and ``target.loss(criterion, logits)`` for a mixed one.
    The criterion is never modified.
    """

    def __init__(self, criterion):
        super().__init__()
        if not callable(criterion):
            raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
        self.criterion = criterion

    def forward(self, logits: torch.Tensor, target) -> torch.Tensor:
        from .targets import MixedTarget  # targets imports this module for the fused kernel

        if isinstance(target, MixedTarget):
            return target.loss(self.criterion, logits)
        return self.criterion(logits, target)
