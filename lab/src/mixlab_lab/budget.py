"""Training budget as an axis of ``mixlab compare``: ``--epochs 10,30,90``.

Every arm is trained at each budget, each run with its own full learning-rate schedule (a one-cycle
or cosine schedule cut short is not the same run), from the seed's initial weights and with the
seed's data order, so the arms of one budget are paired exactly as in a one-budget run, and the
verdict of each budget is today's (:mod:`mixlab_lab.stats`). Each (arm, budget) is its own
checkpointed run (``checkpoints/seed<S>_<arm>_e<B>.pt``), so an interrupted sweep resumes where it
stopped. One ``--epochs`` value keeps the one-budget names and figures exactly.

``--budget-mode checkpoints`` is the cheaper approximation: one run per arm at the longest budget
with a constant-then-decay schedule (warm-up as the one-cycle schedule's when ``--schedule onecycle``,
then the constant peak lr, then a cosine decay over the last 20% of the epochs, at least one). Its
checkpoint at the start of each shorter budget's decay is copied and decayed over that budget's last
20%; the copy is then exactly the run that budget would get with the same constant-then-decay
schedule (the constant phase does not depend on the budget), at a cost of the longest budget plus
the shorter budgets' decays instead of the sum of all budgets. The approximation is the schedule
(constant-then-decay instead of the ``--schedule`` asked for), and the report says so.
"""
from __future__ import annotations

import math
import statistics

__all__ = ["decay_epochs", "branch_epoch", "lr_plan", "stem", "training_order", "file_stems", "crossover_line",
           "budget_lines", "next_budget", "longer_budget_hint", "loss_far_from_converged", "still_improving",
           "budget_plot", "mode_difference", "format_mode_difference", "DECAY_SHARE"]

DECAY_SHARE = 0.2     # --budget-mode checkpoints: the share of a budget spent decaying the lr
LOSS_FAR = 0.10       # a mixed arm's own training loss still falling by more than this share: far from converged


def decay_epochs(budget: int) -> int:
    """Epochs of lr decay at the end of ``budget`` in checkpoints mode: 20%, at least one."""
    return max(1, round(DECAY_SHARE * budget))


def branch_epoch(budget: int) -> int:
    """The epoch (count of epochs done) at which ``budget``'s decay starts from the shared constant-lr run."""
    return budget - decay_epochs(budget)


def lr_plan(cfg, budget: int) -> dict | None:
    """The schedule of ``budget``'s run: ``None`` for ``cfg.schedule`` over the whole budget (full mode), else
    the constant-then-decay plan ``{"decay_from": epoch, "warmup": epochs}`` (the same warm-up for every
    budget, ending before the shortest budget's decay, so the constant phase is shared)."""
    if cfg.budget_mode != "checkpoints":
        return None
    shortest = cfg.budgets[0]
    warm = 0.25 * branch_epoch(shortest) if cfg.schedule == "onecycle" else 0.0
    return {"decay_from": branch_epoch(budget), "warmup": warm}


def stem(arm: str, budget: int, sweep: bool) -> str:
    """The file stem of (arm, budget): the arm's name alone for one budget (today's names), else ``<arm>_e<B>``."""
    return f"{arm}_e{budget}" if sweep else arm


def training_order(cfg) -> list:
    """Budgets in the order they train: ascending; in checkpoints mode the longest (the shared run) first."""
    budgets = cfg.budgets
    return budgets[-1:] + budgets[:-1] if cfg.budget_mode == "checkpoints" else budgets


def branch_stem(arm: str, budget: int) -> str:
    """Checkpoints mode: the shared run's copy at ``budget``'s decay start (``<arm>_e<B>.branch``)."""
    return f"{arm}_e{budget}.branch"


