"""The run's report: comparison table, ``report.md`` and PNG plots (matplotlib, imported lazily).

Plots: learning curves of every arm (mean across seeds, min-max band), a reliability diagram
per arm (15 equal-width bins, pooled over seeds), the Beta(alpha, alpha) density that ``lam``
is drawn from (``lam`` weights the ORIGINAL row), and a grid of mixed training samples with
their soft labels drawn as bars.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from .store import atomic_write_bytes, atomic_write_text

__all__ = ["format_table", "write_report", "mixed_samples_png", "save_figure", "verdict_text", "ranking_table",
           "budget_section"]

_ROWS = (("test_acc", "test accuracy"), ("best_test_acc", "best epoch's test acc (optimistic)"),
         ("test_nll", "test NLL"), ("test_ece", "test ECE (15 bins)"), ("train_loss", "train loss (own objective)"),
         ("train_clean_acc", "train acc vs clean labels"), ("noisy_memorised", "noisy labels memorised"),
         ("train_time_s", "training time (s)"))


def _fmt(stat: dict | None, signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    m, s = stat["mean"], stat["std"]
    sign = "+" if signed else ""
    return f"{m:{sign}.4f} ± {s:.4f}" if stat["n"] > 1 else f"{m:{sign}.4f}"


def format_table(summary: dict, markdown: bool = False) -> str:
    """The comparison table (mean ± std across seeds), plain text or markdown."""
    arms = summary["arms"]
    diff = summary.get("difference")
    head = ["metric"] + arms + ([f"{arms[1]} - {arms[0]}"] if diff else [])
    rows = []
    for key, label in _ROWS:
        if key not in summary["aggregate"][arms[0]]:
            continue
        row = [label] + [_fmt(summary["aggregate"][a].get(key)) for a in arms]
        if diff:
            row.append(_fmt(diff.get(key), signed=True))
        rows.append(row)
    n = len(summary["seeds"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + f"\n\n{n} seed(s): {', '.join(map(str, summary['seeds']))}; mean ± std across seeds."
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
                     + [f"({n} seed(s); mean ± std across seeds)"])


def verdict_text(summary: dict, markdown: bool = False) -> str:
    """The verdict of every arm against the baseline, the warnings and the next steps, as text."""
    from . import stats

    vs = summary.get("versus_baseline")
    if not vs:
        return ""
    b = "- " if markdown else "  "
    lines = []
    for arm, comp in vs.items():
        method = summary.get("methods", {}).get(arm, arm)
        alpha = summary.get("arm_alpha", {}).get(arm)
        what = f"{method}, alpha {alpha:g}" if alpha is not None else method
        lines.append(f"**{stats.headline(arm, comp)}** ({what})" if markdown else f"{arm} ({what}) vs baseline:")
        lines += [b + t for t in stats.verdict_lines(arm, comp)]
        if markdown:
            lines.append("")
    for w in summary.get("warnings", []):
        lines.append(("- " if markdown else "") + f"warning: {w}")
    if summary.get("next_steps"):
        lines.append(("- " if markdown else "") + "next: " + "; ".join(summary["next_steps"]))
    return "\n".join(lines)


def ranking_table(summary: dict) -> str:
    """Markdown: the arms ranked by their mean accuracy difference from the baseline, with intervals."""
    from .stats import METRICS, _fmt_ci, _fmt_diff

    vs = summary.get("versus_baseline") or {}
    order = sorted(vs, key=lambda a: -(vs[a]["metrics"]["test_acc"]["mean"] or 0.0))
    head = ["rank", "arm", "test accuracy"] + [f"{METRICS[k][0]} {'↑' if METRICS[k][1] > 0 else '↓'} vs baseline [95% CI]"
                                               for k in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = summary["arms"][0]
    acc = summary["aggregate"][base]["test_acc"]
    lines.append(f"| - | {base} | {_fmt(acc)} | - | - | - |")
    for i, arm in enumerate(order, 1):
        cells = []
        for k in METRICS:
            r = vs[arm]["metrics"][k]
            cells.append("-" if r["mean"] is None else
                         f"{_fmt_diff(k, r['mean'])} {_fmt_ci(k, r['lo'], r['hi'])} {r['call']}")
        lines.append(f"| {i} | {arm} | {_fmt(summary['aggregate'][arm]['test_acc'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_section(summary: dict, cfg) -> list:
    """Markdown lines of a budget sweep (``--epochs 10,30,90``): how it was run, the crossover line per arm,
    and per budget each arm's accuracy and its difference from the baseline with the verdict's interval."""
    from .budget import DECAY_SHARE
    from .stats import _fmt_ci, _fmt_diff

    budgets = sorted(summary["budgets"], key=int)
    if summary.get("budget_mode") == "checkpoints":
        how = (f"**An approximation (`--budget-mode checkpoints`)**: one run per arm at the longest budget with a "
               f"constant-then-decay schedule (warm-up, the constant peak lr, then a cosine decay over the last "
               f"{100 * DECAY_SHARE:.0f}% of the epochs), not the `{cfg.schedule}` schedule asked for; each shorter "
               f"budget is that run's checkpoint at the start of its own last {100 * DECAY_SHARE:.0f}%, decayed. "
               f"Each budget's figures are exactly those of a run with that constant-then-decay schedule, so the "
               f"approximation is the schedule: run without `--budget-mode checkpoints` for full runs.")
    else:
        how = ("Every (arm, budget) is its own run from the seed's initial weights, with the seed's data order and "
               f"its own full `{cfg.schedule}` schedule over the budget (not a longer run cut short).")
    lines = ["## Against the training budget", "", how, ""]
    lines += [f"- {line}" for line in summary.get("budget_verdict", [])] + [""]
    arms = summary["arms"]
    head = ["budget (epochs)"] + [f"{a} test acc" for a in arms] + [f"{a} - {arms[0]} [95% CI]" for a in arms[1:]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in budgets:
        rec = summary["budgets"][b]
        cells = [b] + [_fmt(rec["aggregate"][a]["test_acc"]) for a in arms]
        for a in arms[1:]:
            r = rec["versus_baseline"][a]["metrics"]["test_acc"]
            cells.append("-" if r["mean"] is None else
                         f"{_fmt_diff('test_acc', r['mean'])} {_fmt_ci('test_acc', r['lo'], r['hi'])} {r['call']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![Accuracy, NLL and ECE against the budget](plots/budget.png)", "",
              f"The sections below are the longest budget's ({budgets[-1]} epochs).", ""]
    return lines


def _alpha_plot(summary: dict, path) -> bool:
    """Test accuracy against alpha per method (mean over seeds, 95% t-interval bars); baseline dashed."""
    from .stats import t_interval

    alphas = summary.get("arm_alpha", {})
    methods: dict = {}
    for arm in summary["arms"][1:]:
        if alphas.get(arm) is not None:  # methods without an alpha (ResizeMix, SmoothMix) have no curve
            methods.setdefault(summary.get("methods", {}).get(arm, arm), []).append(arm)
    if not any(len(v) > 1 for v in methods.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    base = [r["test_acc"] for r in summary["per_seed"][summary["arms"][0]].values()]
    ax.axhline(sum(base) / len(base), color="k", ls="--", lw=1, label="baseline")
    for method, arms in methods.items():
        xs, ys, err = [], [], []
        for arm in sorted(arms, key=lambda a: alphas[a]):
            ti = t_interval([r["test_acc"] for r in summary["per_seed"][arm].values()])
            xs.append(alphas[arm])
            ys.append(ti["mean"])
            err.append(0.0 if ti["lo"] is None else ti["hi"] - ti["mean"])
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ticks = sorted({alphas[a] for arms in methods.values() for a in arms})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("alpha (lam ~ Beta(alpha, alpha))")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy against alpha (bars: 95% t-interval over seeds)")
    ax.legend()
    save_figure(fig, path)
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG atomically, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _curves(histories: dict, arms: list, path) -> None:
    plt = _plt()
    keys = [("test_acc", "test accuracy"), ("test_nll", "test NLL"), ("train_loss", "train loss")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for arm in arms:
        runs = [h for (s, a), h in histories.items() if a == arm]
        epochs = [r["epoch"] for r in runs[0]]
        for ax, (k, title) in zip(axes, keys):
            kept = [i for i, r in enumerate(runs[0]) if k in r]  # --eval-every: epochs without test metrics left out
            at = [epochs[i] for i in kept]
            vals = torch.tensor([[h[i][k] for i in kept] for h in runs], dtype=torch.float64)  # (seeds, epochs)
            line = ax.plot(at, vals.mean(0).tolist(), marker="o", label=arm)[0]
            if len(runs) > 1:
                ax.fill_between(at, vals.min(0).values.tolist(), vals.max(0).values.tolist(),
                                color=line.get_color(), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend()
    save_figure(fig, path)


def _reliability(summary: dict, path) -> None:
    plt = _plt()
    arms = summary["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 4), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        bins = [r["ece_bins"] for r in summary["per_seed"][arm].values()]
        count = [sum(b["count"][i] for b in bins) for i in range(len(bins[0]["count"]))]
        conf = [sum(b["conf"][i] for b in bins) for i in range(len(count))]
        corr = [sum(b["correct"][i] for b in bins) for i in range(len(count))]
        nb = len(count)
        centers = [(i + 0.5) / nb for i in range(nb)]
        acc = [c / n if n else 0.0 for c, n in zip(corr, count)]
        mean_conf = [f / n if n else 0.0 for f, n in zip(conf, count)]
        ax.bar(centers, acc, width=1 / nb, edgecolor="black", alpha=0.8, label="accuracy")
        ax.bar(centers, mean_conf, width=1 / nb, fill=False, edgecolor="red", lw=1.2, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ece = summary["aggregate"][arm]["test_ece"]["mean"]
        ax.set_title(f"{arm}: ECE {ece:.4f}")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left")
    save_figure(fig, path)


def _beta_density(alphas, path, keep_dominant: bool) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    alphas = [alphas] if isinstance(alphas, (int, float)) else list(alphas)
    top = 0.0
    for alpha in alphas:
        if alpha <= 0:
            continue
        xs = [0.002 + i * 0.996 / 400 for i in range(401)]
        logb = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
        ys = [math.exp((alpha - 1) * (math.log(x) + math.log(1 - x)) - logb) for x in xs]
        if keep_dominant:  # max(lam, 1 - lam): the density folds onto [0.5, 1]
            xs, ys = [x for x in xs if x >= 0.5], [2 * y for x, y in zip(xs, ys) if x >= 0.5]
        ax.plot(xs, ys, label=f"alpha {alpha:g}")
        top = max(top, max(ys))
    if top > 0:
        ax.set_ylim(0, min(top * 1.05, 10))
    if len(alphas) > 1:
        ax.legend()
    name = ", ".join(f"{a:g}" for a in alphas)
    ax.set_title(f"lam ~ Beta(alpha, alpha), alpha = {name}" + (", max(lam, 1-lam)" if keep_dominant else ""))
    ax.set_xlabel("lam (weight of the original row)")
    save_figure(fig, path)


def mixed_samples_png(data, cfg, path, *, n: int = 9, seed: int = 0, mix: str | None = None,
                      alpha: float | None = None) -> None:
    """A grid of ``n`` mixed training images, each with its soft label as bars (the Keras/Pets previews).

    Each panel is titled with its ``lam`` (the share of the original image) and its partner
    (which of the shown images, and its class). A training set of fewer than ``n`` rows shows
    them all (a run's report on a tiny ``--train-size``); it needs two rows to mix.
    """
    from .train import build_mixer, make_batch

    if data.kind != "image":
        raise ValueError(f"preview needs an image dataset, got kind {data.kind!r}")
    rows = int(data.y_train.numel())
    if rows < 2:
        raise ValueError(f"preview needs at least 2 training rows to mix, got {rows}")
    n = min(n, rows)
    plt = _plt()
    mix = mix or next((m for m in cfg.mixes if m != "none"), "mixup")
    alpha = cfg.alphas[0] if alpha is None else alpha
    g = torch.Generator(data.x_train.device).manual_seed(seed)
    idx = torch.randperm(data.y_train.numel(), generator=torch.Generator().manual_seed(seed))[:max(n, 2)]
    x, y = make_batch(data, idx, train=False)
    mixer = build_mixer(cfg, mix, data.num_classes, g, alpha=alpha, input_shape=data.input_shape,
                        class_counts=torch.bincount(data.y_train.cpu(), minlength=data.num_classes))
    x, target = mixer(x, y)
    lam = target.params.lam.float().cpu().reshape(-1)
    lam = lam.expand(x.shape[0]) if lam.numel() == 1 else lam
    partner = target.params.index.cpu() if target.params.index is not None else torch.arange(x.shape[0])
    soft = target.soft(data.num_classes).cpu()                                  # (B, C)
    img = (x * data.std + data.mean).clamp(0, 1).cpu()                          # (B, C, H, W) in [0, 1]
    cols = 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(5.6 * cols, 2.4 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.1] * cols, "wspace": 0.6})
    names = [str(c)[:12] for c in data.classes]
    for i in range(rows * cols):
        ai, ab = axes[i // cols][2 * (i % cols)], axes[i // cols][2 * (i % cols) + 1]
        ai.axis("off")
        if i >= n:
            ab.axis("off")
            continue
        pic = img[i].permute(1, 2, 0).numpy()
        ai.imshow(pic.squeeze(-1) if pic.shape[-1] == 1 else pic, cmap="gray" if pic.shape[-1] == 1 else None)
        many = partner.ndim == 2  # k-way methods (zeta-mixup): name the largest partner
        j = int(partner[i, 1]) if many and partner.shape[1] > 1 else int(partner[i, 0] if many else partner[i])
        more = f" and {partner.shape[1] - 2} more" if many and partner.shape[1] > 2 else ""
        ai.set_title(f"lam {float(lam[i]):.2f}: {names[int(y[i])]}\n+ #{j + 1} {names[int(y[j])]}{more}", fontsize=7)
        ab.barh(range(len(names)), soft[i].tolist(), color="tab:blue")
        ab.set_yticks(range(len(names)), names, fontsize=6)
        ab.yaxis.tick_right()  # class names beside the bars, clear of the image on the left
        ab.set_xlim(0, 1)
        ab.invert_yaxis()
        ab.tick_params(axis="x", labelsize=6)
    fig.suptitle(f"{mix}, alpha={alpha:g}, mode={cfg.mode}: panel i shows image i mixed with partner #j; "
                 f"lam is image i's share; bars: soft label")
    save_figure(fig, path)


def _epochs_text(cfg) -> str:
    budgets = cfg.budgets
    if len(budgets) == 1:
        return f"{budgets[0]} epochs"
    mode = " (--budget-mode checkpoints: an approximation)" if cfg.budget_mode == "checkpoints" else ""
    return f"budgets {','.join(map(str, budgets))} epochs{mode}"


def write_report(out: Path, cfg, summary: dict, histories: dict, data) -> Path:
    """Write plots and ``report.md`` into the run folder; returns the report's path."""
    plots = out / "plots"
    arms = summary["arms"]
    _curves(histories, arms, plots / "curves.png")
    _reliability(summary, plots / "reliability.png")
    _beta_density(cfg.alphas, plots / "beta.png", cfg.keep_dominant)
    figs = [("Learning curves (mean over seeds, band = min-max)", "curves.png"),
            ("Reliability diagrams (final epoch, 15 bins, pooled over seeds)", "reliability.png"),
            ("Distribution of lam", "beta.png")]
    if len(arms) >= 3 and _alpha_plot(summary, plots / "alpha.png"):
        figs.append(("Accuracy against alpha", "alpha.png"))
    if data.kind == "image":
        first = next((a for a in arms if a != "baseline"), None)
        methods = summary.get("methods", {})
        mixed_samples_png(data, cfg, plots / "mixed_samples.png", mix=methods.get(first),
                          alpha=summary.get("arm_alpha", {}).get(first))
        figs.append(("Mixed training samples and their soft labels", "mixed_samples.png"))
    per_seed = ["| seed | " + " | ".join(f"{a} test acc" for a in arms) + " |", "|---|" + "---|" * len(arms)]
    for s in summary["seeds"]:
        per_seed.append(f"| {s} | " + " | ".join(f"{summary['per_seed'][a][str(s)]['test_acc']:.4f}" for a in arms) + " |")
    verdict = verdict_text(summary, markdown=True)
    mixes = ",".join(cfg.mixes)
    alphas = ",".join(f"{a:g}" for a in cfg.alphas)
    text = [f"# mixlab {('compare' if len(arms) >= 2 else 'train')}: {cfg.dataset}, model {cfg.model}", ""]
    sweep = bool(summary.get("budgets")) and len(arms) >= 2
    if sweep:
        from .budget import budget_plot

        budget_plot(summary, plots / "budget.png", approximate=summary.get("budget_mode") == "checkpoints")
        text += budget_section(summary, cfg)
    if verdict:
        text += ["## Verdict", "", verdict, "",
                 "Intervals: the per-seed difference from the baseline (both arms from the same initial weights and "
                 "data order) with a 95% Student-t interval across seeds; with one seed, a paired bootstrap over the "
                 "test images. McNemar: exact test on the images where the two arms disagree. Per-image predictions: "
                 "`predictions/`.", ""]
    if len(arms) >= 3:
        text += ["## Ranking against the baseline", "", ranking_table(summary), ""]
    text += [f"Mix: `{mixes}` alpha={alphas} mode={cfg.mode} p={cfg.p:g} keep_dominant={cfg.keep_dominant}; "
            f"{_epochs_text(cfg)}, batch {cfg.batch_size}, {cfg.optimizer} lr={cfg.lr:g} ({cfg.schedule}), "
            f"loss {cfg.loss}, device {cfg.device}. Full configuration, versions and machine: `config.json`.", "",
            "## Final figures", "", format_table(summary, markdown=True), "", "## Per seed", "", *per_seed, "",
            "ECE: expected calibration error, 15 equal-width confidence bins. NLL: mean negative log-likelihood "
            "of the true test label. Both arms of a seed start from the same initial weights "
            "(`summary.json` → `init_sha256`) and see the same data order.", ""]
    for title, name in figs:
        text += [f"## {title}", "", f"![{title}](plots/{name})", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(text))
    return path
