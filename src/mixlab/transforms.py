"""``MixUp``, ``CutMix`` and ``MixUpOrCutMix``: thin callables whose state is their configuration.

Calling one with ``(x, y)`` draws a :class:`MixParams` (the only random step), mixes ``x``
(a tensor or nested batch) and returns ``(mixed_x, MixedTarget)``. ``.sample(x)`` draws the
parameters alone, for mixing side tensors with the same randomness.

Convention: ``lam`` weights the original row (the paper, timm); rows are paired by a random
permutation unless ``pairing`` says otherwise. One spelling per option: ``alpha``, ``p``,
``mode`` in ``"batch" | "sample" | "pair"``; timm's names live in its adapter.

Random streams: with ``generator=`` every draw comes from it. Inside a ``DataLoader`` worker
(a transform in ``collate_fn``), each worker draws from its own generator seeded from the
generator's seed and the worker's seed (``get_worker_info().seed``, which the loader derives
from its base seed and the worker id), so workers never repeat each other's draws, epochs
differ, and a run with a seeded loader repeats exactly.
"""
from __future__ import annotations

import functools

import torch

from . import _validate as V
from ._tree import tree_map_with_path
from .ops import _blendable, mix
from .params import MixParams, check_mode, sample_box, sample_params
from .pairing import check_pairing, partner_index
from .regions import Box
from .sampling import mix_seed, rng, sample_beta
from .targets import MixedTarget

__all__ = ["MixUp", "CutMix", "MixUpOrCutMix", "RandomChoice", "mix_pair", "apply_schedule", "check_schedule"]


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


def worker_generator(generator, cache: dict):
    """``generator`` in the main process; in a DataLoader worker, a generator of the worker's own.

    The worker's generator is seeded from ``generator.initial_seed()`` and the worker's seed
    (``get_worker_info().seed``: the loader's per-epoch base seed plus the worker id), so two
    workers never draw the same numbers and a seeded loader repeats exactly.
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


class BatchTypeError(TypeError, ValueError):
    """A batch or labels of the wrong type (a PIL image, labels that are not a tensor).

    A ``TypeError`` by mixlab's convention and a ``ValueError`` as torchvision's MixUp/CutMix raise for
    the same inputs, so code written for either catches it.
    """


def _label_key(d: dict):
    """torchvision's rule for a dict: the key ``"labels"`` in any case, else the first key containing ``"label"``."""
    keys = [k for k in d if isinstance(k, str)]
    return next((k for k in keys if k.lower() == "labels"), None) or next((k for k in keys if "label" in k.lower()),
                                                                         None)


def _default_labels(batch, num_classes=None):
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


