"""CIFAR-10 python pickle batches, read with a restricted unpickler.

The official ``cifar-10-batches-py`` files are Python 2 pickles of dicts holding a uint8
numpy array ``data`` (10000, 3072), a list ``labels`` and some strings. Plain ``pickle.load``
would run whatever a crafted file asks for (``__reduce__`` can call ``os.system``), so
``SafeUnpickler.find_class`` admits only numpy's array reconstruction: ``_reconstruct``
(old and new module path), ``_frombuffer`` (what protocol-5 pickles of arrays use),
``ndarray``, ``dtype``, and ``_codecs.encode`` (how Python 3 writes bytes into protocol-2
pickles). Dicts, lists, strings and numbers need no ``find_class`` at all. Anything else
raises ``pickle.UnpicklingError`` before any of the file's objects is called.

Batches are read from a folder (or its ``cifar-10-batches-py/``) or straight from the official
``cifar-10-python.tar.gz``. Train comes from ``data_batch_1`` .. ``data_batch_5``, test from ``test_batch``
(a common tutorial bug reads ``test_batch`` for both splits).
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ._cache import cached, source_signature

__all__ = ["SafeUnpickler", "safe_load", "find_cifar_batches", "load_cifar_batches", "TRAIN_BATCHES"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_NAMES = (*TRAIN_BATCHES, "test_batch")
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


def safe_load(path: Path, data: bytes | None = None) -> object:
    """Unpickle ``path`` (or ``data`` read from it) with ``SafeUnpickler``, ``encoding='latin1'``."""
    if data is None:
        data = Path(path).read_bytes()
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


def _read_batch(path: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch: images uint8 ``(n, 3, 32, 32)`` and labels int64 ``(n,)``, checked."""
    d = safe_load(path, blob)
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
    """Where the batches are: the folder holding ``data_batch_1..5`` and ``test_batch`` (itself or
    its ``cifar-10-batches-py``), or a tarball whose first members are such batches
    (the official ``cifar-10-python.tar.gz``); None otherwise."""
    for d in (location, location / "cifar-10-batches-py"):
        if d.is_dir() and all((d / n).is_file() for n in _NAMES):
            return d
    if location.is_file() and tarfile.is_tarfile(location):
        try:
            with tarfile.open(location, "r|*") as tf:
                for _, m in zip(range(20), tf):  # peek: the batches come first in the official archive
                    if m.isfile() and m.name.rsplit("/", 1)[-1] in _NAMES:
                        return location
        except (tarfile.TarError, EOFError, OSError, zlib.error):
            return None  # not readable as CIFAR batches; the image-tree reader reports the error
    return None


def _read_sources(where: Path) -> dict[str, tuple[str, bytes]]:
    """``{batch name: (display path, bytes)}`` for the six batches and ``batches.meta`` if present."""
    wanted = (*_NAMES, "batches.meta")
    if where.is_dir():
        return {n: (str(where / n), (where / n).read_bytes()) for n in wanted if (where / n).is_file()}
    found = {}
    try:
        with tarfile.open(where, "r|*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted and base not in found:
                    found[base] = (f"{where}:{m.name}", tf.extractfile(m).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"CIFAR tarball {where}: corrupt or truncated ({type(e).__name__}: {e})") from None
    missing = [n for n in _NAMES if n not in found]
    if missing:
        raise ValueError(f"CIFAR tarball {where}: missing members {missing}")
    return found


def _class_names(sources: dict, default: list[str], num: int) -> list[str]:
    names = _get(safe_load(*sources["batches.meta"]), "label_names") if "batches.meta" in sources else None
    if isinstance(names, list) and len(names) >= num:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(default)


def load_cifar_batches(location: Path, *, cache_dir, default_classes: list[str]) -> dict:
    """Read the five training batches and the test batch into uint8 tensors (cached)."""
    where = find_cifar_batches(location)
    files = [where / n for n in (*_NAMES, "batches.meta") if (where / n).is_file()] if where.is_dir() else [where]

    def build() -> dict:
        sources = _read_sources(where)
        parts = [_read_batch(*sources[n]) for n in _NAMES]
        y_all = np.concatenate([p[1] for p in parts])
        classes = _class_names(sources, default_classes, int(y_all.max()) + 1)
        if y_all.min() < 0 or y_all.max() >= len(classes):
            raise ValueError(f"CIFAR batches in {where}: labels must be in 0..{len(classes) - 1}, "
                             f"got {y_all.min()}..{y_all.max()}")
        return {
            "x_train": torch.from_numpy(np.concatenate([p[0] for p in parts[:5]])),  # (50000, 3, 32, 32)
            "y_train": torch.from_numpy(np.concatenate([p[1] for p in parts[:5]])),
            "x_test": torch.from_numpy(np.ascontiguousarray(parts[5][0])),
            "y_test": torch.from_numpy(parts[5][1]),
            "classes": classes, "source": str(where.resolve()),
        }
    return cached("cifar-pickle", {"files": source_signature(files)}, build, cache_dir)
