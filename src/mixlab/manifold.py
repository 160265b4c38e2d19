"""Manifold Mixup (Verma et al. 2019): mix the hidden state at a layer chosen at random per step.

Forward hooks do the mixing, so the model is not edited: the hooks exist only for the duration
of one :meth:`ManifoldMixup.__call__` and are removed afterwards (also when the forward fails).

Convention: ``lam`` weights the original row, ``h = lam * h + (1 - lam) * h[index]``, and the
returned :class:`~mixlab.MixedTarget` mixes the labels with the same weights.

Padding masks (token models). Mixing a hidden state ``(B, T, D)`` mixes position ``t`` of
sequence ``i`` with position ``t`` of its partner ``j = index[i]``. A position of the mixed
sequence carries content when it is a real token in *either* source, so the mask that layers
after the mixing point must use is the union of the two "real token" masks:

- boolean padding masks (``True`` = pad, PyTorch's ``key_padding_mask``): ``m[i] & m[j]``;
- boolean or integer "valid" masks (``True``/``1`` = token, Hugging Face's ``attention_mask``):
  ``m[i] | m[j]`` (``max``);
- floating additive masks (``0`` = attend, ``-inf`` or very negative = masked, the form
  ``nn.TransformerEncoder`` hands to its layers): ``max(m[i], m[j])``.

Layers that run *before* the mixing point keep the original mask (they see unmixed rows). This
is done by replacing the keyword argument named ``mask_kwarg`` in every submodule call that
happens after the mixed layer has run, so it works when the mask is passed down by keyword
(as ``nn.TransformerEncoder`` and the examples do). A mask the model reads from a variable
outside any submodule call is not seen; pool with a submodule that takes the mask by keyword.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._tree import tree_map_with_path
from . import _validate as V
from .ops import _blendable, mix
from .params import MixParams, check_mode, sample_params
from .pairing import check_pairing
from .targets import MixedTarget
from .transforms import _batch_info

__all__ = ["ManifoldMixup", "combine_masks"]

INPUT = "input"
MASK_CONVENTIONS = ("padding", "valid")


def combine_masks(mask: torch.Tensor, index: torch.Tensor, convention: str = "padding") -> torch.Tensor:
    """The mask of a mixed batch of sequences: a position is real if it is real in either source.

    Args:
        mask: ``(B, ...)`` mask of the original rows; batch on dim 0.
        index: int64 ``(B,)`` partner rows (``MixParams.index``).
        convention: for bool and integer masks, ``"padding"`` (``True``/``1`` = pad) or
            ``"valid"`` (``True``/``1`` = token). Floating masks are taken as additive
            (``0`` = attend, negative = masked) whatever the convention.

    Returns:
        A mask of the same shape and dtype: ``m & m[index]`` for boolean padding masks,
        ``m | m[index]`` for boolean valid masks, ``min`` / ``max`` for integer ones, ``max`` for
        additive float masks.
    """
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"mask convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    if not isinstance(mask, torch.Tensor) or mask.ndim == 0 or mask.shape[0] != index.shape[0]:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor with batch size {index.shape[0]} on dim 0, got {got}")
    other = mask[index.to(mask.device)]
    if mask.dtype == torch.bool:
        return mask & other if convention == "padding" else mask | other
    if mask.is_floating_point() or convention == "valid":
        return torch.maximum(mask, other)
    return torch.minimum(mask, other)


def _resolve_layer(model: nn.Module, layer):
    if isinstance(layer, str):
        if layer == INPUT:
            return INPUT
        try:
            return model.get_submodule(layer)
        except AttributeError as e:
            raise ValueError(f"layers: model has no submodule named {layer!r}") from e
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"layers: {type(layer).__name__} module is not a submodule of the model")
        return layer
    raise TypeError(f"layers entries must be nn.Module, a submodule name or 'input', got {type(layer).__name__}")


def _mix_hidden(t, params: MixParams, path: str):
    """Mix one hidden-state leaf with :func:`mixlab.mix` (differentiable when the state requires
    grad); non-floating leaves (indices, masks) pass through."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        return t
    if t.ndim == 0 or t.shape[0] != params.batch_size:
        raise ValueError(f"hidden state {path} has shape {tuple(t.shape)}; ManifoldMixup needs the batch "
                         f"(size {params.batch_size}) on dim 0 of the chosen layer's output")
    return mix(t, params)


