"""Hugging Face ``Trainer``, text classification: mix the input embeddings (or a hidden layer), masks combined.

.. code-block:: python

    collator, loss_func = mixlab.transformers.mixup_text_for_trainer(mixlab.MixUp(0.4), model, num_classes=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                   data_collator=collator, compute_loss_func=loss_func)

Token ids cannot be mixed, so the mixing happens inside the model: a forward hook on
``model.get_input_embeddings()`` (wordMixup, Guo et al. 2019, "Augmenting Data with Mixup for Sentence
Classification") or, with ``layer="bert.encoder.layer.6"``, on that layer's output (TMix, Chen et al. 2020,
"MixText"; senMixup is ``layer=`` the pooler). The model is not edited; the hooks act only on forwards
whose batch carries the collator's parameters.

How, per training batch:

1. the collator (``collate``, default ``default_data_collator``; give ``DataCollatorWithPadding(tok)``
   for unpadded features) collates, then draws :class:`~mixlab.MixParams` with ``mixer.sample``;
2. it combines ``attention_mask`` with the same parameters: a position counts where the row or a
   partner it takes a share from has a token (:func:`mixlab.combine_masks`, ``"valid"``); rows with
   ``lam == 1`` keep their own mask; and where only the partner has a token it writes the partner's
   id into ``input_ids`` (and ``token_type_ids``), so a decoder's last-token pooling (GPT-2, Llama
   ``ForSequenceClassification`` pool the last id that is not ``pad_token_id``) lands on the end of
   the mixed row, ``max(len_i, len_j) - 1`` with right padding (the last position with left padding);
3. the parameters and the original ids travel under ``batch["mixlab_text_mix"]``; a forward pre-hook on
   the model takes them out of the keywords, so the model's forward never sees them;
4. the embedding hook recomputes the embeddings of the *original* ids (so a row's own padding
   embedding is what it mixes where the partner's id was written) and, for embedding mixing, returns
   ``lam * e_i + (1 - lam) * e_j``; for a hidden layer, that layer's hook mixes its output (the first
   element of a tuple output, the hidden states) the same way;
5. the labels go under ``"labels"`` as :class:`~mixlab.transformers.MixedLabels`, and ``loss_func`` is the
   image route's: mixed cross-entropy, ``num_items_in_batch`` for gradient accumulation, evaluation
   batches unmixed with the plain loss (see :mod:`mixlab.transformers`).

Convention: ``lam`` weights the original row, ``e = lam * e_i + (1 - lam) * e_j``, positions aligned
(position ``t`` of row ``i`` with position ``t`` of its partner), padding included, as wordMixup pads.

Limits: every layer sees the combined mask, also the layers below a mixed hidden layer (there each
row may attend to its own padding where the partner has tokens; TMix's reference code passes no mask
at all). Mixers that paste regions (CutMix and kin) are refused: they need an image. The model the
hooks are on must be the one the Trainer calls (not wrapped by a module that rejects unknown
keywords); ``DataParallel`` (several GPUs in one process) and gradient checkpointing with ``layer=``
are refused in one line (the batch is split / the layer recomputed without the hook); DDP is fine.
"""
from __future__ import annotations

import torch
from torch import nn

from .transformers import MixedLabels, _check_labels, _loss, _training_loader, transformers  # the guarded import
from . import _validate as V
from .manifold import _resolve_layer, combine_masks
from .mixer import target_for
from .ops import mix
from .params import MixParams

__all__ = ["mixup_text_for_trainer", "TextMixupCollator", "TextMix", "combine_text", "PARAMS_KEY"]

PARAMS_KEY = "mixlab_text_mix"


class TextMix:
    """The parameters of one mixed text batch and its original ids, under ``batch[PARAMS_KEY]`` for the hooks.

    Attributes:
        params: the :class:`~mixlab.MixParams` the embeddings (or hidden states) are mixed with.
        input_ids: int ``(B, T)``: the collated ids before the partner's ids were written in.
        filled: whether any id was written (the embedding hook then recomputes the original ones).
    """

    __slots__ = ("params", "input_ids", "filled")

    def __init__(self, params: MixParams, input_ids: torch.Tensor, filled: bool):
        self.params, self.input_ids, self.filled = params, input_ids, bool(filled)

    def to(self, *args, **kwargs) -> "TextMix":
        device = kwargs.get("device", args[0] if args else None)
        return TextMix(self.params.to(device), self.input_ids.to(device), self.filled)

    def __repr__(self):
        return f"TextMix(batch_size={self.params.batch_size}, filled={self.filled})"


def _partners(params: MixParams):
    """The partners' input weights ``(B, k-1)`` and rows ``(B, k-1)`` (two-way: ``1 - lam`` and ``index``)."""
    if params.weights is None:
        return (1 - params.lam)[:, None], params.index[:, None]
    return params.weights[:, 1:], params.index[:, 1:]


