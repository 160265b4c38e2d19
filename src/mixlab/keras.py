"""Keras 3: MixUp and CutMix on ``(images, labels)`` batches with ``keras.ops`` (every backend).

Usage, keras.io's mixup example's way (two shuffled copies of the data zipped, under TensorFlow)::

    mixup = mixlab.keras.MixUp(alpha=0.2, seed=42)
    train_ds = tf.data.Dataset.zip((ds_one, ds_two)).map(mixup)    # ((x1, y1), (x2, y2)) -> (x, y)
    train_ds = ds_one.map(mixup)                                    # (x, y): mixed with a shuffle of itself

and on the torch and JAX backends, around a ``keras.utils.PyDataset``::

    model.fit(mixlab.keras.MixedPyDataset(train_batches, mixup), epochs=10)

Lambda: ``Gamma(alpha) / (Gamma(alpha) + Gamma(alpha))`` per sample, as keras.io's mixup example draws it, in
log space (``log Gamma(alpha + 1) + log(U) / alpha``) so small ``alpha`` never gives ``0 / 0``.
Draws come from a ``keras.random.SeedGenerator``: a seeded mixer repeats its sequence.
Labels: one-hot (or soft) float rows are mixed as they are; integer class indices are one-hot
encoded first (pass ``num_classes``). The model then trains with ``categorical_crossentropy``.

Convention: ``lam`` weights the first (original) batch: ``x = lam * x1 + (1 - lam) * x2``.

Notes: only the torch backend is exercised by the tests here (TensorFlow is not installed on
the project's machines); the code uses nothing but ``keras.ops`` and ``keras.random``.
"""
from __future__ import annotations

try:
    import keras
    from keras import ops
except ImportError as e:  # pragma: no cover - depends on the environment
    import importlib.util
    import os

    if importlib.util.find_spec("keras") is None:
        raise ImportError("mixlab.keras needs Keras 3: pip install 'mixlab[keras]'") from e
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    raise ImportError(f"mixlab.keras: Keras is installed but could not be imported with KERAS_BACKEND={backend!r} "
                      f"({type(e).__name__}: {e}); install that backend (e.g. tensorflow-cpu, jax) or set "
                      "KERAS_BACKEND=torch") from e

__all__ = ["MixUp", "CutMix", "MixedPyDataset", "Schedule", "sample_lambda"]


def _check_alpha(alpha) -> float:
    """A concentration >= 0 (0: no mixing, as in the core)."""
    from . import _validate as V

    return V.alpha(alpha)


def _seed_generator(seed):
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int, a keras.random.SeedGenerator or None, got {type(seed).__name__}")
    return keras.random.SeedGenerator(seed)


def _log_gamma(n, alpha, seed):
    g = keras.random.gamma((n,), alpha + 1.0, seed=seed)  # shape >= 1: no underflow
    u = keras.random.uniform((n,), seed=seed)  # [0, 1): 1 - u is in (0, 1]
    return ops.log(g) + ops.log(1.0 - u) / alpha


def sample_lambda(n, alpha: float, seed) -> "keras.KerasTensor":
    """``n`` draws of Beta(alpha, alpha) as the Gamma ratio ``G1 / (G1 + G2)``, float32.

    Args:
        n: number of draws (may be a dynamic batch size).
        alpha: concentration >= 0 (0 gives ones: no mixing).
        seed: a ``keras.random.SeedGenerator`` (or an int, for one-off draws).
    """
    alpha = _check_alpha(alpha)
    if alpha == 0:  # no mixing: every row keeps itself
        return ops.ones((n,), dtype="float32")
    return ops.sigmoid(_log_gamma(n, alpha, seed) - _log_gamma(n, alpha, seed))


class _KerasMixer:
    def __init__(self, alpha, num_classes, seed):
        self.alpha = _check_alpha(alpha)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.seed_generator = _seed_generator(seed)
        self.enabled = True  # False: batches pass unmixed (lam 1); see Schedule

    def _lam(self, n):
        return sample_lambda(n, self.alpha if self.enabled else 0.0, self.seed_generator)

    def _labels(self, labels):
        labels = ops.convert_to_tensor(labels)
        dtype = keras.backend.standardize_dtype(labels.dtype)
        if "int" in dtype or dtype == "bool":
            if self.num_classes is None:
                raise ValueError(f"integer labels need num_classes to be one-hot encoded, got labels of dtype {dtype}")
            if len(labels.shape) == 2 and labels.shape[-1] == 1:
                labels = ops.squeeze(labels, -1)
            return ops.one_hot(labels, self.num_classes)
        return ops.cast(labels, "float32")

    def __call__(self, first, second=None, *rest):
        """``(images, labels)`` or ``((images1, labels1), (images2, labels2))`` -> ``(images, labels)``."""
        if rest:
            raise TypeError(f"call with (images, labels) or two (images, labels) batches, got {2 + len(rest)} arguments")
        if isinstance(first, (tuple, list)) and isinstance(second, (tuple, list)):
            (x1, y1), (x2, y2) = first, second
            return self.mix(x1, y1, x2, y2)
        if second is None:
            raise TypeError("call with (images, labels) or two (images, labels) batches, got one argument")
        x = ops.convert_to_tensor(first)
        perm = keras.random.shuffle(ops.arange(ops.shape(x)[0]), seed=self.seed_generator)
        y = self._labels(second)
        return self.mix(x, y, ops.take(x, perm, axis=0), ops.take(y, perm, axis=0))

    def mix(self, x1, y1, x2, y2):  # pragma: no cover - abstract
        raise NotImplementedError


