"""Mixing inside PyTorch data loading: batch mixing in the collate, sample mixing in the dataset.

- :class:`MixCollate` mixes whole batches inside ``DataLoader`` workers (cheap on uint8
  images: the main process receives batches that are already mixed).
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
from ..transforms import CutMix, MixUp

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

    Example: ``MixCollate(alpha=Linear(0.4, 0.0, 10))`` anneals alpha to 0 over ten epochs.
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


class _EpochSchedule:
    """alpha and p as pure functions of the epoch, and the shared epoch itself."""

    def __init__(self, alpha, p, stop_epoch):
        self.alpha = _check_schedule(alpha, "alpha", V.alpha)
        self.p = _check_schedule(p, "p", V.probability)
        self.stop_epoch = _check_stop(stop_epoch)
        self._epoch = SharedEpoch()

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; call it in the main process before ``iter(loader)`` each epoch."""
        self._epoch.set(epoch)

    def at(self, epoch: int) -> tuple[float, float]:
        """``(alpha, p)`` in force at ``epoch`` (``(0, 0)`` from ``stop_epoch`` on)."""
        if self.stop_epoch is not None and epoch >= self.stop_epoch:
            return 0.0, 0.0
        return _resolve(self.alpha, epoch, V.alpha, "alpha"), _resolve(self.p, epoch, V.probability, "p")


