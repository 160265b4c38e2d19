"""The lab never reports a wrong run, and every user error is one line: ``mixlab: <message>``, status 2.

Options are checked before any work (no run folder is made), ``--config`` files and a run's
``config.json`` are type-checked and named in their errors, a diverged arm or an epoch without
an optimiser step stops with an error instead of a result, the metrics survive NaN/inf logits,
and only ``--debug`` (or a bug in mixlab) shows a traceback.

Tiny runs only: digits, one epoch, one thread.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mixlab_lab import cli
from mixlab_lab import metrics as M
from mixlab_lab.cli import main
from mixlab_lab.config import MAX_SEED, LabConfig, resolve_config
from mixlab_lab.train import LabData, TrainingDiverged, train_arm

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "digits", "--epochs", "1", "--threads", "1", "--quiet"]


def _one_error_line(capsys, *names: str) -> str:
    """The captured stderr is exactly one ``mixlab: ...`` line naming every one of ``names``; no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mixlab: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


# --- options: refused before any work ---------------------------------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["--alpha", "inf"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
    (["--lr", "inf"], "--lr"),
    (["--cutmix-alpha", "-inf", "--mix", "mixup-or-cutmix"], "--cutmix-alpha"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--seeds", str(MAX_SEED + 1)], "--seeds"),
    (["--seeds", "0,0"], "--seeds"),
    (["--batch-size", "1"], "--batch-size"),
    (["--test-fraction", "1.5"], "--test-fraction"),
    (["--classes", "3,3"], "--classes"),
    (["--device", "nope"], "--device"),
    (["--epochs", "abc"], "--epochs"),             # argparse's own errors are one line as well
    (["--optimizer", "lion"], "--optimizer"),
    (["--alpah", "0.2"], "--alpah"),               # an unknown option
    (["--mix", "cutmix", "--keep-dominant"], "--keep-dominant"),
    (["--label-regex", "(unclosed"], "--label-regex"),
])
def test_bad_option_is_one_line_before_any_work(argv, option, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compare", *TINY, "--out", str(out), *argv]) == 2
    _one_error_line(capsys, option)
    assert not out.exists(), "an option error must come before any work"


def test_alpha_inf_is_refused_before_the_baseline_trains(tmp_path, capsys, monkeypatch):
    from mixlab_lab import runner

    monkeypatch.setattr(runner, "run_lab", lambda *a, **k: pytest.fail("training started"))
    assert main(["compare", *TINY, "--alpha", "inf", "--out", str(tmp_path / "run")]) == 2
    assert _one_error_line(capsys, "--alpha") == "mixlab: --alpha must be a finite number, got inf"


def test_huge_seed_message_says_the_bound(capsys):
    assert main(["train", *TINY, "--seeds", "0,99999999999999999999"]) == 2
    assert str(MAX_SEED) in _one_error_line(capsys, "--seeds")
    assert main(["preview", "--dataset", "digits", "--seed", str(2**64)]) == 2
    assert str(MAX_SEED) in _one_error_line(capsys, "--seed")


def test_bad_dist_timeout_is_an_option_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MIXLAB_DIST_TIMEOUT", "0")
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "MIXLAB_DIST_TIMEOUT")


# --- --config files and a run's config.json -----------------------------------------------------------------

@pytest.mark.parametrize("content, names", [
    ({"keep_dominant": "false"}, ["keep_dominant", "true or false"]),   # a string is not a boolean
    ({"epochs": 2.5}, ["epochs", "integer"]),
    ({"alpha": "0.2"}, ["alpha", "number"]),
    ({"seeds": [0, "1"]}, ["seeds"]),
    ({"quiet": 1}, ["quiet"]),
    ({"epochz": 3}, ["epochz", "unknown", "did you mean 'epochs'"]),   # e.g. from another version
    ({"mixup_alpha": 0.2, "epochs": 1}, ["mixup_alpha", "another mixlab version"]),
    ([1, 2], ["JSON object"]),
])
def test_config_file_values_are_type_checked(content, names, tmp_path, capsys):
    f = tmp_path / "opts.json"
    f.write_text(json.dumps(content))
    out = tmp_path / "run"
    assert main(["compare", *TINY, "--config", str(f), "--out", str(out)]) == 2
    _one_error_line(capsys, str(f), *names)
    assert not out.exists()


def test_config_false_boolean_really_is_off(tmp_path):
    f = tmp_path / "opts.json"
    f.write_text(json.dumps({"keep_dominant": False, "mode": "sample"}))
    assert resolve_config({}, config_file=f).keep_dominant is False
    f.write_text(json.dumps({"keep_dominant": True, "mode": "sample"}))
    assert resolve_config({}, config_file=f).keep_dominant is True