class _Mixer:
    """What every mixlab transform shares: the call protocol, label finding, ``enabled``, ``soft``.

    After construction, setting an attribute that is not one of the transform's options raises
    (``t.mixup_enabled = False`` is timm's name, not mixlab's: it would be ignored silently).
    """

    def __init__(self, *, generator, num_classes, label_smoothing, inplace, roles, soft=False,
                 labels_getter="default"):
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
        self.enabled = True  # False: batches pass through unmixed (targets with lam 1)
        self._worker = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            init(self, *args, **kw)
            if type(self) is cls:  # the most derived constructor has run: options are fixed
                object.__setattr__(self, "_frozen", True)
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

    def sample(self, x) -> MixParams:  # pragma: no cover - abstract
        raise NotImplementedError

    def _base_params(self, B: int, device):
        """What every region method draws first: ``lam ~ Beta(alpha)`` and partners with ``p`` applied,
        and how many distinct masks the mode needs (1 in ``"batch"`` mode, else ``B``)."""
        g = self._gen
        base = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing,
                             generator=g, device=device)
        return base, (min(B, 1) if self.mode == "batch" else B), g

    def _set_box_options(self, mode, pairing, correct_lam, box_dims) -> None:
        """Options shared by the transforms that cut boxes (CutMix, MixUpOrCutMix)."""
        self.mode = check_mode(mode, ("batch", "sample"))
        self.pairing = check_pairing(pairing)
        self.correct_lam = bool(correct_lam)
        self.box_dims = None if box_dims is None else V.integer(box_dims, "box_dims", minimum=1)

    def _params(self, x) -> MixParams:
        if self.enabled:
            return self.sample(x)
        B, device, _ = _batch_info(x)
        return MixParams(torch.ones(B, device=device), torch.arange(B, device=device))

    def _target(self, y, params):
        target = MixedTarget(y, params, num_classes=self.num_classes, label_smoothing=self.label_smoothing)
        return target.soft() if self.soft else target

    def _labels(self, batch):
        if self.labels_getter is None:
            return None
        if self.labels_getter == "default":
            return _default_labels(batch, self.num_classes)
        return "getter", self.labels_getter(batch)

    def __call__(self, x, y=None):
        """Mix a batch.

        ``t(x, y)`` returns ``(mixed_x, target)``. ``t(batch)`` alone finds the labels as
        torchvision does (the second item of an ``(inputs, labels)`` pair, or a dict's
        ``"labels"`` key, else its first key containing ``"label"``; or ``labels_getter``) and
        returns the batch's structure with the inputs mixed and the labels replaced by the target.
        No labels found is an error (inputs are never mixed with their labels left unmixed);
        ``labels_getter=None`` mixes a batch that has no labels and returns it alone.
        The target is a :class:`MixedTarget`, or with ``soft=True`` its ``(B, C)`` float rows (what
        ``nn.CrossEntropyLoss`` and torchvision's MixUp/CutMix give).

        Raises:
            TypeError: when ``x`` has no leaf that can be mixed (integer token ids): the labels
                are never mixed alone.
            ValueError: when ``t(batch)`` finds no labels (see above).
            BatchTypeError: (a TypeError and a ValueError) when the batch or the labels are not tensors.
        """
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise BatchTypeError(f"y (the labels) must be a torch.Tensor, got {V.describe(y)}")
            params = self._params(x)
            return mix(x, params, inplace=self.inplace, roles=self.roles), self._target(y, params)
        found = self._labels(x)
        if found is None:
            if self.labels_getter is None:  # no labels by design
                return mix(x, self._params(x), inplace=self.inplace, roles=self.roles)
            _batch_info(x)  # a batch of the wrong type (a PIL image) says so first
            got = f"a {type(x).__name__}"
            if isinstance(x, torch.Tensor):
                got = f"{type(x).__name__} of shape {tuple(x.shape)}"
            raise ValueError(f"{type(self).__name__}(batch) found no labels in the batch ({got}): give an (inputs, "
                             "labels) pair, a dict with a 'labels' key, or call t(inputs, labels); pass "
                             "labels_getter=batch -> labels for another layout, or labels_getter=None to mix a batch "
                             "that has no labels (inputs are never mixed while their labels stay unmixed)")
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
            params = self._params(inputs)
            mixed = mix(inputs, params, inplace=self.inplace, roles=self.roles)
            out = {k: mixed.get(k, v) for k, v in x.items()}
            out[key] = self._target(labels, params)
            return out if type(x) is dict else type(x)(out)
        params = self._params(x[0])
        mixed = mix(x[0], params, inplace=self.inplace, roles=self.roles)
        target = self._target(labels, params)
        if isinstance(key, tuple):  # (inputs, {"labels": ...}): the dict back with its labels replaced
            target = {**x[1], key[1]: target}
        return type(x)((mixed, target))


