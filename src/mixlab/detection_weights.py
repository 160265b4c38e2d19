"""Box weights in torchvision's two-stage detectors: :func:`weight_box_losses` (Faster / Mask /
Keypoint R-CNN) and the loss it installs, :func:`weighted_fastrcnn_loss`.

Detection MixUp weights each box (``lam`` for the original's, ``1 - lam`` for the partner's);
torchvision's detectors ignore a ``"weights"`` key. See :func:`weight_box_losses` for what is and is
not weighted, and :mod:`mixlab.detection` for the weight-free alternative.
"""
from __future__ import annotations

import types

import torch

from . import _validate as V
from .detection_targets import is_rows as _is_rows, plain as _plain

__all__ = ["weight_box_losses", "weighted_fastrcnn_loss"]


_SAMPLES = "_mixlab_box_weight_samples"
_OUTPUTS = "_mixlab_box_weight_outputs"


def weighted_fastrcnn_loss(class_logits, box_regression, labels, regression_targets, weights):
    """torchvision's Fast R-CNN box-head loss with one weight per sampled proposal.

    ``torchvision.models.detection.roi_heads.fastrcnn_loss`` with each proposal's term multiplied
    by its weight; the sums are divided by the number of sampled proposals ``N`` as torchvision
    does, so weights of 1 give its losses (up to summation order) and a weight of 0 removes the
    proposal's terms.

    Args:
        class_logits: ``(N, num_classes)`` box-head class scores.
        box_regression: ``(N, 4 * num_classes)`` box-head regressions.
        labels: per image, the ``(n_i,)`` int64 labels of the sampled proposals (0 background).
        regression_targets: per image, the ``(n_i, 4)`` encoded box targets.
        weights: per image, the ``(n_i,)`` proposal weights.

    Returns:
        ``(classification_loss, box_loss)``: ``sum_p w_p * CE_p / N`` and
        ``sum_{p: label_p > 0} w_p * smooth_l1_p / N`` (``beta = 1/9``, summed over the 4 coordinates).
    """
    F = torch.nn.functional
    labels = torch.cat(labels, dim=0)
    targets = torch.cat(regression_targets, dim=0)
    w = torch.cat(weights, dim=0)
    if w.shape != labels.shape:
        raise ValueError(f"weights must hold one weight per sampled proposal, shape {tuple(labels.shape)}, "
                         f"got shape {tuple(w.shape)}")
    N = labels.numel()
    ce = F.cross_entropy(class_logits, labels, reduction="none")
    classification = (w.to(ce.dtype) * ce).sum() / N
    pos = torch.where(labels > 0)[0]
    pred = box_regression.reshape(N, box_regression.size(-1) // 4, 4)[pos, labels[pos]]
    l1 = F.smooth_l1_loss(pred, targets[pos], beta=1 / 9, reduction="none").sum(1)
    box = (w[pos].to(l1.dtype) * l1).sum() / N
    return classification, box


def _proposal_weights(targets, matched, labels) -> list:
    """Per image, each sampled proposal's weight: its matched box's for foreground, 1 for background."""
    out = []
    for i, (t, idx, lab) in enumerate(zip(targets, matched, labels)):
        ones = torch.ones(lab.shape, device=lab.device)
        w = t.get("weights")
        if w is None:
            out.append(ones)
            continue
        n = t["boxes"].shape[0]
        if not _is_rows(w, n) or w.ndim != 1:
            raise ValueError(f"targets[{i}]['weights'] must hold one weight per box, shape ({n},), "
                             f"got {V.describe(w)}")
        out.append(torch.where(lab > 0, _plain(w).to(ones)[idx], ones) if n else ones)
    return out


def _select_weighted(heads, proposals, targets):
    """``RoIHeads.select_training_samples``, keeping the sampled proposals' labels, targets and weights."""
    proposals, matched, labels, regression = type(heads).select_training_samples(heads, proposals, targets)
    setattr(heads, _SAMPLES, (labels, regression, _proposal_weights(targets, matched, labels)))
    return proposals, matched, labels, regression


def _keep_outputs(predictor, inputs, output):
    setattr(predictor, _OUTPUTS, output)


def _reweight(heads, inputs, output):
    samples = vars(heads).pop(_SAMPLES, None)
    outputs = vars(heads.box_predictor).pop(_OUTPUTS, None)
    if not heads.training or samples is None or outputs is None:
        return None
    result, losses = output
    classification, box = weighted_fastrcnn_loss(*outputs, *samples)
    return result, dict(losses, loss_classifier=classification, loss_box_reg=box)


class _BoxWeightsHandle:
    """Undoes :func:`weight_box_losses` with :meth:`remove`."""

    def __init__(self, heads, hooks):
        self._heads, self._hooks = heads, hooks

    def remove(self) -> None:
        """Restore torchvision's box-head losses on the model."""
        for h in self._hooks:
            h.remove()
        vars(self._heads).pop("select_training_samples", None)
        vars(self._heads).pop(_SAMPLES, None)


def weight_box_losses(model):
    """Weight a torchvision two-stage detector's box-head losses by the targets' ``"weights"``.

    For Faster / Mask / Keypoint R-CNN (``model.roi_heads`` a ``RoIHeads``): in training, each
    sampled proposal's classification (cross-entropy) and, for foreground proposals, box-regression
    (smooth L1) term is multiplied by the weight of the ground-truth box it is matched to (IoU at
    least ``box_fg_iou_thresh``, 0.5 by default); background proposals weigh 1. The sums are divided
    by the number of sampled proposals as in torchvision (:func:`weighted_fastrcnn_loss`), so
    weights of 1, or targets without ``"weights"``, give torchvision's losses and a weight of 0
    removes the proposals matched to that box from ``loss_classifier`` and ``loss_box_reg``.

    Not weighted: the RPN's ``loss_objectness`` and ``loss_rpn_box_reg`` (class-agnostic: a box of
    weight 0 still trains the RPN to propose it), the mask and keypoint losses, and the sampling (a
    box of weight 0 still claims its proposals, which do not become background, and they count in
    the sampler's foreground quota). Installed with hooks on this model object (deep copies keep
    them; re-apply after building or loading a model).

    Args:
        model: a torchvision ``GeneralizedRCNN`` (``fasterrcnn_*``, ``maskrcnn_*``,
            ``keypointrcnn_*``).

    Returns:
        A handle whose ``remove()`` restores torchvision's losses.
    """
    try:
        from torchvision.models.detection.roi_heads import RoIHeads
    except ImportError as err:  # pragma: no cover - torchvision is needed for its detectors
        raise ImportError("weight_box_losses needs torchvision (pip install torchvision)") from err
    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, RoIHeads):
        raise TypeError(f"model must be a torchvision two-stage detector (Faster/Mask/Keypoint R-CNN, whose "
                        f"model.roi_heads is a RoIHeads), got {type(model).__name__}; for other detectors "
                        "use the weight-free MixUp(alpha=32.0) (see mixlab.detection)")
    if "select_training_samples" in vars(heads):
        raise ValueError("model.roi_heads.select_training_samples is already replaced (weight_box_losses "
                         "called twice?); remove the first handle before installing again")
    heads.select_training_samples = types.MethodType(_select_weighted, heads)
    hooks = [heads.box_predictor.register_forward_hook(_keep_outputs), heads.register_forward_hook(_reweight)]
    return _BoxWeightsHandle(heads, hooks)
