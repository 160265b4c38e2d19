"""Hugging Face ``Trainer``: mixing for image (or embedding) classification models.

Text classification (token ids: the embeddings are mixed inside the model, attention masks combined) is
:func:`mixlab.transformers_text.mixup_text_for_trainer`, also importable from here.

.. code-block:: python

    collator, loss_func = mixlab.transformers.mixup_for_trainer(mixlab.MixUp(0.8), num_classes=10)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                   data_collator=collator, compute_loss_func=loss_func)

How: the collator is ``transformers.default_data_collator`` followed, for training batches, by the
mixer: it mixes ``pixel_values`` (or ``inputs_embeds``) in place (the collated batch is a fresh
tensor) and puts the :class:`mixlab.MixedTarget` under ``"labels"`` wrapped in :class:`MixedLabels`.
With ``compute_loss_func`` given, ``Trainer.compute_loss`` pops ``"labels"`` before the forward
(transformers >= 4.46), so the model never sees them, and ``loss_func`` returns the mixed
cross-entropy. Evaluation batches are left unmixed with their integer labels, and ``loss_func``
gives the plain cross-entropy for them.

Gradient accumulation: the Trainer does not rescale a ``compute_loss_func`` loss; it passes
``num_items_in_batch``, the row count of all the micro-batches of one optimizer step (it counts
``labels.ne(-100)``, which :class:`MixedLabels` answers). ``loss_func`` divides the sum over its
micro-batch by it, so ``k`` accumulation steps of ``B`` rows update as one batch of ``k * B`` rows.
Label smoothing goes to ``mixup_for_trainer(..., label_smoothing=...)``: ``compute_loss_func``
makes the Trainer skip its own ``label_smoothing_factor``, so ``loss_func`` raises if it is set
to another value.

Training or evaluation: the Trainer uses one collator for both, so the collator asks accelerate
which DataLoader it is collating for (the Trainer's training loader is the one it builds with
``is_training=True``: its ``worker_init_fn`` is transformers' ``seed_worker``, or it shuffles). If it
cannot tell (a spawned worker process), it mixes, and ``loss_func`` then raises if such a batch
reaches it during evaluation (no gradient), so a mixed evaluation is an error, never a wrong metric.

Why not soft labels in the batch: Hugging Face classification heads take float labels as
multi-label targets and apply binary cross-entropy, so mixed soft labels given to the model's own
loss would train on the wrong objective without any error. :class:`MixedLabels` is not a tensor:
a model that receives it (``compute_loss_func`` not passed to the ``Trainer``) fails on its first
use with an error that says to pass ``compute_loss_func``.
"""
from __future__ import annotations

import sys

try:
    import transformers
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"mixlab.transformers needs transformers: pip install 'mixlab[hf]' ({type(e).__name__}: {e})"
                      ) from e

import torch
import torch.nn.functional as F

from . import _validate as V
from .ops import mix
from .targets import MixedTarget
from .mixer import target_for

__all__ = ["mixup_for_trainer", "MixupCollator", "MixedLabels", "MixedLabelsError", "MixupHook",
           "mixup_text_for_trainer", "TextMixupCollator"]

_TEXT = ("mixup_text_for_trainer", "TextMixupCollator")  # text classification: mixlab.transformers_text

INPUT_KEYS = ("pixel_values", "inputs_embeds")

_FORGOT = ("mixlab.transformers: the model received mixlab's mixed labels, so its own loss would run on them "
           "(Hugging Face heads take soft labels as multi-label BCE); pass compute_loss_func=loss_func (from "
           "mixup_for_trainer) to the Trainer, which then keeps the labels away from the model")


class MixedLabelsError(AttributeError):
    """Raised when :class:`MixedLabels` is used as a tensor (an AttributeError, so probes such as the
    Trainer's label count skip it)."""