@pytest.mark.parametrize("make, names", [
    (lambda p: p.write_text('{"epochs": 3, "alp'), ["not valid JSON"]),            # truncated
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), ["UTF-8"]),
    (lambda p: p.mkdir(), ["is a folder"]),
    (lambda p: None, ["does not exist"]),
])
def test_unreadable_config_file_names_the_file(make, names, tmp_path, capsys):
    f = tmp_path / "opts.json"
    make(f)
    assert main(["train", *TINY, "--config", str(f), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "--config", str(f), *names)


@pytest.mark.parametrize("text, names", [
    ('{"config": {"dataset": "digits", "epo', ["not valid JSON"]),                                  # truncated
    (json.dumps({"config": {"dataset": "digits", "future_option": 1}}), ["future_option", "unknown"]),
    (json.dumps({"config": {"dataset": "digits", "epochs": "3"}}), ["epochs"]),
])
def test_resume_with_a_broken_config_json_names_the_file(text, names, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    _one_error_line(capsys, "--resume", str(run / "config.json"), *names)


def test_config_validate_checks_every_field_type():
    for field, bad in [("dataset", 3), ("out", None), ("classes", "3,7"), ("train_size", 2.0), ("threads", True),
                       ("p", float("inf")), ("label_noise", float("nan"))]:
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}"):
            LabConfig(**{field: bad}).validate()


# --- the CLI's error reporting ------------------------------------------------------------------------------

def test_debug_adds_the_traceback(tmp_path, capsys):
    assert main(["compare", *TINY, "--alpha", "inf", "--debug", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == "mixlab: --alpha must be a finite number, got inf"


def test_internal_bugs_still_show_a_traceback(monkeypatch, tmp_path):
    def boom(cfg, arms):
        raise RuntimeError("an internal bug")
    monkeypatch.setattr(cli, "_check_run", boom)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["train", *TINY, "--out", str(tmp_path / "run")])

    def wrong_call(cfg, arms):
        return len(cfg, arms)  # a TypeError Python raises: a bug, not a user error
    monkeypatch.setattr(cli, "_check_run", wrong_call)
    with pytest.raises(TypeError):
        main(["train", *TINY, "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("error, expected", [
    (PermissionError(13, "Permission denied", "/runs/x/config.json"), "/runs/x/config.json: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/runs/x/metrics.jsonl"), "/runs/x/metrics.jsonl: Is a directory"),
    (NotADirectoryError(20, "Not a directory", "/runs/file/x"), "/runs/file/x: Not a directory"),
    (FileNotFoundError(2, "No such file or directory", "/data/cifar"), "/data/cifar: No such file or directory"),
    (TrainingDiverged("training diverged at seed 1, arm mixup, epoch 2 (loss inf); lower --lr"),
     "training diverged at seed 1, arm mixup, epoch 2 (loss inf); lower --lr"),
    (ValueError("a message\nover two lines"), "a message over two lines"),
])
def test_user_errors_are_one_line_with_status_2(error, expected, monkeypatch, tmp_path, capsys):
    def fail(cfg, arms):
        raise error
    monkeypatch.setattr(cli, "_check_run", fail)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    assert _one_error_line(capsys) == f"mixlab: {expected}"


def test_a_type_error_mixlab_raises_is_a_user_error(monkeypatch, tmp_path, capsys):
    from mixlab_lab import distributed

    monkeypatch.setattr(cli, "_check_run", lambda cfg, arms: distributed.all_reduce_sum([1]))
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "all_reduce_sum needs tensors")


