"""On-disk cache of decoded datasets: plain tensors and lists in a ``.pt`` file.

The cache key hashes the reader's name and version, the reader's options and, for every
source file, its resolved path, size, modification time and a SHA-256 of its content: editing,
replacing or touching the source invalidates the entry, and so does a file rewritten with the
same size and modification time. Files up to ``FULL_HASH_BYTES`` (64 MiB: IDX files, CSV files,
CIFAR batches, image files) are hashed whole; a larger file (e.g. an image tarball) is hashed
over its first and last MiB only, so for those a rewrite that keeps the size, the modification
time and both ends is not noticed (delete the cache entry, or pass ``cache_dir=False``).
Files are written atomically (temporary file, then ``os.replace``) and read with
``torch.load(weights_only=True)``, so a cache file can hold only tensors, lists, dicts,
strings and numbers, never code. An entry that does not load (refused by the weights-only
unpickler, or damaged: whatever it raises) or is malformed is ignored and rebuilt. A
cache folder that cannot be written (read-only, full disk, a file-size limit) means no cache: one
warning per folder and process, the temporary file removed, the data returned all the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ._limits import clip, short_name

__all__ = ["default_cache_dir", "cached", "source_signature", "content_hash"]

_WARNED: set[str] = set()  # cache folders already reported as unwritable (one warning per folder and process)
_VERSION = 2  # 2: content hashes in the key; entries are validated when built (data/datasets.py)
_REQUIRED = ("classes", "source")
FULL_HASH_BYTES = 64 << 20  # files up to this size are hashed whole, larger ones at both ends
_END_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """``$MIXLAB_CACHE`` if set, else ``~/.cache/mixlab``."""
    env = os.environ.get("MIXLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mixlab"


def content_hash(path: Path, size: int) -> str:
    """SHA-256 of the file (``whole:``), or of its first and last MiB when it is larger than
    ``FULL_HASH_BYTES`` (``ends:``; the size and mtime in the signature cover the middle only weakly)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return "whole:" + h.hexdigest()
        h.update(f.read(_END_BYTES))
        f.seek(max(0, size - _END_BYTES))
        h.update(f.read(_END_BYTES))
    return "ends:" + h.hexdigest()


def source_signature(paths) -> list[list]:
    """``[resolved path, size, mtime_ns, content hash]`` for each source file or folder (folders:
    their files); see ``content_hash`` for what is hashed."""
    sig = []
    for p in paths:
        p = Path(p).resolve()
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            st = q.stat()
            sig.append([str(q), st.st_size, st.st_mtime_ns, content_hash(q, st.st_size)])
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
            with warnings.catch_warnings():  # torch warns about some pickle protocols: not the user's business
                warnings.simplefilter("ignore")
                entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # refused (UnpicklingError) or damaged (KeyError, IndexError, TypeError...): rebuild it
            entry = None
        if _valid(entry):
            return entry
    entry = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(entry, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk: torch's zip writer raises RuntimeError, not OSError
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        _warn_once(folder, e)
    return entry


def _warn_once(folder: Path, error: BaseException) -> None:
    """A cache folder that cannot be written (full, read-only) costs only a re-decode next time: say so
    once per folder and process, and go on without the cache."""
    key = str(folder)
    if key in _WARNED:
        return
    _WARNED.add(key)
    reason = error.strerror if isinstance(error, OSError) and error.strerror else clip(error, 160)
    warnings.warn(f"mixlab data: cannot write to the cache {short_name(folder, 240)} ({reason}); continuing without "
                  "it (the data is decoded again next time; free space, or pass cache_dir=False / --cache-dir to "
                  "another folder)", UserWarning, stacklevel=2)
