"""Markdown tables for docs/RESULTS.md from `mixlab compare` run folders (their summary.json).

    python benchmarks/results_tables.py noise RUN_0 RUN_0.2 RUN_0.5 RUN_0.8   # label-noise table
    python benchmarks/results_tables.py ranking RUN                           # arms ranked, with intervals
    python benchmarks/results_tables.py times RUN [RUN ...]                   # wall/CPU time per folder

Every number comes from the folder's summary.json (final epoch unless said), which `mixlab
compare` wrote; nothing is re-run here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(folder) -> tuple[dict, dict]:
    folder = Path(folder)
    return (json.loads((folder / "summary.json").read_text()), json.loads((folder / "config.json").read_text()))


def _pm(stat: dict, scale: float = 100.0, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _ci(rec: dict, scale: float = 100.0, digits: int = 2) -> str:
    if rec.get("mean") is None:
        return "-"
    lo, hi = rec.get("lo"), rec.get("hi")
    inner = "" if lo is None else f" [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"
    return f"{rec['mean'] * scale:+.{digits}f}{inner}"


def noise_table(folders) -> str:
    head = ("| label noise | arm | last-epoch test acc % | best-epoch test acc % | last - baseline, points [95% CI] "
            "| verdict | noisy labels memorised % | test NLL | test ECE |")
    lines = [head, "|" + "---|" * 9]
    for folder in folders:
        summary, config = _load(folder)
        noise = config["config"]["label_noise"]
        for arm in summary["arms"]:
            agg = summary["aggregate"][arm]
            comp = summary.get("versus_baseline", {}).get(arm)
            diff = _ci(comp["metrics"]["test_acc"]) if comp else "-"
            call = comp["metrics"]["test_acc"]["call"] if comp else "-"
            mem = _pm(agg.get("noisy_memorised"), 100, 1) if noise > 0 else "-"
            lines.append(f"| {noise:.0%} | {arm} | {_pm(agg['test_acc'])} | {_pm(agg['best_test_acc'])} | {diff} | "
                         f"{call} | {mem} | {_pm(agg['test_nll'], 1, 3)} | {_pm(agg['test_ece'], 1, 3)} |")
    return "\n".join(lines)


def ranking(folder) -> str:
    summary, _ = _load(folder)
    vs = summary.get("versus_baseline", {})
    base = summary["arms"][0]
    order = sorted(vs, key=lambda a: -vs[a]["metrics"]["test_acc"]["mean"])
    lines = ["| arm | test acc % (mean ± std) | acc - baseline, points [95% CI] | verdict | NLL - baseline [95% CI] "
             "| ECE - baseline [95% CI] | McNemar p per seed |", "|" + "---|" * 7,
             f"| {base} | {_pm(summary['aggregate'][base]['test_acc'])} | - | - | - | - | - |"]
    for arm in order:
        m = vs[arm]["metrics"]
        ps = ", ".join(f"{t['p']:.2g}" for t in vs[arm]["mcnemar"].values())
        lines.append(f"| {arm} | {_pm(summary['aggregate'][arm]['test_acc'])} | {_ci(m['test_acc'])} | "
                     f"{m['test_acc']['call']} | {_ci(m['test_nll'], 1, 3)} ({m['test_nll']['call']}) | "
                     f"{_ci(m['test_ece'], 1, 3)} ({m['test_ece']['call']}) | {ps} |")
    return "\n".join(lines)


def times(folders) -> str:
    lines = ["| run | wall | CPU (user) | arms x seeds |", "|---|---|---|---|"]
    for folder in folders:
        f = Path(folder)
        t = (f.parent / (f.name + ".time"))
        summary, _ = _load(f)
        lines.append(f"| {f.name} | {t.read_text().strip() if t.exists() else '-'} | | "
                     f"{len(summary['arms'])} x {len(summary['seeds'])} |")
    return "\n".join(lines)


def main(argv) -> int:
    if len(argv) < 2 or argv[0] not in ("noise", "ranking", "times"):
        print(__doc__)
        return 2
    kind, folders = argv[0], argv[1:]
    if kind == "noise":
        print(noise_table(folders))
    elif kind == "ranking":
        for f in folders:
            print(f"### {Path(f).name}\n\n{ranking(f)}\n")
    else:
        print(times(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