class MixCollate(_EpochSchedule):
    """A ``collate_fn`` that mixes each batch in the ``DataLoader`` worker that builds it.

    Args:
        base_collate: turns a list of samples into a batch ``(inputs, labels)``; default
            ``torch.utils.data.default_collate``. ``inputs`` may be a tensor or a nested batch;
            uint8 images are mixed in float32 and rounded back, so workers ship uint8.
        kind: ``"mixup"`` or ``"cutmix"``.
        alpha: Beta concentration, or a function ``epoch -> alpha`` (e.g. :class:`Linear`).
        p: probability that a row is mixed, or a function ``epoch -> p``.
        stop_epoch: no mixing from this epoch on (``None``: never stop).
        mode, keep_dominant, pairing: as :class:`mixlab.MixUp` (``mode`` also for CutMix).
        seed: mixed into each worker's seed. In a worker the draws come from
            ``get_worker_info().seed`` (itself derived from the loader's seed, so seed the loader
            with ``generator=torch.Generator().manual_seed(...)``) and the epoch; in the main
            process (``num_workers=0``) from ``seed`` (default ``torch.initial_seed()``) and
            the epoch. Each worker's stream restarts at every epoch, so runs repeat.
        generator: in the main process only, draw from this generator instead (no per-epoch
            restart); ignored in workers, where a copied generator would repeat across workers.
        soft: return dense soft labels ``(B, C)`` (needs ``num_classes``) instead of a
            :class:`~mixlab.MixedTarget`.
        num_classes, label_smoothing: for the target.
        transform: any mixlab transform to mix with instead (``FMix()``, ``RandomChoice([...])``...):
            its own options and generator apply (per-worker streams), and ``stop_epoch`` still
            ends mixing; ``kind``, ``alpha``, ``p``, ``mode``... must then be left at their defaults.

    Returns (when called with a list of samples):
        ``(mixed_inputs, MixedTarget)``, or ``(mixed_inputs, soft_labels)`` with ``soft=True``.
        Batches of epochs without mixing carry a target with ``lam = 1``.

    Example:
        >>> collate = MixCollate(alpha=0.4, stop_epoch=8)
        >>> # loader = DataLoader(ds, 64, collate_fn=collate, num_workers=2, persistent_workers=True)
        >>> # for epoch in range(10):
        >>> #     collate.set_epoch(epoch)          # before iter(loader)
        >>> #     for x, target in loader: loss = target.loss(criterion, model(x.float() / 255))
    """

    def __init__(self, base_collate=None, *, kind: str = "mixup", alpha: Schedule = 0.2, p: Schedule = 1.0,
                 stop_epoch: int | None = None, mode: str = "batch", keep_dominant: bool = False,
                 pairing: str = "permutation", seed: int | None = None, generator: torch.Generator | None = None,
                 soft: bool = False, num_classes: int | None = None, label_smoothing: float = 0.0, transform=None):
        super().__init__(alpha, p, stop_epoch)
        if transform is not None:
            if not callable(transform) or not callable(getattr(transform, "sample", None)):
                raise TypeError(f"transform must be a mixlab transform (MixUp, FMix, RandomChoice...), got "
                                f"{type(transform).__name__}")
            given = {k: v for k, v in dict(kind=(kind, "mixup"), alpha=(alpha, 0.2), p=(p, 1.0), mode=(mode, "batch"),
                                           keep_dominant=(keep_dominant, False), pairing=(pairing, "permutation"),
                                           seed=(seed, None), generator=(generator, None)).items() if v[0] != v[1]}
            if given:
                raise ValueError(f"MixCollate(transform=...) draws with the transform's own options; {sorted(given)} "
                                 "would be ignored: set them on the transform")
        if base_collate is not None and not callable(base_collate):
            raise TypeError(f"base_collate must be callable or None, got {type(base_collate).__name__}")
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"kind must be 'mixup' or 'cutmix', got {kind!r}")
        V.generator(generator)
        if soft and num_classes is None:
            raise ValueError("soft=True needs num_classes to build dense labels")
        self.base_collate = base_collate
        self.kind, self.mode, self.keep_dominant, self.pairing = kind, mode, bool(keep_dominant), pairing
        self.seed, self.generator, self.soft = seed, generator, bool(soft)
        self.num_classes = V.num_classes(num_classes)
        self.label_smoothing = label_smoothing
        self.transform = transform
        self._make(1.0, 1.0, None)  # validate mode / pairing / smoothing now, not in a worker
        self._stream = None  # (key, generator) of this process: restarted when the epoch changes

    def _make(self, alpha, p, generator):
        common = dict(p=p, mode=self.mode, pairing=self.pairing, generator=generator,
                      num_classes=self.num_classes, label_smoothing=self.label_smoothing)
        if self.kind == "cutmix":
            return CutMix(alpha, inplace=True, **common)  # the collated batch is fresh: mix it in place
        return MixUp(alpha, keep_dominant=self.keep_dominant, inplace=True, **common)

    def _generator(self, epoch: int) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        if info is None and self.generator is not None:
            return self.generator
        base = info.seed if info is not None else (torch.initial_seed() if self.seed is None else self.seed)
        key = (base, epoch)
        if self._stream is None or self._stream[0] != key:
            g = torch.Generator().manual_seed(mix_seed(base, self.seed or 0, epoch))
            self._stream = (key, g)
        return self._stream[1]

    def __call__(self, samples):
        collate = self.base_collate or torch.utils.data.default_collate
        batch = collate(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"MixCollate needs batches (inputs, labels); base_collate returned {type(batch).__name__}"
                            f"{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}")
        x, y = batch
        epoch = self.epoch
        if self.transform is not None:
            if self.stop_epoch is not None and epoch >= self.stop_epoch:  # schedules end: unmixed, lam 1
                B = y.shape[0]
                params = MixParams(torch.ones(B), torch.arange(B))
                x_mixed, target = x, MixedTarget(y, params, num_classes=self.num_classes,
                                                 label_smoothing=self.label_smoothing)
            else:
                x_mixed, target = self.transform(x, y)
        else:
            alpha, p = self.at(epoch)
            mixer = self._make(alpha, p, self._generator(epoch))
            x_mixed, target = mixer(x, y)
        if isinstance(target, torch.Tensor):  # a transform built with soft=True
            return x_mixed, target
        if self.soft:
            return x_mixed, target.soft()
        return x_mixed, target

    def __repr__(self):
        return (f"MixCollate(kind={self.kind!r}, alpha={self.alpha!r}, p={self.p!r}, stop_epoch={self.stop_epoch}, "
                f"mode={self.mode!r})")


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
