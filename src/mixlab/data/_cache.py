"""On-disk cache of decoded datasets: plain tensors and lists in a ``.pt`` file.

The cache key hashes the reader's name and version, the reader's options and, for every
source file, its resolved path, size and modification time: editing, replacing or touching
the source invalidates the entry. Files are written atomically (temporary file, then
``os.replace``) and read with ``torch.load(weights_only=True)``, so a cache file can hold
only tensors, lists, dicts, strings and numbers, never code. An unreadable or malformed
entry is ignored and rebuilt; a cache folder that cannot be written is skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["default_cache_dir", "cached", "source_signature"]

_VERSION = 1
_REQUIRED = ("classes", "source")


def default_cache_dir() -> Path:
    """``$MIXLAB_CACHE`` if set, else ``~/.cache/mixlab``."""
    env = os.environ.get("MIXLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mixlab"


def source_signature(paths) -> list[list]:
    """``[resolved path, size, mtime_ns]`` for each source file or folder (folders: their files)."""
    sig = []
    for p in paths:
        p = Path(p).resolve()
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            st = q.stat()
            sig.append([str(q), st.st_size, st.st_mtime_ns])
    return sig


def _valid(entry) -> bool:
    return isinstance(entry, dict) and all(k in entry for k in _REQUIRED) and any(
        isinstance(v, torch.Tensor) for v in entry.values())


def cached(name: str, key: dict, build: Callable[[], dict], cache_dir) -> dict:
    """Return ``build()``, read from / written to ``cache_dir`` under a key derived from ``key``.

    Args:
        name: reader name, used in the file name.
        key: JSON-serialisable description of the sources and options (see ``source_signature``).
        build: makes the entry: a dict of tensors, lists of str and str, with ``classes`` and ``source``.
        cache_dir: folder, or None for ``default_cache_dir()``; ``False`` disables the cache.
    """
    if cache_dir is False:
        return build()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(json.dumps([name, _VERSION, key], sort_keys=True).encode()).hexdigest()[:20]
    path = folder / f"{name}-{digest}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):
            entry = None
        if _valid(entry):
            return entry
    entry = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(entry, tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache folder only costs a re-decode next time
        tmp.unlink(missing_ok=True)
    return entry
