"""fastai callbacks: ``Learner(dls, model, loss_func=..., cbs=MixUp(0.4))``.

The callbacks mix only while training (``run_valid = False``), leave ``learn.loss_func``
alone (no swapping: the Learner is exactly as it was after ``fit``, ``lr_find`` or an
exception) and decide how to handle the targets from the targets themselves:

- integer class indices ``(B,)``: the inputs are mixed and, after fastai computed the loss,
  the loss is recomputed as ``lam * loss(pred, y) + (1 - lam) * loss(pred, y[index])``
  per sample with the Learner's own ``loss_func`` (loss mixing, the paper's route). Any loss
  works: ``nn.CrossEntropyLoss()``, fastai's ``CrossEntropyLossFlat()``, ``F.cross_entropy``.
- floating targets (one-hot, multi-label, regression): the targets are mixed with the same
  weights before the loss (target mixing), e.g. for ``BCEWithLogitsLossFlat``.

fastai's own ``MixUp`` decides from the loss's ``y_int`` attribute instead, which fails
with plain torch losses ("expected dtype long int for `weight`").

Convention: ``lam`` weights the original row; fastai's defaults are kept: one ``lam`` per
sample with ``keep_dominant`` (``lam = max(lam, 1 - lam)``) for MixUp.
"""
from __future__ import annotations

import copy

try:
    from fastai.callback.core import Callback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"mixlab.fastai needs fastai: pip install 'mixlab[fastai]' ({type(e).__name__}: {e})") from e

import torch

from .ops import mix
from .targets import MixedTarget
from .mixer import target_for
from .transforms import CutMix as _CutMix
from .transforms import apply_schedule, check_schedule
from .transforms import MixUp as _MixUp

__all__ = ["MixUp", "CutMix", "MixCallback"]


def _is_class_index(y) -> bool:
    return isinstance(y, torch.Tensor) and not y.is_floating_point() and y.ndim == 1


class MixCallback(Callback):
    """Base fastai callback: mix ``learn.xb`` with a mixlab transform, then the loss or targets.

    Args:
        mixer: a :class:`mixlab.MixUp`, :class:`mixlab.CutMix` or
            :class:`mixlab.MixUpOrCutMix` (its ``.sample`` draws the parameters).
    """

    run_valid = False

    def __init__(self, mixer, *, stop_epoch=None, alpha_schedule=None):
        if not hasattr(mixer, "sample"):
            raise TypeError(f"mixer must be a mixlab transform with .sample(), got {type(mixer).__name__}")
        self.mixer = mixer
        self.stop_epoch, self.alpha_schedule = check_schedule(mixer, stop_epoch, alpha_schedule)
        self._mixed_target = None
        self._per_sample = None  # (loss_func, per-sample copy) cache for losses that are not nn.Modules

    def before_epoch(self):
        apply_schedule(self.mixer, self.learn.epoch, stop_epoch=self.stop_epoch, alpha=self.alpha_schedule)

    def before_batch(self):
        self._mixed_target = None
        if not self.training or not len(self.learn.yb) or not getattr(self.mixer, "enabled", True):
            return
        xb, yb = self.learn.xb, self.learn.yb
        labels = yb[0] if len(yb) == 1 else None
        params = self.mixer.sample(xb[0], labels)  # methods whose draw reads the labels (Remix, PuzzleMix) get them
        # the Learner owns this batch: mix it in place (no fresh allocation; 1.1x the copy floor at 224x224)
        self.learn.xb = tuple(mix(x, params, inplace=not x.requires_grad) for x in xb)
        if any(_is_class_index(y) for y in yb):
            if len(yb) != 1:
                raise ValueError(f"loss mixing needs a single integer target, got {len(yb)} targets")
            self._mixed_target = target_for(self.mixer, yb[0], params)  # the method's label rule (Remix, RecursiveMix)
        else:
            self.learn.yb = tuple(self._mix_target(y, params) for y in yb)

    @staticmethod
    def _mix_target(y, params):
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(f"targets must be integer class indices (B,) or float tensors, got "
                            f"{getattr(y, 'dtype', type(y).__name__)} of shape {tuple(getattr(y, 'shape', ()))}")
        return MixedTarget(y, params).soft().to(y.dtype)

    def after_loss(self):
        target = self._mixed_target
        if target is None:
            return
        lf = self.learn.loss_func
        loss = target.loss(self._loss_fn(lf), self.learn.pred, reduction=_reduction(lf))
        self.learn.loss_grad = loss
        self.learn.loss = loss.clone()

    def _loss_fn(self, lf):
        """The Learner's loss as something :meth:`MixedTarget.loss` can ask for per-sample values."""
        if isinstance(lf, torch.nn.Module) and hasattr(lf, "reduction"):
            return lf  # MixedTarget copies it shallowly and sets reduction='none' on the copy
        if hasattr(lf, "reduction"):  # fastai's BaseLoss wrappers (CrossEntropyLossFlat, ...)
            if self._per_sample is None or self._per_sample[0] is not lf:
                per = copy.deepcopy(lf)
                per.reduction = "none"
                self._per_sample = (lf, per)
            per = self._per_sample[1]
            return lambda pred, y, reduction="none": per(pred, y)
        return lf  # a function taking reduction=, such as F.cross_entropy

    def after_fit(self):
        self._mixed_target, self._per_sample = None, None


def _reduction(lf) -> str:
    return getattr(lf, "reduction", "mean")


class MixUp(MixCallback):
    """Mixup for fastai: ``Learner(dls, model, cbs=MixUp(0.4))``.

    Args:
        alpha: Beta concentration (fastai's default 0.4).
        mode: ``"sample"`` (one lam per row, fastai) or ``"batch"`` (the paper).
        keep_dominant: ``lam = max(lam, 1 - lam)`` (fastai: True).
        p: probability that a row is mixed.
        generator: random generator on the batch's device.
        stop_epoch: no mixing from this epoch on (timm's ``mixup_off_epoch``).
        alpha_schedule: a function ``epoch -> alpha`` (``mixlab.data.Linear(0.4, 0.0, 10)``...).
    """

    def __init__(self, alpha: float = 0.4, *, mode: str = "sample", keep_dominant: bool = True, p: float = 1.0,
                 generator: torch.Generator | None = None, stop_epoch=None, alpha_schedule=None):
        super().__init__(_MixUp(alpha, mode=mode, keep_dominant=keep_dominant, p=p, generator=generator),
                         stop_epoch=stop_epoch, alpha_schedule=alpha_schedule)


class CutMix(MixCallback):
    """CutMix for fastai: ``Learner(dls, model, cbs=CutMix(1.0))``; ``lam`` is the exact kept area.

    Args:
        alpha: Beta concentration (fastai's default 1.0).
        mode: ``"batch"`` (one box per batch, fastai) or ``"sample"`` (one box per row).
        p: probability that a row is mixed.
        generator: random generator on the batch's device.
    """

    def __init__(self, alpha: float = 1.0, *, mode: str = "batch", p: float = 1.0,
                 generator: torch.Generator | None = None, stop_epoch=None, alpha_schedule=None):
        super().__init__(_CutMix(alpha, mode=mode, p=p, generator=generator), stop_epoch=stop_epoch,
                         alpha_schedule=alpha_schedule)
