"""Losses for soft (mixed) targets, and an adapter that takes :class:`MixedTarget` directly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .targets import MixedTarget

__all__ = ["soft_cross_entropy", "soft_bce_with_logits", "MixedLoss"]


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

    Numerically stable (no sigmoid then log, unlike article 000's hand-written BCE, which
    needs an ``eps``); ``"mean"`` averages over every element.
    """
    _check_pair(logits, target_probs)
    return F.binary_cross_entropy_with_logits(
        logits.float(), target_probs.float(), pos_weight=pos_weight, reduction=reduction
    )


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
        if isinstance(target, MixedTarget):
            return target.loss(self.criterion, logits)
        return self.criterion(logits, target)
