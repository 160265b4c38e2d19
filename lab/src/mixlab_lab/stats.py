"""Is the difference between two arms real? Paired statistics, the verdict, and its warnings.

Every arm of a lab run is trained from the same initial weights on the same data order as the
baseline, and evaluated on the same test images, so every comparison here is *paired*:

* across seeds: the per-seed difference (arm - baseline) of a final figure, with a 95%
  Student-t interval (``n - 1`` degrees of freedom); with one seed there is no such interval;
* on each seed: McNemar's exact test on the per-image correctness of the two arms (only the
  images on which they disagree count), and a paired bootstrap over test images of the
  difference in accuracy, NLL and ECE (the same resampled images for both arms).

The verdict for a metric is "better" or "worse" when the 95% interval excludes 0 (across seeds
when there are two or more, else the bootstrap of the one seed), otherwise "no detectable
difference". Accuracy is better higher, NLL and ECE lower.

The per-image predictions (:func:`mixlab_lab.train.predict`) are stored in the run folder's
``predictions/`` (``.npz``, loaded without pickle), so all of this can be recomputed with
:func:`compare_arms`.
"""
from __future__ import annotations

import math
import statistics
from typing import Optional

import torch

__all__ = ["METRICS", "t_interval", "mcnemar", "ece", "paired_bootstrap", "compare_arms", "verdict_lines",
           "run_warnings", "next_steps"]

# metric -> (label, +1 if higher is better else -1, points scale for display)
METRICS = {"test_acc": ("accuracy", +1, 100.0), "test_nll": ("NLL", -1, 1.0), "test_ece": ("ECE", -1, 1.0)}
N_BINS = 15
LEVEL = 0.95


def t_interval(values, level: float = LEVEL) -> dict:
    """Mean of ``values`` with a two-sided Student-t interval; ``lo``/``hi`` are ``None`` for one value."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None}
    mean = statistics.fmean(vals)
    if n < 2:
        return {"n": 1, "mean": mean, "std": 0.0, "lo": None, "hi": None}
    from scipy import stats as sps

    std = statistics.stdev(vals)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def mcnemar(correct_base: torch.Tensor, correct_arm: torch.Tensor) -> dict:
    """McNemar's exact test of two classifiers on the same images.

    ``base_only``: images the baseline gets right and the arm wrong; ``arm_only`` the reverse.
    Under "no difference" each disagreement is a fair coin, so ``p`` is the two-sided binomial
    p-value of ``arm_only`` among ``base_only + arm_only`` (1.0 when they never disagree).
    """
    cb, ca = correct_base.bool(), correct_arm.bool()
    if cb.shape != ca.shape:
        raise ValueError(f"mcnemar: the two arms were evaluated on different test sets ({tuple(cb.shape)} vs "
                         f"{tuple(ca.shape)} images)")
    b = int((cb & ~ca).sum())
    c = int((~cb & ca).sum())
    if b + c == 0:
        p = 1.0
    else:
        from scipy import stats as sps

        p = float(sps.binomtest(c, b + c, 0.5).pvalue)
    return {"base_only": b, "arm_only": c, "n": int(cb.numel()), "p": p}


def ece(conf: torch.Tensor, correct: torch.Tensor, bins: int = N_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins (as the lab's metrics)."""
    b = torch.clamp((conf.double() * bins).long(), 0, bins - 1)
    gap = torch.zeros(bins, dtype=torch.float64).index_add(0, b, correct.double() - conf.double())
    return float(gap.abs().sum() / max(conf.numel(), 1))


def _per_image(p: dict) -> tuple:
    correct = (p["pred"] == p["y"]).double()
    nll = -torch.log(p["p_true"].double().clamp_min(1e-12))
    return correct, nll, p["conf"].double()


