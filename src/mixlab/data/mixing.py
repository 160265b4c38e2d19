"""Mixing inside PyTorch data loading: batch mixing in the collate, sample mixing in the dataset.

- :class:`MixCollate` mixes whole batches inside ``DataLoader`` workers with any mixlab transform
  (cheap on uint8 images: the main process receives batches that are already mixed).
- :class:`MixupDataset` is sample-level mixing inside ``Dataset.__getitem__`` (a fraction ``p`` of samples is
  mixed with a random partner in ``__getitem__``), done correctly. It loads two samples for each
  mixed one and mixes one pair at a time, so it is slower than batch mixing; prefer
  :class:`MixCollate` or :class:`mixlab.MixUp` unless you need per-sample partners from the
  whole dataset.

Both take their schedule as a pure function of the epoch. The epoch lives in shared memory
(:class:`SharedEpoch`, a ``multiprocessing.Value``), so ``set_epoch(e)`` called in the main
process before ``iter(loader)`` reaches workers that were started earlier
(``persistent_workers=True``): a worker reads the value when it builds each batch, and a new
epoch's indices are only sent to workers after ``iter(loader)``.

Convention: ``lam`` weights the original row: ``mixed = lam * x + (1 - lam) * x[index]``.
"""
from __future__ import annotations

import multiprocessing
from typing import Callable, Union

import torch

from .._tree import tree_map_with_path
from ..ops import mix
from ..params import MixParams
from .. import _validate as V
from ..sampling import mix_seed, sample_beta
from ..targets import MixedTarget
from .. import CutMix, MixUp
from ..transforms import apply_schedule, check_schedule

__all__ = ["MixCollate", "MixupDataset", "SharedEpoch", "Linear", "mix_seed"]

Schedule = Union[float, Callable[[int], float]]