def _per_row(v, ndim):
    return ops.reshape(v, (-1,) + (1,) * (ndim - 1))


class MixUp(_KerasMixer):
    """Mixup for Keras 3 batches: ``x = lam * x1 + (1 - lam) * x2`` and the same for labels.

    Args:
        alpha: Beta(alpha, alpha) concentration (keras.io's mixup example: 0.2).
        num_classes: needed when labels are integer class indices.
        seed: int or ``keras.random.SeedGenerator``.

    Returns (when called): float32 images of the input's shape and float32 ``(B, C)`` labels.
    """

    def __init__(self, alpha: float = 0.2, *, num_classes: int | None = None, seed=None):
        super().__init__(alpha, num_classes, seed)

    def mix(self, x1, y1, x2, y2):
        """Mix two aligned batches row by row (one ``lam`` per row)."""
        x1, x2 = ops.cast(x1, "float32"), ops.cast(x2, "float32")
        y1, y2 = self._labels(y1), self._labels(y2)
        lam = self._lam(ops.shape(x1)[0])  # (B,)
        x = x2 + _per_row(lam, len(x1.shape)) * (x1 - x2)
        y = y2 + _per_row(lam, len(y1.shape)) * (y1 - y2)
        return x, y


class CutMix(_KerasMixer):
    """CutMix for Keras 3 image batches: paste a box of ``x2`` into ``x1``; ``lam`` = kept area.

    The box side is ``floor(S * sqrt(1 - lam))`` per spatial dimension, its centre uniform over
    the image, clipped at the borders; labels use the exact kept fraction.

    Args:
        alpha: Beta concentration (the CutMix paper: 1.0).
        num_classes: needed when labels are integer class indices.
        seed: int or ``keras.random.SeedGenerator``.
        data_format: ``"channels_last"`` ``(B, H, W, C)`` or ``"channels_first"``; default
            ``keras.config.image_data_format()``.
    """

    def __init__(self, alpha: float = 1.0, *, num_classes: int | None = None, seed=None, data_format=None):
        super().__init__(alpha, num_classes, seed)
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.data_format = data_format

    def _axis_mask(self, n, size, lam_cut, seed):
        """(B, size) bool: inside the box along one spatial axis; also returns the box length."""
        cut = ops.floor(size * lam_cut)  # (B,)
        centre = ops.minimum(ops.floor(keras.random.uniform((n,), seed=seed) * size), size - 1)
        lo = ops.clip(centre - ops.floor(cut / 2), 0, size)
        hi = ops.clip(centre - ops.floor(cut / 2) + cut, 0, size)
        pos = ops.cast(ops.arange(size), "float32")[None, :]  # (1, size)
        return ops.logical_and(pos >= lo[:, None], pos < hi[:, None]), hi - lo

    def mix(self, x1, y1, x2, y2):
        """Paste one box per row of ``x2`` into ``x1``; labels weighted by the exact areas."""
        x1, x2 = ops.cast(x1, "float32"), ops.cast(x2, "float32")
        y1, y2 = self._labels(y1), self._labels(y2)
        if len(x1.shape) != 4:
            raise ValueError(f"CutMix needs image batches of rank 4, got shape {tuple(x1.shape)}")
        h_axis, w_axis = (1, 2) if self.data_format == "channels_last" else (2, 3)
        H, W = int(x1.shape[h_axis]), int(x1.shape[w_axis])
        n = ops.shape(x1)[0]
        lam = self._lam(n)
        ratio = ops.sqrt(1.0 - lam)
        rows, h_len = self._axis_mask(n, H, ratio, self.seed_generator)
        cols, w_len = self._axis_mask(n, W, ratio, self.seed_generator)
        box = ops.logical_and(rows[:, :, None], cols[:, None, :])  # (B, H, W)
        box = box[:, :, :, None] if self.data_format == "channels_last" else box[:, None, :, :]
        x = ops.where(box, x2, x1)
        lam_exact = 1.0 - h_len * w_len / float(H * W)  # (B,)
        y = y2 + _per_row(lam_exact, len(y1.shape)) * (y1 - y2)
        return x, y


