"""Run-folder I/O: atomic writes, verified checkpoints, data fingerprints, the run lock, provenance.

Every file is written to a temporary sibling (``.<name>.<random>.tmp``), fsynced, moved into
place with ``os.replace`` and the folder fsynced, so a crash, Ctrl-C or ``kill -9`` leaves
either the old file or the new one, never half of one (stale ``*.tmp`` files are removed by
:func:`remove_stale_tmp` when the next run takes the folder).

A checkpoint is a ``torch.save`` zip archive whose zip *comment* holds
``mixlab-sha256:<hex>``, the SHA-256 of every byte before it: :func:`load_checkpoint` checks
it before ``torch.load(..., weights_only=True)`` parses anything, so a truncated, zeroed or
bit-flipped file is reported as damaged instead of loading wrong numbers. The file stays a
valid zip, so plain ``torch.load`` still reads it. A checkpoint also records whose it is (seed,
arm, method, alpha: :func:`checkpoint_identity`) and is treated as damaged by any other arm.

The files a run writes are listed in its marker before they are written (:class:`RunFiles`,
:func:`recording`); ``--overwrite`` removes exactly those, never through a symbolic link
(:func:`remove_listed`). See docs/RELIABILITY.md.
"""
from __future__ import annotations

import contextvars
import hashlib
import io
import json
import errno
import os
import platform
import re
import secrets
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path, PurePosixPath

import torch

from .config import LabError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "save_checkpoint",
           "load_checkpoint", "previous_path", "load_latest_checkpoint", "check_checkpoint_matches",
           "RunError", "CheckpointError", "RunLock", "remove_stale_tmp", "is_temporary_of", "fsync_dir",
           "config_sha256", "data_fingerprint", "describe_data_change", "provenance", "gen_state", "set_gen_state",
           "RunFiles", "recording", "remove_listed", "safe_relative", "checkpoint_identity", "check_identity"]


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class RunError(LabError):
    """A run folder, checkpoint or resume problem; the message says what is wrong and what to do.

    A :class:`~mixlab_lab.config.LabError`: the ``mixlab`` command prints it on one line, status 2.
    """


class CheckpointError(RunError):
    """A checkpoint that cannot be used (missing, unreadable, damaged, incomplete).

    ``path`` is the file, ``problem`` what is wrong with it; ``str(e)`` adds what to do.
    """

    ADVICE = ("delete it and run again with --resume (that arm restarts from its saved initial weights and "
              "still ends exactly where an uninterrupted run ends), or start over with --overwrite")

    def __init__(self, path, problem: str, advice: str | None = None):
        self.path, self.problem = Path(path), problem
        self.advice = self.ADVICE if advice is None else advice
        super().__init__(f"checkpoint {self.path} {problem}; {self.advice}")


def fsync_dir(path) -> None:
    """fsync a folder, so a rename into it survives a power cut (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes) -> str:
    """``data`` in a fsynced temporary sibling of ``path`` (ordinary permissions); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            raise RunError(f"could not write {path}: {e.strerror or e} (the disk is full or a file size limit was "
                           "reached); nothing half-written was left; free space or raise the limit, then run again "
                           "with --resume") from None
        raise
    return tmp


_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}  # disk full, ulimit -f, quota