def test_data_errors_are_one_line(tmp_path, capsys):
    assert main(["train", *TINY, "--classes", "3,99", "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "99")


def test_a_file_where_the_run_folder_should_be_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", *TINY, "--out", str(blocker / "run")]) == 2
    _one_error_line(capsys, str(blocker))


def test_console_script_exit_status_and_stderr(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO / "src"))
    res = subprocess.run([sys.executable, "-m", "mixlab_lab", "compare", "--alpha", "inf", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert res.stderr == "mixlab: --alpha must be a finite number, got inf\n"
    assert res.stdout == ""


# --- a diverged arm, an epoch without a step ----------------------------------------------------------------

def test_non_finite_loss_stops_the_arm(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--mix", "none", *TINY, "--lr", "1e30", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert line == "mixlab: training diverged at seed 0, arm baseline, epoch 1 (loss nan); lower --lr"
    assert not (out / "summary.json").exists()
    metrics = out / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""  # the diverged epoch is never reported


class _NanWhenEvaluating(torch.nn.Module):
    """Trains normally; its test outputs are NaN (the weights blew up on the last step)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        return y if self.training else y * float("nan")


def _tabular(n_train: int) -> LabData:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_train, 4, generator=g), torch.randint(0, 3, (n_train,), generator=g)
    return LabData(x, y, x[:3] if n_train >= 3 else torch.randn(3, 4, generator=g), torch.tensor([0, 1, 2]),
                   torch.zeros(1, 4), torch.ones(1, 4), "tabular", 3, ["a", "b", "c"])


def test_non_finite_test_outputs_stop_the_arm(tmp_path):
    cfg = LabConfig(epochs=2, batch_size=8, quiet=True, mix="none", schedule="constant")
    with pytest.raises(TrainingDiverged, match=r"seed 3, arm baseline, epoch 1 \(non-finite outputs on 3 of 3"):
        train_arm(cfg, _tabular(32), _NanWhenEvaluating(), seed=3, arm="baseline", mix="none",
                  ckpt_path=tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt").exists()


def test_an_epoch_without_an_optimiser_step_is_an_error(tmp_path):
    cfg = LabConfig(epochs=1, batch_size=8, quiet=True, mix="none")
    with pytest.raises(ValueError, match=r"--train-size / --classes: the training set has 1 row\(s\), so an epoch "
                                         r"would take no optimiser step"):
        train_arm(cfg, _tabular(1), torch.nn.Linear(4, 3), seed=0, arm="baseline", mix="none",
                  ckpt_path=tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt").exists()
    cfg.batch_size = 1  # refused by LabConfig.validate; a direct caller gets the loop's own error
    with pytest.raises(ValueError, match=r"--batch-size 1: an epoch would take no optimiser step"):
        train_arm(cfg, _tabular(32), torch.nn.Linear(4, 3), seed=0, arm="baseline", mix="none",
                  ckpt_path=tmp_path / "ck.pt")


@pytest.mark.filterwarnings("ignore:.*the training subset has no example:UserWarning")
def test_train_size_one_is_an_error_not_a_zero_loss(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--mix", "none", *TINY, "--train-size", "1", "--out", str(out)]) == 2
    _one_error_line(capsys, "--train-size")  # never a result with train loss 0.0
    assert not (out / "summary.json").exists()


# --- metrics with NaN / inf logits ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_metrics_survive_non_finite_logits(loss):
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[4.0, 0.0, 0.0], [nan, 0.0, 1.0], [inf, 0.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 0, 0, 2])
    stats = M.batch_stats(M.probabilities(logits, loss), y)       # no IndexError in the binning
    out = M.finalize(stats)
    assert out["nonfinite"] == (2 if loss == "ce" else 1)          # sigmoid(inf) = 1 is finite
    assert out["acc"] == pytest.approx((4 - out["nonfinite"]) / 4)  # non-finite rows count as wrong
    assert math.isnan(out["nll"]) and math.isnan(out["ece"])      # undefined, never a number that looks fine
    assert sum(out["bins"]["count"]) == 4 - out["nonfinite"]       # the bins hold the finite rows only
    assert all(math.isfinite(v) for k in ("count", "conf", "correct") for v in out["bins"][k])


def test_metrics_all_nan_and_finite_rows_unchanged():
    probs = torch.full((5, 3), float("nan"))
    out = M.finalize(M.batch_stats(probs, torch.zeros(5, dtype=torch.long)))
    assert out["acc"] == 0 and out["nonfinite"] == 5 and math.isnan(out["nll"]) and math.isnan(out["ece"])
    finite = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), 1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = M.finalize(M.add_stats(M.batch_stats(finite, y), M.batch_stats(finite, y)))
    assert out["nonfinite"] == 0 and math.isfinite(out["nll"]) and 0 <= out["ece"] <= 1
    mem = M.finalize_memorisation(M.memorisation(torch.cat([finite, probs]), torch.cat([y, y[:5]]),
                                                 torch.cat([y, y[:5]]), torch.ones(11, dtype=torch.bool)))
    right = int((finite.argmax(1) == y).sum())
    assert mem["train_clean_acc"] == pytest.approx(right / 11)    # NaN rows predict nothing


# --- a frozen peer without torchrun --------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP / /proc needed")
def test_rank_whose_peer_froze_exits_1_with_a_message(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1", MIXLAB_DIST_TIMEOUT="10", WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "mixlab_lab", "train", "--dataset", "digits", "--epochs", "30", "--batch-size", "32",
           "--threads", "1", "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for r in (0, 1)]
    try:
        end = time.monotonic() + 90
        while not (out / "metrics.jsonl").exists() and time.monotonic() < end and procs[0].poll() is None:
            time.sleep(0.05)
        assert (out / "metrics.jsonl").exists(), "the two ranks never finished an epoch"
        os.kill(procs[1].pid, signal.SIGSTOP)  # rank 1 freezes
        _, err = procs[0].communicate(timeout=90)
        assert procs[0].returncode == 1, err[-3000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mixlab: rank 0: "), err[-3000:]
        assert "rank 1" in lines[0] and "MIXLAB_DIST_TIMEOUT" in lines[0], lines[0]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()


# --- a preset named in a --config file ------------------------------------------------------------------------

def test_a_preset_named_in_a_config_file_is_applied(tmp_path):
    f = tmp_path / "opts.json"
    f.write_text(json.dumps({"preset": "keras"}))
    cfg = resolve_config({}, config_file=f)
    assert cfg.preset == "keras"
    assert (cfg.model, cfg.batch_size, cfg.mode, cfg.normalize) == ("keras-cnn", 64, "sample", "unit")  # its values
    # defaults < preset < config file < command line
    f.write_text(json.dumps({"preset": "keras", "batch_size": 32, "epochs": 4}))
    cfg = resolve_config({"epochs": 2}, config_file=f)
    assert (cfg.model, cfg.batch_size, cfg.epochs) == ("keras-cnn", 32, 2)
    cfg = resolve_config({}, preset="demo", config_file=f)  # --preset on the command line wins over the file's
    assert (cfg.preset, cfg.model, cfg.batch_size, cfg.lr) == ("demo", None, 32, 6e-3)


def test_a_config_file_preset_reaches_the_run_and_its_record(tmp_path):
    f = tmp_path / "opts.json"
    f.write_text(json.dumps({"preset": "fastai-mnist-sample"}))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(f), "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["preset"] == "fastai-mnist-sample"                                    # recorded
    assert (cfg["model"], cfg["classes"], cfg["batch_size"], cfg["keep_dominant"]) == ("simple-cnn", [3, 7], 64, True)
    assert (cfg["dataset"], cfg["epochs"]) == ("digits", 1)                           # the flags still win
    assert json.loads((out / "config.json").read_text())["data"]["num_classes"] == 2  # and it took effect


def test_an_unknown_preset_in_a_config_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "opts.json"
    f.write_text(json.dumps({"preset": "kears"}))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(f), "--out", str(out)]) == 2
    _one_error_line(capsys, str(f), "preset", "kears", "keras")
    assert not out.exists()


# --- everything a run needs of its data, checked before the first step ----------------------------------------

def _no_training(monkeypatch):
    from mixlab_lab import runner

    monkeypatch.setattr(runner, "train_arm", lambda *a, **k: pytest.fail("training started"))


@pytest.mark.filterwarnings("ignore:.*the training subset has no example:UserWarning")
@pytest.mark.parametrize("mix", ["mixup", "puzzlemix,tokenmix,remix-balanced"])
def test_a_training_set_without_every_class_is_refused_before_training(mix, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    out = tmp_path / "run"
    assert main(["compare", *TINY, "--train-size", "2", "--mix", mix, "--out", str(out)]) == 2
    _one_error_line(capsys, "--train-size 2", "classes")
    assert not out.exists(), "a data error must come before any work"


@pytest.mark.filterwarnings("ignore:.*the training subset has no example:UserWarning")
def test_every_seeds_data_is_checked_before_the_first_step(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    out = tmp_path / "run"  # --classes 3,7 --train-size 2: seed 1 draws one row of each class, seed 3 two 3s
    assert main(["train", *TINY, "--classes", "3,7", "--train-size", "2", "--seeds", "1,3", "--out", str(out)]) == 2
    _one_error_line(capsys, "--train-size 2", "seed 3")
    assert not out.exists()


def test_a_two_row_training_set_with_every_class_gives_a_report(tmp_path):
    out = tmp_path / "run"  # the report's preview shows the 2 rows there are (it asked for 9: IndexError)
    assert main(["compare", *TINY, "--classes", "3,7", "--train-size", "2", "--seeds", "1", "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "plots" / "mixed_samples.png").is_file()


def _tiny_image_folder(root: Path, side: int) -> Path:
    """A {train,test}/<class>/ tree of ``side`` x ``side`` RGB images: 6 training and 2 test images per class."""
    import numpy as np
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for c, base in (("a", 0), ("b", 120)):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((side, side, 3), base + 20 * i, np.uint8)).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("argv, names", [
    (["--dataset", "digits", "--model", "keras-cnn"], ["--model keras-cnn", "8x8", "16x16"]),
    (["--dataset", "folder", "--data-dir", "{px}"], ["--model fast-cnn", "1x1"]),  # the default model
    (["--dataset", "wine", "--model", "fast-cnn"], ["--model fast-cnn", "(13,)"]),    # tabular rows
])
def test_a_model_refuses_inputs_it_cannot_take_before_training(argv, names, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    px = _tiny_image_folder(tmp_path / "px", 1)
    argv = [a.replace("{px}", str(px)) for a in argv]
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--threads", "1", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                 *argv, "--out", str(out)]) == 2
    _one_error_line(capsys, *names)
    assert not out.exists()


def test_each_image_models_minimum_side_is_exact():
    from mixlab_lab.models import MODELS, check_input, min_side

    for name in MODELS:
        side = min_side(name)
        if side is None:  # takes any input (mlp)
            check_input(name, (3, 1, 1), 3)
            continue
        check_input(name, (1, side, side + 1), 3)  # a forward pass at the declared minimum works ...
        if side > 1:                                # ... and one pixel less is refused, naming both
            with pytest.raises(ValueError, match=rf"--model {name} needs images of at least {side}x{side} pixels"):
                check_input(name, (1, side - 1, side + 1), 3)


# --- preview: --n and --out checked before any work ------------------------------------------------------------

def _no_data(monkeypatch):
    from mixlab_lab import runner

    monkeypatch.setattr(runner, "load_splits", lambda *a, **k: pytest.fail("the data was loaded"))


@pytest.mark.parametrize("argv, names", [
    (["--n", "2000"], ["--n", "2000", "64"]),
    (["--n", "0"], ["--n"]),
    (["--n", "20", "--train-size", "10"], ["--n 20", "--train-size 10"]),
])
def test_preview_bounds_n_before_any_work(argv, names, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    png = tmp_path / "p.png"
    assert main(["preview", "--dataset", "digits", *argv, "--out", str(png)]) == 2
    _one_error_line(capsys, *names)
    assert not png.exists()


def test_preview_n_at_most_the_training_rows(tmp_path, capsys):
    px = _tiny_image_folder(tmp_path / "px", 4)  # 12 training images
    png = tmp_path / "p.png"
    assert main(["preview", "--dataset", "folder", "--data-dir", str(px), "--cache-dir", str(tmp_path / "cache"),
                 "--n", "20", "--out", str(png)]) == 2
    _one_error_line(capsys, "--n 20", "12")
    assert not png.exists()
    assert main(["preview", "--dataset", "folder", "--data-dir", str(px), "--cache-dir", str(tmp_path / "cache"),
                 "--n", "12", "--out", str(png)]) == 0
    assert png.is_file()


@pytest.mark.parametrize("where", ["folder", "missing-parent"])
def test_preview_out_must_be_a_file_path(where, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    target = tmp_path / "pics"
    if where == "folder":
        target.mkdir()
    else:
        target = target / "mixed.png"
    assert main(["preview", "--dataset", "digits", "--out", str(target)]) == 2
    line = _one_error_line(capsys, "--out", str(target if where == "folder" else target.parent))
    assert ".tmp" not in line


# --- a deeply nested --config file -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 5000 + "1" + "}" * 5000,
                                  '{"seeds": ' + "[" * 900 + "]" * 900 + "}"])
def test_a_deeply_nested_config_file_is_one_line(text, tmp_path, capsys):
    f = tmp_path / "deep.json"
    f.write_text(text)
    assert main(["train", *TINY, "--config", str(f), "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys, "--config", str(f))
    assert len(line) < 500


# --- presets are named for what they are ------------------------------------------------------------------------

def test_preset_names_say_what_they_are(capsys):
    import re

    from mixlab_lab.config import PRESETS

    assert not [n for n in PRESETS if re.search(r"article|\d{3}", n)]
    assert "cifar10-bce" in PRESETS
    new, old = resolve_config({}, preset="cifar10-bce"), resolve_config({}, preset="article000")  # old name: an alias
    assert new == old and new.preset == "cifar10-bce" and (new.dataset, new.loss, new.p) == ("cifar10", "bce", 0.2)
    assert LabConfig(preset="article000").validate().preset == "article000"  # an old run's config.json still loads
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = capsys.readouterr().out
    assert "cifar10-bce" in help_text and "article000" not in help_text
    assert cli.build_parser().parse_args(["compare", "--preset", "article000"]).preset == "article000"