class Schedule(keras.callbacks.Callback):
    """A Keras callback that stops mixing at ``stop_epoch`` and sets ``alpha`` from ``alpha_schedule(epoch)``.

    ``model.fit(MixedPyDataset(batches, mixup), callbacks=[Schedule(mixup, stop_epoch=8)])``. It
    acts on Python calls of the mixer (``MixedPyDataset``, eager code); a ``tf.data`` graph bakes the
    values in when it is traced, so there build one dataset per phase instead.
    """

    def __init__(self, mixer, *, stop_epoch=None, alpha_schedule=None):
        super().__init__()
        from .transforms import check_schedule

        from .mixer import Mixer

        if not isinstance(mixer, (_KerasMixer, Mixer)):
            raise TypeError(f"mixer must be mixlab.keras.MixUp or CutMix, or a mixlab.Mixer, got {type(mixer).__name__}")
        if isinstance(mixer, Mixer) and partner is not None:
            raise ValueError("partner= (two-stream mixing) needs mixlab.keras.MixUp or CutMix; a mixlab.Mixer mixes "
                             "each batch with a shuffle of itself")
        self.mixer = mixer
        self.stop_epoch, self.alpha_schedule = check_schedule(mixer, stop_epoch, alpha_schedule)

    def on_epoch_begin(self, epoch, logs=None):
        from .transforms import apply_schedule

        apply_schedule(self.mixer, epoch, stop_epoch=self.stop_epoch, alpha=self.alpha_schedule)


class MixedPyDataset(keras.utils.PyDataset):
    """A ``keras.utils.PyDataset`` whose batches are mixed by a mixlab Keras mixer or by any mixlab method.

    Args:
        dataset: a ``PyDataset`` (or any sequence) of ``(images, labels)`` batches.
        mixer: :class:`MixUp` or :class:`CutMix` (Keras ops: any backend, on the backend's device), or any
            :class:`mixlab.Mixer` (every registered method: FMix, GridMix, ...), which mixes on the CPU in
            torch and hands Keras numpy arrays, so it works under every backend. Give that mixer
            ``num_classes`` for integer labels: the batch's labels become its soft ``(B, C)`` rows. Images
            in Keras's ``channels_last`` layout are mixed as ``(B, C, H, W)`` and returned in their layout.
        partner: optional second dataset of the same length for two-stream mixing (the
            example's two shuffled copies); otherwise each batch is mixed with a shuffle of itself.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for ``PyDataset``.
            With several workers the order of draws, hence the mixing, is not reproducible.
    """

    def __init__(self, dataset, mixer, *, partner=None, **kwargs):
        super().__init__(**kwargs)
        from .mixer import Mixer

        if not isinstance(mixer, (_KerasMixer, Mixer)):
            raise TypeError(f"mixer must be mixlab.keras.MixUp or CutMix, or a mixlab.Mixer, got {type(mixer).__name__}")
        if isinstance(mixer, Mixer) and partner is not None:
            raise ValueError("partner= (two-stream mixing) needs mixlab.keras.MixUp or CutMix; a mixlab.Mixer mixes "
                             "each batch with a shuffle of itself")
        if partner is not None and len(partner) != len(dataset):
            raise ValueError(f"partner must have as many batches as dataset ({len(dataset)}), got {len(partner)}")
        self.dataset, self.mixer, self.partner = dataset, mixer, partner

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        first = tuple(self.dataset[index])[:2]
        if not isinstance(self.mixer, _KerasMixer):
            return _torch_mix(self.mixer, *first)
        if self.partner is None:
            return self.mixer(*first)
        return self.mixer(first, tuple(self.partner[index])[:2])

    def on_epoch_end(self):
        for ds in (self.dataset, self.partner):
            if ds is not None and hasattr(ds, "on_epoch_end"):
                ds.on_epoch_end()


def _torch_mix(mixer, x, y):
    """Mix one ``(images, labels)`` batch with a torch :class:`mixlab.Mixer`; numpy arrays back (any backend)."""
    import numpy as np
    import torch

    xt, yt = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    if yt.ndim == 2 and yt.shape[1] == 1 and not yt.is_floating_point():
        yt = yt[:, 0]
    last = xt.ndim == 4 and keras.config.image_data_format() == "channels_last"
    if last:
        xt = xt.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W): the layout mixlab's regions cut
    mixed, target = mixer(xt, yt)
    soft = target if isinstance(target, torch.Tensor) else target.soft()
    if last:
        mixed = mixed.permute(0, 2, 3, 1)
    return np.ascontiguousarray(mixed.numpy()), soft.to(torch.float32).numpy()
