"""The method contract: :class:`Mixer`, the one call protocol every mixing method shares.

A method is a subclass that supplies hooks; it never overrides :meth:`Mixer.sample` or
:meth:`Mixer.__call__` (defining either raises ``TypeError`` when the class is created):

- ``draw(leaf, lam, index, g, *, y=None, **context) -> Region | None``: what the method pastes or
  blends. ``lam`` ``(B,)`` is the requested share of the original per row (in ``"batch"`` mode
  all rows share one draw, so ``lam[:1]`` and one region expanded to the batch); a row whose
  ``lam`` is 1 must get an empty region (``p`` and ``alpha=0`` leave rows unmixed that way).
  Methods without an ``alpha`` receive ``lam`` 0 for rows to mix and 1 for rows ``p`` leaves
  alone. Return ``None`` for a plain blend (MixUp).
- ``draw_pairs(B, y, g, device) -> MixParams``: the per-row ``lam`` and partners before any
  region. The default draws ``lam ~ Beta(alpha, alpha)`` per ``mode`` with ``p`` applied and
  partners by ``pairing``; MixUp (k-way, keep-dominant), Remix (balanced partners) and C-Mixup
  (label-kernel partners) replace it.
- ``target_params(params, y) -> MixParams``: how the labels are weighted (Remix's rule); the
  default is the inputs' own parameters.

Inputs with an empty dimension after the batch (``(B, C, 0, W)`` images, ``(B, 0, D)`` tokens) are refused by
:meth:`Mixer.sample` for every method, naming the method and the shape: they have no positions whose
share could be kept. An empty batch (``B = 0``) mixes to an empty batch.

``lam`` comes from the region (:meth:`~mixlab.regions.Region.kept`, the exact share of the
original) whenever there is one, so the label weight and the pixels cannot disagree.

The shared options (``mode``, ``p``, ``pairing``, ``enabled``, ``generator``, ``num_classes``,
``label_smoothing``, ``inplace``, ``roles``, ``soft``, ``labels_getter``) are declared here
once; a method's constructor lists only its own options and passes ``**common`` on. A method
declares the modes it supports (``modes``) and the shared options it has no use for
(``unsupported``: they are then refused, never ignored).

Random streams: with ``generator=`` every draw comes from it. Inside a ``DataLoader`` worker each
worker draws from its own generator seeded from the generator's seed and the worker's seed
(``get_worker_info().seed``), so workers never repeat each other's draws and a seeded loader
repeats exactly.

Convention: ``lam`` weights the original row, ``mixed = lam * x + (1 - lam) * x[index]``.
"""
from __future__ import annotations

import functools
import inspect

import torch

from . import _fast
from . import _validate as V
from ._tree import tree_map_with_path
from .ops import _blendable, mix
from .pairing import PAIRINGS, partner_index
from .params import MixParams, sample_params
from .regions import Region
from .sampling import mix_seed, rng
from .targets import MixedTarget

__all__ = ["Mixer", "BatchTypeError", "worker_generator", "COMMON_OPTIONS", "label_params", "target_for",
           "keeps_label_state"]

COMMON_OPTIONS = ("mode", "p", "pairing", "enabled", "generator", "num_classes", "label_smoothing", "inplace",
                  "roles", "soft", "labels_getter")
_HOOKS_ONLY = ("sample", "__call__")  # the protocol: no method defines these


class BatchTypeError(TypeError, ValueError):
    """A batch or labels of the wrong type (a PIL image, labels that are not a tensor).

    A ``TypeError`` by mixlab's convention and a ``ValueError`` as torchvision's MixUp/CutMix raise for
    the same inputs, so code written for either catches it.
    """


def _batch_info(x) -> tuple[int, torch.device, torch.Tensor]:
    """Batch size, device and the leaf that sets the region's shape: the first blendable leaf (the input)."""
    leaves = []
    tree_map_with_path(lambda leaf, path: leaves.append(leaf), x)
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    if not tensors:
        got = type(leaves[0]).__name__ if leaves else "an empty container"
        raise BatchTypeError(f"x must be a tensor or a nested batch of tensors, got {got}")
    leaf = next((t for t in tensors if _blendable(t)), tensors[0])
    if leaf.ndim == 0:
        raise ValueError("x is a 0-dim tensor; mixing needs a leading batch dimension")
    return leaf.shape[0], leaf.device, leaf


