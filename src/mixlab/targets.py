"""``MixedTarget``: the labels of a mixed batch, as soft rows or as a mixed loss.

Two routes give the training signal of a mixed batch:

- ``.soft(num_classes)``: dense rows ``lam * onehot(y) + (1 - lam) * onehot(y[index])``, for a
  loss that takes probabilities (:func:`mixlab.losses.soft_cross_entropy`, BCE with logits).
- ``.loss(criterion, logits)``: ``lam * criterion(logits, y) + (1 - lam) * criterion(logits,
  y[index])`` per sample, then reduced as the criterion would (the paper's ``mixup_criterion``).
  With integer labels this needs two gathers and no dense target, the fast route for many
  classes.

Which losses are exact under both routes: any loss that is *affine in the target*, which
includes cross-entropy (with or without ``weight`` and ``label_smoothing``), soft-target
cross-entropy, and BCE / BCE-with-logits (with or without ``pos_weight``). For losses that
are not (MSE, L1, focal, ...) the routes differ: for MSE the loss route exceeds the soft
route by the constant ``lam * (1 - lam) * (y_a - y_b) ** 2`` and has the same gradient.

Reduction: ``"mean"`` averages the mixed per-sample losses over the batch (over every element
for element-wise losses such as BCE). For a weighted cross-entropy this is the soft-target
convention (divide by B), which is what the soft route gives, not PyTorch's
divide-by-summed-weights for class indices.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from . import _fast
from .params import MixParams

__all__ = ["MixedTarget"]


def _check_smoothing(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0.0 <= float(eps) < 1.0):
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {eps!r}")
    return float(eps)


def _check_num_classes(num_classes):
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


class MixedTarget:
    """Targets of a mixed batch: labels plus the :class:`MixParams` that mixed the inputs.

    Args:
        y: the batch's labels, batch on dim 0: integer class labels ``(B,)``; one-hot or soft
            labels ``(B, C)``; multi-hot labels ``(B, C)``; or regression values ``(B, ...)``.
            Float labels of any shape are mixed linearly with the same weights.
        params: the parameters that mixed the inputs.
        partner: labels of the partner batch (default: ``y`` itself): a second stream, or the
            batch gathered from every rank; ``params.index`` points into it, so its batch size
            may differ from ``y``'s.
        num_classes: default for :meth:`soft` with integer labels.
        label_smoothing: default for :meth:`soft`.

    Convention: ``lam`` weights the original row: ``soft = lam * y + (1 - lam) * y[index]``.
    """

    def __init__(self, y, params: MixParams, *, partner=None, num_classes=None, label_smoothing: float = 0.0):
        if not isinstance(params, MixParams):
            raise TypeError(f"params must be a MixParams, got {type(params).__name__}")
        self.params = params
        self.num_classes = _check_num_classes(num_classes)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.y = self._check_labels(y, "y")
        src = self.y if partner is None else self._check_labels(partner, "partner", any_batch=True)
        if partner is not None and src.shape[1:] != self.y.shape[1:]:
            raise ValueError(f"partner labels must have y's trailing shape {tuple(self.y.shape[1:])}, "
                             f"got {tuple(src.shape[1:])}")
        if partner is not None and (src.dtype.is_floating_point != self.y.dtype.is_floating_point):
            raise TypeError("partner labels must be of the same kind (integer or float) as y")
        self.weights, idx = params.kway()  # (B, k), (B, k)
        self.targets = (self.y,) + tuple(src[idx[:, j]] for j in range(1, idx.shape[1]))

    def _check_labels(self, y, name, any_batch=False):
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of labels, got {type(y).__name__}")
        if y.ndim == 0:
            raise ValueError(f"{name} is a 0-dim tensor; labels need a leading batch dimension")
        B = self.params.batch_size
        if y.shape[0] != B and not any_batch:  # a partner batch may be larger (e.g. gathered from all ranks)
            raise ValueError(f"{name} has batch size {y.shape[0]}, but the params were drawn for batch size {B}")
        if y.dtype == torch.bool:
            raise TypeError(f"{name} has dtype torch.bool; pass class indices (int64) or multi-hot as float")
        if not y.dtype.is_floating_point and y.ndim != 1:
            raise ValueError(
                f"integer {name} must be class indices of shape (B,), got shape {tuple(y.shape)}; "
                "pass one-hot or multi-hot labels as a float tensor"
            )
        return y

    # Convenience views for two-way mixing (the paper's y_a, y_b, lam).
    @property
    def is_class_index(self) -> bool:
        return not self.y.dtype.is_floating_point

    @property
    def lam(self) -> torch.Tensor:
        return self.weights[:, 0]

    @property
    def y_a(self) -> torch.Tensor:
        return self.targets[0]

    @property
    def y_b(self) -> torch.Tensor:
        if len(self.targets) != 2:
            raise AttributeError("y_b is defined for two-way mixing; use .targets with k-way mixing")
        return self.targets[1]

    def __len__(self) -> int:
        return self.params.batch_size

    def _check_range(self, num_classes: int) -> None:
        y = self.y if len(self.targets) == 1 else torch.stack(self.targets)
        if y.numel() == 0:
            return
        if y.device.type == "cpu" and not torch.compiler.is_compiling():
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"class labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
        else:  # checked on the device, without a host sync
            torch._assert_async(((y >= 0) & (y < num_classes)).all(), f"class labels must lie in [0, {num_classes})")

    def soft(self, num_classes: int | None = None, *, label_smoothing: float | None = None) -> torch.Tensor:
        """Dense mixed targets, float32.

        Args:
            num_classes: C, needed for integer labels (defaults to the constructor's); for
                float labels it is checked against their last dimension.
            label_smoothing: eps: rows become ``(1 - eps) * row + eps / C`` (smoothing then
                mixing equals mixing then smoothing).

        Returns:
            ``(B, C)`` rows (summing to 1 for class labels), or the float labels' shape.
        """
        num_classes = _check_num_classes(num_classes) or self.num_classes
        eps = self.label_smoothing if label_smoothing is None else _check_smoothing(label_smoothing)
        B = self.params.batch_size
        if self.is_class_index:
            if num_classes is None:
                raise ValueError("num_classes is required to make soft targets from integer class labels")
            self._check_range(num_classes)
            idx = torch.stack(self.targets, 1)  # (B, k)
            out = torch.zeros(B, num_classes, device=self.y.device, dtype=torch.float32)
            out.scatter_add_(1, idx, self.weights.to(device=out.device, dtype=torch.float32))
        else:
            if num_classes is not None and self.y.shape[-1] != num_classes:
                raise ValueError(f"num_classes={num_classes} does not match float labels of shape {tuple(self.y.shape)}")
            shape = (B,) + (1,) * (self.y.ndim - 1)
            w = self.weights.to(torch.float32)
            out = w[:, 0].view(shape) * self.targets[0].float()
            for j in range(1, len(self.targets)):
                out = out + w[:, j].view(shape) * self.targets[j].float()
        if eps:
            out = out * (1 - eps) + eps / out.shape[-1]
        return out

    def loss(self, criterion, logits: torch.Tensor, *, reduction: str | None = None) -> torch.Tensor:
        """The mixed loss: ``sum_j w_j * criterion(logits, target_j)`` per sample, then reduced.

        Args:
            criterion: an ``nn.Module`` loss with a ``reduction`` attribute (for example
                ``nn.CrossEntropyLoss()``; it is copied, never modified) or a function that
                accepts ``reduction="none"`` (for example ``F.cross_entropy``).
            logits: the model's output on the mixed batch, ``(B, ...)``.
            reduction: ``"mean"``, ``"sum"`` or ``"none"``; defaults to the criterion's own
                (``"mean"`` for functions).

        Returns:
            The reduced loss, or ``(B,)`` per-sample mixed losses for ``"none"``.
        """
        if self.is_class_index and isinstance(criterion, _FLOAT_TARGET_LOSSES):
            raise TypeError(
                f"{type(criterion).__name__} needs float targets, but y holds integer class labels; "
                "pass one-hot / multi-hot float labels to MixedTarget, or use .soft(num_classes) as the target"
            )
        call, own = _per_sample(criterion)
        reduction = own if reduction is None else reduction
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if not isinstance(logits, torch.Tensor) or logits.ndim == 0 or logits.shape[0] != self.params.batch_size:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must have batch size {self.params.batch_size} on dim 0, got {got}")
        mixed = None
        if self.is_class_index:  # fast route: one log_softmax and one gather, no dense targets
            mixed = _fast.mixed_cross_entropy(criterion, logits, self.targets, self.weights)
        for j, target in enumerate(self.targets if mixed is None else ()):
            try:
                per_sample = call(logits, target)
            except TypeError as e:
                raise TypeError(
                    "criterion must return per-sample losses when asked for reduction='none' "
                    f"(a loss module with a .reduction attribute, or a function taking reduction=): {e}"
                ) from e
            if per_sample.ndim > 1:  # element-wise losses (BCE): reduce each sample like the criterion
                flat = per_sample.reshape(per_sample.shape[0], -1)
                per_sample = flat.sum(1) if reduction == "sum" else flat.mean(1)
            term = self.weights[:, j].to(per_sample.dtype) * per_sample
            mixed = term if mixed is None else mixed + term
        if reduction == "none":
            return mixed
        return mixed.sum() if reduction == "sum" else mixed.mean()

    def to(self, device) -> "MixedTarget":
        new = copy.copy(self)
        new.params = self.params.to(device)
        new.y = self.y.to(device)
        new.weights = self.weights.to(device)
        new.targets = tuple(t.to(device) for t in self.targets)
        return new

    def __repr__(self) -> str:
        kind = "class indices" if self.is_class_index else f"float labels {tuple(self.y.shape)}"
        return f"MixedTarget(B={self.params.batch_size}, k={len(self.targets)}, {kind})"


_FLOAT_TARGET_LOSSES = (
    torch.nn.BCEWithLogitsLoss, torch.nn.BCELoss, torch.nn.MSELoss, torch.nn.L1Loss,
    torch.nn.SmoothL1Loss, torch.nn.HuberLoss, torch.nn.KLDivLoss,
)


def _per_sample(criterion):
    """A callable giving unreduced losses for ``criterion``, and the criterion's own reduction.

    torch's built-in losses map to their functional form with the module's settings (no copy,
    traceable by ``torch.compile``); other loss modules with a ``reduction`` attribute are
    shallow-copied with ``reduction="none"``; functions are called with ``reduction="none"``.
    The caller's criterion is never modified.
    """
    nn = torch.nn
    if isinstance(criterion, nn.CrossEntropyLoss):
        m = criterion
        return (lambda i, t: F.cross_entropy(i, t, weight=m.weight, ignore_index=m.ignore_index,
                                             label_smoothing=m.label_smoothing, reduction="none")), m.reduction
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        m = criterion
        return (lambda i, t: F.binary_cross_entropy_with_logits(i, t, weight=m.weight, pos_weight=m.pos_weight,
                                                                reduction="none")), m.reduction
    if isinstance(criterion, nn.NLLLoss):
        m = criterion
        return (lambda i, t: F.nll_loss(i, t, weight=m.weight, ignore_index=m.ignore_index, reduction="none")), m.reduction
    if isinstance(criterion, nn.Module) and hasattr(criterion, "reduction"):
        per = copy.copy(criterion)
        per.reduction = "none"
        return per, criterion.reduction
    if callable(criterion):
        return (lambda i, t: criterion(i, t, reduction="none")), "mean"
    raise TypeError(f"criterion must be a loss module or function, got {type(criterion).__name__}")
