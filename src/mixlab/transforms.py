"""Compositions of mixers and schedules: :class:`RandomChoice`, :func:`mix_pair`, :func:`apply_schedule`.

The mixing methods themselves live in :mod:`mixlab.methods` (one module each, on the
:class:`mixlab.Mixer` contract); ``MixUp``, ``CutMix`` and ``MixUpOrCutMix`` are re-exported here
for 0.2 imports.

Convention: ``lam`` weights the original row, ``mixed = lam * x + (1 - lam) * x[index]``.
"""
from __future__ import annotations

import torch

from . import _validate as V
from .mixer import BatchTypeError, Mixer, _batch_info, worker_generator
from .methods import CutMix, MixUp, MixUpOrCutMix
from .ops import mix
from .params import MixParams, sample_params
from .sampling import rng
from .targets import MixedTarget

__all__ = ["MixUp", "CutMix", "MixUpOrCutMix", "RandomChoice", "mix_pair", "apply_schedule", "check_schedule",
           "BatchTypeError", "worker_generator"]


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
        self._worker = {}
        self.last = None  # the transform chosen by the latest call (for logging)

    @property
    def enabled(self) -> bool:
        """Whether the transforms mix (setting it sets every transform's ``enabled``: schedules use it)."""
        return all(getattr(t, "enabled", True) for t in self.transforms)

    @enabled.setter
    def enabled(self, value) -> None:
        for t in self.transforms:
            t.enabled = bool(value)

    def choose(self):
        """Draw the transform for one call (in a DataLoader worker, from the worker's own stream)."""
        g = worker_generator(self.generator, self._worker)
        i = int(torch.multinomial(self._weights, 1, **rng(g)))
        self.last = self.transforms[i]
        return self.last

    def sample(self, x, y=None, **context) -> MixParams:
        return self.choose().sample(x, y, **context)

    def target_params(self, params: MixParams, y) -> MixParams:
        """The label rule of the transform chosen by the latest :meth:`sample` (Remix's, or the inputs' params)."""
        hook = getattr(self.last, "target_params", None)
        return params if hook is None else hook(params, y)

    def __call__(self, x, y=None, **context):
        return self.choose()(x, y, **context)

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