def atomic_write_bytes(path, data: bytes, *, keep_previous: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (fsynced temporary sibling, ``os.replace``, fsync of the folder).

    ``keep_previous=True`` first moves the current file (if any) to :func:`previous_path`.
    """
    path = Path(path)
    for files in _RECORDERS:  # listed before the first byte reaches the folder (see RunFiles)
        files.add(path)
        if keep_previous and os.path.lexists(path):
            files.add(previous_path(path))
    tmp = _write_tmp(path, data)
    try:
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def is_temporary_of(name: str, target) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write_bytes` for a file whose name ``target`` matches.

    ``target`` is a compiled regular expression (``fullmatch`` on the final name).
    """
    m = _TMP_NAME.fullmatch(name)
    return bool(m) and bool(target.fullmatch(m.group(1)))


_TMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")


def remove_stale_tmp(*pairs) -> list:
    """Delete the temporary files a killed writer left; returns their paths.

    ``pairs`` are ``(folder, target)``: only ``.<name>.<8 random>.tmp`` files whose ``<name>``
    matches the regular expression ``target`` (a file the lab writes there) are removed, so a
    user's own ``*.tmp`` files are never touched. A folder that is a symbolic link is not entered,
    and a link is never removed. Call it only while holding the folder's :class:`RunLock` (no
    other writer is running then).
    """
    removed = []
    for folder, target in pairs:
        folder = Path(folder)
        if not folder.is_dir() or folder.is_symlink():
            continue
        for f in folder.iterdir():
            if is_temporary_of(f.name, target) and f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


# ------------------------------------------------------------------------------ the run's file list

_RECORDERS: list = []  # the RunFiles being kept up to date by this process's writes (see recording())


def safe_relative(rel) -> bool:
    """Whether ``rel`` is a plain relative POSIX path inside a folder: no ``..``, ``.``, empty or absolute parts."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel or PurePosixPath(rel).is_absolute():
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


class RunFiles:
    """The files a run wrote in its folder, listed under ``"files"`` in its marker file.

    While :func:`recording` is active, :func:`atomic_write_bytes` (so every writer: checkpoints,
    predictions, metrics, plots, the report) adds each path under ``root`` here *before* the
    first byte reaches the folder (the temporary file's name derives from the listed one, and a
    checkpoint's ``.prev.pt`` is listed before the rotation), and the marker is rewritten
    atomically whenever the list grows. The marker therefore never lags the folder: after a
    kill it may list a file that was never written, never the reverse. ``--overwrite`` removes
    exactly the listed files (:func:`remove_listed`).

    ``header`` is the rest of the marker's content. ``pending=True`` (a marker to be repaired)
    writes the marker at the next addition or at :meth:`flush`, not before; ``on_save`` is
    called once, after the first write.
    """

    KEY = "files"

    def __init__(self, root, marker: str, header: dict, files=(), *, pending: bool = False, on_save=None):
        self.root = Path(os.path.abspath(root))
        self.marker = self.root / marker
        self.header = {k: v for k, v in header.items() if k != self.KEY}
        self.files = {f for f in files if safe_relative(f)}
        self.pending, self.on_save = pending, on_save

    def relative(self, path) -> str | None:
        """``path`` relative to the root (POSIX), or None if it is not inside it (links are not resolved)."""
        try:
            rel = Path(os.path.relpath(os.path.abspath(path), self.root)).as_posix()
        except ValueError:  # another drive (Windows)
            return None
        return rel if safe_relative(rel) else None

    def add(self, path) -> None:
        """List ``path`` (a file about to be written); rewrites the marker if it is new."""
        rel = self.relative(path)
        if rel is None or rel == self.marker.name or rel in self.files:
            return
        self.files.add(rel)
        self.save()

    def save(self) -> None:
        """Write the marker (atomically) with the current list."""
        atomic_write_json(self.marker, {**self.header, self.KEY: sorted(self.files)})
        self.pending = False
        if self.on_save is not None:
            done, self.on_save = self.on_save, None
            done()

    def flush(self) -> None:
        """Write a pending marker (one to be repaired) that no addition has written yet."""
        if self.pending:
            self.save()


@contextmanager
def recording(files: RunFiles | None):
    """Within the block, every :func:`atomic_write_bytes` under ``files.root`` is listed in ``files`` first."""
    if files is None:
        yield None
        return
    _RECORDERS.append(files)
    try:
        yield files
    finally:
        _RECORDERS.remove(files)


_NO_FOLLOW = (hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
              and {os.open, os.stat, os.unlink, os.rmdir} <= os.supports_dir_fd
              and os.stat in os.supports_follow_symlinks)


def _open_dirs(root, parts) -> int:
    """A descriptor of ``root/parts...``, each step a real folder (``O_NOFOLLOW``); OSError otherwise."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat_walk(root, parts):
    """Without ``dir_fd`` (Windows): the path of ``root/parts...`` if every step is a real folder inside ``root``."""
    path = Path(root)
    for part in parts:
        path = path / part
        st = os.lstat(path)  # FileNotFoundError: missing
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or getattr(path, "is_junction", bool)():
            raise NotADirectoryError(str(path))
    real, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise NotADirectoryError(str(path))
    return path


def _unlink_listed(root, parts, dry_run: bool = False) -> str | None:
    """Delete ``root/parts...`` if it is a regular file reached through real folders; else why not ("missing", ...)."""
    try:
        fd = _open_dirs(root, parts[:-1]) if _NO_FOLLOW else None
        folder = None if _NO_FOLLOW else _lstat_walk(root, parts[:-1])
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "is reached through a symbolic link or a file, not through the run's folders"
    try:
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False) if fd is not None else os.lstat(folder / name)
        except FileNotFoundError:
            return "missing"
        if stat.S_ISLNK(st.st_mode):
            return "is now a symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return "is now a folder or another non-file"
        try:
            if dry_run:
                pass
            elif fd is not None:
                os.unlink(name, dir_fd=fd)
            else:
                os.unlink(folder / name)
        except FileNotFoundError:
            return "missing"
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _rmdir_listed(root, parts) -> None:
    """Remove the folder ``root/parts...`` if it is empty and a real folder (never a link)."""
    try:
        if _NO_FOLLOW:
            fd = _open_dirs(root, parts[:-1])
            try:
                os.rmdir(parts[-1], dir_fd=fd)  # a link: ENOTDIR; not empty: ENOTEMPTY
            finally:
                os.close(fd)
        else:
            os.rmdir(_lstat_walk(root, parts))
    except OSError:
        pass


def remove_listed(root, files, *, dry_run: bool = False) -> tuple[list, list]:
    """Delete the listed files (relative POSIX paths) under ``root``, never through a symbolic link.

    A listed path is deleted only if it is a regular file reached from ``root`` through real
    folders: a linked folder is never entered, and a path that is absolute, has ``..``, leads
    through a link or a file, or is now a link, a folder or anything but a regular file is left
    alone. Folders the removal leaves empty are removed (never ``root``, never a link).

    Returns ``(removed, skipped)``: the removed paths, and ``(path, why)`` for every listed path
    that exists but was left (a missing one is neither). ``dry_run=True`` removes nothing and
    returns what would be removed.
    """
    removed, skipped = [], []
    for rel in sorted({f for f in files if isinstance(f, str)}):
        if not safe_relative(rel):
            skipped.append((rel, "is not a path inside the run folder"))
            continue
        why = _unlink_listed(root, rel.split("/"), dry_run)
        if why is None:
            removed.append(rel)
        elif why != "missing":
            skipped.append((rel, why))
    folders = set() if dry_run else {"/".join(r.split("/")[:i]) for r in removed for i in range(1, r.count("/") + 1)}
    for folder in sorted(folders, key=lambda d: -d.count("/")):
        _rmdir_listed(root, folder.split("/"))
    return removed, skipped


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_TAG = b"mixlab-sha256:"
_TRAILER = len(_TAG) + 64          # the zip comment: tag + 64 hex digits
_EOCD = 22                         # zip end-of-central-directory record without a comment


def previous_path(path) -> Path:
    """Where the previous epoch's checkpoint is kept: ``seed0_mixup.pt`` -> ``seed0_mixup.prev.pt``."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def _checkpoint_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    raw = buf.getvalue()
    if raw[-_EOCD:-_EOCD + 4] != b"PK\x05\x06" or raw[-2:] != b"\x00\x00":  # pragma: no cover - torch format
        raise RuntimeError("torch.save did not end its archive with a comment-free zip directory record")
    body = raw[:-2] + struct.pack("<H", _TRAILER)  # the archive now announces a comment of _TRAILER bytes
    return body + _TAG + hashlib.sha256(body).hexdigest().encode()


_IDENTITY: contextvars.ContextVar = contextvars.ContextVar("mixlab_checkpoint_identity", default=None)


@contextmanager
def checkpoint_identity(identity: dict | None):
    """Within the block, checkpoints belong to ``identity`` (e.g. ``{"seed": 0, "arm": "mixup-0.2",
    "method": "mixup", "alpha": 0.2}``): :func:`save_checkpoint` records it under ``"identity"``
    and :func:`load_latest_checkpoint` treats a checkpoint recording another one as damaged (it
    falls back to the previous checkpoint, or asks for the file to be deleted)."""
    token = _IDENTITY.set(None if identity is None else dict(identity))
    try:
        yield
    finally:
        _IDENTITY.reset(token)


def _describe_identity(ident: dict) -> str:
    if not ident:
        return "no recorded owner"
    text = []
    if "seed" in ident:
        text.append(f"seed {ident['seed']}")
    if "arm" in ident:
        text.append(f"arm {ident['arm']!r}")
    rest = [f"{k} {v!r}" for k, v in ident.items() if k not in ("seed", "arm")]
    return " ".join(text) + (f" ({', '.join(rest)})" if rest else "")


def check_identity(ck: dict, path, identity: dict | None) -> None:
    """Raise :class:`CheckpointError` if checkpoint ``ck`` records another owner than ``identity``.

    A checkpoint written before identities were recorded is judged by the ``seed`` and ``arm``
    it holds. ``identity=None`` checks nothing.
    """
    if not identity:
        return
    theirs = ck.get("identity")
    if isinstance(theirs, dict):
        other = theirs != identity
    else:
        theirs = {k: ck[k] for k in ("seed", "arm") if k in ck and k in identity}
        other = any(identity[k] != v for k, v in theirs.items())
    if other:
        raise CheckpointError(path, f"belongs to {_describe_identity(theirs)}, not to {_describe_identity(identity)} "
                                    f"(copied or renamed into place)")


def save_checkpoint(path, state: dict, *, keep_previous: bool = False, identity: dict | None = None) -> None:
    """``torch.save`` a dict of tensors and plain Python types atomically, with its SHA-256 inside.

    ``keep_previous=True`` first moves the current file (if any) to :func:`previous_path`, so
    the last two checkpoints exist; pass it only when the current file is known to be good.
    ``identity`` (default: the one of :func:`checkpoint_identity`, if any) is stored under ``"identity"``.
    """
    identity = _IDENTITY.get() if identity is None else identity
    if identity is not None:
        state = {**state, "identity": dict(identity)}
    atomic_write_bytes(path, _checkpoint_bytes(state), keep_previous=keep_previous)


def load_checkpoint(path, required=()) -> dict:
    """Load a checkpoint after checking its SHA-256; ``torch.load(weights_only=True)``: no code runs.

    Raises:
        CheckpointError: the file is missing, unreadable, empty, not a mixlab checkpoint, fails its
            hash check (truncated, zeroed, flipped bytes), or lacks one of the ``required`` keys.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror or e})") from None
    if not raw:
        raise CheckpointError(path, "is empty (0 bytes)")
    if len(raw) <= _TRAILER + _EOCD or raw[-_TRAILER:-64] != _TAG:
        if raw[:4] == b"PK\x03\x04" and len(raw) > _EOCD and raw[-_EOCD:-_EOCD + 4] == b"PK\x05\x06":
            raise CheckpointError(path, "has no mixlab integrity hash (written by another program or an older "
                                        "mixlab), so it cannot be trusted")
        raise CheckpointError(path, f"is damaged: it does not end with mixlab's integrity hash "
                                    f"({len(raw)} bytes; truncated or overwritten)")
    body, digest = raw[:-_TRAILER], raw[-64:]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(path, "is damaged: its content does not match the SHA-256 stored in it "
                                    "(bytes were changed after it was written)")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parser failure means the same thing here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"cannot be loaded ({type(e).__name__}: {first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a mixlab checkpoint dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(path, f"lacks the entries {missing} (not a complete mixlab checkpoint)")
    return state


