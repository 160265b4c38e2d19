"""Time-to-accuracy curves of lab runs: test accuracy against cumulative TRAINING seconds.

Reads each run folder's ``metrics.jsonl`` (one row per seed, arm and epoch, written by
``mixlab train`` / ``mixlab compare``), sums ``train_time_s`` over the epochs (training only:
the per-epoch evaluation is excluded, as in the issue's targets; ``epoch_time_s`` with the
evaluation is summed too and printed beside it), prints one table per run and arm, states the
first epoch and time at which the run reached each target, and plots all curves into one PNG.

    python benchmarks/lab_time_to_accuracy.py /tmp/speed/fm_a /tmp/speed/c10_b \\
        --target fashion-mnist=0.935 --target cifar10=0.90 --out docs/img/time_to_accuracy.png

A run's target is looked up by its dataset (``config.json``), or ``--target 0.9`` for all.
``--budget fashion-mnist=300`` marks the time budget (a vertical line) on that dataset's panel.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_run(folder: Path) -> dict:
    """The run's dataset, model, label and per-(seed, arm) curves ``[(cum_train_s, cum_epoch_s, acc, epoch)]``."""
    folder = Path(folder)
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{folder}: no metrics.jsonl (not a finished or running mixlab run folder)")
    cfg = {}
    if (folder / "config.json").is_file():
        raw = json.loads((folder / "config.json").read_text())
        cfg = raw.get("config", raw)
    curves: dict = {}
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        curves.setdefault((r.get("seed", 0), r.get("arm", "?")), []).append(r)
    out = {}
    for key, rows in curves.items():
        rows.sort(key=lambda r: r["epoch"])
        t = te = 0.0
        pts = []
        for r in rows:
            t += float(r["train_time_s"])
            te += float(r.get("epoch_time_s", r["train_time_s"]))
            if "test_acc" in r:  # --eval-every: an epoch without evaluation adds its time, no point
                pts.append((t, te, float(r["test_acc"]), int(r["epoch"])))
        out[key] = pts
    mix = cfg.get("mix")
    return {"folder": folder, "name": folder.name, "dataset": cfg.get("dataset", "?"), "model": cfg.get("model"),
            "mix": mix, "epochs": cfg.get("epochs"), "curves": out}


def first_crossing(points, target):
    """``(epoch, cum_train_s, acc)`` of the first epoch with test accuracy >= target, else ``None``."""
    for t, _, acc, ep in points:
        if acc >= target:
            return ep, t, acc
    return None


def _parse_map(items, what):
    default, per = None, {}
    for item in items or []:
        if "=" in item:
            k, v = item.split("=", 1)
            per[k] = float(v)
        else:
            default = float(item)
    if default is not None and not 0 < default <= 1 and what == "target":
        raise SystemExit(f"--target must be an accuracy in (0, 1], got {default}")
    return default, per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.jsonl)")
    ap.add_argument("--target", action="append", help="accuracy target: 0.9, or DATASET=0.9 (repeatable)")
    ap.add_argument("--budget", action="append", help="time budget in training seconds: DATASET=300 (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/time_to_accuracy.png"), help="PNG to write")
    ap.add_argument("--no-plot", action="store_true", help="print only")
    args = ap.parse_args(argv)
    default_target, targets = _parse_map(args.target, "target")
    _, budgets = _parse_map(args.budget, "budget")
    runs = [load_run(f) for f in args.runs]

    for run in runs:
        target = targets.get(run["dataset"], default_target)
        for (seed, arm), pts in run["curves"].items():
            print(f"\n{run['name']}  dataset={run['dataset']} model={run['model']} arm={arm} seed={seed}")
            print(f"  {'epoch':>5} {'train s (cum)':>14} {'train+eval s (cum)':>19} {'test acc':>9}")
            for t, te, acc, ep in pts:
                print(f"  {ep:>5} {t:>14.1f} {te:>19.1f} {100 * acc:>8.2f}%")
            best = max(pts, key=lambda p: p[2])
            print(f"  final {100 * pts[-1][2]:.2f}% after {pts[-1][0]:.1f} s of training "
                  f"(best {100 * best[2]:.2f}% at epoch {best[3]})")
            if target is not None:
                hit = first_crossing(pts, target)
                if hit is None:
                    print(f"  target {100 * target:.2f}%: NOT reached")
                else:
                    print(f"  target {100 * target:.2f}%: first reached at epoch {hit[0]}, "
                          f"{hit[1]:.1f} s of training ({100 * hit[2]:.2f}%)")
    if args.no_plot:
        return 0

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        target = targets.get(ds, default_target)
        for run in (r for r in runs if r["dataset"] == ds):
            for (seed, arm), pts in run["curves"].items():
                label = f"{run['name']} ({run['model']}, {arm})"
                line, = ax.plot([p[0] for p in pts], [100 * p[2] for p in pts], marker="o", ms=3, label=label)
                hit = None if target is None else first_crossing(pts, target)
                if hit is not None:
                    ax.plot([hit[1]], [100 * hit[2]], marker="*", ms=12, color=line.get_color())
        if target is not None:
            ax.axhline(100 * target, color="k", ls="--", lw=0.8, label=f"target {100 * target:g}%")
        if ds in budgets:
            ax.axvline(budgets[ds], color="r", ls=":", lw=1, label=f"budget {budgets[ds]:g} s")
        lo = min(100 * p[2] for r in runs if r["dataset"] == ds for pts in r["curves"].values() for p in pts)
        hi = max([100 * p[2] for r in runs if r["dataset"] == ds for pts in r["curves"].values() for p in pts]
                 + ([100 * target] if target else []))
        ax.set_ylim(lo - 1, hi + 0.8)
        ax.set_xlim(left=0)
        ax.set_xlabel("cumulative training seconds (train_time_s, 2 CPU cores)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{ds}: time to accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
