"""Hugging Face ``Trainer``: mixing for image (or embedding) classification models.

.. code-block:: python

    collator, loss_func = mixlab.transformers.mixup_for_trainer(mixlab.MixUp(0.8), model, num_classes=10)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                   data_collator=collator, compute_loss_func=loss_func)

How: a forward pre-hook on ``model`` mixes its ``pixel_values`` (or ``inputs_embeds``) on the
device while the model is in training mode, and remembers the parameters; ``loss_func`` (the
``Trainer``'s ``compute_loss_func``) turns the batch's integer labels into the matching
:class:`mixlab.MixedTarget` and returns the mixed cross-entropy. Evaluation runs in eval mode, so
it sees unmixed inputs and plain labels. The collator is ``transformers.default_data_collator``
with a check that the labels are integer class ids.

Why not soft labels in the batch: Hugging Face classification heads take float labels as
multi-label targets and apply binary cross-entropy, so mixed soft labels given to the model's own
loss would train on the wrong objective without any error. Here the labels stay class ids, and a
training forward that receives ``labels`` itself (``compute_loss_func`` not passed to the
``Trainer``) raises instead of training on unmixed labels.
"""
from __future__ import annotations

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

__all__ = ["mixup_for_trainer", "MixupHook"]

INPUT_KEYS = ("pixel_values", "inputs_embeds")


class MixupHook:
    """Mixes a model's input keyword in training mode and keeps the parameters for the loss."""

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
        kwargs[keys[0]] = mix(x, self.params, inplace=not x.requires_grad)  # the collated batch is ours
        return args, kwargs

    def loss(self, outputs, labels, num_items_in_batch=None):
        """The ``Trainer``'s ``compute_loss_func``: mixed cross-entropy in training, plain in evaluation."""
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if labels is None:
            raise ValueError("mixlab.transformers: the batch has no `labels`")
        params, self.params = self.params, None
        if params is None:  # evaluation (or mixing off): plain cross-entropy
            return F.cross_entropy(logits.float(), labels.to(logits.device), label_smoothing=self.label_smoothing)
        target = MixedTarget(labels.to(params.device), params, num_classes=self.num_classes,
                             label_smoothing=self.label_smoothing)
        return target.loss(F.cross_entropy, logits)

    def remove(self):
        self.handle.remove()


def _collate(features):
    batch = transformers.default_data_collator(features)
    labels = batch.get("labels")
    if labels is not None and (labels.is_floating_point() or labels.ndim != 1):
        raise ValueError(f"mixlab.transformers expects integer class ids (B,) as labels, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}: float labels make Hugging Face heads use multi-label BCE")
    return batch


def mixup_for_trainer(mixer, model: torch.nn.Module, *, num_classes: int, input_key=None, label_smoothing=0.0):
    """``(data_collator, compute_loss_func)`` for ``transformers.Trainer`` with ``mixer`` mixing training batches.

    Args:
        mixer: a mixlab transform (``MixUp``, ``CutMix``, ``MixUpOrCutMix``, ``FMix``...); its
            ``enabled`` flag turns mixing off (e.g. for the last epochs).
        model: the model given to the Trainer (a pre-hook mixes its input keyword in training).
        num_classes: the classifier's number of labels.
        input_key: the forward keyword to mix (default the first of ``pixel_values``,
            ``inputs_embeds`` present).
        label_smoothing: for both the mixed and the evaluation loss.

    Returns:
        ``(collator, loss_func)``; ``loss_func.__self__`` is the :class:`MixupHook` (``.remove()``).
    """
    hook = MixupHook(mixer, model, num_classes=num_classes, input_key=input_key, label_smoothing=label_smoothing)
    return _collate, hook.loss
