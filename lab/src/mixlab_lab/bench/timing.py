"""Interleaved timing, the machine header and the printed table of ``mixlab bench``.

Every row of a group is warmed up, then the rows are timed in turn, round after round, so a
change in machine load hits every row alike; each row reports the median (and the minimum)
of its rounds and its ratio to the group's floor row (the copy floor for inputs, plain
cross-entropy for targets).
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Optional

import torch


class Skip(Exception):
    """Raised by a row's factory when the row cannot run here (missing peer, unsupported dtype)."""


@dataclasses.dataclass
class Row:
    name: str
    fn: Optional[Callable[[], object]]
    note: str = ""
    times: list = dataclasses.field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return self.fn is None

    def median_ms(self) -> Optional[float]:
        return statistics.median(self.times) * 1e3 if self.times else None

    def min_ms(self) -> Optional[float]:
        return min(self.times) * 1e3 if self.times else None


def make_row(name: str, factory: Callable[[], Callable[[], object]], note: str = "") -> Row:
    """Build a row from a factory returning the callable to time; ``Skip`` or an error skips it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peers' deprecation chatter is not ours to fix
            return Row(name, factory(), note)
    except Skip as e:
        return Row(name, None, f"skipped: {e}")
    except Exception as e:  # a peer that cannot build: say why instead of aborting the run
        return Row(name, None, f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:90]}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call(row: Row, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    row.fn()
    _sync(device)
    return time.perf_counter() - t0


def run_group(rows: list, *, runs: int, warmup: int, device: torch.device) -> None:
    """Warm every row up, then time the rows interleaved for ``runs`` rounds (in place on ``rows``)."""
    for row in rows:
        if row.skipped:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(warmup):
                    row.fn()
        except Exception as e:  # fails on its first call (e.g. a dtype the peer rejects)
            row.fn, row.note = None, f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    live = [r for r in rows if not r.skipped]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(runs):
            for row in live:
                row.times.append(_call(row, device))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(device: torch.device) -> dict:
    """Where and with what the numbers were made."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} {platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "loadavg_start": [round(v, 2) for v in load] if load else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_group(title: str, rows: list, floor: str) -> str:
    """A printed table: name, median ms, ratio to the floor row, min ms, note."""
    base = next((r.median_ms() for r in rows if r.name == floor and not r.skipped), None)
    width = max(len(r.name) for r in rows) + 2
    lines = [f"\n## {title}", f"{'row':<{width}}{'median ms':>11}{'x floor':>9}{'min ms':>10}  note"]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.name:<{width}}{'-':>11}{'-':>9}{'-':>10}  {r.note}")
            continue
        m = r.median_ms()
        ratio = f"{m / base:.2f}" if base else "-"
        lines.append(f"{r.name:<{width}}{m:>11.3f}{ratio:>9}{r.min_ms():>10.3f}  {r.note}")
    return "\n".join(lines)


def group_json(kind: str, title: str, rows: list, floor: str, **extra) -> dict:
    base = next((r.median_ms() for r in rows if r.name == floor and not r.skipped), None)
    out = []
    for r in rows:
        m = r.median_ms()
        out.append({
            "name": r.name, "skipped": r.skipped, "note": r.note, "runs": len(r.times),
            "median_ms": m, "min_ms": r.min_ms(),
            "ratio_to_floor": (m / base) if (m is not None and base) else None,
        })
    return {"kind": kind, "title": title, "floor": floor, **extra, "rows": out}
