"""The lab's verdict: paired statistics (against scipy and by hand), multi-arm compare, stored predictions."""
from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats as sps

from mixlab_lab.data import load_dataset
from mixlab_lab import runner, stats
from mixlab_lab.cli import main
from mixlab_lab.config import resolve_config

TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--quiet"]


def _preds(correct: torch.Tensor, conf=0.8, seed=0) -> dict:
    """Predictions on a 10-class test set: ``correct`` says which images the model gets right."""
    g = torch.Generator().manual_seed(seed)
    n = correct.numel()
    y = torch.randint(0, 10, (n,), generator=g)
    wrong = (y + 1 + torch.randint(0, 9, (n,), generator=g)) % 10
    pred = torch.where(correct, y, wrong)
    conf_t = torch.full((n,), conf)
    return {"pred": pred, "conf": conf_t, "p_true": torch.where(correct, conf_t, (1 - conf_t) / 9), "y": y}


def test_t_interval_matches_the_formula():
    vals = [0.012, 0.004, 0.009, 0.015]
    ti = stats.t_interval(vals)
    m, sd = sum(vals) / 4, torch.tensor(vals, dtype=torch.float64).std().item()
    half = sps.t.ppf(0.975, 3) * sd / 2
    assert ti["mean"] == pytest.approx(m) and ti["lo"] == pytest.approx(m - half) and ti["hi"] == pytest.approx(m + half)
    one = stats.t_interval([0.3])
    assert one["n"] == 1 and one["lo"] is None and one["hi"] is None


def test_mcnemar_exact_by_hand():
    # 1 image only the baseline gets right, 9 only the arm: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024
    base = torch.tensor([True] * 50 + [True] + [False] * 9)
    arm = torch.tensor([True] * 50 + [False] + [True] * 9)
    t = stats.mcnemar(base, arm)
    assert (t["base_only"], t["arm_only"], t["n"]) == (1, 9, 60)
    assert t["p"] == pytest.approx(22 / 1024)
    assert stats.mcnemar(base, base)["p"] == 1.0
    with pytest.raises(ValueError, match="different test sets"):
        stats.mcnemar(base, arm[:-1])


def test_ece_matches_the_lab_metric():
    from mixlab_lab import metrics as M

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    y = torch.randint(0, 10, (500,), generator=g)
    probs = torch.softmax(logits, 1)
    conf, pred = probs.max(1)
    assert stats.ece(conf, pred == y) == pytest.approx(M.finalize(M.batch_stats(probs, y))["ece"], abs=1e-9)


def test_paired_bootstrap_covers_the_truth_and_is_zero_for_equal_arms():
    g = torch.Generator().manual_seed(1)
    base_ok = torch.rand(2000, generator=g) < 0.80
    arm_ok = base_ok | (torch.rand(2000, generator=g) < 0.25)   # the arm also fixes ~5% of all images
    b, a = _preds(base_ok), _preds(arm_ok)
    res = stats.paired_bootstrap(b, a, n_boot=400)
    true_diff = float(arm_ok.double().mean() - base_ok.double().mean())
    assert res["test_acc"]["diff"] == pytest.approx(true_diff)
    assert 0 < res["test_acc"]["lo"] < true_diff < res["test_acc"]["hi"]
    assert res["test_nll"]["hi"] < 0  # more images right at the same confidence: lower NLL
    same = stats.paired_bootstrap(b, b, n_boot=50)
    assert all(same[k]["lo"] == same[k]["hi"] == 0 for k in same)


def test_equal_per_seed_differences_do_not_give_a_zero_width_interval():
    # Two seeds that each gain exactly one image: the t-interval has width 0; the call must not be "better".
    base_ok = torch.tensor([True] * 300 + [False] * 60)
    arm_ok = base_ok.clone()
    arm_ok[300] = True
    finals_b = {"0": {"test_acc": 300 / 360, "test_nll": 0.5, "test_ece": 0.05},
                "1": {"test_acc": 300 / 360, "test_nll": 0.5, "test_ece": 0.05}}
    finals_a = {s: {**r, "test_acc": 301 / 360} for s, r in finals_b.items()}
    preds_b = {"0": _preds(base_ok), "1": _preds(base_ok)}
    preds_a = {"0": _preds(arm_ok), "1": _preds(arm_ok)}
    comp = stats.compare_arms(finals_b, finals_a, preds_b, preds_a, n_boot=300)
    acc = comp["metrics"]["test_acc"]
    assert acc["t_lo"] == pytest.approx(acc["t_hi"])  # the degenerate t-interval
    assert acc["lo"] <= 0 < acc["hi"] and acc["call"] == "no detectable difference"
    assert comp["mcnemar"]["0"] == {"base_only": 0, "arm_only": 1, "n": 360, "p": 1.0}