class MixUp(_Mixer):
    """Mixup (Zhang et al. 2018): ``x = lam * x + (1 - lam) * x[index]``, ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta concentration; 0 disables mixing. Default 1.0 (the paper's CIFAR setting,
            timm, torchvision); fastai's MixUp uses 0.4, keras.io's mixup example 0.2.
        mode: ``"batch"`` (one lambda per batch, the paper), ``"sample"`` (one per row, fastai)
            or ``"pair"`` (one per flip pair, timm; needs ``pairing="flip"``).
        keep_dominant: fastai's ``lam = max(lam, 1 - lam)``.
        p: probability that a row (in batch mode: the batch) is mixed at all.
        pairing: ``"permutation"``, ``"flip"`` or ``"roll"``.
        k: rows per mix; ``k > 2`` draws Dirichlet(alpha) weights.
        generator: random generator on the batch's device (per-worker streams in a DataLoader).
        num_classes, label_smoothing: defaults for the returned target (both of its routes).
        inplace: overwrite the caller's batch instead of allocating a new one.
        roles: leaf roles for :func:`mixlab.mix` (``{"mask": "paste"}``...).

    Example:
        >>> import torch, mixlab
        >>> mixup = mixlab.MixUp(alpha=0.4, mode="sample", generator=torch.Generator().manual_seed(0))
        >>> x, target = mixup(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> x.shape, target.soft(num_classes=10).shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    def __init__(self, alpha=1.0, *, mode="batch", keep_dominant=False, p=1.0, pairing="permutation", k=2,
                 generator=None, num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.p = V.probability(p)
        self.mode = check_mode(mode)
        self.keep_dominant = bool(keep_dominant)
        self.pairing = check_pairing(pairing)
        self.k = V.integer(k, "k", minimum=2)
        sample_params(0, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing, k=self.k)  # validate

    def sample(self, x) -> MixParams:
        B, device, _ = _batch_info(x)
        return sample_params(B, alpha=self.alpha, mode=self.mode, keep_dominant=self.keep_dominant, p=self.p,
                             pairing=self.pairing, k=self.k, generator=self._gen, device=device)

    def __repr__(self):
        return (f"MixUp(alpha={self.alpha}, mode={self.mode!r}, keep_dominant={self.keep_dominant}, "
                f"p={self.p}, pairing={self.pairing!r}, k={self.k})")


def _region_shape(leaf: torch.Tensor, box_dims, name: str = "CutMix") -> tuple:
    D = leaf.ndim - 2 if box_dims is None else box_dims
    if D < 1 or D > leaf.ndim - 1:
        raise ValueError(
            f"{name} needs inputs shaped (B, C, *spatial) with 1 to 3 spatial dims (or box_dims set), "
            f"got shape {tuple(leaf.shape)} with box_dims={box_dims!r}"
        )
    return tuple(leaf.shape[-D:])


def _cut(lam, B, shape, mode, correct_lam, generator):
    """Boxes for the requested ``lam`` ``(B,)``: one shared box in batch mode, else one per row."""
    if mode == "batch":
        box, lam_c = sample_box(lam[:1], shape, generator=generator)
        box, lam_c = Box(box.box.expand(B, -1, -1).contiguous(), shape), lam_c.expand(B).contiguous()
    else:
        box, lam_c = sample_box(lam, shape, generator=generator)
    return box, (lam_c if correct_lam else lam)


class CutMix(_Mixer):
    """CutMix (Yun et al. 2019): paste a box of the partner into each row, on 1-D, 2-D or 3-D data.

    The box's volume fraction is ``1 - lam`` (up to rounding and clipping) and, with
    ``correct_lam=True`` (default), the returned ``lam`` is exactly ``1 - pasted / total``.
    The last ``box_dims`` dimensions are cut (default: all but batch and channel, so
    ``(B, C, T)`` audio, ``(B, C, H, W)`` images and ``(B, C, D, H, W)`` volumes all work).
    Integer maps over the same dims (segmentation masks) are pasted with the same boxes, and
    dense targets follow them (see :class:`mixlab.MixedTarget`).

    Args:
        alpha: Beta concentration; default 1.0 (the CutMix paper).
        mode: ``"batch"`` (one box for the batch, as timm and torchvision) or ``"sample"`` (one
            box per row).
        correct_lam: set ``lam`` to the exact pasted fraction. ``False`` keeps the drawn
            value (timm's option), which mislabels clipped boxes; kept only for comparison.
        box_dims: how many trailing dims are cut (default ``x.ndim - 2``).
        patch_size: snap boxes to a vision transformer's patch grid (boxes of whole patches, so
            every token comes from one image); the cut dims must be multiples of it.
        Other arguments as :class:`MixUp`.

    Example:
        >>> import torch, mixlab
        >>> audio = torch.randn(4, 1, 16000)                      # (B, C, T): CutMix along time
        >>> mixed, target = mixlab.CutMix(alpha=1.0, mode="sample")(audio, torch.tensor([0, 1, 2, 3]))
        >>> mixed.shape, target.params.region.box.shape
        (torch.Size([4, 1, 16000]), torch.Size([4, 1, 2]))
    """

    def __init__(self, alpha=1.0, *, mode="batch", p=1.0, pairing="permutation", generator=None,
                 num_classes=None, label_smoothing=0.0, correct_lam=True, box_dims=None, patch_size=None,
                 inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.p = V.probability(p)
        self.patch_size = None if patch_size is None else V.integer(patch_size, "patch_size", minimum=1)
        self._set_box_options(mode, pairing, correct_lam, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _region_shape(leaf, self.box_dims, type(self).__name__)
        base, _, g = self._base_params(B, device)
        P = self.patch_size
        if P is None:
            box, lam = _cut(base.lam, B, shape, self.mode, self.correct_lam, g)
            return MixParams(lam, base.index, box)
        if any(s % P for s in shape):
            raise ValueError(f"CutMix(patch_size={P}): the cut dims {shape} must be multiples of the patch size")
        grid_box, _ = _cut(base.lam, B, tuple(s // P for s in shape), self.mode, True, g)  # on the ViT's grid
        box = Box(grid_box.box * P, shape)  # whole patches: every token is one image's
        return MixParams(box.kept() if self.correct_lam else base.lam, base.index, box)

    def __repr__(self):
        return f"CutMix(alpha={self.alpha}, mode={self.mode!r}, p={self.p}, pairing={self.pairing!r})"


class MixUpOrCutMix(_Mixer):
    """Either MixUp or CutMix, CutMix with probability ``switch_prob`` (what timm's ``Mixup`` does).

    In ``"batch"`` mode one choice is made for the whole batch; in ``"sample"`` mode each row
    chooses, and both kinds of row share one call (MixUp rows carry an empty box marked
    ``Box.linear``). The choice is drawn on the device: no host sync. Because some rows may be
    blended, integer maps in the batch are refused (pass them as the target instead).

    Args:
        mixup_alpha, cutmix_alpha: Beta concentrations; 0 turns that branch off.
        switch_prob: probability of CutMix when both are on.
        p: probability that a row (in batch mode: the batch) is mixed at all.
        Other arguments as :class:`MixUp` and :class:`CutMix`.
    """

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=1.0, *, switch_prob=0.5, p=1.0, mode="batch",
                 pairing="permutation", generator=None, num_classes=None, label_smoothing=0.0,
                 correct_lam=True, box_dims=None, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.mixup_alpha = V.alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_alpha = V.alpha(cutmix_alpha, "cutmix_alpha")
        self.switch_prob = V.probability(switch_prob, "switch_prob")
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, correct_lam, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _region_shape(leaf, self.box_dims, type(self).__name__)
        g = self._gen
        if B <= 1 or self.p == 0 or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return MixParams(torch.ones(B, device=device), torch.arange(B, device=device))
        n = 1 if self.mode == "batch" else B
        ones = torch.ones(n, device=device)
        lam_mix = sample_beta(n, self.mixup_alpha, generator=g, device=device) if self.mixup_alpha > 0 else ones
        lam_cut = sample_beta(n, self.cutmix_alpha, generator=g, device=device) if self.cutmix_alpha > 0 else ones
        if self.mixup_alpha == 0:
            use_cut = torch.ones(n, dtype=torch.bool, device=device)
        elif self.cutmix_alpha == 0:
            use_cut = torch.zeros(n, dtype=torch.bool, device=device)
        else:
            use_cut = torch.rand(n, device=device, **rng(g)) < self.switch_prob
        if self.p < 1:
            mixed = torch.rand(n, device=device, **rng(g)) < self.p
            lam_mix = torch.where(mixed, lam_mix, ones)
            lam_cut = torch.where(mixed, lam_cut, ones)
        if n == 1:
            lam_mix, lam_cut, use_cut = lam_mix.expand(B), lam_cut.expand(B), use_cut.expand(B)
        box, lam_cut = _cut(lam_cut, B, shape, self.mode, self.correct_lam, g)
        boxes = torch.where(use_cut[:, None, None], box.box, torch.zeros_like(box.box))  # MixUp rows: empty box
        lam = torch.where(use_cut, lam_cut, lam_mix).contiguous()
        index = partner_index(B, self.pairing, generator=g, device=device)
        return MixParams(lam, index, Box(boxes, shape, linear=(~use_cut).contiguous()))

    def __repr__(self):
        return (f"MixUpOrCutMix(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"switch_prob={self.switch_prob}, p={self.p}, mode={self.mode!r})")


class RandomChoice:
    """One of several transforms per call, chosen with the given probabilities (per batch).

    ``RandomChoice([MixUp(0.8), CutMix(1.0), FMix()], p=[0.4, 0.4, 0.2])``: every call draws one
    transform (from a CPU generator, so no device sync) and returns what it returns; ``.sample(x)``
    draws the parameters the same way. For a per-row choice between MixUp and CutMix use
    :class:`MixUpOrCutMix` (one call mixes both kinds of row).

    Args:
        transforms: mixlab transforms (anything with ``__call__(x, y)`` and ``sample(x)``).
        p: their probabilities (default: equal); normalised if they do not sum to 1.
        generator: a CPU ``torch.Generator`` for the choice (the transforms keep their own).
    """

    def __init__(self, transforms, p=None, *, generator=None):
        if not isinstance(transforms, (list, tuple)) or not transforms:
            raise ValueError(f"transforms must be a non-empty list of mixlab transforms, got {transforms!r}")
        for i, t in enumerate(transforms):
            if not callable(t) or not callable(getattr(t, "sample", None)):
                raise TypeError(f"transforms[{i}] must be a mixlab transform (callable with .sample), got "
                                f"{type(t).__name__}")
        weights = [1.0] * len(transforms) if p is None else [V.real(v, "p", minimum=0.0) for v in p]
        if len(weights) != len(transforms) or sum(weights) <= 0:
            raise ValueError(f"p must hold one non-negative probability per transform, not all 0, got {p!r}")
        self.transforms = list(transforms)
        self.p = [w / sum(weights) for w in weights]
        self.generator = V.generator(generator)
        if self.generator is not None and self.generator.device.type != "cpu":
            raise ValueError("RandomChoice draws its choice on the CPU: pass a CPU generator")
        self._weights = torch.tensor(self.p, dtype=torch.float64)
        self.last = None  # the transform chosen by the latest call (for logging)

    def choose(self):
        i = int(torch.multinomial(self._weights, 1, **rng(self.generator)))
        self.last = self.transforms[i]
        return self.last

    def sample(self, x) -> MixParams:
        return self.choose().sample(x)

    def __call__(self, x, y=None):
        return self.choose()(x, y)

    def __repr__(self):
        return f"RandomChoice({self.transforms!r}, p={[round(v, 4) for v in self.p]})"


def check_schedule(mixer, stop_epoch=None, alpha=None):
    """Validate the schedule options an integration takes with a transform (``stop_epoch``, ``alpha``)."""
    if stop_epoch is not None:
        stop_epoch = V.integer(stop_epoch, "stop_epoch", minimum=0)
    if alpha is not None:
        if not callable(alpha):
            raise TypeError(f"alpha schedule must be a function epoch -> alpha, got {V.describe(alpha)}")
        if not hasattr(mixer, "alpha"):
            raise ValueError(f"{type(mixer).__name__} has no single alpha to schedule")
        V.alpha(alpha(0), "alpha(0)")
    if (stop_epoch is not None or alpha is not None) and not hasattr(mixer, "enabled"):
        raise ValueError(f"{type(mixer).__name__} cannot be scheduled (it has no 'enabled' option)")
    return stop_epoch, alpha


def apply_schedule(mixer, epoch: int, *, stop_epoch=None, alpha=None) -> None:
    """Set ``mixer.enabled`` (off from ``stop_epoch`` on, timm's ``mixup_off_epoch``) and ``mixer.alpha``
    (``alpha(epoch)`` for a schedule) for ``epoch``: a pure function of the epoch, so resumed runs agree."""
    if stop_epoch is not None:
        mixer.enabled = epoch < stop_epoch
    if alpha is not None:
        mixer.alpha = V.alpha(alpha(epoch), f"alpha({epoch})")


def mix_pair(x1, y1, x2, y2, *, alpha: float = 0.2, mode: str = "sample", keep_dominant: bool = False,
             p: float = 1.0, generator=None, num_classes=None, label_smoothing: float = 0.0):
    """Two-stream mixup (keras.io's mixup example): row ``i`` of one batch with row ``i`` of another.

    ``mixed = lam * x1 + (1 - lam) * x2`` and the target mixes ``y1`` with ``y2`` likewise;
    the two batches usually come from two independently shuffled loaders over the same data.
    ``lam`` is one per row by default, as in that example.

    Returns:
        ``(mixed_x, MixedTarget)``; the target's ``params.index`` is ``arange(B)`` into ``x2``.
    """
    B, device, _ = _batch_info(x1)
    base = sample_params(B, alpha=alpha, mode=mode, keep_dominant=keep_dominant, p=p, generator=generator,
                         device=device)
    params = MixParams(base.lam, torch.arange(B, device=device))
    mixed = mix(x1, params, partner=x2)
    return mixed, MixedTarget(y1, params, partner=y2, num_classes=num_classes, label_smoothing=label_smoothing)
