"""Lightning: a callback that mixes training batches on the device, after transfer.

Usage::

    trainer = L.Trainer(callbacks=[mixlab.lightning.MixUp(alpha=0.4)])

    class Net(L.LightningModule):
        def training_step(self, batch, batch_idx):
            x, target = batch                          # target: a MixedTarget while training
            return mixlab.losses.MixedLoss(self.criterion)(self(x), target)

Lightning callbacks have no ``on_after_batch_transfer`` hook (it belongs to the
LightningModule), so the callback wraps the module's ``on_after_batch_transfer`` for the
duration of ``fit``: the module's own hook runs first, then, for training batches only, the
batch ``(x, y)`` becomes ``(mixed_x, MixedTarget)``. The wrapper is removed when ``fit`` ends
or fails, so validation, testing and prediction outside ``fit`` never see it, and the module's
loss is never replaced: it computes the mixed loss itself through the target
(:meth:`mixlab.MixedTarget.loss` or :class:`mixlab.losses.MixedLoss`).

Convention: ``lam`` weights the original row: ``mixed = lam * x + (1 - lam) * x[index]``.
"""
from __future__ import annotations

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"mixlab.lightning needs Lightning: pip install 'mixlab[lightning]' ({type(e).__name__}: {e})"
                      ) from e

import torch

from .transforms import CutMix as _CutMix
from .transforms import apply_schedule, check_schedule
from .transforms import MixUp as _MixUp

__all__ = ["MixCallback", "MixUp", "CutMix"]

_HOOK = "on_after_batch_transfer"


class MixCallback(pl.Callback):
    """Mix training batches with a mixlab transform in the module's ``on_after_batch_transfer``.

    Args:
        mixer: a :class:`mixlab.MixUp`, :class:`mixlab.CutMix` or :class:`mixlab.MixUpOrCutMix`.
            Its generator, if any, must live on the training device.
    """

    def __init__(self, mixer, *, stop_epoch=None, alpha_schedule=None):
        if not callable(mixer) or not hasattr(mixer, "sample"):
            raise TypeError(f"mixer must be a mixlab transform, got {type(mixer).__name__}")
        self.mixer = mixer
        self.stop_epoch, self.alpha_schedule = check_schedule(mixer, stop_epoch, alpha_schedule)
        self._saved = None  # (module, had_instance_attr, previous instance attribute)

    def mix_batch(self, batch):
        """``(x, y)`` -> ``(mixed_x, MixedTarget)``, keeping the batch's container type."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            got = f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else \
                type(batch).__name__
            raise TypeError(f"mixlab.lightning mixes batches of the form (inputs, labels), got {got}")
        x, target = self.mixer(batch[0], batch[1])
        return type(batch)([x, target]) if isinstance(batch, list) else (x, target)

    def on_train_epoch_start(self, trainer, pl_module):
        # off from stop_epoch on: batches still carry a MixedTarget (lam 1), so the training step is unchanged
        apply_schedule(self.mixer, trainer.current_epoch, stop_epoch=self.stop_epoch, alpha=self.alpha_schedule)

    def on_fit_start(self, trainer, pl_module):
        own = pl_module.__dict__.get(_HOOK)
        self._saved = (pl_module, _HOOK in pl_module.__dict__, own)
        original = getattr(pl_module, _HOOK)

        def on_after_batch_transfer(batch, dataloader_idx: int = 0):
            batch = original(batch, dataloader_idx)
            if trainer.training and not trainer.sanity_checking:
                batch = self.mix_batch(batch)
            return batch

        object.__setattr__(pl_module, _HOOK, on_after_batch_transfer)

    def _restore(self):
        if self._saved is None:
            return
        module, had, own = self._saved
        if had:
            object.__setattr__(module, _HOOK, own)
        else:
            module.__dict__.pop(_HOOK, None)
        self._saved = None

    def on_fit_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()


class MixUp(MixCallback):
    """Mixup callback. Arguments as :class:`mixlab.MixUp` (``alpha``, ``mode``, ``keep_dominant``, ``p``, ...),
    plus ``stop_epoch`` (no mixing from that epoch on) and ``alpha_schedule`` (``epoch -> alpha``)."""

    def __init__(self, alpha: float = 0.4, *, mode: str = "batch", keep_dominant: bool = False, p: float = 1.0,
                 generator: torch.Generator | None = None, stop_epoch=None, alpha_schedule=None, **kwargs):
        super().__init__(_MixUp(alpha, mode=mode, keep_dominant=keep_dominant, p=p, generator=generator,
                                **{"inplace": True, **kwargs}),
                         stop_epoch=stop_epoch, alpha_schedule=alpha_schedule)


class CutMix(MixCallback):
    """CutMix callback. Arguments as :class:`mixlab.CutMix` (``alpha``, ``mode``, ``p``, ...)."""

    def __init__(self, alpha: float = 1.0, *, mode: str = "batch", p: float = 1.0,
                 generator: torch.Generator | None = None, stop_epoch=None, alpha_schedule=None, **kwargs):
        super().__init__(_CutMix(alpha, mode=mode, p=p, generator=generator, **{"inplace": True, **kwargs}), stop_epoch=stop_epoch,
                         alpha_schedule=alpha_schedule)
