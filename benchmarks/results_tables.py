"""Markdown tables for docs/RESULTS.md from `mixlab compare` run folders (their summary.json).

    python benchmarks/results_tables.py noise RUN_0 RUN_0.2 RUN_0.5 RUN_0.8   # label-noise table
    python benchmarks/results_tables.py ranking RUN                           # arms ranked, with intervals
    python benchmarks/results_tables.py times RUN [RUN ...]                   # wall/CPU time per folder
    python benchmarks/results_tables.py budget RUN [RUN ...]                  # budget sweeps (--epochs 10,30,90)
    python benchmarks/results_tables.py pair RUN ARM [BASE]                   # one finished arm of an unfinished run
    python benchmarks/results_tables.py runs BASE_RUN:STEM ARM_RUN:STEM       # two runs' predictions (e.g. bf16 / fp32)

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


def _curves(folder) -> dict:
    """``{(seed, arm, budget): [record, ...]}`` from the folder's metrics.jsonl (the per-epoch records)."""
    out: dict = {}
    path = Path(folder) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "epoch" in r and "test_acc" in r:
            out.setdefault((r["seed"], r["arm"], int(r.get("budget", r["epoch"]))), []).append(r)
    return out


def best_last_gap(records: list) -> tuple[float, int, bool]:
    """(best - last test accuracy, the best epoch, whether the epochs were scored on a test subset) of one run's
    per-epoch records; epochs scored on a subset (``--eval-subset``) are compared with the last epoch scored on
    the whole test set, so the gap then mixes the two (said in the table)."""
    records = sorted(records, key=lambda r: r["epoch"])
    best = max(records, key=lambda r: r["test_acc"])
    return best["test_acc"] - records[-1]["test_acc"], best["epoch"], any("test_rows" in r for r in records)


def budget_table(folders) -> str:
    """One row per (folder, budget, arm) of budget sweeps: accuracy, the verdict's interval, NLL, ECE, the arm's own
    training loss, and for the baseline the gap between its best and last epoch (mean over seeds); then each
    folder's crossover lines."""
    head = ("| run | train images | budget (epochs) | arm | test acc % | acc - baseline, points [95% CI] | verdict "
            "| NLL (mean) | ECE (mean) | own train loss | best - last epoch, points (baseline) |")
    lines, verdicts = [head, "|" + "---|" * 11], []
    for folder in folders:
        summary, config = _load(folder)
        cfg = config["config"]
        budgets = summary.get("budgets") or {str(cfg["epochs"]): summary}
        curves = _curves(folder)
        base = summary["arms"][0]
        for b in sorted(budgets, key=int):
            rec = budgets[b]
            for arm in summary["arms"]:
                agg = rec["aggregate"][arm]
                comp = rec.get("versus_baseline", {}).get(arm)
                diff = _ci(comp["metrics"]["test_acc"]) if comp else "-"
                call = comp["metrics"]["test_acc"]["call"] if comp else "-"
                gap = "-"
                if arm == base:
                    runs = [curves[k] for k in curves if k[1] == arm and k[2] == int(b)]
                    if runs:
                        gaps = [best_last_gap(r) for r in runs]
                        sub = " (subset-scored epochs)" if any(g[2] for g in gaps) else ""
                        gap = (f"{100 * sum(g[0] for g in gaps) / len(gaps):.2f} (best at epoch "
                               f"{', '.join(str(g[1]) for g in gaps)}){sub}")
                lines.append(f"| {Path(folder).name} | {cfg.get('train_size') or 'all'} | {b} | {arm} | "
                             f"{_pm(agg['test_acc'])} | {diff} | {call} | {agg['test_nll']['mean']:.3f} | "
                             f"{agg['test_ece']['mean']:.3f} | {agg['train_loss']['mean']:.4f} | {gap} |")
        verdicts += [f"- {Path(folder).name}: {v}" for v in summary.get("budget_verdict", [])]
    return "\n".join(lines + [""] + verdicts)


def pair(folder, arm: str, base: str = "baseline") -> str:
    """The verdict of ``arm`` against ``base`` from a run folder's predictions and metrics.jsonl, for a run stopped
    before its summary (an arm that finished while a later one did not): the lab's own statistics
    (``mixlab_lab.stats.compare_arms``) on the seeds both arms finished."""
    from mixlab_lab import stats
    from mixlab_lab.runner import load_predictions

    folder = Path(folder)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    keys = ("test_acc", "test_nll", "test_ece")
    finals, preds = {base: {}, arm: {}}, {base: {}, arm: {}}
    for a in (base, arm):
        for r in rows:
            if r.get("arm") == a and all(k in r for k in keys) and "test_rows" not in r:
                f = folder / "predictions" / f"seed{r['seed']}_{a}.npz"
                if f.exists():
                    finals[a][str(r["seed"])] = {k: r[k] for k in keys}  # the last full-test epoch
                    preds[a][str(r["seed"])] = load_predictions(f)
    comp = stats.compare_arms(finals[base], finals[arm], preds[base], preds[arm])
    acc = {a: sum(v["test_acc"] for v in finals[a].values()) / max(len(finals[a]), 1) for a in (base, arm)}
    return "\n".join([f"{base}: test acc {100 * acc[base]:.2f}%, {arm}: {100 * acc[arm]:.2f}%"]
                     + stats.verdict_lines(arm, comp) + [stats.headline(arm, comp)])


def runs(base_spec: str, arm_spec: str) -> str:
    """Two run folders' stored predictions against each other, seed by seed (``RUN:STEM``: the files
    ``RUN/predictions/seed<S>_<STEM>.npz``), with the lab's statistics; accuracy, NLL and ECE computed from the
    predictions. For runs that differ in something other than the mixing arm (``--autocast bf16`` against float32)."""
    from mixlab_lab import stats
    from mixlab_lab.runner import load_predictions

    finals, preds = [], []
    for spec in (base_spec, arm_spec):
        folder, stem = spec.rsplit(":", 1)
        fin, pr = {}, {}
        for f in sorted((Path(folder) / "predictions").glob(f"seed*_{stem}.npz")):
            seed = f.name[len("seed"):-len(f"_{stem}.npz")]
            p = load_predictions(f)
            correct, nll, conf = stats._per_image(p)
            fin[seed] = {"test_acc": correct.mean().item(), "test_nll": nll.mean().item(),
                         "test_ece": stats.ece(conf, correct)}
            pr[seed] = p
        finals.append(fin)
        preds.append(pr)
    comp = stats.compare_arms(finals[0], finals[1], preds[0], preds[1])
    acc = [sum(v["test_acc"] for v in f.values()) / max(len(f), 1) for f in finals]
    name = arm_spec.rsplit(":", 1)[1]
    return "\n".join([f"{base_spec}: test acc {100 * acc[0]:.2f}%, {arm_spec}: {100 * acc[1]:.2f}% "
                      f"(seeds {', '.join(comp['seeds'])})"] + stats.verdict_lines(name, comp))


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
    if len(argv) < 2 or argv[0] not in ("noise", "ranking", "times", "budget", "pair", "runs"):
        print(__doc__)
        return 2
    kind, folders = argv[0], argv[1:]
    if kind == "noise":
        print(noise_table(folders))
    elif kind == "ranking":
        for f in folders:
            print(f"### {Path(f).name}\n\n{ranking(f)}\n")
    elif kind == "runs":
        print(runs(*folders))
    elif kind == "pair":
        print(pair(*folders))
    elif kind == "budget":
        print(budget_table(folders))
    else:
        print(times(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