class ManifoldMixup:
    """Mix the hidden state of one randomly chosen layer per call, through a forward hook.

    Args:
        model: the network; it is not modified (hooks live only during a call).
        layers: candidate layers, as submodules or their dotted names (``"layer1.0"``);
            ``"input"`` mixes the model's input itself (input mixup, the paper's ``k = 0``).
            Each call picks one uniformly at random; its output (a tensor, or a nested tuple
            / dict whose floating leaves are mixed) must have the batch on dim 0.
        alpha: Beta(alpha, alpha) concentration; the paper uses 2.0.
        mode, keep_dominant, p, pairing: as :func:`mixlab.sample_params`.
        mask_kwarg: name of a keyword argument holding a padding mask (for example
            ``"src_key_padding_mask"``); after the mixing point it is replaced by
            :func:`combine_masks` of the mask each submodule receives.
        mask_convention: ``"padding"`` or ``"valid"``, see :func:`combine_masks`.
        generator: random generator for the layer choice and the mixing parameters (on the
            batch's device).
        num_classes, label_smoothing: defaults of the returned target's ``.soft()``.

    Example:
        >>> import torch, torch.nn as nn, mixlab
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> mm = mixlab.ManifoldMixup(net, layers=["0", "1"], generator=torch.Generator().manual_seed(0))
        >>> logits, target = mm(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> target.loss(nn.CrossEntropyLoss(), logits).shape
        torch.Size([])
    """

    def __init__(self, model: nn.Module, layers: Sequence, *, alpha: float = 2.0, mode: str = "batch",
                 keep_dominant: bool = False, p: float = 1.0, pairing: str = "permutation",
                 mask_kwarg: str | None = None, mask_convention: str = "padding",
                 generator: torch.Generator | None = None, num_classes=None, label_smoothing: float = 0.0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise ValueError(f"layers must be a non-empty list of modules or names, got {layers!r}")
        V.generator(generator)
        if mask_convention not in MASK_CONVENTIONS:
            raise ValueError(f"mask_convention must be one of {MASK_CONVENTIONS}, got {mask_convention!r}")
        if mask_kwarg is not None and not isinstance(mask_kwarg, str):
            raise TypeError(f"mask_kwarg must be a keyword name (str) or None, got {type(mask_kwarg).__name__}")
        self.model = model
        self.layers = [_resolve_layer(model, layer) for layer in layers]
        self.alpha = V.alpha(alpha)
        self.mode = check_mode(mode)
        self.keep_dominant = bool(keep_dominant)
        self.p = V.probability(p)
        self.pairing = check_pairing(pairing)
        self.mask_kwarg = mask_kwarg
        self.mask_convention = mask_convention
        self.generator = generator
        self.num_classes = V.num_classes(num_classes)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.last_layer = None  # the layer mixed in the latest call (for logging)

    def sample(self, x) -> tuple[int, MixParams]:
        """Draw the layer position (into ``self.layers``) and the mixing parameters for batch ``x``."""
        B, device, _ = _batch_info(x)
        g = self.generator
        pos = int(torch.randint(len(self.layers), (1,), generator=g, device=g.device if g else None))
        params = sample_params(B, alpha=self.alpha, mode=self.mode, keep_dominant=self.keep_dominant,
                               p=self.p, pairing=self.pairing, generator=g, device=device)
        return pos, params

    def __call__(self, x, y, *args, **kwargs):
        """Run ``model(x, *args, **kwargs)`` mixing the chosen layer's output.

        Returns:
            ``(output, MixedTarget)``; compute the loss with ``target.loss(criterion, output)``.
            For evaluation call the model directly: nothing is mixed outside this call.
        """
        pos, params = self.sample(x)
        layer = self.layers[pos]
        self.last_layer = layer
        return self.forward_with(params, layer, x, *args, **kwargs), self._target(y, params)

    def _target(self, y, params):
        return MixedTarget(y, params, num_classes=self.num_classes, label_smoothing=self.label_smoothing)

    def forward_with(self, params: MixParams, layer, x, *args, **kwargs):
        """One forward pass mixing the output of ``layer`` (or the input, for ``"input"``) with ``params``."""
        state = {"mixed": False}
        handles = []
        try:
            if layer == INPUT:
                x = self._mix_input(x, params)
                state["mixed"] = True
                if self.mask_kwarg in kwargs:
                    kwargs[self.mask_kwarg] = combine_masks(kwargs[self.mask_kwarg], params.index,
                                                            self.mask_convention)
            else:
                handles.append(layer.register_forward_hook(self._mix_hook(params, state)))
            if self.mask_kwarg is not None and layer != INPUT:
                pre, post = self._mask_hooks(params, state)
                for m in self.model.modules():
                    handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
                    handles.append(m.register_forward_hook(post))
            out = self.model(x, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        if not state["mixed"]:
            raise RuntimeError(f"the chosen layer {type(layer).__name__} did not run in the model's forward; "
                               "list only layers that every forward pass calls")
        return out

    @staticmethod
    def _mix_input(x, params):
        kinds = []
        tree_map_with_path(lambda t, path: kinds.append(isinstance(t, torch.Tensor) and _blendable(t)), x)
        if not any(kinds):
            raise ValueError("layer 'input' was chosen but the input has no floating tensor to mix "
                             "(token ids cannot be mixed: list the embedding layer instead)")
        return mix(x, params)

    @staticmethod
    def _mix_hook(params, state):
        def hook(module, inputs, output):
            if state["mixed"]:  # a module called twice in one forward is mixed once
                return None
            state["mixed"] = True
            return tree_map_with_path(lambda t, path: _mix_hidden(t, params, path), output)
        return hook

    def _mask_hooks(self, params, state):
        """Pre/post hooks replacing the mask keyword in the outermost submodule calls after mixing.

        A stack records, for every submodule call in progress, whether it received the
        combined mask; calls nested inside such a call get masks derived from the combined one
        already and are left alone (combining twice would widen the mask).
        """
        name, conv = self.mask_kwarg, self.mask_convention
        stack = state.setdefault("stack", [])

        def pre(module, args, kwargs):
            replace = state["mixed"] and not any(stack) and kwargs.get(name) is not None
            stack.append(replace)
            if replace:
                kwargs = dict(kwargs)
                kwargs[name] = combine_masks(kwargs[name], params.index, conv)
                return args, kwargs
            return None

        def post(module, args, output):
            if stack:
                stack.pop()
            return None
        return pre, post

    def __repr__(self):
        names = [INPUT if m == INPUT else type(m).__name__ for m in self.layers]
        return f"ManifoldMixup(layers={names}, alpha={self.alpha}, mode={self.mode!r}, p={self.p})"