def _tensor_frame(x) -> bool:
    """Whether ``x`` is a ``torch_frame.TensorFrame`` (checked by name: torch_frame is never imported here)."""
    t = type(x)
    return t.__name__ == "TensorFrame" and t.__module__.split(".")[0] == "torch_frame"


def _leaf_or_none(x):
    """The leaf :func:`_batch_info` would return, or ``None`` for a batch it refuses (the call then says why)."""
    try:
        return _batch_info(x)[2]
    except (TypeError, ValueError):
        return None


def worker_generator(generator, cache: dict):
    """``generator`` in the main process; in a DataLoader worker, a generator of the worker's own.

    The worker's generator is seeded from ``generator.initial_seed()`` and the worker's seed
    (``get_worker_info().seed``: the loader's per-epoch base seed plus the worker id), so two
    workers never draw the same numbers and a seeded loader repeats exactly. ``cache`` holds the
    worker's generator between calls: keep it on the object that lives as long as the loader.
    """
    if generator is None or torch.compiler.is_compiling():
        return generator
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is None:
        return generator
    key = (info.id, info.seed)
    if cache.get("key") != key:
        seed = mix_seed(generator.initial_seed(), info.seed)
        cache["gen"] = torch.Generator(device=generator.device).manual_seed(seed)
        cache["key"] = key
    return cache["gen"]


def _label_key(d: dict):
    """torchvision's rule for a dict: the key ``"labels"`` in any case, else the first key containing ``"label"``."""
    keys = [k for k in d if isinstance(k, str)]
    return next((k for k in keys if k.lower() == "labels"), None) or next((k for k in keys if "label" in k.lower()),
                                                                         None)