def combine_text(batch: dict, params: MixParams) -> tuple[dict, bool]:
    """``attention_mask`` combined over each row and the partners it takes a share of; the partners' ids (and
    ``token_type_ids``) written where only they have a token. Returns the new batch and whether ids were written."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weights, rows = _partners(params)
    weights, rows = weights.to(mask.device), rows.to(mask.device)
    types = batch.get("token_type_ids") if isinstance(batch.get("token_type_ids"), torch.Tensor) else None
    have = mask != 0  # (B, T): positions of the new ids that hold a real token
    union, new_ids, new_types, filled = mask, ids, types, torch.zeros((), dtype=torch.bool)
    for c in range(rows.shape[1]):
        active = (weights[:, c] > 0)[:, None]  # (B, 1): the partner has a share of the row
        union = torch.where(active, torch.maximum(union, combine_masks(mask, rows[:, c], "valid")), union)
        fill = active & (mask[rows[:, c]] != 0) & ~have  # (B, T): only this partner has a token here
        new_ids = torch.where(fill, ids[rows[:, c]], new_ids)
        if new_types is not None:
            new_types = torch.where(fill, types[rows[:, c]], new_types)
        have, filled = have | fill, filled | fill.any()
    out = dict(batch)
    out["input_ids"], out["attention_mask"] = new_ids, union
    if new_types is not None:
        out["token_type_ids"] = new_types
    return out, bool(filled)


def _input_embeddings(model) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    emb = None
    if callable(get):
        try:
            emb = get()
        except NotImplementedError:
            emb = None
    if not isinstance(emb, nn.Module):
        raise TypeError(f"mixup_text_for_trainer: {type(model).__name__} has no input embeddings "
                        f"(model.get_input_embeddings() gave none): text mixing needs a Hugging Face model that "
                        f"embeds token ids")
    return emb


def _checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on (transformers 5 renamed the property)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


class _TextHooks:
    """The hooks on the model: a pre-hook takes :class:`TextMix` out of the keywords, the embedding hook restores
    the original ids' embeddings (and mixes them), a layer hook mixes a hidden state; each forward mixes once."""

    def __init__(self, model: nn.Module, layer=None):
        self.emb = _input_embeddings(model)
        try:
            self.layer = self.emb if layer is None else _resolve_layer(model, layer)
        except (TypeError, ValueError) as e:  # its message speaks of ManifoldMixup's `layers`
            raise type(e)(f"mixup_text_for_trainer: layer={layer!r}: {str(e).removeprefix('layers: ')}") from e
        if self.layer == "input":
            raise ValueError("mixup_text_for_trainer: layer='input' would mix token ids; leave layer=None to mix "
                             "the input embeddings")
        self.name = type(self.layer).__name__
        self.current, self.mixed = None, False
        self.handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                        model.register_forward_hook(self._post),
                        self.emb.register_forward_hook(self._emb_hook)]
        if self.layer is not self.emb:
            self.handles.append(self.layer.register_forward_hook(self._layer_hook))

    def _pre(self, module, args, kwargs):
        carrier = kwargs.get(PARAMS_KEY)
        self.current, self.mixed = carrier, False
        if carrier is None:
            return None
        if not isinstance(carrier, TextMix):
            raise TypeError(f"batch[{PARAMS_KEY!r}] must be the collator's TextMix, got {type(carrier).__name__}")
        if self.layer is not self.emb and module.training and _checkpointing(module):
            raise ValueError("mixup_text_for_trainer: gradient checkpointing recomputes the mixed layer without its "
                             "hook; turn it off or mix the input embeddings (layer=None)")
        kwargs = {k: v for k, v in kwargs.items() if k != PARAMS_KEY}
        return args, kwargs

    def _post(self, module, args, output):
        carrier, self.current = self.current, None
        if carrier is not None and not self.mixed:
            raise RuntimeError(f"mixup_text_for_trainer: the layer to mix ({self.name}) did not run in the forward")
        return None

    def _params(self, t: torch.Tensor) -> MixParams:
        params = self.current.params
        if t.ndim < 2 or t.shape[0] != params.batch_size:
            raise ValueError(f"mixup_text_for_trainer: {self.name} gave shape {tuple(t.shape)} for a mixed batch of "
                             f"{params.batch_size} rows (DataParallel splits batches: use DDP, torchrun)")
        return params.to(t.device)

    def _emb_hook(self, module, inputs, output):
        carrier = self.current
        if carrier is None or not isinstance(output, torch.Tensor):
            return None
        out = output
        if carrier.filled:  # the partner's ids were written for pooling: embed the row's own ids
            ids = carrier.input_ids.to(output.device)
            if ids.shape != output.shape[:-1]:
                raise ValueError(f"mixup_text_for_trainer: the embeddings have shape {tuple(output.shape)} for ids "
                                 f"of shape {tuple(ids.shape)}")
            out = module.forward(ids)  # forward, not __call__: no hook runs twice
        if self.layer is self.emb and not self.mixed:
            self.mixed = True
            return mix(out, self._params(out))  # (B, T, D)
        return out

    def _layer_hook(self, module, inputs, output):
        if self.current is None or self.mixed:  # a layer called twice in one forward is mixed once
            return None
        self.mixed = True
        if isinstance(output, torch.Tensor):
            return mix(output, self._params(output))
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            return type(output)([mix(output[0], self._params(output[0])), *output[1:]])
        raise TypeError(f"mixup_text_for_trainer: {self.name} returned {type(output).__name__}; the layer to mix must "
                        f"return its hidden states (B, T, D) or a tuple starting with them")

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


