"""The lab's training and evaluation speed, in images per second per arm, before and after (issue 21 section 2).

Runs short ``mixlab`` commands (default: CIFAR-10, 5,000 training images, 1 epoch, 2 threads) one after the
other as subprocesses, under each variant of the speed options, and reads each run's metrics.jsonl: the lab
records ``train_images_per_s`` and ``eval_images_per_s`` per epoch (older labs only ``train_time_s`` and
``epoch_time_s``: the rates are then derived from them, eval = test rows / (epoch - train time)). The 1-minute load
average is printed before and after each run; on a shared machine compare rows taken at similar load only.

``--before SRC`` runs the rows marked "before" with another copy of the lab on ``PYTHONPATH``, e.g. the last commit's:

    git archive HEAD lab | tar -x -C /tmp/before
    python benchmarks/lab_speed.py --data-dir cifar10-jpg.tar.gz --before /tmp/before/lab/src --json speed.json

Rows: ``airbench-cpu`` with the ``cifar10-fast`` preset (``mixlab train``, one arm), and the default model
(``fast-cnn``) with the lab's defaults (``mixlab compare``: baseline and mixup arms), each before, after with the
defaults, and after with ``--autocast bf16``, ``--compile eval`` and both. ``--only NAME`` (repeatable) keeps some.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEED = {"default": [], "bf16": ["--autocast", "bf16"], "compile-eval": ["--compile", "eval"],
         "bf16+compile-eval": ["--autocast", "bf16", "--compile", "eval"]}


def rows(data_dir: str, train_size: int, epochs: int, threads: int) -> list[tuple[str, str, list, str]]:
    common = ["--data-dir", data_dir, "--train-size", str(train_size), "--epochs", str(epochs),
              "--threads", str(threads), "--quiet", "--seeds", "0"]
    air = ["train", "--preset", "cifar10-fast", *common]
    cnn = ["compare", "--dataset", "cifar10", *common]
    out = []
    for model, base in (("airbench-cpu (cifar10-fast)", air), ("fast-cnn (defaults, mixup)", cnn)):
        out.append((model, "before", base, "before"))
        for name, flags in SPEED.items():
            out.append((model, name, base + flags, "after"))
    return out


def rates(run: Path, n_train: int | None, n_test: int | None) -> list[dict]:
    """Per (arm, epoch): train and eval images per second (derived from the timings for an older lab)."""
    got = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        tr, ev = r.get("train_images_per_s"), r.get("eval_images_per_s")
        if tr is None and n_train:
            tr = n_train / r["train_time_s"]
        if ev is None and n_test:
            ev = n_test / (r["epoch_time_s"] - r["train_time_s"])
        got.append({"arm": r["arm"], "epoch": r["epoch"], "train": tr, "eval": ev, "test_acc": r["test_acc"],
                    "train_time_s": r["train_time_s"], "epoch_time_s": r["epoch_time_s"]})
    return got


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="CIFAR-10 (e.g. cifar10-jpg.tar.gz)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--before", default=None, help="lab source folder (holding mixlab_lab) for the 'before' rows")
    p.add_argument("--only", action="append", default=None, help="keep variants of this name (repeatable)")
    p.add_argument("--nice", type=int, default=19, help="run each command under nice -n N (default 19; 0: not)")
    p.add_argument("--json", default=None)
    ns = p.parse_args(argv)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, variant, args, which) in enumerate(rows(ns.data_dir, ns.train_size, ns.epochs, ns.threads)):
            if ns.only and variant not in ns.only:
                continue
            if which == "before" and ns.before is None:
                continue
            out = Path(tmp) / f"run{i}"
            env = dict(os.environ)
            if which == "before":
                env["PYTHONPATH"] = ns.before + os.pathsep + env.get("PYTHONPATH", "")
            cmd = [sys.executable, "-m", "mixlab_lab", *args, "--out", str(out)]
            if ns.cache_dir:
                cmd += ["--cache-dir", ns.cache_dir]
            if ns.nice:
                cmd = ["nice", "-n", str(ns.nice), *cmd]
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()[0]
            if res.returncode != 0:
                print(f"{model} {variant}: failed ({res.returncode}): {res.stderr[-500:]}", file=sys.stderr)
                continue
            info = json.loads((out / "config.json").read_text()).get("data", {})
            for r in rates(out, info.get("num_train"), info.get("num_test")):
                row = {"model": model, "variant": variant, "arm": r["arm"], "epoch": r["epoch"], "train": r["train"],
                       "eval": r["eval"], "test_acc": r["test_acc"], "load": [load0, load1], "wall_s": wall,
                       "command": " ".join(["mixlab", *args])}
                table.append(row)
                print(f"| {model} | {variant} | {r['arm']} | {r['train']:.0f} | {r['eval']:.0f} | "
                      f"{r['test_acc']:.4f} | {load0:.1f} / {load1:.1f} |", flush=True)
    if ns.json:
        Path(ns.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