class SharedEpoch:
    """The current epoch in shared memory, readable from ``DataLoader`` worker processes."""

    def __init__(self, epoch: int = 0):
        self._value = multiprocessing.Value("q", int(epoch), lock=False)

    def get(self) -> int:
        return int(self._value.value)

    def set(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self._value.value = epoch


class Linear:
    """A picklable linear schedule: ``start`` at epoch 0 to ``end`` at ``num_epochs``, then flat.

    Example: ``MixCollate(MixUp(0.4, inplace=True), alpha_schedule=Linear(0.4, 0.0, 10))`` anneals
    alpha to 0 over ten epochs.
    """

    def __init__(self, start: float, end: float, num_epochs: int):
        if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
            raise ValueError(f"num_epochs must be an int >= 1, got {num_epochs!r}")
        self.start, self.end, self.num_epochs = float(start), float(end), num_epochs

    def __call__(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.num_epochs) / self.num_epochs
        return self.start + t * (self.end - self.start)

    def __repr__(self):
        return f"Linear({self.start}, {self.end}, {self.num_epochs})"


def _resolve(value: Schedule, epoch: int, check, name: str) -> float:
    v = value(epoch) if callable(value) else value
    return check(v, name)


def _check_schedule(value, name, check):
    if callable(value):
        _resolve(value, 0, check, name)  # fail early on a schedule that returns nonsense
        return value
    return check(value, name)


def _check_stop(stop_epoch):
    if stop_epoch is not None and (isinstance(stop_epoch, bool) or not isinstance(stop_epoch, int) or stop_epoch < 0):
        raise ValueError(f"stop_epoch must be an int >= 0 or None, got {stop_epoch!r}")
    return stop_epoch


class _Epoch:
    """The current epoch, in shared memory so that ``DataLoader`` workers read what ``set_epoch`` wrote."""

    def __init__(self):
        self._epoch = SharedEpoch()

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; call it in the main process before ``iter(loader)`` each epoch."""
        self._epoch.set(epoch)


class _EpochSchedule(_Epoch):
    """alpha and p as pure functions of the epoch, and the shared epoch itself."""

    def __init__(self, alpha, p, stop_epoch):
        super().__init__()
        self.alpha = _check_schedule(alpha, "alpha", V.alpha)
        self.p = _check_schedule(p, "p", V.probability)
        self.stop_epoch = _check_stop(stop_epoch)

    def at(self, epoch: int) -> tuple[float, float]:
        """``(alpha, p)`` in force at ``epoch`` (``(0, 0)`` from ``stop_epoch`` on)."""
        if self.stop_epoch is not None and epoch >= self.stop_epoch:
            return 0.0, 0.0
        return _resolve(self.alpha, epoch, V.alpha, "alpha"), _resolve(self.p, epoch, V.probability, "p")


def _is_mixer(obj) -> bool:
    """Whether ``obj`` is a mixlab transform: callable as ``obj(x, y)``, with a ``.sample``."""
    return callable(obj) and callable(getattr(obj, "sample", None))


def _switches(mixer):
    """The ``enabled`` switches that turn ``mixer`` off.

    Returns:
        ``[mixer]`` when it has one, else the switches of every transform it chooses from (a
        :class:`mixlab.RandomChoice`), or None when some part has none.
    """
    if hasattr(mixer, "enabled"):
        return [mixer]
    members = getattr(mixer, "transforms", None)
    if not isinstance(members, (list, tuple)) or not members:
        return None
    found = [_switches(t) for t in members]
    return None if any(f is None for f in found) else [s for f in found for s in f]


def _spelling_error(options: dict) -> TypeError:
    """The one error for the old keyword spelling ``MixCollate(alpha=0.4, ...)`` or a missing mixer."""
    got = ", ".join(f"{k}={v!r}" for k, v in options.items()) if options else "no mixer"
    hint = " (pass the transform as the first argument)" if "transform" in options else ""
    return TypeError(
        "MixCollate takes the mixer to apply: MixCollate(mixer, *, base_collate=None, stop_epoch=None, "
        "alpha_schedule=None), e.g. MixCollate(mixlab.MixUp(0.4, inplace=True)); the options spelling is "
        "MixCollate.from_options(kind='mixup', alpha=0.4, p=..., mode=..., seed=..., soft=..., num_classes=...); "
        f"got {got}{hint}")


class MixCollate(_Epoch):
    """A ``collate_fn`` that mixes each batch, with one mixlab transform, in the worker that builds it.

    The mixer is built once and kept: its own generator gives the draws, so every batch draws
    anew. In a ``DataLoader`` worker a mixlab transform draws from a stream of the worker's own,
    seeded from its generator's seed and ``get_worker_info().seed`` (which the loader derives from
    its own seed and the worker id; without a generator, from the worker's global RNG, which the
    loader seeds the same way): workers never repeat each other, epochs differ, and a loader seeded
    with ``generator=torch.Generator().manual_seed(...)`` repeats exactly. In the main process
    (``num_workers=0``) the mixer's generator (or torch's global RNG) is used as is.

    Args:
        mixer: any mixlab transform (``MixUp``, ``CutMix``, ``FMix``, ``RandomChoice([...])``...:
            callable as ``mixer(x, y)`` with a ``.sample``). Build it with ``inplace=True``: the
            collated batch is fresh. ``soft=True`` on the mixer gives dense soft labels.
        base_collate: turns a list of samples into a batch ``(inputs, labels)``; default
            ``torch.utils.data.default_collate``. uint8 images are mixed in float32 and rounded
            back, so workers ship uint8.
        stop_epoch: no mixing from this epoch on (batches with ``lam = 1`` targets), through the
            mixer's ``enabled`` switch (a ``RandomChoice``'s: those of its transforms), which
            it then sets for every batch.
        alpha_schedule: a picklable function ``epoch -> alpha`` (e.g. :class:`Linear`) that sets
            ``mixer.alpha`` each epoch.

    Returns (when called with a list of samples):
        what ``mixer(inputs, labels)`` returns: ``(mixed_inputs, MixedTarget)``, or
        ``(mixed_inputs, soft_labels)`` for a mixer built with ``soft=True``. Both pickle, so
        workers send them to the main process.

    Raises:
        TypeError: without a mixer, or with the old keyword spelling (``MixCollate(alpha=0.4)``:
            use :meth:`from_options`), or when ``mixer`` is not a mixlab transform.
        ValueError: ``stop_epoch`` for a mixer with no ``enabled`` switch, ``alpha_schedule``
            for one with no single ``alpha`` (``MixUpOrCutMix``, ``RandomChoice``).

    Example:
        >>> import mixlab
        >>> collate = MixCollate(mixlab.MixUp(0.4, inplace=True), stop_epoch=8)
        >>> # loader = DataLoader(ds, 64, collate_fn=collate, num_workers=2, persistent_workers=True,
        >>> #                     generator=torch.Generator().manual_seed(0))
        >>> # for epoch in range(10):
        >>> #     collate.set_epoch(epoch)          # before iter(loader)
        >>> #     for x, target in loader: loss = target.loss(criterion, model(x.float() / 255))
    """

    def __init__(self, mixer=None, *, base_collate=None, stop_epoch: int | None = None,
                 alpha_schedule: Callable[[int], float] | None = None, **options):
        if mixer is None or options:
            raise _spelling_error(options)
        if not _is_mixer(mixer):
            hint = "; base_collate is keyword-only: MixCollate(mixer, base_collate=...)" if callable(mixer) else ""
            raise TypeError(f"mixer must be a mixlab transform (MixUp, CutMix, FMix, RandomChoice([...]): callable "
                            f"with .sample), got {V.describe(mixer)}{hint}")
        if base_collate is not None and not callable(base_collate):
            raise TypeError(f"base_collate must be callable or None, got {V.describe(base_collate)}")
        super().__init__()
        self.stop_epoch = None if stop_epoch is None else V.integer(stop_epoch, "stop_epoch", minimum=0)
        self._switch = _switches(mixer)
        if self.stop_epoch is not None and self._switch is None:
            raise ValueError(f"stop_epoch needs a mixer with an 'enabled' switch (a mixlab transform, or a "
                             f"RandomChoice of them), got {type(mixer).__name__}")
        check_schedule(mixer, None, alpha_schedule)
        self.mixer, self.base_collate, self.alpha_schedule = mixer, base_collate, alpha_schedule

    @classmethod
    def from_options(cls, base_collate=None, *, kind: str = "mixup", alpha: Schedule = 0.2, p: float = 1.0,
                     stop_epoch: int | None = None, mode: str = "batch", keep_dominant: bool = False,
                     pairing: str = "permutation", seed: int | None = None, generator: torch.Generator | None = None,
                     soft: bool = False, num_classes: int | None = None,
                     label_smoothing: float = 0.0) -> "MixCollate":
        """The options spelling: builds ``MixUp`` or ``CutMix`` (in place) and returns ``MixCollate(mixer, ...)``.

        Args:
            base_collate, stop_epoch: as :class:`MixCollate`.
            kind: ``"mixup"`` or ``"cutmix"``.
            alpha: Beta concentration, or a function ``epoch -> alpha`` (e.g. :class:`Linear`),
                which becomes the ``alpha_schedule``.
            p, mode, keep_dominant, pairing, num_classes, label_smoothing, soft: the mixer's
                options (``keep_dominant`` for MixUp only; ``soft=True`` needs ``num_classes``).
            seed: seeds the mixer's generator (``torch.Generator().manual_seed(seed)``).
            generator: the mixer's generator instead (not with ``seed``).

        Returns:
            ``MixCollate(mixer, base_collate=..., stop_epoch=..., alpha_schedule=...)``.
        """
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"kind must be 'mixup' or 'cutmix', got {kind!r}")
        if callable(p):
            raise TypeError(f"p must be a number in [0, 1], got {V.describe(p)} (MixCollate schedules alpha only; "
                            "MixupDataset takes p as a function of the epoch)")
        if seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both (seed seeds the mixer's generator)")
        if soft and num_classes is None:
            raise ValueError("soft=True needs num_classes to build dense labels, got num_classes=None")
        if keep_dominant and kind != "mixup":
            raise ValueError(f"keep_dominant applies to kind='mixup' only, got kind={kind!r}")
        if seed is not None:
            generator = torch.Generator().manual_seed(V.integer(seed, "seed"))
        schedule = alpha if callable(alpha) else None
        options = dict(mode=mode, p=p, pairing=pairing, generator=generator, num_classes=num_classes,
                       label_smoothing=label_smoothing, soft=soft, inplace=True)  # the collated batch is fresh
        start = V.alpha(alpha(0), "alpha(0)") if schedule is not None else V.alpha(alpha)
        if kind == "mixup":
            mixer = MixUp(start, keep_dominant=keep_dominant, **options)
        else:
            mixer = CutMix(start, **options)
        return cls(mixer, base_collate=base_collate, stop_epoch=stop_epoch, alpha_schedule=schedule)

    def _schedule(self, epoch: int) -> None:
        """Set the mixer's ``enabled`` and ``alpha`` for ``epoch`` (pure functions of the epoch)."""
        if self.stop_epoch is not None:
            for switch in self._switch:
                apply_schedule(switch, epoch, stop_epoch=self.stop_epoch)
        if self.alpha_schedule is not None:
            apply_schedule(self.mixer, epoch, alpha=self.alpha_schedule)

    def __call__(self, samples):
        collate = self.base_collate or torch.utils.data.default_collate
        batch = collate(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"MixCollate needs batches (inputs, labels); base_collate returned {type(batch).__name__}"
                            f"{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}")
        self._schedule(self.epoch)
        mixed, target = self.mixer(batch[0], batch[1])
        return mixed, target

    def __repr__(self):
        return (f"MixCollate({self.mixer!r}, stop_epoch={self.stop_epoch}, alpha_schedule={self.alpha_schedule!r}, "
                f"base_collate={self.base_collate!r})")


