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
    for arg, value in (("logits", logits), (name, target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(value).__name__}")
    if logits.shape != target.shape:
        raise ValueError(f"{name} must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    if not target.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of probabilities, got dtype {target.dtype}")


def _class_dim(logits: torch.Tensor, dim) -> int:
    """The class dimension: ``dim`` if given, else 1 (0 for ``(C,)`` logits), as in ``F.cross_entropy``."""
    nd = logits.ndim
    if nd == 0:
        raise ValueError("logits must have a class dimension, got a 0-dim tensor")
    if dim is None:
        return 1 if nd > 1 else 0
    if isinstance(dim, bool) or not isinstance(dim, int) or not -nd <= dim < nd:
        raise ValueError(f"dim must be an int in [{-nd}, {nd}) for logits of shape {tuple(logits.shape)}, "
                         f"got {dim!r}")
    return dim


def soft_cross_entropy(
    logits: torch.Tensor, target_probs: torch.Tensor, *, dim: int | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against probability rows: ``-sum_c q_c log softmax(logits)_c``.

    Args:
        logits: ``(B, C)``, dense ``(B, C, *S)`` (segmentation) or ``(C,)``. The classes are on
            dim 1 (dim 0 for ``(C,)``), as in ``F.cross_entropy``.
        target_probs: the logits' shape, probability rows over the class dim
            (``MixedTarget.soft()``). A position that carries no label (``ignore_index``) is an
            all-zero row.
        dim: the class dimension, to override the default (``-1`` for classes-last logits such
            as ``(B, T, C)``).
        reduction: ``"mean"`` (the summed loss divided by the total target mass
            ``target_probs.sum()``), ``"sum"``, or ``"none"`` (per position: ``(B,)`` or
            ``(B, *S)``).

    Returns:
        The loss, computed in float32 (float64 for float64 logits).

    When every row sums to 1 the mass is the number of positions, so this equals
    ``F.cross_entropy(logits, target_probs)``, and with mixed one-hot rows the paper's
    ``lam * ce(logits, y_a) + (1 - lam) * ce(logits, y_b)``. A row with less mass weighs less
    in the mean: a position whose labels are all ignored (a zero row) counts for nothing, one
    whose partner label alone is ignored counts ``lam``. That is the divisor of
    ``MixedTarget.loss`` with torch's cross-entropy, so on ``MixedTarget.soft()`` rows the two
    routes agree with ignored positions too, and with nothing mixed this is
    ``F.cross_entropy(logits, y, ignore_index=...)``: the mean over the non-ignored positions.
    """
    _check_pair(logits, target_probs)
    dim = _class_dim(logits, dim)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    loss = -(target_probs * F.log_softmax(logits.to(acc), dim=dim)).sum(dim)
    if reduction == "mean":
        return loss.sum() / target_probs.to(acc).sum()
    return _reduce(loss, reduction)


def soft_bce_with_logits(
    logits: torch.Tensor, target_probs: torch.Tensor, *, pos_weight=None, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy with logits against soft targets in [0, 1] (multi-label mixup).

    Element-wise, so it has no class dimension to choose: ``(B, C)`` and dense ``(B, C, *S)``
    logits are both fine. Numerically stable (no sigmoid then log, unlike a hand-written
    ``-(t * log(sigmoid(z)) + (1 - t) * log(1 - sigmoid(z)))``, which needs an ``eps``).

    Args:
        logits: any shape.
        target_probs: the logits' shape, float targets in [0, 1] (``MixedTarget.soft()``).
        pos_weight: as in ``nn.BCEWithLogitsLoss``: broadcast against the target from the
            right, so for dense ``(B, C, *S)`` logits pass it as ``(C, 1, ..., 1)``; a ``(C,)``
            vector would weigh the last dim.
        reduction: ``"mean"`` over every element, ``"sum"`` or ``"none"``.
    """
    _check_pair(logits, target_probs)
    return F.binary_cross_entropy_with_logits(
        logits.float(), target_probs.float(), pos_weight=pos_weight, reduction=reduction
    )


def _class_view(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w.view((1, -1) + (1,) * (ndim - 2))


class _WeightedNLL(torch.autograd.Function):
    """``sum(coef * log_softmax(z, 1).gather(1, t))`` with a backward of one exp and one scatter.

    ``d/dz = scatter(coef) - softmax(z) * sum_k(coef)``: computed as ``exp(logp)`` scaled in place
    plus a scatter of the coefficients, which skips the zero fill and the separate log_softmax
    backward of autograd's chain (and its small nodes). ``python benchmarks/mixed_ce_backward.py``
    compares the forms.
    """

    @staticmethod
    def forward(ctx, z, safe, coef):
        logp = torch.log_softmax(z, dim=1)  # (B, C, *S)
        ctx.save_for_backward(logp, safe, coef)
        return torch.dot(coef.reshape(-1), logp.gather(1, safe).reshape(-1))

    @staticmethod
    def backward(ctx, grad):
        logp, safe, coef = ctx.saved_tensors
        dz = torch.exp(logp).mul_(coef.sum(1, keepdim=True) * -grad)
        return dz.scatter_add_(1, safe, coef * grad), None, None


def mixed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, *, class_weight=None,
                        ignore_index: int | None = -100, label_smoothing: float = 0.0, log_probs: bool = False,
                        reduction: str = "none") -> torch.Tensor:
    """Mixed cross-entropy over class indices: ``sum_j w_j * ce(logits, t_j)`` per element, reduced.

    The same numbers and gradients as calling ``F.cross_entropy(..., weight=class_weight,
    ignore_index=..., label_smoothing=..., reduction="none")`` once per target and weighting, but
    with one ``log_softmax`` and one gather (no dense target is built), and few enough small ops
    that it costs about what plain cross-entropy costs (``mixlab bench``, target rows).
    Computed in float32 under autocast (float64 for float64 logits).

    Args:
        logits: ``(B, C)`` or ``(B, C, *S)`` (log-probabilities with ``log_probs=True``: NLL).
        targets: int64 ``(B, k)`` or ``(B, k, *S)``: the ``k`` class labels of each element,
            the original row's first.
        weights: ``(B, k)`` per row or ``(B, k, *S)`` per position: each label's share.
        class_weight: optional ``(C,)`` class weights (``CrossEntropyLoss(weight=...)``).
        ignore_index: labels equal to it contribute nothing; ``None`` when the caller knows no
            label equals it (skips the masking).
        label_smoothing: eps of ``CrossEntropyLoss(label_smoothing=...)``.
        reduction: ``"none"`` (per element ``(B, *S)``), ``"sum"``, or ``"mean"``: divided by
            the mixed label weight ``sum_ij w_ij * class_weight[t_ij] * (t_ij != ignore_index)``,
            torch's class-index convention, so it equals ``F.cross_entropy(logits, y)`` when
            nothing is mixed.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if weights.ndim < targets.ndim:  # per-row weights over per-position labels
        weights = weights.view(tuple(weights.shape) + (1,) * (targets.ndim - weights.ndim))
    share = weights if weights.dtype == acc else weights.to(acc)
    if ignore_index is None:
        safe = targets
        if share.shape != targets.shape:
            share = share.expand(targets.shape)
    else:
        keep = targets != ignore_index
        safe = targets * keep  # an ignored label's index only has to be valid; other bad labels stay bad
        share = share * keep  # (B, k, *S)
    coef = share if class_weight is None else share * class_weight.to(acc)[safe]
    z = logits.to(acc)
    eps = float(label_smoothing)
    if reduction != "none" and not eps and not log_probs:  # the common case: one node, a lean backward
        if reduction == "sum":
            coefn = -coef
        elif ignore_index is None and class_weight is None:  # every element's shares sum to 1
            coefn = coef * (-1.0 / max(1, safe[:, 0].numel()))
        else:
            coefn = coef / -coef.sum()
        return _WeightedNLL.apply(z, safe, coefn.contiguous())
    scale = coef.sum() if reduction == "mean" else None
    logp = z if log_probs else F.log_softmax(z, dim=1)  # (B, C, *S)
    picked = logp.gather(1, safe)  # (B, k, *S)
    if reduction == "none":
        loss = -(coef * picked).sum(1)  # (B, *S)
    else:  # one dot: a single small node in the backward
        loss = torch.dot((coef / -scale if scale is not None else -coef).reshape(-1), picked.reshape(-1))
    if eps:
        full = logp if class_weight is None else logp * _class_view(class_weight.to(acc), logp.ndim)
        smooth = full.sum(1) * share.sum(1)  # (B, *S): the smoothing term (0 where every label is ignored)
        if reduction != "none":
            smooth = smooth.sum() if scale is None else smooth.sum() / scale
        loss = loss * (1 - eps) - smooth * (eps / logits.shape[1])
    return loss


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
        if isinstance(target, torch.Tensor):  # plain labels (validation)
            return self.criterion(logits, target)
        if not callable(getattr(target, "loss", None)):
            raise TypeError(f"target must be a tensor of labels or a mixlab.MixedTarget, got {type(target).__name__}")
        return target.loss(self.criterion, logits)  # a MixedTarget (no import: targets builds on this module)
