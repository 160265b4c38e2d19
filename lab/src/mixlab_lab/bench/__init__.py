"""``mixlab bench``: mixup's speed against the copy floor and against the field, in one process.

For each input group (shape x dtype) and each target group (number of classes) the rows are
warmed up, then timed interleaved for ``--runs`` rounds (median reported, at least 7 rounds
outside ``--quick``). Each row prints its median time and its ratio to the group's floor:
copying the batch into a preallocated tensor for inputs, plain cross-entropy (forward and
backward) for targets. Peers missing from the environment are skipped with a note.

Example::

    mixlab bench --shapes 128x3x224x224 --dtypes float32 --json bench.json
    python -m mixlab_lab.bench --quick
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import subprocess
import sys
import time

import torch

from .rows import TIMM_MODES, detection_rows, input_rows, method_rows, target_rows, timm_rows
from .timing import format_group, group_json, header, run_group

__all__ = ["main", "run"]

DEFAULT_SHAPES = "256x3x32x32,128x3x224x224"
DEFAULT_DTYPES = "float32,bfloat16,uint8"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "uint8": torch.uint8}
QUICK = dict(shapes="16x3x32x32", dtypes="float32", classes="10", target_batch=16, runs=3, warmup=1)


def _shape(text: str) -> tuple:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"a shape looks like 128x3x224x224 (batch first, all >= 1), got {text!r}")
    return dims


def _csv(kind, parse):
    def f(text):
        items = [t for t in text.split(",") if t]
        if not items:
            raise argparse.ArgumentTypeError(f"give at least one {kind}, got {text!r}")
        return [parse(t) for t in items]
    return f


def _dtype(text: str) -> str:
    if text not in DTYPES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(DTYPES)}, got {text!r}")
    return text


def _classes(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"classes must be integers >= 2, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixlab bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=_csv("shape", _shape), default=None, help=f"default {DEFAULT_SHAPES}")
    p.add_argument("--dtypes", type=_csv("dtype", _dtype), default=None, help=f"default {DEFAULT_DTYPES}")
    p.add_argument("--classes", type=_csv("class count", _classes), default=None, help="target side, default 10,1000")
    p.add_argument("--target-batch", type=int, default=None, help="batch of the target side (default 256)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds per row (default 9, at least 7)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before timing")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (saves compile time)")
    p.add_argument("--no-targets", action="store_true", help="skip the target-side groups")
    p.add_argument("--no-methods", action="store_true", help="skip the mask-method group (FMix, ResizeMix, SaliencyMix)")
    p.add_argument("--methods-shape", type=_shape, default=None, help="shape of the method group, default 64x3x64x64 (--quick skips the group unless given)")
    p.add_argument("--no-detection", action="store_true", help="skip the detection group (Copy-Paste, Mosaic, MixUp)")
    p.add_argument("--detection-shape", type=_shape, default=None,
                   help="images of the detection group, default 16x3x256x256 (--quick skips the group unless given)")
    p.add_argument("--no-timm", action="store_true", help="skip the timm-recipe group (mixlab.timm.Mixup vs timm)")
    p.add_argument("--timm-shape", type=_shape, default=None,
                   help="shape of the timm-recipe group, default 64x3x224x224 (--quick skips the group unless given)")
    p.add_argument("--contention", action="store_true",
                   help="run every group four times: quiet at torch's threads and at 1 thread, then with a busy "
                        "process pinned to one core at both thread counts")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: one tiny shape, float32, 3 rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the table as JSON")
    return p


def _settings(ns) -> dict:
    q = QUICK if ns.quick else {}
    s = {
        "shapes": ns.shapes or _csv("shape", _shape)(q.get("shapes", DEFAULT_SHAPES)),
        "dtypes": ns.dtypes or q.get("dtypes", DEFAULT_DTYPES).split(","),
        "classes": ns.classes or [int(c) for c in q.get("classes", "10,1000").split(",")],
        "target_batch": ns.target_batch or q.get("target_batch", 256),
        "runs": ns.runs or q.get("runs", 9),
        "warmup": ns.warmup if ns.warmup is not None else q.get("warmup", 2),
        "compile": not (ns.no_compile or ns.quick),
    }
    if s["runs"] < (1 if ns.quick else 7):
        raise ValueError(f"--runs must be >= 7 (the median of at least 7 rounds), got {s['runs']}")
    if s["warmup"] < 0 or s["target_batch"] < 1:
        raise ValueError(f"--warmup must be >= 0 and --target-batch >= 1, got {s['warmup']} and {s['target_batch']}")
    return s


def _make_batch(shape, dtype_name, device, gen):
    x = torch.rand(shape, generator=gen, device=device)  # (B, ...) in [0, 1)
    return (x * 255).to(torch.uint8) if dtype_name == "uint8" else x.to(DTYPES[dtype_name])


BUSY_CODE = """
import os, sys
cpu = int(sys.argv[1])
if cpu >= 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {cpu})
while True:
    pass
