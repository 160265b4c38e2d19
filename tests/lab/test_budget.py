"""Budget as an axis of ``mixlab compare`` (issue 21, section 1): ``--epochs 1,2`` trains every arm at each
budget, each with its own full learning-rate schedule, from the same initial weights and data order;
resumable per (arm, budget); a verdict per arm and budget and a crossover line per arm; a plot of
accuracy, NLL and ECE against budget; ``--budget-mode checkpoints`` as a labelled approximation.

Tiny runs on scikit-learn's digits (budgets of 1 and 2 epochs, one thread), each test a few seconds::

    KERAS_BACKEND=torch nice .venv/bin/python -m pytest -q tests/lab/test_budget.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _runs import cli, interrupted_run, result, strip

pytest.importorskip("sklearn")

from mixlab_lab import budget, train  # noqa: E402
from mixlab_lab.cli import build_parser, main  # noqa: E402
from mixlab_lab.config import resolve_config  # noqa: E402

BASE = ["--dataset", "digits", "--batch-size", "64", "--threads", "1", "--quiet", "--seeds", "0"]
SWEEP = BASE + ["--epochs", "1,2"]
STEMS = ["baseline_e1", "baseline_e2", "mixup_e1", "mixup_e2"]


def _one_line(rc: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("mixlab: ") and "Traceback" not in err, (rc, err)
    return lines[0]


def _sweep_result(out: Path) -> dict:
    """What must be identical between an interrupted-and-resumed sweep and an uninterrupted one."""
    summary = json.loads((out / "summary.json").read_text())
    return {**result(out), "budgets": strip(summary["budgets"]), "verdict": summary["budget_verdict"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """An uninterrupted sweep over 1 and 2 epochs, with the schedule of every (arm, budget) recorded."""
    out = tmp_path_factory.mktemp("budget") / "sweep"
    steps = []
    real = train._optimizer
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_optimizer", lambda cfg, model, total, *a, **k: steps.append(total)
                   or real(cfg, model, total, *a, **k))
        assert main(["compare", *SWEEP, "--out", str(out)]) == 0
    return out, steps


# ------------------------------------------------------------------------------------ parsing the list

def test_epochs_takes_a_list_for_compare_and_one_value_stays_a_number():
    ns = build_parser().parse_args(["compare", "--epochs", "10,30,90"])
    assert ns.epochs == [10, 30, 90]
    assert build_parser().parse_args(["compare", "--epochs", "3"]).epochs == 3
    cfg = resolve_config({"epochs": [10, 30, 90]})
    assert cfg.epochs == [10, 30, 90] and cfg.budgets == [10, 30, 90]
    one = resolve_config({"epochs": 3})
    assert one.epochs == 3 and one.budgets == [3] and "budget_mode" not in one.to_dict()  # hash unchanged


@pytest.mark.parametrize("value", ["10,x", "0,10", "10,10", "30,10", "1.5", "-3", "10,,30"])
def test_bad_epochs_is_one_line_naming_the_option_what_was_expected_and_what_came(value, capsys):
    line = _one_line(*cli(["compare", "--epochs", value, "--quiet"], capsys))
    assert "--epochs" in line and repr(value) in line and "such as 10,30,90" in line, line


def test_train_takes_one_budget(capsys):
    line = _one_line(*cli(["train", "--epochs", "1,2", "--quiet"], capsys))
    assert "--epochs" in line and "'1,2'" in line and "mixlab compare" in line, line


def test_train_refuses_a_list_of_budgets_from_a_config_file(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": [1, 2]}))
    line = _one_line(*cli(["train", "--config", path, "--dataset", "digits", "--quiet", "--out", tmp_path / "o"],
                          capsys))
    assert "--epochs [1, 2]" in line and "mixlab compare" in line, line


def test_budget_mode_checkpoints_needs_several_budgets(capsys):
    line = _one_line(*cli(["compare", "--epochs", "3", "--budget-mode", "checkpoints", "--quiet"], capsys))
    assert "--budget-mode" in line and "--epochs" in line, line


def test_a_config_file_takes_a_list_of_budgets(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": [2, 4]}))
    assert resolve_config({}, config_file=path).epochs == [2, 4]
    path.write_text(json.dumps({"epochs": [2, "4"]}))
    with pytest.raises(ValueError, match="--epochs"):
        resolve_config({}, config_file=path)


# ------------------------------------------------------------------------------------ the sweep's runs

def test_each_arm_and_budget_has_its_own_full_schedule(sweep):
    out, steps = sweep
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_epoch = len([b for b in range(0, 1437, 64)])  # digits: 1437 training rows, batches of 64 -> 23 steps
    assert sorted(steps) == sorted([per_epoch * b for b in (1, 2)] * 2), steps  # schedule length = the budget's
    for arm in ("baseline", "mixup"):
        for b in (1, 2):
            run = [r for r in rows if r["arm"] == arm and r["budget"] == b]
            assert [r["epoch"] for r in run] == list(range(1, b + 1))
            assert run[-1]["lr"] < 1e-9  # the one-cycle schedule ran to its end at every budget
    first = {b: next(r for r in rows if r["arm"] == "mixup" and r["budget"] == b) for b in (1, 2)}
    assert first[1]["lr"] != first[2]["lr"]  # the 1-epoch run is not the 2-epoch run cut short


def test_every_budget_starts_from_the_same_initial_weights(sweep):
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["init_sha256"]) == STEMS and len({h["0"] for h in summary["init_sha256"].values()}) == 1
    assert len({h["0"] for h in summary["weights_sha256"].values()}) == 4  # four different trained models
    for stem in STEMS:
        assert (out / "checkpoints" / f"seed0_{stem}.pt").is_file()
        assert (out / "predictions" / f"seed0_{stem}.npz").is_file()
    assert not (out / "checkpoints" / "seed0_mixup.pt").exists()  # the one-budget names are not used


def test_verdict_per_budget_crossover_line_plot_and_report(sweep, capsys):
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["budgets"]) == ["1", "2"]
    for b in ("1", "2"):
        rec = summary["budgets"][b]["versus_baseline"]["mixup"]["metrics"]["test_acc"]
        assert rec["call"] in ("better", "worse", "no detectable difference") and rec["lo"] is not None
    line = summary["budget_verdict"][0]
    assert line.startswith("mixup: ") and " at 1 epoch" in line and " at 2" in line, line
    report = (out / "report.md").read_text()
    assert (out / "plots" / "budget.png").stat().st_size > 1000
    assert "](plots/budget.png)" in report and line in report
    marker = json.loads((out / ".mixlab-run.json").read_text())
    assert "plots/budget.png" in marker["files"] and "checkpoints/seed0_mixup_e2.pt" in marker["files"]


def test_the_run_prints_the_crossover_line_at_the_end(sweep, tmp_path, capsys):
    out, _ = sweep
    rc = main(["compare", "--out", str(out), "--resume", "--quiet", "--budget-mode", "full"])  # finished: all printed
    printed = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0 and f"budgets: {summary['budget_verdict'][0]}" in printed[-len(summary["budget_verdict"]):]


@pytest.mark.parametrize("after", [4, 5])  # baseline at both budgets and mixup at 1 epoch done; + mixup's 1st of 2
def test_resume_trains_only_the_missing_pairs_and_ends_bit_identical(after, sweep, tmp_path, capsys):
    out = tmp_path / "resumed"
    interrupted_run(out, SWEEP, after=after)
    trained = []
    real = train._run_epoch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_run_epoch", lambda run, epoch, **k: trained.append((k["arm"], run.epochs, epoch + 1))
                   or real(run, epoch, **k))
        assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    assert trained == ([("mixup", 2, 1), ("mixup", 2, 2)] if after == 4 else [("mixup", 2, 2)])
    assert _sweep_result(out) == _sweep_result(sweep[0])


# ------------------------------------------------------------------------------------ the crossover line

def _rec(mean, lo, hi, call):
    return {"mean": mean / 100, "lo": lo / 100, "hi": hi / 100, "call": call}


def test_crossover_line_hurts_then_no_difference_then_helps():
    rows = [(10, _rec(-2.1, -3.0, -1.2, "worse")), (30, _rec(0.2, -0.5, 0.9, "no detectable difference")),
            (90, _rec(1.8, 0.9, 2.7, "better"))]
    line = budget.crossover_line("mixup", rows)
    assert line.startswith("mixup: hurts at 10 epochs (-2.10 [-3.00, -1.20]), no detectable difference at 30, "
                           "helps at 90 (+1.80 [+0.90, +2.70])"), line
    assert "crossover" in line and "between 10 and 30 epochs" in line and "between 30 and 90 epochs" in line


def test_crossover_line_without_a_crossover():
    rows = [(10, _rec(-2.0, -3.0, -1.0, "worse")), (30, _rec(-1.0, -1.5, -0.5, "worse"))]
    line = budget.crossover_line("cutmix", rows)
    assert line == ("cutmix: hurts at 10 epochs (-2.00 [-3.00, -1.00]), hurts at 30 (-1.00 [-1.50, -0.50]); "
                    "no crossover within the budgets run (10 to 30 epochs)")
    rows = [(10, _rec(0.1, -1, 1, "no detectable difference")), (30, _rec(0.1, -1, 1, "no detectable difference"))]
    assert budget.crossover_line("fmix", rows).endswith("no crossover within the budgets run (10 to 30 epochs)")


def test_crossover_line_helps_then_hurts_and_no_interval():
    rows = [(5, _rec(1.0, 0.5, 1.5, "better")), (20, _rec(-1.0, -1.5, -0.5, "worse"))]
    line = budget.crossover_line("mixup", rows)
    assert "helps at 5 epochs" in line and "hurts at 20" in line and "between 5 and 20 epochs (helps -> hurts)" in line
    rows = [(5, {"mean": 0.01, "lo": None, "hi": None, "call": "unknown"}), (20, _rec(1.0, 0.5, 1.5, "better"))]
    assert "no interval at 5 epochs" in budget.crossover_line("mixup", rows)


# ------------------------------------------------------------------------------------ the hint

def test_the_hint_names_a_longer_budget_and_its_cost():
    cfg = resolve_config({"epochs": [10, 30, 90]})
    summary = {"seeds": [0], "arms": ["baseline", "mixup"],
               "per_seed": {a: {"0": {"train_time_s": 90 * 2.0}} for a in ("baseline", "mixup")},
               "versus_baseline": {"mixup": {"metrics": {"test_acc": {"call": "worse"}}}},
               "epoch_time_s": 2.5}
    hints = budget.longer_budget_hint(summary, cfg, still_improving=True, loss_far=False)
    assert hints.startswith("train longer: --epochs 10,30,90,270"), hints
    assert "270 epochs x 2 arms x 1 seed" in hints and "2.5 s per epoch" in hints and "22 min" in hints, hints
    assert budget.next_budget([1, 2, 3]) == 6 and budget.next_budget([4]) == 8


# ------------------------------------------------------------------------------------ the cheaper mode

def test_checkpoints_mode_is_labelled_and_its_difference_from_full_runs_is_reported(sweep, tmp_path, capsys):
    out = tmp_path / "approx"
    assert main(["compare", *SWEEP, "--budget-mode", "checkpoints", "--out", str(out)]) == 0
    approx = json.loads((out / "summary.json").read_text())
    full = json.loads((sweep[0] / "summary.json").read_text())
    report = (out / "report.md").read_text()
    assert "approximation" in report.lower() and "--budget-mode checkpoints" in report
    assert approx["budget_mode"] == "checkpoints" and "budget_mode" not in full or full["budget_mode"] == "full"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for arm in ("baseline", "mixup"):  # the 1-epoch run is the 2-epoch trunk's first epoch decayed: so its own
        one = [r for r in rows if r["arm"] == arm and r["budget"] == 1]
        assert len(one) == 1 and one[0]["lr"] < 1e-9
    diff = budget.mode_difference(full, approx)
    assert sorted(diff) == ["1", "2"] and all(set(d) == {"baseline", "mixup"} for d in diff.values())
    assert all(math.isfinite(v["test_acc"]) for d in diff.values() for v in d.values())
    text = budget.format_mode_difference(diff)
    with capsys.disabled():
        print("\n--budget-mode checkpoints minus full runs (digits, 1 seed, budgets 1,2):\n" + text)
    assert "points" in text and "mixup" in text


def test_checkpoints_mode_decays_a_copy_of_the_shared_run_and_equals_that_run_from_scratch(tmp_path):
    """Budgets 2,4: the 4-epoch run (constant lr, decay in epoch 4) is saved after epoch 1, where the 2-epoch
    budget's decay starts; budget 2 trains one epoch from that copy (not two from scratch), and deleting the
    copy and budget 2's checkpoints makes a resume retrain it from the initial weights to the same weights."""
    out = tmp_path / "branches"
    trained = []
    real = train._run_epoch

    def spy(run, epoch, **k):
        trained.append((k["arm"], run.epochs, epoch + 1))
        return real(run, epoch, **k)

    args = BASE + ["--epochs", "2,4", "--budget-mode", "checkpoints", "--mix", "mixup"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_run_epoch", spy)
        assert main(["compare", *args, "--out", str(out)]) == 0
    for arm in ("baseline", "mixup"):
        assert [t for t in trained if t[0] == arm] == [(arm, 4, 1), (arm, 4, 2), (arm, 4, 3), (arm, 4, 4), (arm, 2, 2)]
    assert (out / "checkpoints" / "seed0_mixup_e2.branch.pt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trunk = [r for r in rows if r["arm"] == "mixup" and r["budget"] == 4]
    short = [r for r in rows if r["arm"] == "mixup" and r["budget"] == 2]
    assert short[0]["test_acc"] == trunk[0]["test_acc"] and short[0]["lr"] == trunk[0]["lr"] == 3e-3  # constant
    assert short[1]["lr"] < 1e-9 and trunk[1]["lr"] == 3e-3 and trunk[3]["lr"] < 1e-9  # each budget decays to 0
    before = json.loads((out / "summary.json").read_text())["weights_sha256"]["mixup_e2"]
    for name in ("seed0_mixup_e2.pt", "seed0_mixup_e2.prev.pt", "seed0_mixup_e2.branch.pt"):
        (out / "checkpoints" / name).unlink(missing_ok=True)
    trained.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_run_epoch", spy)
        assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    assert trained == [("mixup", 2, 1), ("mixup", 2, 2)]
    assert json.loads((out / "summary.json").read_text())["weights_sha256"]["mixup_e2"] == before


def _tables():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results_tables.py"
    spec = importlib.util.spec_from_file_location("results_tables", path)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables


def test_the_results_tables_budget_table_reads_the_sweep_folder(sweep):
    """benchmarks/results_tables.py budget: one row per (budget, arm) with the summary's figures, the baseline's
    best-minus-last gap from metrics.jsonl, and the crossover line (docs/RESULTS.md section 8 is made by it)."""
    tables = _tables()
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    text = tables.budget_table([out])
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(f"| {out.name} |")]
    assert [(r[2], r[3]) for r in rows] == [("1", "baseline"), ("1", "mixup"), ("2", "baseline"), ("2", "mixup")]
    for r in rows:
        agg = summary["budgets"][r[2]]["aggregate"][r[3]]
        assert r[4].startswith(f"{100 * agg['test_acc']['mean']:.2f} ± ")
        assert r[9] == f"{agg['train_loss']['mean']:.4f}"
        if r[3] == "mixup":
            rec = summary["budgets"][r[2]]["versus_baseline"]["mixup"]["metrics"]["test_acc"]
            assert r[5].startswith(f"{100 * rec['mean']:+.2f} [") and r[6] == rec["call"]
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [h for h in hist if h.get("arm") == "baseline" and h.get("budget") == 2 and "epoch" in h]
    gap = max(h["test_acc"] for h in curve) - curve[-1]["test_acc"]
    assert rows[2][10].startswith(f"{100 * gap:.2f} (best at epoch ")
    assert f"- {out.name}: {summary['budget_verdict'][0]}" in text


def test_the_results_tables_pair_gives_the_runs_own_verdict_from_its_predictions(tmp_path):
    """benchmarks/results_tables.py pair: one arm against the baseline from predictions/ and metrics.jsonl (for a run
    stopped before its summary) says what the finished run's summary says."""
    out = tmp_path / "one"
    assert main(["compare", *BASE, "--epochs", "1", "--seeds", "0,1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    text = _tables().pair(out, "mixup")
    assert summary["verdict"][0] in text.splitlines()[-1] or text.splitlines()[-1] in summary["verdict"][0], \
        (text, summary["verdict"])
    acc = summary["aggregate"]["mixup"]["test_acc"]["mean"]
    assert f"mixup: {100 * acc:.2f}%" in text.splitlines()[0]
    # runs: two folders' predictions (here the same folder's two arms) give the summary's accuracy difference
    diff = summary["versus_baseline"]["mixup"]["metrics"]["test_acc"]["mean"]
    text = _tables().runs(f"{out}:baseline", f"{out}:mixup")
    assert f"accuracy ↑ (better higher): " in text and f"{100 * diff:+.2f} points [" in text, (text, diff)
    same = _tables().runs(f"{out}:baseline", f"{out}:baseline")
    assert "+0.00 points [+0.00, +0.00]" in same or "-0.00 points" in same or "0.00 points" in same, same