def paired_bootstrap(base, arm, *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL,
                     chunk: int = 100) -> dict:
    """Percentile intervals of arm - baseline for accuracy, NLL and ECE, resampling test images in pairs.

    ``base`` and ``arm`` are :func:`mixlab_lab.train.predict` outputs on the same test set, or
    lists of them (one pair per seed): the statistic is then the mean over seeds of the
    difference. Seeds evaluated on the same test images (official test splits) share every
    resample, so the interval covers the sampling of that one test set; seeds with their own
    test splits (sets split by the seed) are resampled independently.
    Returns ``{metric: {"diff": observed, "lo": ..., "hi": ...}}``.
    """
    bases, arms = ([base], [arm]) if isinstance(base, dict) else (list(base), list(arm))
    if len(bases) != len(arms) or not bases:
        raise ValueError(f"paired_bootstrap: {len(bases)} baseline and {len(arms)} arm prediction sets")
    for b, a in zip(bases, arms):
        if not torch.equal(b["y"], a["y"]):
            raise ValueError("paired_bootstrap: an arm and its baseline were evaluated on different test images")
    k = len(bases)
    shared = all(torch.equal(b["y"], bases[0]["y"]) for b in bases)
    per = []
    for b, a in zip(bases, arms):
        cb, nb, kb = _per_image(b)
        ca, na, ka = _per_image(a)
        per.append({"acc": ca - cb, "nll": na - nb, "n": cb.numel(),
                    "bb": torch.clamp((kb * N_BINS).long(), 0, N_BINS - 1), "gb": cb - kb,
                    "ba": torch.clamp((ka * N_BINS).long(), 0, N_BINS - 1), "ga": ca - ka,
                    "ece": ece(ka, ca) - ece(kb, cb)})
    g = torch.Generator().manual_seed(seed)
    draws = {"test_acc": [], "test_nll": [], "test_ece": []}
    done = 0
    while done < n_boot:
        r = min(chunk, n_boot - done)
        common = torch.randint(0, per[0]["n"], (r, per[0]["n"]), generator=g) if shared else None
        acc = torch.zeros(r, dtype=torch.float64)
        nll = torch.zeros(r, dtype=torch.float64)
        ec = torch.zeros(r, dtype=torch.float64)
        rows = torch.arange(r)[:, None] * N_BINS
        for p in per:
            n = p["n"]
            idx = common if shared else torch.randint(0, n, (r, n), generator=g)   # (r, n) resampled images
            acc += p["acc"][idx].mean(1)
            nll += p["nll"][idx].mean(1)
            eb = torch.zeros(r * N_BINS, dtype=torch.float64).index_add_(0, (rows + p["bb"][idx]).flatten(),
                                                                         p["gb"][idx].flatten())
            ea = torch.zeros(r * N_BINS, dtype=torch.float64).index_add_(0, (rows + p["ba"][idx]).flatten(),
                                                                         p["ga"][idx].flatten())
            ec += (ea.view(r, N_BINS).abs().sum(1) - eb.view(r, N_BINS).abs().sum(1)) / n
        draws["test_acc"].append(acc / k)
        draws["test_nll"].append(nll / k)
        draws["test_ece"].append(ec / k)
        done += r
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    observed = {"test_acc": statistics.fmean(float(p["acc"].mean()) for p in per),
                "test_nll": statistics.fmean(float(p["nll"].mean()) for p in per),
                "test_ece": statistics.fmean(p["ece"] for p in per)}
    out = {}
    for key in draws:
        lo, hi = torch.quantile(torch.cat(draws[key]), q).tolist()
        out[key] = {"diff": observed[key], "lo": lo, "hi": hi}
    return out


def _call(lo, hi, direction: int) -> str:
    if lo is None or hi is None:
        return "unknown"
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (direction > 0) else "worse"
    return "no detectable difference"


def compare_arms(base_final: dict, arm_final: dict, base_preds: Optional[dict] = None,
                 arm_preds: Optional[dict] = None, *, n_boot: int = 1000) -> dict:
    """One arm against the baseline: intervals, per-seed paired tests and a call per metric.

    Args:
        base_final, arm_final: ``{seed: {metric: value}}``, the final epoch's figures.
        base_preds, arm_preds: ``{seed: predict(...) output}`` (optional: without them there are
            no per-image tests, and one seed gives no interval).
    """
    seeds = [s for s in base_final if s in arm_final]
    preds = {s: (base_preds[s], arm_preds[s]) for s in seeds
             if base_preds and arm_preds and s in base_preds and s in arm_preds}
    tests = {s: mcnemar(b["pred"] == b["y"], a["pred"] == a["y"]) for s, (b, a) in preds.items()}
    boots = {s: paired_bootstrap(b, a, n_boot=n_boot, seed=int(s) if str(s).isdigit() else 0)
             for s, (b, a) in preds.items()}
    pooled = (paired_bootstrap([b for b, _ in preds.values()], [a for _, a in preds.values()], n_boot=n_boot)
              if len(preds) >= 2 else None)
    out = {"seeds": seeds, "mcnemar": tests, "metrics": {}}
    for key, (_, direction, _) in METRICS.items():
        diffs = [arm_final[s][key] - base_final[s][key] for s in seeds
                 if arm_final[s].get(key) is not None and base_final[s].get(key) is not None]
        ti = t_interval(diffs)
        rec = {"mean": ti["mean"], "per_seed": diffs, "n_seeds": ti["n"]}
        if ti["n"] >= 2 and pooled is not None:
            # Seeds vary the training, the test set is one sample of images: the interval must cover both.
            # Two seeds that each differ by the same 1 image give a t-interval of width 0, so the call takes
            # the wider of the two intervals.
            pb = pooled[key]
            rec.update(lo=min(ti["lo"], pb["lo"]), hi=max(ti["hi"], pb["hi"]), t_lo=ti["lo"], t_hi=ti["hi"],
                       boot_lo=pb["lo"], boot_hi=pb["hi"],
                       interval="95%: the wider of the t-interval across seeds and the paired bootstrap over test "
                                "images")
        elif ti["n"] >= 2:
            rec.update(lo=ti["lo"], hi=ti["hi"], interval="95% t-interval across seeds")
        elif ti["n"] == 1 and len(boots) == 1:
            bs = next(iter(boots.values()))[key]
            rec.update(lo=bs["lo"], hi=bs["hi"], interval="95% paired bootstrap over test images (one seed)")
        else:
            rec.update(lo=None, hi=None, interval="none")
        rec["call"] = _call(rec["lo"], rec["hi"], direction)
        seed_calls = [_call(b[key]["lo"], b[key]["hi"], direction) for b in boots.values()]
        rec["seed_calls"] = seed_calls
        # Every seed's own paired interval agrees although the spread across seeds is too wide.
        rec["consistent"] = (len(seed_calls) >= 2 and len(set(seed_calls)) == 1
                             and seed_calls[0] in ("better", "worse"))
        out["metrics"][key] = rec
    return out