def test_clear_gain_on_three_seeds_is_called_helps():
    finals_b = {str(s): {"test_acc": 0.80 + 0.001 * s, "test_nll": 0.6, "test_ece": 0.05} for s in range(3)}
    finals_a = {str(s): {"test_acc": 0.83 + 0.002 * s, "test_nll": 0.5 - 0.01 * s, "test_ece": 0.05}
                for s in range(3)}
    comp = stats.compare_arms(finals_b, finals_a)
    assert comp["metrics"]["test_acc"]["call"] == "better" and comp["metrics"]["test_nll"]["call"] == "better"
    assert comp["metrics"]["test_ece"]["call"] == "no detectable difference"
    assert stats.headline("mixup", comp).startswith("mixup helps: accuracy +3.")
    lines = stats.verdict_lines("mixup", comp)
    assert lines[0].startswith("accuracy ↑") and "helps" in lines[0] and "3 seeds" in lines[0]
    assert lines[1].startswith("NLL ↓") and "better" in lines[1]


def test_arms_for_lists_and_names():
    cfg = resolve_config({"mix": ["none", "mixup", "cutmix", "resizemix"], "alpha": [0.2, 1.0]})
    arms = runner.arms_for("compare", cfg)
    assert [a.name for a in arms] == ["baseline", "mixup-0.2", "mixup-1", "cutmix-0.2", "cutmix-1", "resizemix"]
    assert [a.alpha for a in arms[1:3]] == [0.2, 1.0]
    single = runner.arms_for("compare", resolve_config({"mix": "cutmix"}))
    assert [a.name for a in single] == ["baseline", "cutmix"]
    with pytest.raises(ValueError, match="`mixlab train` trains one arm"):
        runner.arms_for("train", cfg)
    with pytest.raises(ValueError, match="besides 'none'"):
        runner.arms_for("compare", resolve_config({"mix": "none"}))
    assert resolve_config({"mix": "mixup,cutmix", "alpha": [0.4]}).alpha == 0.4  # one value stays a scalar
    with pytest.raises(ValueError, match="--mix"):
        resolve_config({"mix": ["mixup", "mixup"]})
    with pytest.raises(ValueError, match="--alpha"):
        resolve_config({"alpha": [0.2, -1.0]})


def test_imbalance_profile_is_exponential():
    d = load_dataset("digits", imbalance=10, seed=0)
    counts = torch.bincount(d.y_train, minlength=10).tolist()
    full = torch.bincount(load_dataset("digits", seed=0).y_train, minlength=10)
    n_max = int(full.min())
    assert counts == [max(1, int(n_max * 10 ** (-c / 9))) for c in range(10)]
    assert torch.bincount(d.y_test).tolist() == torch.bincount(load_dataset("digits", seed=0).y_test).tolist()
    with pytest.raises(ValueError, match="imbalance must be a number >= 1"):
        load_dataset("digits", imbalance=0.5)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verdict") / "run"
    assert main(["compare", *TINY, "--seeds", "0,1", "--mix", "mixup,cutmix", "--alpha", "0.2,1", "--out",
                 str(out)]) == 0
    return out