def file_stems(names: list, epochs, mode: str = "full") -> list:
    """The checkpoint and prediction file stems of a run's arms ``names`` at ``epochs`` (an int or a list,
    as in the configuration), the shared run's branch copies included in checkpoints mode."""
    budgets = [int(e) for e in epochs] if isinstance(epochs, (list, tuple)) else [int(epochs)]
    sweep = len(budgets) > 1
    runs = [stem(n, b, sweep) for n in names for b in budgets]
    branches = ([branch_stem(n, b) for n in names for b in budgets[:-1] if branch_epoch(b) > 0]
                if mode == "checkpoints" and sweep else [])
    return runs + branches


# ---------------------------------------------------------------------------------------------- the verdict

_WORDS = {"better": "helps", "worse": "hurts", "no detectable difference": "no detectable difference",
          "unknown": "no interval"}


def _points(v: float) -> str:
    return f"{100 * v:+.2f}"


def crossover_line(arm: str, rows: list) -> str:
    """One line per arm over the budgets: the accuracy call at each, and where it changes.

    ``rows``: ``[(budget, rec), ...]`` in increasing budget, ``rec`` the arm's accuracy record against the
    baseline at that budget (``mean``, ``lo``, ``hi``, ``call`` of :func:`mixlab_lab.stats.compare_arms`;
    fractions, shown in points). E.g. ``mixup: hurts at 10 epochs (-2.10 [-3.00, -1.20]), no detectable
    difference at 30, helps at 90 (+1.80 [+0.90, +2.70]); crossover between 10 and 30 epochs (hurts -> no
    detectable difference) and between 30 and 90 epochs (no detectable difference -> helps)``.
    """
    parts = []
    for i, (b, rec) in enumerate(rows):
        call = rec.get("call", "unknown")
        word = _WORDS.get(call, call)
        at = f"at {b} epoch{'s' if b != 1 else ''}" if i == 0 else f"at {b}"
        if call in ("better", "worse"):
            parts.append(f"{word} {at} ({_points(rec['mean'])} [{_points(rec['lo'])}, {_points(rec['hi'])}])")
        elif call == "unknown" and rec.get("mean") is not None:
            parts.append(f"{word} {at} ({_points(rec['mean'])})")
        else:
            parts.append(f"{word} {at}")
    known = [(b, rec["call"]) for b, rec in rows if rec.get("call") in ("better", "worse", "no detectable difference")]
    turns = [f"between {b0} and {b1} epochs ({_WORDS[c0]} -> {_WORDS[c1]})"
             for (b0, c0), (b1, c1) in zip(known, known[1:]) if c0 != c1]
    line = f"{arm}: " + ", ".join(parts)
    if turns:
        return line + "; crossover " + " and ".join(turns)
    first, last = rows[0][0], rows[-1][0]
    return line + f"; no crossover within the budgets run ({first} to {last} epochs)"


def budget_lines(budgets_summary: dict, arms: list) -> list:
    """:func:`crossover_line` of every arm but the baseline, from ``summary["budgets"]``."""
    order = sorted(budgets_summary, key=int)
    lines = []
    for arm in arms[1:]:
        rows = [(int(b), budgets_summary[b]["versus_baseline"][arm]["metrics"]["test_acc"]) for b in order
                if arm in budgets_summary[b].get("versus_baseline", {})]
        if rows:
            lines.append(crossover_line(arm, rows))
    return lines


# ---------------------------------------------------------------------------------------------- the next step

def next_budget(budgets: list) -> int:
    """A longer budget to try: twice the longest, or the sweep's geometric continuation when that is longer
    (10,30,90 -> 270; 1,2,3 -> 6)."""
    if len(budgets) == 1:
        return 2 * budgets[0]
    return max(2 * budgets[-1], round(budgets[-1] * budgets[-1] / budgets[-2]))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):02d} min"