def _fmt_diff(key: str, value: float) -> str:
    scale = METRICS[key][2]
    return f"{value * scale:+.2f} points" if key == "test_acc" else f"{value * scale:+.4f}"


def _fmt_ci(key: str, lo, hi) -> str:
    if lo is None:
        return "no interval"
    scale = METRICS[key][2]
    return f"[{lo * scale:+.2f}, {hi * scale:+.2f}]" if key == "test_acc" else f"[{lo:+.4f}, {hi:+.4f}]"


def verdict_lines(arm: str, comp: dict) -> list:
    """One sentence per metric, e.g. ``accuracy ↑: helps, +0.84 points [+0.31, +1.37] (95% t, 3 seeds)``."""
    lines = []
    for key, (label, direction, _) in METRICS.items():
        rec = comp["metrics"][key]
        if rec["mean"] is None:
            continue
        arrow = "↑" if direction > 0 else "↓"
        call = rec["call"]
        word = {"better": "helps" if key == "test_acc" else "better",
                "worse": "hurts" if key == "test_acc" else "worse",
                "no detectable difference": "no detectable difference", "unknown": "no interval"}[call]
        n = rec["n_seeds"]
        how = ((f"95%, {n} seeds: t across seeds and bootstrap over test images" if "boot_lo" in rec
                else f"95% t-interval, {n} seeds") if n >= 2
               else "95% paired bootstrap over test images, 1 seed" if rec["lo"] is not None
               else "1 seed, no per-image predictions")
        text = f"{label} {arrow} (better {'higher' if direction > 0 else 'lower'}): {word}, " \
               f"{_fmt_diff(key, rec['mean'])} {_fmt_ci(key, rec['lo'], rec['hi'])} ({how})"
        if call == "no detectable difference" and rec["consistent"]:
            text += (f"; but every seed's own paired test says {rec['seed_calls'][0]}: the seeds disagree on how "
                     f"much, run more seeds")
        lines.append(text)
    if comp["mcnemar"]:
        ps = ", ".join(f"seed {s}: {t['arm_only']} vs {t['base_only']} images, p={t['p']:.2g}"
                       for s, t in comp["mcnemar"].items())
        lines.append(f"McNemar (images only {arm} / only the baseline gets right): {ps}")
    return lines


def headline(arm: str, comp: dict) -> str:
    """The one-line verdict on accuracy (what ``make demo`` ends with)."""
    rec = comp["metrics"]["test_acc"]
    if rec["mean"] is None:
        return f"{arm}: no accuracy to compare"
    ci = _fmt_ci("test_acc", rec["lo"], rec["hi"])
    n = rec["n_seeds"]
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if rec["call"] == "better":
        return f"{arm} helps: accuracy {_fmt_diff('test_acc', rec['mean'])} {ci} vs the baseline ({seeds})"
    if rec["call"] == "worse":
        return f"{arm} hurts: accuracy {_fmt_diff('test_acc', rec['mean'])} {ci} vs the baseline ({seeds})"
    return (f"{arm}: no detectable difference in accuracy, {_fmt_diff('test_acc', rec['mean'])} {ci} vs the "
            f"baseline ({seeds})")