def check_checkpoint_matches(ck: dict, path, expect: dict) -> None:
    """Refuse (``RunError``) a checkpoint made by another configuration, other data or other initial weights.

    ``expect`` may hold ``config_sha256``, ``data_sha256`` (a :func:`data_fingerprint`),
    ``init_sha256`` and ``world_size``; absent keys are not checked.
    """
    path = Path(path)
    what = "start a new run (another --out, or --overwrite to replace this one)"
    if "config_sha256" in expect and ck.get("config_sha256") != expect["config_sha256"]:
        raise RunError(f"checkpoint {path} was written by a run with a different configuration "
                       f"(config hash {str(ck.get('config_sha256'))[:12]}, this run {expect['config_sha256'][:12]}); "
                       f"resume with the run's own config.json, or {what}")
    if "data_sha256" in expect and ck.get("data_sha256") != expect["data_sha256"]:
        change = describe_data_change(ck.get("data_sha256"), expect["data_sha256"])
        raise RunError(f"checkpoint {path} was trained on different data than this run loads ({change}); "
                       f"restore the original data (same --dataset/--data-dir files), or {what}")
    if "world_size" in expect and ck.get("world_size", 1) != expect["world_size"]:
        raise RunError(f"{path} was written by a run of {ck.get('world_size', 1)} process(es); resume it "
                       f"with the same number of processes, not {expect['world_size']}")
    if "init_sha256" in expect and ck.get("init_sha256") != expect["init_sha256"]:
        raise RunError(f"checkpoint {path} started from other initial weights than this run's "
                       f"(init hash {str(ck.get('init_sha256'))[:12]}, now {expect['init_sha256'][:12]}); {what}")