def _one_hot_row(label, num_classes: int) -> torch.Tensor:
    label = torch.as_tensor(label)
    if label.is_floating_point():
        if label.shape != (num_classes,):
            raise ValueError(f"float labels must have shape ({num_classes},), got {tuple(label.shape)}")
        return label.float()
    if label.ndim != 0:
        raise ValueError(f"integer labels must be scalars (class indices), got shape {tuple(label.shape)}")
    if not 0 <= int(label) < num_classes:
        raise ValueError(f"class label must lie in [0, {num_classes}), got {int(label)}")
    return torch.nn.functional.one_hot(label.long(), num_classes).float()


class MixupDataset(_EpochSchedule, torch.utils.data.Dataset):
    """Sample-level mixup in ``__getitem__``: each sample is mixed with probability ``p``.

    ``__getitem__(i)`` loads sample ``i``; with probability ``p`` it draws a partner ``j``
    uniformly from the whole dataset and ``lam ~ Beta(alpha, alpha)``, and returns
    ``(lam * x_i + (1 - lam) * x_j, lam * onehot(y_i) + (1 - lam) * onehot(y_j))``. Unmixed
    samples return ``(x_i, onehot(y_i))``, so every label is a soft row of ``num_classes``
    floats summing to 1. The draws are seeded by ``(seed, epoch, i)``: the same index in the
    same epoch gives the same sample in any worker and any run, and a new epoch gives new pairs.

    Slower than batch mixing: a mixed sample costs a second ``__getitem__`` (decoding, transforms)
    and a handful of small tensor operations; batch mixing (:class:`MixCollate`,
    :class:`mixlab.MixUp`) pairs rows already loaded. Measured with
    ``python examples/bench_sample_vs_batch_mixing.py --n 20000 --repeats 3`` (Fashion-MNIST
    images, batch 128, main process, one thread; 2-core CPU shared with other jobs, torch
    2.14.1): plain loading 36,580 samples/s, MixCollate 36,499, MixupDataset p=0.2 8,838,
    p=1.0 1,868.

    Args:
        dataset: map-style dataset of ``(input, label)``; inputs are tensors (or nested
            batches of tensors) of one shape; labels class indices or float rows.
        num_classes: C.
        p: fraction of samples mixed (default about 1 in 5), or ``epoch -> p``.
        alpha: Beta concentration (default 0.2), or ``epoch -> alpha``.
        stop_epoch: no mixing from this epoch on.
        seed: base seed of the per-sample draws.

    Convention: ``lam`` weights sample ``i`` (the original).
    """

    def __init__(self, dataset, num_classes: int, *, p: Schedule = 0.2, alpha: Schedule = 0.2,
                 stop_epoch: int | None = None, seed: int = 0):
        super().__init__(alpha, p, stop_epoch)
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style dataset with __getitem__ and __len__, "
                            f"got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        self.dataset = dataset
        self.num_classes = V.num_classes(num_classes)
        if self.num_classes is None:
            raise ValueError("num_classes is required")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, index: int, epoch: int) -> tuple[bool, int, float]:
        """The random choices for ``index`` at ``epoch``: ``(mixed, partner, lam)``.

        The coin and the partner come from hashes of ``(seed, epoch, index)`` (cheap for the
        unmixed majority); ``lam`` from a generator seeded the same way, only when mixing.
        """
        alpha, p = self.at(epoch)
        if alpha == 0 or p == 0 or mix_seed(self.seed, epoch, index, 0) / 2.0 ** 63 >= p:
            return False, index, 1.0
        partner = mix_seed(self.seed, epoch, index, 1) % len(self.dataset)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index, 2))
        lam = float(sample_beta(1, alpha, generator=g)[0])
        return True, partner, lam

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        label = _one_hot_row(y, self.num_classes)
        mixed, partner, lam = self.draw(index, self.epoch)
        if not mixed:
            return x, label
        x2, y2 = self.dataset[partner]
        params = MixParams(torch.tensor([lam]), torch.zeros(1, dtype=torch.long))
        x = _unbatch(_mix_one(x, x2, params))
        soft = MixedTarget(label[None], params, partner=_one_hot_row(y2, self.num_classes)[None]).soft()
        return x, soft[0]


def _mix_one(x, x2, params):
    """Mix one sample with one partner sample through :func:`mixlab.mix` (a batch of one)."""
    add_batch = lambda t, path: torch.as_tensor(t)[None]  # noqa: E731
    return mix(tree_map_with_path(add_batch, x), params, partner=tree_map_with_path(add_batch, x2))


def _unbatch(x):
    return tree_map_with_path(lambda t, path: t[0], x)