"""


@dataclasses.dataclass(frozen=True)
class BusyCore:
    cpu: int  # the CPU it is pinned to (-1: not pinned, where the platform cannot pin)
    pid: int


@contextlib.contextmanager
def busy_core():
    """Keep one core busy with another process (a spinning Python loop pinned to the last CPU this process may
    use) for the duration: the contention of DataLoader workers or a second job. Yields that CPU's number."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cpu = cpus[-1] if cpus else -1
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CODE, str(cpu)])
    try:
        time.sleep(0.3)  # let it start spinning
        if proc.poll() is not None:
            raise RuntimeError(f"mixlab bench --contention: the busy process exited with code {proc.returncode}")
        yield BusyCore(cpu, proc.pid)
    finally:
        proc.kill()
        proc.wait()


def conditions(settings: dict, default_threads: int) -> list:
    """The machine states the groups run under: today's threads only, or with ``--contention`` four states:
    quiet at torch's threads and at one thread, then with a busy core at torch's threads and at one thread."""
    if not settings.get("contention"):
        return [{"contended": False, "threads": default_threads, "label": ""}]
    out = []
    for contended in (False, True):
        for n in dict.fromkeys((default_threads, 1)):
            out.append({"contended": contended, "threads": n,
                        "label": f" [{'one core busy' if contended else 'quiet'}, {n} thread{'s' * (n > 1)}]"})
    return out


def run(settings: dict, device: torch.device, seed: int = 0, out=None) -> dict:
    """Run every group under every condition; print the tables to ``out`` (default stdout); return the JSON."""
    out = sys.stdout if out is None else out
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)  # the PyPI mixup package and timm draw from numpy's global RNG
    except ImportError:
        pass
    default_threads = torch.get_num_threads()
    conds = conditions(settings, default_threads)
    result = {"header": header(device), "settings": {k: v for k, v in settings.items()}, "groups": [],
              "conditions": conds}
    result["settings"]["shapes"] = ["x".join(map(str, s)) for s in settings["shapes"]]
    for k in ("methods_shape", "timm_shape", "detection_shape"):
        if k in result["settings"]:
            result["settings"][k] = list(result["settings"][k])
    h = result["header"]
    print(f"# mixlab bench\n# {h['date_utc']} UTC | {h['machine']} | CPU: {h['cpu']} ({h['cpu_count']} cores)\n"
          f"# torch {h['torch']} | threads {h['threads']} | device {h['device']} | load avg {h['loadavg_start']}\n"
          f"# {settings['warmup']} warm-up calls, then the median of {settings['runs']} interleaved rounds",
          file=out)
    if len(conds) > 1:
        print(f"# --contention: every group at {default_threads} and 1 thread, quiet, then with a busy process "
              f"pinned to one core", file=out)
    try:
        for cond in conds:
            torch.set_num_threads(cond["threads"])
            with (busy_core() if cond["contended"] else contextlib.nullcontext(None)) as busy:
                cond["busy_cpu"] = None if busy is None else busy.cpu
                cond["loadavg_start"] = _load()
                _run_groups(settings, device, seed, out, cond, result["groups"])
                cond["loadavg_end"] = _load()
    finally:
        torch.set_num_threads(default_threads)
    result["header"]["loadavg_end"] = _load()
    result["goals"] = goals(result)
    print(format_goals(result["goals"]), file=out)
    return result