class MixedLabels:
    """The mixed target of a training batch, under ``batch["labels"]``, for ``loss_func`` only.

    Not a tensor on purpose: ``.to(device)`` moves it (as the Trainer and accelerate move a batch),
    ``.target`` is the :class:`mixlab.MixedTarget`, ``.ne(value)`` compares its class ids (the Trainer
    counts the rows of an accumulated batch with ``labels.ne(-100)`` to pass ``num_items_in_batch`` to
    ``loss_func``); any other use raises :class:`MixedLabelsError` saying to pass ``compute_loss_func``
    (a model's own loss must never see mixed labels).
    """

    __slots__ = ("target",)

    def __init__(self, target: MixedTarget):
        object.__setattr__(self, "target", target)

    def to(self, *args, **kwargs) -> "MixedLabels":
        device = kwargs.get("device", args[0] if args else None)
        if device is None or isinstance(device, torch.dtype):
            raise MixedLabelsError(_FORGOT)
        return MixedLabels(self.target.to(device))

    def ne(self, other) -> torch.Tensor:
        """``target.y != other``: how the Trainer counts the rows for ``num_items_in_batch``."""
        return self.target.y.ne(other)

    def __getattr__(self, name):
        raise MixedLabelsError(f"{_FORGOT} (it asked for labels.{name})")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise MixedLabelsError(_FORGOT)

    def __len__(self):
        return self.target.y.shape[0]

    def __repr__(self):
        return f"MixedLabels({self.target!r})"


def _seed_worker_loader(loader) -> bool:
    fn = getattr(loader, "worker_init_fn", None)
    return getattr(getattr(fn, "func", fn), "__name__", "") == "seed_worker"


def _training_loader():
    """True when collating for the Trainer's training DataLoader, False for another one, None if unknown."""
    try:
        from accelerate.state import GradientState
    except ImportError:  # pragma: no cover - transformers' Trainer needs accelerate
        return None
    active = GradientState().active_dataloader
    if active is None:
        return None
    base = getattr(active, "base_dataloader", active)
    if _seed_worker_loader(base):
        return True
    sampler = getattr(base, "sampler", None)
    batch_sampler = getattr(base, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None) or getattr(getattr(batch_sampler, "batch_sampler", None),
                                                              "sampler", None)
    return isinstance(sampler, torch.utils.data.RandomSampler) or isinstance(inner, torch.utils.data.RandomSampler)


def _check_labels(labels):
    if labels is not None and (labels.is_floating_point() or labels.ndim != 1):
        raise ValueError(f"mixlab.transformers expects integer class ids (B,) as labels, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}: float labels make Hugging Face heads use multi-label BCE")


class MixupCollator:
    """``default_data_collator``, then, for training batches, ``mixer`` on the input key and :class:`MixedLabels`.

    ``collator.mix(batch)`` mixes a collated batch unconditionally (what a training batch gets).
    """

    def __init__(self, mixer, *, num_classes: int, input_key=None, label_smoothing=0.0):
        if not callable(getattr(mixer, "sample", None)):
            raise TypeError(f"mixer must be a mixlab transform (MixUp, CutMix, FMix...), got {type(mixer).__name__}")
        self.mixer = mixer
        self.num_classes = V.integer(num_classes, "num_classes", minimum=1)
        self.input_key = input_key
        self.label_smoothing = V.smoothing(label_smoothing)

    def __call__(self, features):
        batch = transformers.default_data_collator(features)
        _check_labels(batch.get("labels"))
        if _training_loader() is False or not getattr(self.mixer, "enabled", True):
            return batch
        return self.mix(batch)

    def mix(self, batch):
        labels = batch.get("labels")
        if labels is None:
            raise ValueError("mixlab.transformers: the batch has no `labels` to mix")
        keys = [self.input_key] if self.input_key else [k for k in INPUT_KEYS if batch.get(k) is not None]
        if not keys or not isinstance(batch.get(keys[0]), torch.Tensor):
            raise ValueError(f"mixlab.transformers: no input to mix among the batch's keys {sorted(batch)}; "
                             f"expected one of {INPUT_KEYS} or input_key=")
        x = batch[keys[0]]
        params = self.mixer.sample(x, labels)  # methods whose draw reads the labels (Remix, PuzzleMix) get them
        out = dict(batch)
        out[keys[0]] = mix(x, params, inplace=not x.requires_grad)  # the collated batch is ours
        out["labels"] = MixedLabels(target_for(self.mixer, labels, params, num_classes=self.num_classes,
                                               label_smoothing=self.label_smoothing))
        return out


