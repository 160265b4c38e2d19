"""``MixedTarget``: the labels of a mixed batch, as soft rows or as a mixed loss.

Two routes give the training signal of a mixed batch:

- ``.soft(num_classes)``: dense rows ``lam * onehot(y) + (1 - lam) * onehot(y[index])``, for a
  loss that takes probabilities (:func:`mixlab.losses.soft_cross_entropy`, BCE with logits).
- ``.loss(criterion, logits)``: the mixed loss, in one of two forms chosen by the criterion:

    - *loss mixing*, ``lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[index])`` per
      sample, then reduced (the paper's ``mixup_criterion``): cross-entropy and NLL (with integer
      labels one fused kernel with no dense target, the fast route for many classes), BCE, BCE
      with logits, KL divergence, and any other criterion (your own losses, focal, ...).
    - *label mixing*, ``criterion(pred, lam * y + (1 - lam) * y[index])``: the regression losses
      MSE, L1, smooth L1 and Huber (``nn.MSELoss``, ``nn.L1Loss``, ``nn.SmoothL1Loss``,
      ``nn.HuberLoss`` and ``F.mse_loss``, ``F.l1_loss``, ``F.smooth_l1_loss``, ``F.huber_loss``).
      The loss on the mixed labels is the mixup objective for regression (C-Mixup, Yao et al.
      2022, mixes the labels the same way).

Labels of every kind: class indices ``(B,)``; one-hot / soft / multi-hot float rows ``(B, C)``;
dense class maps ``(B, *S)`` (segmentation, with ``ignore_index``) and float maps
``(B, C, *S)``, where ``S`` are the input's trailing dims; regression values. Under a region
(CutMix, a mask) dense maps follow the region position by position (a pasted position takes the
partner's label); everything else is weighted per row with the exact kept fraction ``lam``.

Why two forms: mixing the losses equals the loss on the mixed labels exactly when the loss is
*affine in the target*, which includes cross-entropy (with or without ``weight`` and
``label_smoothing``), soft-target cross-entropy, and BCE / BCE-with-logits (with or without
``pos_weight``); for these the routes agree. MSE, L1, smooth L1 and Huber are not: mixed MSE
losses exceed the MSE on the mixed labels by ``lam * (1 - lam) * (y_a - y_b) ** 2`` (same
gradient), and for L1, smooth L1 and Huber the gradients differ too, so ``.loss`` mixes their
labels: ``.loss(nn.L1Loss(), pred)`` is ``nn.L1Loss()(pred, target.soft())`` for float32 labels.
``KLDivLoss`` keeps loss mixing: it differs from the KL divergence to the mixed labels by a term
that does not depend on the prediction (same gradient). For another loss not affine in the
target, ``.loss`` mixes the losses; to train on the mixed labels instead, call it on
``.soft()``.

Ignored labels: ``.soft()`` gives an ignored position (``ignore_index`` in every source) an
all-zero row, and a position whose partner label alone is ignored a row of mass ``lam``; the
cross-entropy of such rows is what ``.loss`` gives those positions.

Normalisation of ``"mean"``: with class indices and torch's cross-entropy / NLL, ``.loss``
divides by the mixed weight ``sum_i sum_j w_ij * weight[t_ij] * (t_ij != ignore_index)``, the
generalisation of torch's own class-index mean, so with nothing mixed it equals
``criterion(logits, y)`` exactly and training and validation losses share a scale (without
class weights and ignored labels the divisor is the number of elements).
:func:`mixlab.losses.soft_cross_entropy` on ``.soft()`` rows divides by the total row mass,
which is the same divisor without class weights, so the two routes agree for every reduction,
with ignored labels too. ``F.cross_entropy`` on probabilities divides by the number of elements
instead (torch's convention for probability targets): it agrees for ``"sum"`` and ``"none"``
always, and for ``"mean"`` when there are no class weights and no ignored labels. Other
loss-mixed losses average their per-sample mixed losses over the batch; label-mixed losses
reduce as the criterion does on the mixed labels (``"none"``: each sample's mean, ``(B,)``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from . import _fast
from . import _validate as V
from .losses import _WeightedNLL, mixed_cross_entropy
from .ops import _check_index
from .params import MixParams
from .regions import Region

__all__ = ["MixedTarget"]

_NATIVE_CE = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)


class MixedTarget:
    """Targets of a mixed batch: labels plus the :class:`MixParams` that mixed the inputs.

    Args:
        y: the batch's labels, batch on dim 0: integer class labels ``(B,)``; integer class maps
            ``(B, *S)``; one-hot, soft or multi-hot float labels ``(B, C)``; float maps
            ``(B, C, *S)``; or regression values (float, any other shape).
        params: the parameters that mixed the inputs.
        partner: labels of the partner batch (default: ``y`` itself): a second stream, or the
            batch gathered from every rank; ``params.index`` points into it.
        num_classes: default for :meth:`soft` with integer labels.
        label_smoothing: smoothing for both routes (:meth:`soft` and :meth:`loss`).
        ignore_index: a label value that carries no target (segmentation's 255): in
            :meth:`soft` it contributes nothing; :meth:`loss` uses the criterion's own.

    Convention: ``lam`` weights the original row: ``soft = lam * y + (1 - lam) * y[index]``.
    """

    def __init__(self, y, params: MixParams, *, partner=None, num_classes=None, label_smoothing: float = 0.0,
                 ignore_index: int | None = None):
        if not isinstance(params, MixParams):
            raise TypeError(f"params must be a MixParams, got {type(params).__name__}")
        self.params = params
        self.num_classes = V.num_classes(num_classes)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.ignore_index = None if ignore_index is None else V.integer(ignore_index, "ignore_index")
        self.y = self._check_labels(y, "y")
        src = self.y if partner is None else self._check_labels(partner, "partner", any_batch=True)
        if partner is not None and src.shape[1:] != self.y.shape[1:]:
            raise ValueError(f"partner labels must have y's trailing shape {tuple(self.y.shape[1:])}, "
                             f"got {tuple(src.shape[1:])}")
        if partner is not None and (src.dtype.is_floating_point != self.y.dtype.is_floating_point):
            raise TypeError("partner labels must be of the same kind (integer or float) as y")
        _check_index(params, src.shape[0], "the partner labels" if partner is not None else "y")
        self.weights, idx = params.kway()  # (B, k), (B, k)
        if self.is_class_index and partner is None:  # one gather, in the fused loss's layout (B, k, *S)
            self._stacked = src[idx]  # column 0 is y itself (idx[:, 0] == arange(B))
            self.targets = tuple(self._stacked.unbind(1))
        else:
            self._stacked = None
            self.targets = (self.y,) + tuple(src[idx[:, j]] for j in range(1, idx.shape[1]))
        self._position = self._position_weight()  # partner weight (B, *S) for dense maps under a region
        region = params.region
        if self._position is not None and type(region).partner is not Region.partner:
            # the region moves the partner's content (ResizeMix): dense labels follow the same move
            moved = region.partner(src, idx[:, 1])
            self._stacked = None
            self.targets = (self.y, moved)
        # On CPU, knowing that no label is negative lets the fused loss skip masking ignore_index=-100
        # (a free host read here; elsewhere the loss masks, which needs no sync).
        self._nonneg = False
        if self.is_class_index and _fast.eager_cpu(src) and src.numel():
            self._nonneg = int(src.min()) >= 0 and (partner is None or int(self.y.min()) >= 0)
        # The common loss, cross-entropy over per-row class labels with torch's defaults, skips the general
        # route's checks (it costs about a plain cross-entropy's Python, not twice it): same kernel, same numbers.
        self._plain_ce = (self._nonneg and self._position is None and params.label_weights is None
                          and self._stacked is not None and self._stacked.dtype == torch.int64 and self.y.ndim == 1
                          and not self.label_smoothing)
        self._coefn = {}

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
        if y.is_complex():
            raise TypeError(f"{name} has dtype {y.dtype}; labels must be integer or real float")
        if y.dtype.is_floating_point and y.ndim == 1 and self.num_classes is not None:
            raise ValueError(
                f"{name} holds float labels of shape {tuple(y.shape)}, which are taken as regression values, but "
                f"num_classes={self.num_classes} was given: pass class indices as an integer tensor "
                f"({name}.long()) or one-hot rows of shape (B, {self.num_classes})")
        return y

    def _position_weight(self):
        """The partner's weight per position ``(B, *S)`` when the labels are dense maps the region covers."""
        region = self.params.region
        if region is None or self.y.ndim < 2:
            return None
        D = len(region.shape)
        if self.is_class_index:
            if region.covers(self.y):
                return region.partner_share(self.params.lam, self.y.ndim)[(slice(None),) + (0,) * (self.y.ndim - 1 - D)]
            raise ValueError(
                f"y is an integer class map of shape {tuple(self.y.shape)}, but the inputs were mixed by a region "
                f"over {tuple(region.shape)}: its trailing dims must be the region's, so each position takes the "
                "label of the row it came from; resize the map to the input's size")
        if self.y.ndim >= D + 2 and tuple(self.y.shape[-D:]) == tuple(region.shape):  # (B, C, *S)
            return region.partner_share(self.params.lam, D + 1)
        return None

    # Convenience views for two-way mixing (the paper's y_a, y_b, lam).
    @property
    def is_class_index(self) -> bool:
        return not self.y.dtype.is_floating_point

    @property
    def is_dense(self) -> bool:
        """True for class maps ``(B, *S)`` and float maps weighted per position."""
        return (self.is_class_index and self.y.ndim > 1) or self._position is not None

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

    def _term_weights(self, ndim: int) -> list:
        """Each target's weight, broadcastable to a per-element tensor of ``ndim`` dims ``(B, .., *S)``."""
        B = self.params.batch_size
        if self._position is not None:
            pw = self._position  # (B, *S)
            pw = pw.view((B,) + (1,) * (ndim - pw.ndim) + tuple(pw.shape[1:]))
            return [1 - pw, pw]
        view = (B,) + (1,) * (ndim - 1)
        return [self.weights[:, j].view(view) for j in range(self.weights.shape[1])]

    def _check_range(self, num_classes: int, ignore) -> None:
        y = torch.stack([t.long() for t in self.targets])
        if ignore is not None:
            y = y[y != ignore] if _fast.eager_cpu(y) else \
                torch.where(y == ignore, torch.zeros_like(y), y)
        if y.numel() == 0:
            return
        if _fast.eager_cpu(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                skip = "" if ignore is None else f" (or ignore_index={ignore})"
                raise ValueError(f"class labels must lie in [0, {num_classes}){skip}, got values in [{lo}, {hi}]")
        else:  # checked on the device, without a host sync
            torch._assert_async(((y >= 0) & (y < num_classes)).all(), f"class labels must lie in [0, {num_classes})")

    def soft(self, num_classes: int | None = None, *, label_smoothing: float | None = None) -> torch.Tensor:
        """Dense mixed targets, float32.

        Args:
            num_classes: C, needed for integer labels (defaults to the constructor's); for
                float labels it is checked against their class dimension.
            label_smoothing: eps (defaults to the constructor's): rows become
                ``(1 - eps) * row + eps / C`` (smoothing then mixing equals mixing then smoothing).

        Returns:
            ``(B, C)`` rows (summing to 1 for class labels) or ``(B, C, *S)`` for class maps,
            with the classes on dim 1 (what ``F.cross_entropy`` and
            :func:`mixlab.losses.soft_cross_entropy` take); float labels keep their shape.
            Positions whose label is ``ignore_index`` in every source are all-zero rows, and a
            source whose label is ignored adds nothing to its position's row (which then sums
            to less than 1); ``soft_cross_entropy``'s ``"mean"`` divides by that mass.
        """
        num_classes = V.num_classes(num_classes) or self.num_classes
        eps = self.label_smoothing if label_smoothing is None else V.smoothing(label_smoothing)
        if self.is_class_index:
            if num_classes is None:
                raise ValueError("num_classes is required to make soft targets from integer class labels")
            ignore = self.ignore_index
            self._check_range(num_classes, ignore)
            shape = (self.y.shape[0], num_classes) + tuple(self.y.shape[1:])
            out = torch.zeros(shape, device=self.y.device, dtype=torch.float32)
            for t, w in zip(self.targets, self._term_weights(self.y.ndim)):
                t = t.long()
                w = w.to(device=out.device, dtype=torch.float32).expand(t.shape)
                if ignore is not None:
                    keep = t != ignore
                    t, w = torch.where(keep, t, torch.zeros_like(t)), w * keep
                out.scatter_add_(1, t.unsqueeze(1), w.unsqueeze(1))
            if eps:  # scaled by each row's total so rows of ignored positions stay zero
                out = out * (1 - eps) + out.sum(1, keepdim=True) * (eps / num_classes)
            return out
        if self.y.ndim < 2 and eps:
            raise ValueError(f"label_smoothing={eps} needs class labels, but y holds float values of shape "
                             f"{tuple(self.y.shape)} (regression)")
        if num_classes is not None and (self.y.ndim < 2 or self.y.shape[1] != num_classes):
            raise ValueError(f"num_classes={num_classes} does not match float labels of shape {tuple(self.y.shape)} "
                             "(classes on dim 1)")
        out = None
        for t, w in zip(self.targets, self._term_weights(self.y.ndim)):
            term = w.to(torch.float32) * t.float()
            out = term if out is None else out + term
        if eps:
            out = out * (1 - eps) + eps / out.shape[1]
        return out

    def _smoothing_for(self, criterion) -> float:
        own = getattr(criterion, "label_smoothing", 0.0) if isinstance(criterion, torch.nn.Module) else 0.0
        eps = self.label_smoothing
        if own and eps and own != eps:
            raise ValueError(f"label_smoothing is set twice with different values: {own} on the criterion and {eps} "
                             "on the mixer/target; set it in one place")
        return own or eps

    def loss(self, criterion, logits: torch.Tensor, *, reduction: str | None = None) -> torch.Tensor:
        """The mixed loss: ``sum_j w_j * criterion(logits, target_j)`` per element, then reduced.

        For the regression losses MSE, L1, smooth L1 and Huber (modules or functions) it is the
        loss on the mixed labels instead, ``criterion(logits, sum_j w_j * target_j)``; the module
        docstring says why and which losses give the same value either way.

        Args:
            criterion: an ``nn.Module`` loss with a ``reduction`` attribute (for example
                ``nn.CrossEntropyLoss()``; it is copied, never modified) or a function that
                accepts ``reduction="none"`` (for example ``F.cross_entropy``).
            logits: the model's output on the mixed batch, ``(B, C)`` or ``(B, C, *S)``.
            reduction: ``"mean"``, ``"sum"`` or ``"none"``; defaults to the criterion's own
                (``"mean"`` for functions). See the module docstring for how ``"mean"`` normalises.

        Returns:
            The reduced loss; for ``"none"``, per-sample mixed losses ``(B,)`` (``(B, *S)`` for
            class maps, as the criterion itself returns; each sample's mean for label-mixed
            losses).

        Raises:
            TypeError: a float-target loss (BCE, MSE, L1, ...) with integer class labels.
            ValueError: a bad ``reduction``, logits without the batch size, or label smoothing
                that cannot be applied.
        """
        if (self._plain_ce and (reduction is None or reduction == "mean") and _plain_ce_criterion(criterion)
                and isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[0] == self.y.shape[0]
                and logits.dtype in (torch.float32, torch.float64)):
            coefn = self._coefn.get(logits.dtype)
            if coefn is None:  # the fused route's mean: every row's shares sum to 1, divided by the batch
                coefn = self._coefn[logits.dtype] = (self.weights.to(logits.dtype)
                                                    * (-1.0 / max(1, self.y.shape[0]))).contiguous()
            try:
                return _WeightedNLL.apply(logits, self._stacked, coefn)
            except (RuntimeError, IndexError):
                self._check_range(logits.shape[1], -100)  # a label out of range: say which
                raise
        if self.is_class_index and _needs_float_targets(criterion):
            raise TypeError(
                f"{_name(criterion)} needs float targets, but y holds integer class labels; "
                "pass one-hot / multi-hot float labels to MixedTarget, or use .soft(num_classes) as the target"
            )
        own = getattr(criterion, "reduction", "mean") if isinstance(criterion, torch.nn.Module) else "mean"
        reduction = own if reduction is None else reduction
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if not isinstance(logits, torch.Tensor) or logits.ndim == 0 or logits.shape[0] != self.params.batch_size:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must have batch size {self.params.batch_size} on dim 0, got {got}")
        eps = self._smoothing_for(criterion)
        fused = _fused_settings(criterion)
        if self.is_class_index and fused is not None:
            return self._fused_loss(logits, fused, eps, reduction)
        if not self.is_class_index and _mixes_labels(criterion):
            return self._label_mixed_loss(criterion, logits, eps, reduction)
        if self.is_class_index and eps:
            raise ValueError(f"label_smoothing={eps} cannot be applied to {_name(criterion)} with integer labels; "
                             "use nn.CrossEntropyLoss / nn.NLLLoss, or .soft(num_classes) with a soft-target loss")
        return self._generic_loss(criterion, logits, eps, reduction)

    def _fused_loss(self, logits, settings, eps, reduction):
        class_weight, ignore, log_probs = settings
        if logits.ndim != self.y.ndim + 1 or tuple(logits.shape[2:]) != tuple(self.y.shape[1:]):
            expected = "(B, C" + "".join(f", {n}" for n in self.y.shape[1:]) + ")"
            raise ValueError(f"logits must have shape {expected} for class labels of shape {tuple(self.y.shape)}, "
                             f"got {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be floating point, got {logits.dtype}")
        eager_cpu = _fast.eager_cpu(logits)
        if not eager_cpu:
            self._check_range(logits.shape[1], ignore)  # an assert on the device: no host sync
        t = torch.stack(self.targets, 1) if self._stacked is None else self._stacked  # (B, k, *S)
        if t.dtype != torch.int64:
            t = t.long()
        if self._position is None:
            w = self.weights  # (B, k): per-row shares
        else:
            w = torch.stack(self._term_weights(self.y.ndim), 1)  # (B, 2, *S): per-position shares
        # label weights that need not sum to 1 (SnapMix): "mean" is the plain mean of the per-row losses
        plain = reduction == "mean" and self.params.label_weights is not None
        try:
            skip = ignore < 0 and self._nonneg  # no label can equal a negative ignore_index
            loss = mixed_cross_entropy(logits, t, w, class_weight=class_weight, ignore_index=None if skip else ignore,
                                       label_smoothing=eps, log_probs=log_probs, reduction="none" if plain else reduction)
            return loss.mean() if plain else loss
        except (RuntimeError, IndexError):
            if eager_cpu:  # the gather refused a label: say which (free when labels are fine)
                self._check_range(logits.shape[1], ignore)
            raise

    def _mixed_labels(self, eps: float) -> torch.Tensor:
        """``sum_j w_j * target_j`` in the labels' dtype (per row, or per position under a region)."""
        mixed = None
        for t, w in zip(self.targets, self._term_weights(self.y.ndim)):
            acc = torch.promote_types(t.dtype, torch.float32)
            term = w.to(device=t.device, dtype=acc) * t.to(acc)
            mixed = term if mixed is None else mixed + term
        if eps:
            if self.y.ndim < 2:
                raise ValueError(f"label_smoothing={eps} needs class labels, but y holds float values of shape "
                                 f"{tuple(self.y.shape)} (regression)")
            mixed = mixed * (1 - eps) + eps / mixed.shape[1]  # smoothing commutes with mixing
        return mixed.to(self.y.dtype)

    def _label_mixed_loss(self, criterion, pred, eps, reduction):
        """``criterion(pred, mixed labels)``; for ``"none"``, each sample's mean ``(B,)``."""
        loss = _with_reduction(criterion, reduction)(pred, self._mixed_labels(eps))
        if reduction == "none" and loss.ndim > 1:  # element-wise: reduce each sample like "mean" does
            loss = loss.flatten(1).mean(1)
        return loss

    def _generic_loss(self, criterion, logits, eps, reduction):
        call = _per_element(criterion, eps)
        mixed = None
        for target, w in zip(self.targets, self._term_weights(logits.ndim)):
            if eps and not isinstance(criterion, torch.nn.CrossEntropyLoss) and criterion is not F.cross_entropy:
                target = target.float() * (1 - eps) + eps / target.shape[1]  # affine in the target: exact
            try:
                per = call(logits, target)
            except TypeError as e:
                raise TypeError(
                    "criterion must return per-sample losses when asked for reduction='none' "
                    f"(a loss module with a .reduction attribute, or a function taking reduction=): {e}"
                ) from e
            w = w.to(per.dtype)
            if w.ndim > per.ndim:  # a per-element loss without a class dim (CE over maps): drop it
                w = w.squeeze(1) if self._position is not None else w.reshape(w.shape[: per.ndim])
            term = w * per
            if term.ndim > 1:  # element-wise losses (BCE): reduce each sample like the criterion
                flat = term.reshape(term.shape[0], -1)
                term = flat.sum(1) if reduction == "sum" else flat.mean(1)
            mixed = term if mixed is None else mixed + term
        if reduction == "none":
            return mixed
        return mixed.sum() if reduction == "sum" else mixed.mean()

    def to(self, device) -> "MixedTarget":
        new = copy.copy(self)
        new.params = self.params.to(device)
        new.y = self.y.to(device)
        new.weights = self.weights.to(device)
        new._stacked = None if self._stacked is None else self._stacked.to(device)
        new._nonneg = self._nonneg and torch.device(device).type == "cpu"
        new._plain_ce, new._coefn = self._plain_ce and new._nonneg, {}
        new.targets = tuple(t.to(device) for t in self.targets) if new._stacked is None else \
            tuple(new._stacked.unbind(1))
        new._position = None if self._position is None else self._position.to(device)
        return new

    def __repr__(self) -> str:
        kind = "class indices" if self.is_class_index else "float labels"
        return f"MixedTarget(B={self.params.batch_size}, k={len(self.targets)}, {kind} {tuple(self.y.shape)})"


_FLOAT_TARGET_LOSSES = (
    torch.nn.BCEWithLogitsLoss, torch.nn.BCELoss, torch.nn.MSELoss, torch.nn.L1Loss,
    torch.nn.SmoothL1Loss, torch.nn.HuberLoss, torch.nn.KLDivLoss,
)
_FLOAT_TARGET_FUNCTIONS = (
    F.binary_cross_entropy_with_logits, F.binary_cross_entropy, F.mse_loss, F.l1_loss, F.smooth_l1_loss,
    F.huber_loss, F.kl_div,
)
# Not affine in the target: ``.loss`` applies them to the mixed labels (see the module docstring).
_LABEL_MIXED_LOSSES = (torch.nn.MSELoss, torch.nn.L1Loss, torch.nn.SmoothL1Loss, torch.nn.HuberLoss)
_LABEL_MIXED_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)


def _needs_float_targets(criterion) -> bool:
    return isinstance(criterion, _FLOAT_TARGET_LOSSES) or any(criterion is f for f in _FLOAT_TARGET_FUNCTIONS)


def _mixes_labels(criterion) -> bool:
    """True for the regression losses whose mixed loss is the loss on the mixed labels."""
    return isinstance(criterion, _LABEL_MIXED_LOSSES) or any(criterion is f for f in _LABEL_MIXED_FUNCTIONS)


def _with_reduction(criterion, reduction: str):
    """``criterion`` reducing with ``reduction`` (a module is shallow-copied when it differs, never modified)."""
    if isinstance(criterion, torch.nn.Module):
        if criterion.reduction == reduction:
            return criterion
        copied = copy.copy(criterion)
        copied.reduction = reduction
        return copied
    return lambda i, t: criterion(i, t, reduction=reduction)


def _name(criterion) -> str:
    return type(criterion).__name__ if isinstance(criterion, torch.nn.Module) else getattr(criterion, "__name__", "?")


def _plain_ce_criterion(criterion) -> bool:
    """``F.cross_entropy``, or ``nn.CrossEntropyLoss()`` with torch's defaults (no class weights, no smoothing, a
    negative ``ignore_index``, ``"mean"``)."""
    if criterion is F.cross_entropy:
        return True
    return (type(criterion) is torch.nn.CrossEntropyLoss and criterion.weight is None and criterion.ignore_index < 0
            and not criterion.label_smoothing and criterion.reduction == "mean")


def _fused_settings(criterion):
    """``(class_weight, ignore_index, log_probs)`` when the fused kernel computes ``criterion`` exactly."""
    if type(criterion) is torch.nn.CrossEntropyLoss:
        return criterion.weight, criterion.ignore_index, False
    if type(criterion) is torch.nn.NLLLoss:
        return criterion.weight, criterion.ignore_index, True
    if criterion is F.cross_entropy:
        return None, -100, False
    if criterion is F.nll_loss:
        return None, -100, True
    return None


def _per_element(criterion, eps: float):
    """A callable giving unreduced losses for ``criterion`` (never modified).

    torch's built-in losses map to their functional form with the module's settings (no copy,
    traceable by ``torch.compile``); other loss modules with a ``reduction`` attribute are
    shallow-copied with ``reduction="none"``; functions are called with ``reduction="none"``.
    """
    nn = torch.nn
    if isinstance(criterion, nn.CrossEntropyLoss):
        m = criterion
        return lambda i, t: F.cross_entropy(i, t, weight=m.weight, ignore_index=m.ignore_index,
                                            label_smoothing=eps, reduction="none")
    if criterion is F.cross_entropy:
        return lambda i, t: F.cross_entropy(i, t, label_smoothing=eps, reduction="none")
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        m = criterion
        return lambda i, t: F.binary_cross_entropy_with_logits(i, t, weight=m.weight, pos_weight=m.pos_weight,
                                                               reduction="none")
    if isinstance(criterion, nn.NLLLoss):
        m = criterion
        return lambda i, t: F.nll_loss(i, t, weight=m.weight, ignore_index=m.ignore_index, reduction="none")
    if isinstance(criterion, nn.Module) and hasattr(criterion, "reduction"):
        per = copy.copy(criterion)
        per.reduction = "none"
        return per
    if callable(criterion):
        return lambda i, t: criterion(i, t, reduction="none")
    raise TypeError(f"criterion must be a loss module or function, got {type(criterion).__name__}")
