"""CIFAR-10 python pickle batches, read with a restricted unpickler.

The official ``cifar-10-batches-py`` files are Python 2 pickles of dicts holding a uint8
numpy array ``data`` (10000, 3072), a list ``labels`` and some strings. Plain ``pickle.load``
would run whatever a crafted file asks for (``__reduce__`` can call ``os.system``), so
``SafeUnpickler.find_class`` admits only numpy's array reconstruction: ``_reconstruct``
(old and new module path), ``_frombuffer`` (what protocol-5 pickles of arrays use),
``ndarray``, ``dtype``, and ``_codecs.encode`` (how Python 3 writes bytes into protocol-2
pickles). Dicts, lists, strings and numbers need no ``find_class`` at all. Anything else
raises ``pickle.UnpicklingError`` before any of the file's objects is called.

Train comes from ``data_batch_1`` .. ``data_batch_5``, test from ``test_batch`` (article 000's
reader read ``test_batch`` for both and never filled its lists).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ._cache import cached, source_signature

__all__ = ["SafeUnpickler", "safe_load", "find_cifar_batches", "load_cifar_batches", "TRAIN_BATCHES"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only reconstructs numpy arrays and plain built-in containers."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only numpy arrays, lists, "
            "dicts, strings and numbers (the file may be crafted or not a CIFAR batch)")


def safe_load(path: Path) -> object:
    """Unpickle ``path`` with ``SafeUnpickler`` (``encoding='latin1'`` for the Python 2 files)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"CIFAR file {path}: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"CIFAR file {path}: not a readable pickle ({type(e).__name__}: {e})") from None


def _get(d: dict, key: str):
    """``d[key]`` whether the file's keys are str or bytes."""
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: images uint8 ``(n, 3, 32, 32)`` and labels int64 ``(n,)``, checked."""
    d = safe_load(path)
    if not isinstance(d, dict):
        raise ValueError(f"CIFAR file {path}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    data, labels = _get(d, "data"), _get(d, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"CIFAR file {path}: expected keys 'data' (numpy array) and 'labels', "
                         f"found keys {sorted(map(str, d))}")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"CIFAR file {path}: expected uint8 data (n, 3072) and n labels, got data "
                         f"{data.dtype} {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar_batches(location: Path) -> Path | None:
    """The folder holding ``data_batch_1..5`` and ``test_batch`` (itself or ``cifar-10-batches-py``)."""
    for d in (location, location / "cifar-10-batches-py"):
        if d.is_dir() and all((d / n).is_file() for n in (*TRAIN_BATCHES, "test_batch")):
            return d
    return None


def _class_names(folder: Path, default: list[str], num: int) -> list[str]:
    meta = folder / "batches.meta"
    names = _get(safe_load(meta), "label_names") if meta.is_file() else None
    if isinstance(names, list) and len(names) >= num:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(default)


def load_cifar_batches(location: Path, *, cache_dir, default_classes: list[str]) -> dict:
    """Read the five training batches and the test batch into uint8 tensors (cached)."""
    folder = find_cifar_batches(location)
    files = [folder / n for n in (*TRAIN_BATCHES, "test_batch")]
    meta = [folder / "batches.meta"] if (folder / "batches.meta").is_file() else []

    def build() -> dict:
        parts = [_read_batch(p) for p in files]
        y_all = np.concatenate([p[1] for p in parts])
        classes = _class_names(folder, default_classes, int(y_all.max()) + 1)
        if y_all.min() < 0 or y_all.max() >= len(classes):
            raise ValueError(f"CIFAR batches in {folder}: labels must be in 0..{len(classes) - 1}, "
                             f"got {y_all.min()}..{y_all.max()}")
        return {
            "x_train": torch.from_numpy(np.concatenate([p[0] for p in parts[:5]])),  # (50000, 3, 32, 32)
            "y_train": torch.from_numpy(np.concatenate([p[1] for p in parts[:5]])),
            "x_test": torch.from_numpy(np.ascontiguousarray(parts[5][0])),
            "y_test": torch.from_numpy(parts[5][1]),
            "classes": classes, "source": str(folder.resolve()),
        }
    return cached("cifar-pickle", {"files": source_signature(files + meta)}, build, cache_dir)