def _calling_trainer(frame, depth: int = 8):
    """The ``transformers.Trainer`` among the ``self`` of ``frame`` and its next callers, or None."""
    module = sys.modules.get("transformers.trainer")  # not imported: no Trainer is calling
    trainer_cls = getattr(module, "Trainer", None)
    while trainer_cls is not None and frame is not None and depth > 0:
        owner = frame.f_locals.get("self")
        if isinstance(owner, trainer_cls):
            return owner
        frame, depth = frame.f_back, depth - 1
    return None


def _check_trainer_smoothing(label_smoothing: float) -> None:
    """Refuse a ``label_smoothing_factor`` of the calling Trainer that the loss would silently ignore.

    With ``compute_loss_func`` the Trainer skips its own label smoother, and neither the collator
    nor the loss is given the ``TrainingArguments``; the Trainer is found among the loss's callers.

    Raises:
        ValueError: ``args.label_smoothing_factor`` is not 0 and differs from ``label_smoothing``.
    """
    trainer = _calling_trainer(sys._getframe(2))
    factor = getattr(getattr(trainer, "args", None), "label_smoothing_factor", 0.0) or 0.0
    if factor and factor != label_smoothing:
        raise ValueError(f"mixlab.transformers: TrainingArguments(label_smoothing_factor={factor}) is ignored with "
                         f"compute_loss_func (the Trainer skips its label smoother; mixup_for_trainer has "
                         f"label_smoothing={label_smoothing}): set label_smoothing_factor=0 and pass "
                         f"mixup_for_trainer(..., label_smoothing={factor}) instead")


def _over_items(loss_sum, num_items_in_batch):
    """``loss_sum / num_items_in_batch``: the Trainer's count over the whole accumulated batch (and devices)."""
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss_sum.device)
    return loss_sum / num_items_in_batch


def _plain_loss(logits, labels, label_smoothing, num_items_in_batch):
    labels = labels.to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    loss_sum = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction="sum")
    return _over_items(loss_sum, num_items_in_batch)


def _mixed_loss(target, logits, num_items_in_batch):
    if num_items_in_batch is None:
        return target.loss(F.cross_entropy, logits)
    return _over_items(target.loss(F.cross_entropy, logits, reduction="sum"), num_items_in_batch)


def _loss(label_smoothing):
    def loss_func(outputs, labels, num_items_in_batch=None):
        """The ``Trainer``'s ``compute_loss_func``: mixed cross-entropy for mixed batches, plain otherwise.

        Args:
            outputs: the model's output (``.logits`` or ``["logits"]``).
            labels: :class:`MixedLabels` (a mixed training batch) or integer class ids ``(B,)``.
            num_items_in_batch: the Trainer's count of labelled rows over all the micro-batches of one
                optimizer step (gradient accumulation). Given, the loss is the sum over this
                micro-batch divided by it, so accumulated steps add up to the mean over the whole
                batch (the Trainer does not rescale a ``compute_loss_func`` loss); ``None``, the mean.

        Returns:
            The scalar loss.

        Raises:
            ValueError: the calling Trainer's ``args.label_smoothing_factor`` is set and differs
                from ``mixup_for_trainer``'s ``label_smoothing`` (it would be ignored).
        """
        _check_trainer_smoothing(label_smoothing)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if labels is None:
            raise ValueError("mixlab.transformers: the batch has no `labels`")
        if isinstance(labels, MixedLabels):
            if not torch.is_grad_enabled():
                raise RuntimeError("mixlab.transformers: a mixed batch reached the loss without gradients "
                                   "(evaluation): the collator could not tell the evaluation DataLoader from the "
                                   "training one (a spawned worker?); use dataloader_num_workers=0 or the fork "
                                   "start method")
            return _mixed_loss(labels.target.to(logits.device), logits, num_items_in_batch)
        return _plain_loss(logits, labels, label_smoothing, num_items_in_batch)

    return loss_func