def longer_budget_hint(summary: dict, cfg, *, still_improving: bool = True, loss_far: str | None = None) -> str:
    """``train longer: --epochs ...``, with what the longer budget costs on this machine when the run measured
    its epoch time (``summary["epoch_time_s"]``: training and evaluation of one epoch, mean over the run)."""
    budgets = cfg.budgets
    nb = next_budget(budgets)
    text = f"train longer: --epochs {','.join(str(b) for b in budgets + [nb]) if len(budgets) > 1 else nb}"
    notes = []
    if loss_far:
        notes.append(loss_far)
    sec = summary.get("epoch_time_s")
    if sec:
        arms, seeds = len(summary.get("arms", [])) or 1, len(summary.get("seeds", [])) or 1
        runs = arms * seeds
        cost = f"{nb} epochs x {arms} arm{'s' if arms != 1 else ''} x {seeds} seed{'s' if seeds != 1 else ''}: " \
               f"about {_duration(nb * runs * sec)} on this machine at the measured {sec:.1f} s per epoch"
        if len(budgets) > 1:
            every = sum(budgets) + nb if cfg.budget_mode == "full" else (
                nb + sum(decay_epochs(b) for b in budgets))
            cost += f", {_duration(every * runs * sec)} for the whole sweep with it"
        notes.append(cost)
    return text + (f" ({'; '.join(notes)})" if notes else "")


def loss_far_from_converged(histories: dict, arms: list, methods: dict, budget_losses: dict | None = None) -> str | None:
    """Why the mixed arms' own training loss is far from converged, or ``None``.

    Far: every mixed arm's training loss (its own objective, mean over seeds) still fell by more than
    10% over the last quarter of its longest run's epochs (at least the last epoch), or, in a sweep,
    from the second-longest budget's final loss to the longest's (``budget_losses``:
    ``{arm: [final loss per budget, increasing budget]}``).
    """
    mixed = [a for a in arms if methods.get(a, a) != "none"]
    drops = {}
    for arm in mixed:
        runs = [h for key, h in histories.items() if key[1] == arm and len(h) >= 2]
        if not runs:
            continue
        k = max(1, len(runs[0]) // 4)
        before = statistics.fmean(h[-1 - k]["train_loss"] for h in runs)
        last = statistics.fmean(h[-1]["train_loss"] for h in runs)
        drop = (before - last) / max(abs(last), 1e-12)
        if budget_losses and len(budget_losses.get(arm, [])) >= 2:
            prev, final = budget_losses[arm][-2:]
            drop = max(drop, (prev - final) / max(abs(final), 1e-12))
        drops[arm] = drop
    if mixed and len(drops) == len(mixed) and all(d > LOSS_FAR for d in drops.values()):
        return ("the mixed arms' own training loss is far from converged (still falling: "
                + ", ".join(f"{a} -{100 * d:.0f}%" for a, d in drops.items()) + ")")
    return None


def still_improving(budgets_summary: dict, arms: list) -> str | None:
    """A warning when every arm's mean test accuracy still rose from the second-longest budget to the longest."""
    order = sorted(budgets_summary, key=int)
    if len(order) < 2:
        return None
    b0, b1 = order[-2], order[-1]
    gains = {}
    for arm in arms:
        a0 = budgets_summary[b0]["aggregate"].get(arm, {}).get("test_acc", {}).get("mean")
        a1 = budgets_summary[b1]["aggregate"].get(arm, {}).get("test_acc", {}).get("mean")
        if a0 is None or a1 is None:
            return None
        gains[arm] = a1 - a0
    if all(g > 0.002 for g in gains.values()):
        return (f"every arm was still improving at the longest budget (test accuracy from {b0} to {b1} epochs: "
                + ", ".join(f"{a} {100 * g:+.2f}" for a, g in gains.items())
                + " points): the crossover, if any, may lie beyond the budgets run")
    return None


# ---------------------------------------------------------------------------------------------- the plot

_PLOT = (("test_acc", "test accuracy", 100.0), ("test_nll", "test NLL", 1.0), ("test_ece", "test ECE", 1.0))


def budget_plot(summary: dict, path, *, approximate: bool = False) -> None:
    """Accuracy, NLL and ECE against budget per arm (top: mean over seeds, bars = 95% t-interval across seeds
    when there are two or more), and each arm minus the baseline with the verdict's 95% interval (bottom)."""
    from .report import _plt, save_figure
    from .stats import t_interval

    plt = _plt()
    bud = summary["budgets"]
    order = sorted(bud, key=int)
    xs = [int(b) for b in order]
    arms = summary["arms"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True)
    for col, (key, title, scale) in enumerate(_PLOT):
        top, bottom = axes[0][col], axes[1][col]
        for i, arm in enumerate(arms):
            ys, err = [], []
            for b in order:
                ti = t_interval([r.get(key) for r in bud[b]["per_seed"][arm].values()])
                ys.append(None if ti["mean"] is None else ti["mean"] * scale)
                err.append(0.0 if ti["lo"] is None else (ti["hi"] - ti["mean"]) * scale)
            top.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=arm, color=f"C{i}")
            if i == 0:
                continue
            ds, lo, hi = [], [], []
            for b in order:
                rec = bud[b]["versus_baseline"][arm]["metrics"][key]
                m = rec["mean"] * scale if rec["mean"] is not None else float("nan")
                ds.append(m)
                lo.append(0.0 if rec["lo"] is None else m - rec["lo"] * scale)
                hi.append(0.0 if rec["hi"] is None else rec["hi"] * scale - m)
            bottom.errorbar(xs, ds, yerr=[lo, hi], marker="o", capsize=3, label=arm, color=f"C{i}")
        bottom.axhline(0, color="k", ls="--", lw=1)
        top.set_title(title + (" (%)" if key == "test_acc" else ""))
        bottom.set_title(f"{title}: arm - baseline" + (" (points)" if key == "test_acc" else ""))
        bottom.set_xlabel("budget (epochs)")
        for ax in (top, bottom):
            if xs[-1] / xs[0] >= 4:
                ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
    axes[0][0].legend()
    axes[1][0].legend()
    note = ("APPROXIMATION (--budget-mode checkpoints): one constant-lr run per arm, decayed at each budget"
            if approximate else "each (arm, budget) its own run with its own full schedule")
    fig.suptitle(f"Against the training budget: {note}\n(top: mean over seeds, bars 95% t across seeds; "
                 f"bottom: the verdict's 95% interval)")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- the approximation

