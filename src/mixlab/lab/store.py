"""Run-folder I/O: atomic writes, checkpoints loaded with ``weights_only=True``, provenance.

Every file is written to a temporary sibling and moved into place with ``os.replace``, so a
crash or Ctrl-C leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "save_checkpoint",
           "load_checkpoint", "provenance", "gen_state", "set_gen_state"]


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path, state: dict) -> None:
    """``torch.save`` a dict of tensors and plain Python types, atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain types only, no code runs."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