class MixupHook:
    """Mixes a model's input keyword in training mode and keeps the parameters for the loss.

    The mixing of ``mixup_for_trainer(mixer, model, ...)`` before 0.2 (a forward pre-hook); kept for code
    that uses it directly. ``mixup_for_trainer`` now mixes in the collator.
    """

    def __init__(self, mixer, model: torch.nn.Module, *, num_classes: int, input_key=None, label_smoothing=0.0):
        if not callable(getattr(mixer, "sample", None)):
            raise TypeError(f"mixer must be a mixlab transform (MixUp, CutMix, FMix...), got {type(mixer).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be the torch model given to the Trainer, got {type(model).__name__}")
        self.mixer = mixer
        self.num_classes = V.integer(num_classes, "num_classes", minimum=1)
        self.input_key = input_key
        self.label_smoothing = V.smoothing(label_smoothing)
        self.params = None  # the parameters of the latest mixed forward
        self.handle = model.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        self.params = None
        if not module.training or not getattr(self.mixer, "enabled", True):
            return None
        if kwargs.get("labels") is not None:
            raise RuntimeError("mixlab.transformers: the model received `labels` in a training forward, so its own "
                               "loss would use unmixed labels; pass compute_loss_func=loss_func (from "
                               "mixup_for_trainer) to the Trainer")
        keys = [self.input_key] if self.input_key else [k for k in INPUT_KEYS if kwargs.get(k) is not None]
        if not keys or kwargs.get(keys[0]) is None:
            raise ValueError(f"mixlab.transformers: no input to mix among the forward's keywords {sorted(kwargs)}; "
                             f"expected one of {INPUT_KEYS} or input_key=")
        x = kwargs[keys[0]]
        self.params = self.mixer.sample(x)
        kwargs = dict(kwargs)
        kwargs[keys[0]] = mix(x, self.params, inplace=not x.requires_grad)
        return args, kwargs

    def loss(self, outputs, labels, num_items_in_batch=None):
        _check_trainer_smoothing(self.label_smoothing)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if labels is None:
            raise ValueError("mixlab.transformers: the batch has no `labels`")
        params, self.params = self.params, None
        if params is None:
            return _plain_loss(logits, labels, self.label_smoothing, num_items_in_batch)
        labels = labels.to(params.device)
        target = target_for(self.mixer, labels, params, num_classes=self.num_classes,
                            label_smoothing=self.label_smoothing)
        return _mixed_loss(target, logits, num_items_in_batch)

    def remove(self):
        self.handle.remove()


def mixup_for_trainer(mixer, model: torch.nn.Module | None = None, *, num_classes: int, input_key=None,
                      label_smoothing=0.0):
    """``(data_collator, compute_loss_func)`` for ``transformers.Trainer`` with ``mixer`` mixing training batches.

    Args:
        mixer: a mixlab transform (``MixUp``, ``CutMix``, ``MixUpOrCutMix``, ``FMix``...); its
            ``enabled`` flag turns mixing off (e.g. for the last epochs).
        model: not needed; accepted (and checked to be a torch module) so that calls written for
            mixlab 0.1, ``mixup_for_trainer(mixer, model, num_classes=C)``, keep working.
        num_classes: the classifier's number of labels.
        input_key: the batch key to mix (default the first of ``pixel_values``, ``inputs_embeds``
            present).
        label_smoothing: for both the mixed and the evaluation loss. The Trainer's own
            ``TrainingArguments(label_smoothing_factor=...)`` cannot reach ``compute_loss_func``:
            the first loss call raises if it is set to another value (give it here instead).

    Returns:
        ``(collator, loss_func)``: a :class:`MixupCollator` and the function to pass as
        ``compute_loss_func`` (without it, a model given the mixed labels raises).
    """
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be the torch model given to the Trainer (or omitted), got {type(model).__name__}")
    collator = MixupCollator(mixer, num_classes=num_classes, input_key=input_key, label_smoothing=label_smoothing)
    return collator, _loss(collator.label_smoothing)


def __getattr__(name):
    """The text route's names, from :mod:`mixlab.transformers_text` (imported on first use: it imports this module)."""
    if name in _TEXT:
        from . import transformers_text
        return getattr(transformers_text, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