def load_latest_checkpoint(path, *, required=(), expect: dict | None = None, log=None, identity: dict | None = None):
    """The newest usable checkpoint among ``path`` and :func:`previous_path`.

    Returns ``(checkpoint or None, latest_is_good)``: ``None`` when neither file exists. A
    damaged (or missing) latest file falls back to the previous one with a message through
    ``log``; ``latest_is_good`` is then False (the caller must not rotate the damaged file into
    the "previous" slot). A checkpoint of another arm or seed (``identity``, default the one of
    :func:`checkpoint_identity`) counts as damaged. A checkpoint of another configuration or
    data is refused, no fallback.

    Raises:
        CheckpointError: the latest file is damaged and there is no usable previous one.
        RunError: a readable checkpoint belongs to another configuration, data or start.
    """
    path, prev = Path(path), previous_path(path)
    identity = _IDENTITY.get() if identity is None else identity
    damage = None
    if path.exists():
        try:
            ck = load_checkpoint(path, required)
            check_identity(ck, path, identity)
        except CheckpointError as e:
            damage = e
        else:
            check_checkpoint_matches(ck, path, expect or {})
            return ck, True
    if not prev.exists():
        if damage is not None:
            raise damage
        return None, False
    try:
        ck = load_checkpoint(prev, required)
        check_identity(ck, prev, identity)
    except CheckpointError as e:
        if damage is None:
            raise
        raise CheckpointError(path, f"{damage.problem}, and the previous one {prev} {e.problem}",
                              CheckpointError.ADVICE.replace("delete it", "delete both")) from None
    check_checkpoint_matches(ck, prev, expect or {})
    if log is not None:
        why = f"{path} {damage.problem}" if damage is not None else f"{path} is missing"
        log(f"mixlab: {why}; continuing from the previous checkpoint {prev.name} (epoch {ck.get('epoch')})")
    return ck, False