def test_multi_arm_compare_writes_verdict_predictions_and_ranking(multi_run, capsys):
    summary = json.loads((multi_run / "summary.json").read_text())
    arms = ["baseline", "mixup-0.2", "mixup-1", "cutmix-0.2", "cutmix-1"]
    assert summary["arms"] == arms
    assert set(summary["versus_baseline"]) == set(arms[1:])
    for arm in arms[1:]:
        comp = summary["versus_baseline"][arm]
        acc = comp["metrics"]["test_acc"]
        diffs = [summary["per_seed"][arm][s]["test_acc"] - summary["per_seed"]["baseline"][s]["test_acc"]
                 for s in ("0", "1")]
        assert acc["mean"] == pytest.approx(sum(diffs) / 2)
        assert acc["lo"] <= acc["mean"] <= acc["hi"] and acc["call"] in ("better", "worse", "no detectable difference")
        for s in ("0", "1"):  # McNemar recomputed from the stored predictions
            pb = runner.load_predictions(multi_run / "predictions" / f"seed{s}_baseline.npz",
                                         summary["predictions_sha256"]["baseline"][s])
            pa = runner.load_predictions(multi_run / "predictions" / f"seed{s}_{arm}.npz",
                                         summary["predictions_sha256"][arm][s])
            assert stats.mcnemar(pb["pred"] == pb["y"], pa["pred"] == pa["y"]) == comp["mcnemar"][s]
            assert float((pa["pred"] == pa["y"]).double().mean()) == pytest.approx(
                summary["per_seed"][arm][s]["test_acc"])
    assert summary["arm_alpha"] == {"baseline": None, "mixup-0.2": 0.2, "mixup-1": 1.0, "cutmix-0.2": 0.2,
                                    "cutmix-1": 1.0}
    assert len(summary["verdict"]) == 4 and summary["warnings"]  # 2 epochs of digits: still improving
    report = (multi_run / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Ranking against the baseline") < report.index("## Final")
    assert (multi_run / "plots" / "alpha.png").stat().st_size > 0 and "plots/alpha.png" in report


def test_stored_predictions_are_verified(multi_run, tmp_path):
    summary = json.loads((multi_run / "summary.json").read_text())
    src = multi_run / "predictions" / "seed0_mixup-1.npz"
    bad = tmp_path / "x.npz"
    data = bytearray(src.read_bytes())
    data[-20] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(runner.RunError, match="does not match the SHA-256"):
        runner.load_predictions(bad, summary["predictions_sha256"]["mixup-1"]["0"])
    (tmp_path / "p.npz").write_bytes(b"not an npz")
    with pytest.raises(runner.RunError, match="not a mixlab predictions file"):
        runner.load_predictions(tmp_path / "p.npz")


def test_terminal_ends_with_the_verdict(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["compare", *TINY, "--seeds", "0", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("verdict: mixup")
    assert any("warning: one seed" in line for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["versus_baseline"]["mixup"]["metrics"]["test_acc"]
    assert "bootstrap" in acc["interval"] and acc["lo"] is not None
    # a resumed finished run recomputes the same verdict from the same weights
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["versus_baseline"] == summary["versus_baseline"]


def test_train_refuses_lists_in_one_line(tmp_path, capsys):
    assert main(["train", *TINY, "--mix", "mixup,cutmix", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--mix" in err and "takes one method here" in err


@pytest.mark.parametrize("mix", ["resizemix", "smoothmix", "tokenmix", "remix", "remix-balanced", "puzzlemix"])
def test_new_lab_methods_train(mix, tmp_path):
    out = tmp_path / mix
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--mix", mix, "--imbalance", "5",
                 "--train-size", "600", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"] == [mix] and math.isfinite(summary["per_seed"][mix]["0"]["train_loss"])


def test_test_size_is_one_fixed_sample_for_every_seed():
    full = load_dataset("digits", seed=0)
    a = load_dataset("digits", seed=0, test_size=100)
    b = load_dataset("digits", seed=0, test_size=100, train_size=500)
    assert a.y_test.numel() == 100 and torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(load_dataset("digits", seed=0, test_size=full.y_test.numel()).y_test, full.y_test)
    with pytest.raises(ValueError, match="test_size=100000 is larger than the"):
        load_dataset("digits", test_size=100000)
    with pytest.raises(ValueError, match="test_size must be a positive integer"):
        load_dataset("digits", test_size=0)


def test_imbalance_reaches_the_lab(tmp_path):
    out = tmp_path / "lt"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--mix", "remix", "--imbalance", "10",
                 "--test-size", "200", "--out", str(out)]) == 0
    data = json.loads((out / "config.json").read_text())["data"]
    full = load_dataset("digits", seed=0)
    n_max = int(torch.bincount(full.y_train).min())
    assert data["num_train"] == sum(max(1, int(n_max * 10 ** (-c / 9))) for c in range(10))
    assert data["num_test"] == 200


def test_puzzlemix_in_the_lab_uses_the_models_saliency(monkeypatch):
    import mixlab.puzzlemix as pm
    from mixlab_lab.train import build_mixer

    cfg = resolve_config({"mix": "puzzlemix", "alpha": 1.0})
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    mixer = build_mixer(cfg, "puzzlemix", 10, torch.Generator().manual_seed(0), input_shape=(1, 8, 8), model=net)
    assert mixer.model is net and mixer.block_num == (2, 4)  # sides that divide 8 and leave >= 2 blocks
    seen = []
    real = pm.input_saliency
    monkeypatch.setattr(pm, "input_saliency", lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    x, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(6)
    mixed, target = mixer(x, y)
    assert seen == [net] and mixed.shape == x.shape
    assert torch.all((target.params.lam >= 0) & (target.params.lam <= 1))


def test_next_steps_follow_the_warnings():
    cfg = resolve_config({"mix": "mixup", "alpha": [8.0, 32.0], "label_noise": 0.2, "epochs": 4})
    summary = {"seeds": [0, 1, 2], "versus_baseline": {"mixup-8": {"metrics": {"test_acc": {"call": "worse"}}}}}
    warns = ["small test set (2000 images): for mixup-8, accuracy differences under about 1.3 points cannot be "
             "told from chance on one seed's test images"]
    hints = stats.next_steps(summary, warns, cfg)
    assert not any("--seeds" in h for h in hints) and not any("--label-noise" in h for h in hints)
    assert "one lam per sample: --mode sample" in hints
    one = stats.next_steps({**summary, "seeds": [0]}, ["every arm was still improving at the last epoch"], cfg)
    assert "more seeds: --seeds 0,1,2" in one and "train longer: --epochs 8" in one