def mode_difference(full: dict, approx: dict) -> dict:
    """``{budget: {arm: {metric: approx - full}}}``: how far ``--budget-mode checkpoints`` (``approx``, a
    summary.json) lies from full runs (``full``) of the same sweep, per budget and arm (means over seeds)."""
    out = {}
    for b in sorted(set(full["budgets"]) & set(approx["budgets"]), key=int):
        fa, aa = full["budgets"][b]["aggregate"], approx["budgets"][b]["aggregate"]
        out[b] = {arm: {k: aa[arm][k]["mean"] - fa[arm][k]["mean"] for k, _, _ in _PLOT
                        if aa[arm].get(k, {}).get("mean") is not None and fa[arm].get(k, {}).get("mean") is not None}
                  for arm in fa if arm in aa}
    return out


def format_mode_difference(diff: dict) -> str:
    """:func:`mode_difference` as lines: ``budget 10: baseline -0.40 points, NLL +0.0123, ECE -0.0031; ...``."""
    lines = []
    for b, arms in diff.items():
        cells = [f"{arm} {100 * d['test_acc']:+.2f} points, NLL {d['test_nll']:+.4f}, ECE {d['test_ece']:+.4f}"
                 for arm, d in arms.items() if all(math.isfinite(d.get(k, float('nan'))) for k, _, _ in _PLOT)]
        lines.append(f"budget {b}: " + "; ".join(cells))
    return "\n".join(lines)