def config_sha256(config: dict, ignore=("quiet", "device", "threads", "out")) -> str:
    """SHA-256 of a run's configuration (a :meth:`LabConfig.to_dict`) without the options a resume may change."""
    kept = {k: v for k, v in config.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


_FULL_HASH_BYTES = 256 << 20   # inputs up to 256 MiB are hashed whole
_BLOCKS, _BLOCK = 4096, 64 << 10


def _tensor_digest(t: torch.Tensor, sample: bool = False) -> dict:
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
    h = hashlib.sha256()
    n = len(raw)
    if sample and n > _FULL_HASH_BYTES:  # cheap: evenly spaced 64 KiB blocks (256 MiB) + the size
        step = n // _BLOCKS
        for i in range(_BLOCKS):
            h.update(raw[i * step:i * step + _BLOCK])
        h.update(str(n).encode())
        how = "sampled"
    else:
        h.update(raw)
        how = "full"
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "sha256": h.hexdigest(),
            "hashed": how}


_DATA_PARTS = {"x_train": "training inputs", "y_train": "training labels", "x_test": "test inputs",
               "y_test": "test labels", "y_clean": "clean training labels", "noisy_mask": "noisy-label mask",
               "mean": "normalisation mean", "std": "normalisation std"}


def data_fingerprint(data) -> dict:
    """What a run was trained on: shape, dtype and SHA-256 of every tensor of a ``LabData``.

    Labels, masks and normalisation constants are hashed whole; inputs whole up to 256 MiB,
    above that 4096 evenly spaced 64 KiB blocks (plus the size).
    """
    out = {}
    for name in _DATA_PARTS:
        t = getattr(data, name, None)
        out[name] = None if t is None else _tensor_digest(t, sample=name.startswith("x_"))
    out["classes"] = [str(c) for c in getattr(data, "classes", [])]
    return out