def _load():
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _run_groups(settings: dict, device, seed: int, out, cond: dict, groups: list) -> None:
    """Every group of the run once, under ``cond``'s threads and load; appends their JSON to ``groups``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    tag, state = cond["label"], {"contended": cond["contended"], "threads": cond["threads"]}

    def emit(kind, title, rows, floor, **extra):
        """Time ``rows`` (interleaved rounds), print their table and keep its JSON."""
        run_group(rows, runs=settings["runs"], warmup=settings["warmup"], device=device)
        print(format_group(title + tag, rows, floor), file=out, flush=True)
        groups.append(group_json(kind, title + tag, rows, floor, condition=state, **extra))

    for shape in settings["shapes"]:
        for dt in settings["dtypes"]:
            x = _make_batch(shape, dt, device, gen)
            y = torch.randint(0, 10, (shape[0],), generator=gen, device=device)
            rows = input_rows(x, y, 10, compiled=settings["compile"], seed=seed)
            emit("input", f"inputs {'x'.join(map(str, shape))} {dt} (per-sample mixup, alpha 1)", rows, "copy floor",
                 shape=list(shape), dtype=dt)
            del x, rows
    if not settings.get("no_targets"):
        for C in settings["classes"]:
            rows = target_rows(settings["target_batch"], C, device=device, seed=seed)
            emit("target", f"targets B={settings['target_batch']} C={C} (loss forward + backward)", rows, "plain CE",
                 num_classes=C, batch=settings["target_batch"])
    if not settings.get("no_methods"):
        shape = tuple(settings["methods_shape"])
        x = _make_batch(shape, "float32", device, gen)
        y = torch.randint(0, 10, (shape[0],), generator=gen, device=device)
        rows = method_rows(x, y, 10, seed=seed)
        emit("method", f"methods {'x'.join(map(str, shape))} float32 (alpha 1)", rows, "mixlab MixUp call (sample)",
             shape=list(shape))
        del x, rows
    if not settings.get("no_detection"):
        B, _, H, W = settings["detection_shape"]
        rows = detection_rows(B, H, W, seed=seed)
        emit("detection", f"detection {B} images 3x{H}x{W}, 6 instances each with masks", rows, "copy floor",
             shape=[B, 3, H, W])
        del rows
    if not settings.get("no_timm"):
        shape = tuple(settings["timm_shape"])
        x = _make_batch(shape, "float32", device, gen)
        y = torch.randint(0, 1000, (shape[0],), generator=gen, device=device)
        rows = timm_rows(x, y, 1000, seed=seed)
        emit("timm", f"timm recipe {'x'.join(map(str, shape))} float32 (mixup 0.8, cutmix 1.0, switch 0.5, "
             f"smoothing 0.1, 1000 classes)", rows, "copy floor", shape=list(shape))
        del x, rows


def _stat(result, kind, pred, name, stat, state=None):
    for g in result["groups"]:
        if g["kind"] == kind and g.get("condition") == state and pred(g):
            for r in g["rows"]:
                if r["name"] == name and not r["skipped"]:
                    return r[stat]
    return None


def goals(result: dict) -> list:
    """The issues' goals, per condition, checked on this run's medians (``value``) and minimums (``value_min``).

    On a loaded machine the minimum is the less disturbed figure; both are reported.
    """
    out = []
    for cond in result.get("conditions") or [None]:
        state = None if cond is None else {"contended": cond["contended"], "threads": cond["threads"]}
        label = "" if cond is None else cond["label"].strip()
        by_stat = {stat: _goals(result, stat, state) for stat in ("median_ms", "min_ms")}
        for (text, v, ok), (_, v_min, _) in zip(by_stat["median_ms"], by_stat["min_ms"]):
            out.append({"goal": f"{label} {text}".strip(), "condition": state, "value": v,
                        "met": None if v is None else bool(ok(v)),
                        "value_min": v_min, "met_min": None if v_min is None else bool(ok(v_min))})
    return out


def _goals(result: dict, stat: str, state) -> list:
    contended = bool(state and state["contended"])
    big = lambda g: g.get("shape") == [128, 3, 224, 224] and g.get("dtype") == "float32"  # noqa: E731
    t = lambda name: _stat(result, "input", big, name, stat, state)  # noqa: E731
    out = []

    def goal(text, value, ok):
        out.append((text, value, ok))

    ip, oop, copy, clone = t("mixlab mix (in place)"), t("mixlab mix (out of place)"), t("copy floor"), t("x.clone()")
    need_ip, need_oop = (1.5, 1.5) if contended else (1.1, 1.3)
    goal(f"128x3x224x224 f32 in place <= {need_ip}x copy floor", ip / copy if ip and copy else None,
         lambda v: v <= need_ip)
    goal(f"128x3x224x224 f32 out of place <= {need_oop}x x.clone()", oop / clone if oop and clone else None,
         lambda v: v <= need_oop)
    peers = [r for g in result["groups"] if g["kind"] == "input" and g.get("condition") == state and big(g)
             for r in g["rows"] if not r["skipped"] and r["name"].startswith(("timm", "torchvision"))
             or (not contended and not r["skipped"]
                 and not r["name"].startswith(("mixlab", "copy", "x.clone", "paper", "fastai")))]
    for kind, ours in (("MixUp", "mixlab MixUp call"), ("CutMix", "mixlab CutMix call")):
        same = [r for r in peers if ("Cut" in r["name"]) == (kind == "CutMix")]
        for suffix, need in ((" (in place)", 1.0 if contended else 5.0), ("", 1.0 if contended else 1.6)):
            mine = t(ours + suffix)
            worst = min((r[stat] / mine for r in same), default=None) if mine else None
            who = "timm and torchvision" if contended else "every"
            goal(f"{kind} call{suffix or ' (out of place)'} >= {need}x faster than {who} {kind} peer", worst,
                 lambda v, need=need: v >= need)
    m = lambda g: g["kind"] == "method"  # noqa: E731
    for method, ours, need in (("FMix", "mixlab FMix (batch)", 1.5), ("ResizeMix", "mixlab ResizeMix (batch)", 1.5),
                               ("SaliencyMix", "mixlab SaliencyMix (sample)", 3.0)):
        mine, theirs = (_stat(result, "method", m, ours, stat, state),
                        _stat(result, "method", m, f"mixup {method}", stat, state))
        goal(f"{ours.removeprefix('mixlab ')} >= {need}x faster than the PyPI mixup package's",
             theirs / mine if mine and theirs else None, lambda v, need=need: v >= need)
    for ours, peer in (("mixlab CutMix (batch, in place)", "timm CutMix (batch)"),
                       ("mixlab CutMix (sample, in place)", "timm CutMix (elem)"),
                       ("mixlab CutMix (batch)", "torchvision v2 CutMix"), ("mixlab CutMix (batch)", "mixup CutMix")):
        mine, theirs = (_stat(result, "method", m, ours, stat, state), _stat(result, "method", m, peer, stat, state))
        goal(f"{ours.removeprefix('mixlab ')} at least as fast as {peer} (theirs / ours >= 1)",
             theirs / mine if mine and theirs else None, lambda v: v >= 1.0)
    det = lambda g: g["kind"] == "detection"  # noqa: E731
    mine, theirs = (_stat(result, "detection", det, "mixlab CopyPaste (roll)", stat, state),
                    _stat(result, "detection", det, "torchvision SimpleCopyPaste (reference port)", stat, state))
    goal("CopyPaste at least as fast as torchvision's reference (theirs / ours >= 1)",
         theirs / mine if mine and theirs else None, lambda v: v >= 1.0)
    tg = lambda g: g["kind"] == "timm"  # noqa: E731
    for mode in TIMM_MODES:
        mine, theirs = (_stat(result, "timm", tg, f"mixlab.timm Mixup ({mode})", stat, state),
                        _stat(result, "timm", tg, f"timm Mixup ({mode})", stat, state))
        goal(f"mixlab.timm Mixup ({mode}) at least as fast as timm's (timm / mixlab >= 1)",
             theirs / mine if mine and theirs else None, lambda v: v >= 1.0)
    c1000 = lambda g: g.get("num_classes") == 1000  # noqa: E731
    ce = _stat(result, "target", c1000, "mixlab .loss (int targets)", stat, state)
    plain = _stat(result, "target", c1000, "plain CE", stat, state)
    goal("mixed CE, int targets, 1000 classes <= 1.2x plain CE", ce / plain if ce and plain else None,
         lambda v: v <= 1.2)
    return out


def format_goals(items: list) -> str:
    lines = ["\n## goals (this run: on medians / on minimums)"]
    missing = [g["goal"] for g in items if g["value"] is None]
    for g in items:
        if g["value"] is None:
            continue
        lines.append(f"- {g['goal']}: {g['value']:.2f}x {'met' if g['met'] else 'MISSED'} / "
                     f"{g['value_min']:.2f}x {'met' if g['met_min'] else 'MISSED'}")
    if missing:
        lines.append(f"- not measured in this run (their groups or rows were not run): {len(missing)} goals")
    return "\n".join(lines)


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)  # never leaves a half-written table


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mixlab bench``; returns the process exit code."""
    p = parser()
    ns = p.parse_args(argv)
    try:
        settings = _settings(ns)
    except ValueError as e:
        p.error(str(e))
    settings["no_targets"] = ns.no_targets
    settings["contention"] = ns.contention
    settings["no_methods"] = ns.no_methods or (ns.quick and ns.methods_shape is None)
    settings["methods_shape"] = ns.methods_shape or (64, 3, 64, 64)
    settings["no_timm"] = ns.no_timm or (ns.quick and ns.timm_shape is None)
    settings["no_detection"] = ns.no_detection or (ns.quick and ns.detection_shape is None)
    settings["detection_shape"] = ns.detection_shape or (16, 3, 256, 256)
    if len(settings["detection_shape"]) != 4:
        p.error(f"--detection-shape is BxCxHxW, got {'x'.join(map(str, settings['detection_shape']))}")
    settings["timm_shape"] = ns.timm_shape or (64, 3, 224, 224)
    device = torch.device(ns.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda was given but CUDA is not available")
    if ns.threads is not None:
        if ns.threads < 1:
            p.error(f"--threads must be >= 1, got {ns.threads}")
        torch.set_num_threads(ns.threads)
    result = run(settings, device, seed=ns.seed)
    if ns.json:
        _write_json(ns.json, result)
        print(f"\nwrote {ns.json}")
    return 0