def _default_labels(batch):
    """torchvision's rule for a batch given alone: the second item of an ``(inputs, labels)`` pair (a tensor,
    or a dict holding them, as detection targets do), or a dict's label key (:func:`_label_key`).
    Returns ``(key, labels)`` (``key`` is ``(1, dict_key)`` for a pair whose second item is a dict) or None."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        if isinstance(batch[1], torch.Tensor):
            return 1, batch[1]
        if isinstance(batch[1], dict) and (key := _label_key(batch[1])) is not None:
            return (1, key), batch[1][key]
    if isinstance(batch, dict) and (key := _label_key(batch)) is not None:
        return key, batch[key]
    return None


_OWN = object()  # "the mixer's own setting" (None is a setting: no num_classes)


def target_for(mixer, y, params: MixParams, *, num_classes=_OWN, label_smoothing=_OWN) -> MixedTarget:
    """The target of labels ``y`` under ``params`` by ``mixer``'s label rule: :meth:`Mixer.target` for a
    :class:`Mixer` (stateful label rules included), else ``MixedTarget`` with the ``target_params`` hook if any."""
    if isinstance(mixer, Mixer):
        return mixer.target(y, params, num_classes=num_classes, label_smoothing=label_smoothing)
    return MixedTarget(y, label_params(mixer, params, y), num_classes=None if num_classes is _OWN else num_classes,
                       label_smoothing=0.0 if label_smoothing is _OWN else label_smoothing)


def keeps_label_state(mixer) -> bool:
    """Whether ``mixer``'s labels are more than a rule over this batch's ``y`` (it overrides :meth:`Mixer.target`,
    as RecursiveMix does): such a target cannot be rebuilt from sharded or gathered labels."""
    return isinstance(mixer, Mixer) and type(mixer).target is not Mixer.target


def label_params(mixer, params: MixParams, y):
    """The parameters ``mixer`` mixes labels ``y`` with (its ``target_params`` hook; the inputs' own otherwise)."""
    hook = getattr(mixer, "target_params", None)
    return params if hook is None or y is None else hook(params, y)


def identity_params(B: int, device) -> MixParams:
    """Parameters that leave every row as it is (``lam`` 1, each row its own partner)."""
    return MixParams(torch.ones(B, device=device), torch.arange(B, device=device))


class Mixer:
    """The base of every mixlab mixing method: one call protocol, shared options, hooks.

    Calling a mixer with ``(x, y)`` draws a :class:`~mixlab.MixParams` (the only random step),
    mixes ``x`` (a tensor or nested batch) and returns ``(mixed_x, target)``; ``.sample(x)``
    draws the parameters alone, for mixing side tensors with the same randomness. See the module
    docstring for the hooks a method supplies.

    Args (shared by every method, keyword-only):
        mode: ``"batch"`` (one draw for the batch), ``"sample"`` (one per row), or ``"pair"``
            where the method supports it (MixUp); default: the method's ``default_mode``.
        p: probability that a row (in ``"batch"`` mode: the batch) is mixed at all.
        pairing: ``"permutation"``, ``"flip"`` or ``"roll"`` (partners; see :mod:`mixlab.pairing`).
        enabled: ``False`` passes batches through unmixed (targets with ``lam`` 1); settable.
        generator: random generator on the batch's device (per-worker streams in a DataLoader).
        num_classes, label_smoothing: defaults for the returned target (both of its routes).
        inplace: overwrite the caller's batch instead of allocating a new one.
        roles: leaf roles for :func:`mixlab.mix` (``{"mask": "paste"}``...).
        soft: return dense ``(B, C)`` soft labels (torchvision's form) instead of a
            :class:`~mixlab.MixedTarget` (needs ``num_classes`` or class-index labels).
        labels_getter: how ``t(batch)`` finds the labels: ``"default"`` (torchvision's rule),
            a callable ``batch -> labels``, or ``None`` (the batch has no labels).

    After construction, setting an attribute that is not one of the mixer's options raises
    (``t.mixup_enabled = False`` is timm's name, not mixlab's: it would be ignored silently).
    """

    modes: tuple = ("batch", "sample")
    default_mode: str = "batch"
    unsupported: tuple = ()  # shared options this method has no use for: refused when given

    def __init__(self, *, mode=None, p=1.0, pairing="permutation", enabled=True, generator=None, num_classes=None,
                 label_smoothing=0.0, inplace=False, roles=None, soft=False, labels_getter="default", **unknown):
        if unknown:
            known = sorted(inspect.signature(type(self)).parameters)
            raise TypeError(f"{type(self).__name__} has no option {sorted(unknown)[0]!r}; its options are {known}")
        given = dict(pairing=(pairing, "permutation"), num_classes=(num_classes, None),
                     label_smoothing=(label_smoothing, 0.0), soft=(soft, False))
        for name in self.unsupported:
            if given[name][0] != given[name][1]:
                raise TypeError(f"{type(self).__name__} has no option {name!r} ({self._why(name)})")
        self.mode = V.choice(self.default_mode if mode is None else mode, "mode", self.modes)
        self.p = V.probability(p)
        if "pairing" not in self.unsupported:
            self.pairing = V.choice(pairing, "pairing", PAIRINGS)
            if self.mode == "pair" and self.pairing != "flip":
                raise ValueError("mode='pair' shares lam within flip pairs: pass pairing='flip' with it")
        self.enabled = enabled
        self.generator = V.generator(generator)
        self.num_classes = V.num_classes(num_classes)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.inplace = bool(inplace)
        self.roles = roles
        self.soft = bool(soft)
        if labels_getter is not None and labels_getter != "default" and not callable(labels_getter):
            raise TypeError(f"labels_getter must be 'default', None or a callable batch -> labels, got "
                            f"{V.describe(labels_getter)}")
        self.labels_getter = labels_getter
        self._worker = {}

    def _why(self, name: str) -> str:
        return "it draws its own partners" if name == "pairing" else "its targets are not class labels"

    # -- class construction: the protocol is final, options are fixed after __init__ --------------
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _HOOKS_ONLY:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} defines {name}: Mixer.sample and Mixer.__call__ are the one call "
                                "protocol; supply the draw / draw_pairs / target_params hooks instead")
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            init(self, *args, **kw)
            if type(self) is cls:  # the most derived constructor has run: options are fixed
                object.__setattr__(self, "_frozen", True)
        wrapped.__signature__ = _merged_signature(cls, init)
        cls.__init__ = wrapped

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False) and not name.startswith("_") and name not in self.__dict__:
            options = sorted(k for k in self.__dict__ if not k.startswith("_"))
            raise AttributeError(f"{type(self).__name__} has no option {name!r}; its options are {options}")
        if name == "enabled":
            value = bool(value)
        object.__setattr__(self, name, value)

    @property
    def _gen(self):
        return worker_generator(self.generator, self._worker)

    # -- hooks ------------------------------------------------------------------------------------
    def distinct(self, B: int) -> int:
        """How many distinct draws the mode needs: 1 in ``"batch"`` mode (0 for an empty batch), else ``B``."""
        return min(B, 1) if self.mode == "batch" else B

    def draw_pairs(self, B: int, y, g, device) -> MixParams:
        """``lam`` ``(B,)`` and partners ``(B,)`` before any region (see the module docstring)."""
        alpha = getattr(self, "alpha", None)
        if alpha is not None:
            return sample_params(B, alpha=alpha, mode=self.mode, p=self.p, pairing=self.pairing, generator=g,
                                 device=device)
        n = self.distinct(B)
        active = torch.rand(n, device=device, **rng(g)) < self.p if self.p < 1 else torch.ones(n, dtype=torch.bool,
                                                                                                 device=device)
        lam = torch.where(active, 0.0, 1.0).to(torch.float32)
        lam = lam.expand(B).contiguous() if n != B else lam
        return MixParams(lam, partner_index(B, self.pairing, generator=g, device=device))

    def draw(self, leaf: torch.Tensor, lam: torch.Tensor, index: torch.Tensor, g, *, y=None) -> Region | None:
        """The region the method pastes or blends under, or ``None`` for a plain blend."""
        return None

    def target_params(self, params: MixParams, y: torch.Tensor) -> MixParams:
        """The parameters the labels are mixed with (default: the inputs')."""
        return params

    # -- the protocol -------------------------------------------------------------------------------
    def sample(self, x, y=None, **context) -> MixParams:
        """Draw the :class:`~mixlab.MixParams` for batch ``x`` (``y``: the labels, for methods that use them;
        ``context``: method inputs such as PuzzleMix's ``saliency``)."""
        B, device, leaf = _batch_info(x)
        if not self.enabled:
            return identity_params(B, device)
        if 0 in leaf.shape[1:]:  # no positions to mix: the share kept is undefined (SmoothMix's mean would be NaN)
            raise ValueError(f"{type(self).__name__} cannot mix inputs with an empty dimension: got shape "
                             f"{tuple(leaf.shape)} (every dimension after the batch must be at least 1)")
        g = self._gen
        pairs = self.draw_pairs(B, y, g, device)
        region = self.draw(leaf, pairs.lam, pairs.index, g, y=y, **context)
        if region is None:
            return pairs
        return MixParams(region.lam, pairs.index, region)

    def target(self, y: torch.Tensor, params: MixParams, *, partner=None, num_classes=_OWN,
               label_smoothing=_OWN) -> MixedTarget:
        """The :class:`~mixlab.MixedTarget` of labels ``y`` for inputs mixed with ``params`` (the method's label rule
        applied, its ``num_classes`` and ``label_smoothing`` carried unless the caller gives its own, as the
        Hugging Face collator does): what integrations that mix the inputs themselves (after :meth:`sample`) use,
        so no label rule is lost on the way. Methods whose labels are not a rule over ``y`` (RecursiveMix keeps
        earlier batches' labels) override this, not :meth:`target_params`."""
        return MixedTarget(y, self.target_params(params, y), partner=partner,
                           num_classes=self.num_classes if num_classes is _OWN else num_classes,
                           label_smoothing=self.label_smoothing if label_smoothing is _OWN else label_smoothing)

    def _target(self, y, params):
        target = self.target(y, params)
        return target.soft() if self.soft else target

    def _labels(self, batch):
        if self.labels_getter is None:
            return None
        if self.labels_getter == "default":
            return _default_labels(batch)
        return "getter", self.labels_getter(batch)

    def _mix(self, x, y, context):
        def call():
            params = self.sample(x, y, **context)
            return mix(x, params, inplace=self.inplace, roles=self.roles), params

        leaf = _leaf_or_none(x)
        if leaf is None:
            return call()
        # On the CPU the whole call (draw and mix) runs with torch's threads or one thread, whichever is faster now
        # (_fast.paced): a method of a few parallel ops stalls on every one of them when the cores are shared.
        kind = f"call:{type(self).__name__}:{leaf.dtype}:{leaf.numel().bit_length()}"
        return _fast.paced_call(kind, leaf, leaf.numel(), call)

    def __call__(self, x, y=None, **context):
        """Mix a batch.

        ``t(x, y)`` returns ``(mixed_x, target)``. ``t(batch)`` alone finds the labels as
        torchvision does (the second item of an ``(inputs, labels)`` pair, or a dict's
        ``"labels"`` key, else its first key containing ``"label"``; or ``labels_getter``) and
        returns the batch's structure with the inputs mixed and the labels replaced by the target.
        No labels found is an error (inputs are never mixed with their labels left unmixed);
        ``labels_getter=None`` mixes a batch that has no labels and returns it alone.
        The target is a :class:`MixedTarget`, or with ``soft=True`` its ``(B, C)`` float rows (what
        ``nn.CrossEntropyLoss`` and torchvision's MixUp/CutMix give). ``context`` passes method
        inputs on (PuzzleMix's ``saliency=``).

        Raises:
            TypeError: when ``x`` has no leaf that can be mixed (integer token ids): the labels
                are never mixed alone.
            ValueError: when ``t(batch)`` finds no labels (see above).
            BatchTypeError: (a TypeError and a ValueError) when the batch or the labels are not tensors.
        """
        if _tensor_frame(x):  # a pytorch-frame batch: FeatMix mixes its columns (methods/_torch_frame.py)
            from .methods._torch_frame import call_frame
            return call_frame(self, x, y, context)
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise BatchTypeError(f"y (the labels) must be a torch.Tensor, got {V.describe(y)}")
            mixed, params = self._mix(x, y, context)
            return mixed, self._target(y, params)
        found = self._labels(x)
        if found is None:
            if self.labels_getter is None:  # no labels by design
                return self._mix(x, None, context)[0]
            _batch_info(x)  # a batch of the wrong type (a PIL image) says so first
            got = f"{type(x).__name__} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else \
                f"a {type(x).__name__}"
            raise ValueError(f"{type(self).__name__}(batch) found no labels in the batch ({got}): give an (inputs, "
                             "labels) pair, a dict with a 'labels' key, or call t(inputs, labels); pass "
                             "labels_getter=batch -> labels for another layout, or labels_getter=None to mix a batch "
                             "that has no labels (inputs are never mixed while their labels stay unmixed)")
        return self._call_batch(x, found, context)

    def _call_batch(self, x, found, context):
        key, labels = found
        if key == "getter":
            if not isinstance(x, dict):
                raise TypeError("labels_getter works on dict batches; call the transform as t(inputs, labels)")
            key = next((k for k, v in x.items() if v is labels), None)
            if key is None:
                raise ValueError("labels_getter must return one of the batch dict's values (the labels tensor)")
        if not isinstance(labels, torch.Tensor):
            raise BatchTypeError(f"the labels found in the batch must be a torch.Tensor, got {V.describe(labels)}")
        if isinstance(x, dict):
            # values that are neither tensors nor containers (ids as strings, paths...) pass through untouched
            inputs = {k: v for k, v in x.items() if k != key and isinstance(v, (torch.Tensor, dict, list, tuple))}
            mixed, params = self._mix(inputs, labels, context)
            out = {k: mixed.get(k, v) for k, v in x.items()}
            out[key] = self._target(labels, params)
            return out if type(x) is dict else type(x)(out)
        mixed, params = self._mix(x[0], labels, context)
        target = self._target(labels, params)
        if isinstance(key, tuple):  # (inputs, {"labels": ...}): the dict back with its labels replaced
            target = {**x[1], key[1]: target}
        return type(x)((mixed, target))

    def __repr__(self):
        own = [n for n in inspect.signature(type(self)).parameters if n not in COMMON_OPTIONS and hasattr(self, n)]
        shown = [f"{n}={getattr(self, n)!r}" for n in own] + [f"mode={self.mode!r}", f"p={self.p}"]
        return f"{type(self).__name__}({', '.join(shown)})"


def _merged_signature(cls, init) -> inspect.Signature:
    """The method's own parameters followed by the shared ones (what ``help()`` and IDEs show)."""
    own = [p for p in inspect.signature(init).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in own}
    common = [p for name, p in inspect.signature(Mixer.__init__).parameters.items()
              if name != "self" and name not in names and name not in cls.unsupported and p.kind is not p.VAR_KEYWORD]
    common = [p.replace(default=cls.default_mode) if p.name == "mode" else p for p in common]
    return inspect.Signature(own + common)