def describe_data_change(old, new) -> str:
    """A short description of how fingerprint ``new`` differs from ``old``."""
    if not isinstance(old, dict):
        return "the checkpoint records no data fingerprint"
    changes = []
    for name, label in _DATA_PARTS.items():
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            changes.append(f"{label} {'appeared' if a is None else 'disappeared'}")
        elif a["shape"] != b["shape"]:
            changes.append(f"{label} shape {a['shape']} -> {b['shape']}")
        elif a["dtype"] != b["dtype"]:
            changes.append(f"{label} dtype {a['dtype']} -> {b['dtype']}")
        else:
            changes.append(f"{label} values (same shape {b['shape']})")
    if old.get("classes") != new.get("classes"):
        changes.append(f"class names {old.get('classes')} -> {new.get('classes')}")
    return "changed: " + "; ".join(changes) if changes else "no difference found"


def _proc_start(pid: int):
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never judge, never steal
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder: a file created with ``O_CREAT | O_EXCL`` holding pid and host.

    A lock left by a dead process on this host (pid gone, or reused by another process) is
    removed with a message; a live one, or one from another host, is refused naming its owner.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.token = None

    def _owner(self, wait_s: float = 1.0):
        """The lock's content; an empty file is re-read for up to ``wait_s`` (its owner is writing it)."""
        end = time.monotonic() + wait_s
        while True:
            try:
                return json.loads(self.path.read_text())
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                if time.monotonic() >= end:
                    return None
            time.sleep(0.05)

    def _describe(self, owner) -> str:
        if not isinstance(owner, dict):
            return "an unknown process"
        return f"pid {owner.get('pid')} on host {owner.get('host')!r} (since {owner.get('started', '?')})"

    def _stale(self, owner) -> bool:
        if not isinstance(owner, dict):  # unreadable: a process between create and write, or a crash there
            try:
                return time.time() - self.path.stat().st_mtime > 30
            except OSError:
                return True
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
            return False  # another machine's process: cannot tell, so never steal it
        pid = owner["pid"]
        if not _pid_alive(pid):
            return True
        start = _proc_start(pid)
        return owner.get("pid_start") is not None and start is not None and start != owner["pid_start"]

    def refuse_if_held(self) -> None:
        """Raise ``RunError`` naming the owner if another live process holds the lock (reads only)."""
        if self.path.exists():
            owner = self._owner()
            if not self._stale(owner):
                raise RunError(f"run folder {self.path.parent} is in use by another mixlab process: "
                               f"{self._describe(owner)}; wait for it to finish or stop it (if that "
                               f"process is gone for good, delete {self.path})")

    def acquire(self, log=None) -> None:
        folder = self.path.parent
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if not self._stale(owner):
                    raise RunError(f"run folder {folder} is in use by another mixlab process: "
                                   f"{self._describe(owner)}; wait for it to finish or stop it (if that "
                                   f"process is gone for good, delete {self.path})") from None
                # Move the stale lock aside, then check we moved the one we judged (another process
                # may have recovered it and made a fresh lock in between).
                aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                try:
                    moved = json.loads(aside.read_text())
                except (OSError, ValueError):
                    moved = None
                if moved != owner:
                    try:
                        os.link(aside, self.path)  # put the fresh lock back (fails if yet another appeared)
                    except OSError:
                        pass
                    aside.unlink(missing_ok=True)
                    continue
                aside.unlink(missing_ok=True)
                if log is not None:
                    log(f"mixlab: removed a stale lock {self.path} left by {self._describe(owner)}, "
                        f"which is no longer running")
                continue
            token = secrets.token_hex(8)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid()),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": token,
                    "command": " ".join(sys.argv[:1] + sys.argv[1:])[:500]}
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(folder)
            self.token = token
            return
        raise RunError(f"could not take the lock {self.path}: other processes keep taking it")

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another process's)."""
        if self.token is None:
            return
        owner = self._owner(wait_s=0)
        if isinstance(owner, dict) and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def gen_state(g: torch.Generator) -> torch.Tensor:
    """A generator's state as a uint8 CPU tensor (storable with ``weights_only``)."""
    return g.get_state().clone()


def set_gen_state(g: torch.Generator, state: torch.Tensor) -> None:
    g.set_state(state.to(device="cpu", dtype=torch.uint8))


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """Package versions, git commit and machine description for ``config.json``."""
    versions = {}
    for pkg in ("mixlab", "torch", "torchvision", "numpy", "scikit-learn", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["torch"] = torch.__version__
    return {
        "versions": versions,
        "git_commit": _git_commit(),
        "machine": {
            "cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