def run_warnings(summary: dict, histories: dict, *, num_classes: int, num_test: int, label_noise: float) -> list:
    """Reasons the answer may not be trusted: one seed, unfinished training, underfitting, a small test set."""
    warns = []
    arms, seeds = summary["arms"], summary["seeds"]
    if len(seeds) == 1:
        warns.append("one seed: the interval covers only the sampling of test images, not the seed-to-seed spread "
                     "of training; run --seeds 0,1,2 for an interval across seeds")
    still = []
    for arm in arms:
        # the evaluated epochs (--eval-every leaves the others without test metrics)
        runs = [[r for r in h if "test_acc" in r] for (s, a), h in histories.items() if a == arm]
        if not runs or min(len(h) for h in runs) < 2:
            continue
        last = statistics.fmean(h[-1]["test_acc"] for h in runs)
        prev = statistics.fmean(h[-2]["test_acc"] for h in runs)
        best_before = statistics.fmean(max(r["test_acc"] for r in h[:-1]) for h in runs)
        if last - prev > 0.002 and last >= best_before:
            still.append(f"{arm} +{100 * (last - prev):.2f}")
    if still and len(still) == len(arms):
        warns.append(f"every arm was still improving at the last epoch (test accuracy in the final epoch: "
                     f"{', '.join(still)} points): this compares unfinished training, and mixing usually needs "
                     f"longer schedules than plain training")
    elif still:
        warns.append(f"still improving at the last epoch: {', '.join(still)} points of test accuracy in the final "
                     f"epoch")
    base = summary["aggregate"].get(arms[0], {})
    loss = (base.get("train_loss") or {}).get("mean")
    chance = math.log(max(num_classes, 2))
    if label_noise == 0 and loss is not None and loss > 0.35 * chance:
        warns.append(f"underfit: the {arms[0]} arm's final training loss {loss:.3f} is {100 * loss / chance:.0f}% of "
                     f"chance level (ln {num_classes} = {chance:.3f}); train longer before judging mixing")
    eces = [(summary["aggregate"][a].get("test_ece") or {}).get("mean") for a in arms]
    if label_noise == 0 and all(e is not None and e > 0.15 for e in eces):  # noisy labels lower confidence anyway
        warns.append(f"every arm is badly calibrated (ECE {', '.join(f'{e:.2f}' for e in eces)}): the models are far "
                     f"from trained")
    for arm in arms[1:]:
        comp = summary.get("versus_baseline", {}).get(arm)
        if not comp:
            continue
        rec = comp["metrics"]["test_acc"]
        tests = list(comp["mcnemar"].values())
        if rec["call"] == "no detectable difference" and tests:
            d = statistics.fmean(t["base_only"] + t["arm_only"] for t in tests)
            mdd = 1.96 * math.sqrt(max(d, 1.0)) / num_test
            if num_test < 5000:
                warns.append(f"small test set ({num_test} images): for {arm}, accuracy differences under about "
                             f"{100 * mdd:.1f} points cannot be told from chance on one seed's test images")
                break
    return warns


def next_steps(summary: dict, warns: list, cfg) -> list:
    """What to try next, from the verdicts and the warnings.

    A longer budget when an arm is still improving, underfit or badly calibrated, or when the mixed arms'
    own training loss is far from converged (``summary["mixed_loss_far"]``); with the run's measured epoch
    time (``summary["epoch_time_s"]``) the hint says what it would cost on this machine.
    """
    hints = []
    text = " ".join(warns)
    far = summary.get("mixed_loss_far")
    if "still improving" in text or "underfit" in text or "calibrated" in text or far:
        from .budget import longer_budget_hint  # names the budget and, when measured, its cost in time here

        hints.append(longer_budget_hint(summary, cfg, loss_far=far))
    if len(summary["seeds"]) == 1:
        hints.append("more seeds: --seeds 0,1,2")
    calls = [c["metrics"]["test_acc"]["call"] for c in summary.get("versus_baseline", {}).values()]
    if calls and all(c != "better" for c in calls):
        if len(cfg.alphas) == 1:
            other = "1.0" if cfg.alphas[0] < 0.5 else "0.2"
            hints.append(f"another alpha: --alpha {cfg.alphas[0]:g},{other}")
        if cfg.mode == "batch":
            hints.append("one lam per sample: --mode sample")
        if cfg.label_noise == 0:
            hints.append("where mixup is known to help: --label-noise 0.2 (or a smaller --train-size)")
    return hints