class TextMixupCollator:
    """``collate``, then, for training batches: mixing parameters, combined masks and :class:`MixedLabels`.

    ``collator.mix(batch)`` mixes a collated batch unconditionally (what a training batch gets);
    ``collator.remove()`` takes the hooks off the model.
    """

    def __init__(self, mixer, model: nn.Module, *, num_classes: int, layer=None, label_smoothing=0.0, collate=None):
        if not callable(getattr(mixer, "sample", None)):
            raise TypeError(f"mixer must be a mixlab transform (MixUp...), got {type(mixer).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be the torch model given to the Trainer, got {type(model).__name__}")
        if collate is not None and not callable(collate):
            raise TypeError(f"collate must be a data collator (features -> batch), got {type(collate).__name__}")
        self.mixer = mixer
        self.num_classes = V.integer(num_classes, "num_classes", minimum=1)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.collate = collate or transformers.default_data_collator
        self.hooks = _TextHooks(model, layer)

    def __call__(self, features):
        batch = self.collate(features)
        _check_labels(batch.get("labels"))
        if _training_loader() is False or not getattr(self.mixer, "enabled", True):
            return batch
        return self.mix(batch)

    def mix(self, batch):
        labels, ids, mask = batch.get("labels"), batch.get("input_ids"), batch.get("attention_mask")
        if labels is None:
            raise ValueError("mixlab.transformers: the batch has no `labels` to mix")
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point():
            raise ValueError(f"mixlab.transformers: text mixing needs `input_ids`, integer token ids (B, T); the "
                             f"batch has keys {sorted(batch)}")
        if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else "none"
            raise ValueError(f"mixlab.transformers: text mixing needs an `attention_mask` of the ids' shape "
                             f"{tuple(ids.shape)} (got {got}) to combine the rows' tokens; collate with "
                             f"return_attention_mask=True")
        B, T = ids.shape
        stand_in = torch.zeros((), device=ids.device).expand(B, T, 1)  # (B, T, 1): a sequence of T positions
        name = type(self.mixer).__name__
        try:
            params = self.mixer.sample(stand_in, labels)
        except (TypeError, ValueError) as e:
            raise ValueError(f"mixlab.transformers: {name} cannot mix text embeddings ({e}); use MixUp") from e
        if params.region is not None:
            raise ValueError(f"mixlab.transformers: {name} pastes regions, which text embeddings do not have "
                             f"(positions are blended whole); use MixUp")
        out, filled = combine_text(batch, params)
        out[PARAMS_KEY] = TextMix(params, ids, filled)
        out["labels"] = MixedLabels(target_for(self.mixer, labels, params, num_classes=self.num_classes,
                                               label_smoothing=self.label_smoothing))
        return out

    def remove(self):
        self.hooks.remove()


def mixup_text_for_trainer(mixer, model: nn.Module, *, num_classes: int, layer=None, label_smoothing=0.0,
                           collate=None):
    """``(data_collator, compute_loss_func)`` for ``transformers.Trainer`` mixing a text classifier's embeddings.

    Args:
        mixer: a blending mixlab transform (``MixUp``, k-way ``MixUp(k=3)``, label rules such as Remix);
            methods that paste regions are refused. Its ``enabled`` flag turns mixing off.
        model: the Hugging Face model given to the Trainer (BERT-style encoders, GPT-2 / Llama-style
            decoders); hooks are put on it (``collator.remove()`` takes them off).
        num_classes: the classifier's number of labels.
        layer: ``None`` mixes the output of ``model.get_input_embeddings()`` (wordMixup); a submodule or its
            dotted name (``"bert.encoder.layer.6"``) mixes that layer's hidden states (TMix).
        label_smoothing: for both the mixed and the evaluation loss (as :func:`mixup_for_trainer`).
        collate: the collator before mixing (default ``transformers.default_data_collator``, for features
            padded already); it must give ``input_ids``, ``attention_mask`` and integer ``labels``.

    Returns:
        ``(collator, loss_func)``: a :class:`TextMixupCollator` and the ``compute_loss_func``.

    Raises:
        TypeError: the model has no input embeddings, or the mixer is not a mixlab transform.
        ValueError: ``layer`` names no submodule.
    """
    collator = TextMixupCollator(mixer, model, num_classes=num_classes, layer=layer, label_smoothing=label_smoothing,
                                 collate=collate)
    return collator, _loss(collator.label_smoothing)
