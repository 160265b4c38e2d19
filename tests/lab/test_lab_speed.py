"""The lab's speed options (issue 21 section 2): the same values where they promise them, bit-for-bit resume.

- training batches are cut from the uint8 rows by one gather: the values of normalising, zero-padding, cropping
  and flipping the float batch (the reference ``_crop_flip``), from the same draws;
- the lab's mixers mix in place: the values of mixing out of place, for every image method;
- metrics.jsonl records images per second of training and of scoring (``*_per_s``, dropped by ``strip`` like the
  timings), and ``--eval-subset`` scores the epochs before the last on a fixed subset, the last on every row;
- ``--compile`` falls back to eager (a note, the same figures as an eager run, a resume that stays eager) where
  compilation fails, and ``--compile``/``--autocast bf16`` runs resume bit-for-bit.
"""
from __future__ import annotations

import json

import pytest
import torch
from _runs import cli, interrupted_run, result, strip

pytest.importorskip("sklearn")

from mixlab_lab import train as T  # noqa: E402
from mixlab_lab.config import MIXES, LabConfig  # noqa: E402

# the reliability tests' tiny run: digits, 2 epochs, batch 64, one thread, seed 0 (baseline and mixup arms)
RUN_ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--threads", "1", "--quiet", "--seeds", "0"]


def _image_data(n=96, c=3, h=12, w=10):
    g = torch.Generator().manual_seed(1)
    return T.LabData(x_train=torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g),
                     y_train=torch.arange(n) % 10, x_test=torch.zeros(2, c, h, w, dtype=torch.uint8),
                     y_test=torch.zeros(2, dtype=torch.long), mean=torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
                     std=torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1), kind="image", num_classes=10,
                     classes=list(range(10)))


@pytest.mark.parametrize("augment", ["crop-flip", "flip"])
def test_uint8_batches_are_bit_identical_to_augmenting_the_float_batch(augment):
    data = _image_data()
    idx = torch.randperm(96, generator=torch.Generator().manual_seed(2))[:64]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x, y = T.make_batch(data, idx, train=True, augment=augment, generator=g1)
    ref = T._crop_flip((data.x_train[idx].float() / 255.0 - data.mean) / data.std, augment == "crop-flip", g2)
    assert x.shape == ref.shape and torch.equal(y, data.y_train[idx])
    assert torch.equal(x.view(torch.int32), ref.contiguous().view(torch.int32))  # bits, signed zeros included
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws: later batches match too


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_in_place_mixing_gives_the_out_of_place_values(mode):
    for mix in MIXES[1:]:
        cfg = LabConfig(mode=mode)
        try:
            T.build_mixer(cfg, mix, 10, torch.Generator(), input_shape=(3, 16, 16))
        except ValueError:  # a method that does not mix images, or not in this mode
            continue
        outs = []
        for inplace in (False, True):
            mixer = T.build_mixer(cfg, mix, 10, torch.Generator().manual_seed(3), input_shape=(3, 16, 16),
                                  inplace=inplace)
            x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
            xm, target = mixer(x, torch.arange(12) % 10)
            assert (xm.data_ptr() == x.data_ptr()) == inplace, mix
            outs.append((xm.clone(), target.soft(10)))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), (mode, mix)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_rates_are_recorded_and_stripped_and_eval_subset_scores_the_last_epoch_on_every_row(tmp_path, capsys):
    full, sub = tmp_path / "full", tmp_path / "sub"
    assert cli(["compare", *RUN_ARGS, "--epochs", "3", "--out", full], capsys)[0] == 0
    rc, err = cli(["compare", *RUN_ARGS, "--epochs", "3", "--eval-subset", "100", "--out", sub], capsys)
    assert rc == 0, err
    for r in _rows(full) + _rows(sub):
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0 and r["eval_time_s"] >= 0
        assert not any(k.endswith("_per_s") or k.endswith("time_s") for k in strip(r))
    assert all("test_rows" not in r for r in _rows(full))
    # the subset changes no training: the losses and the last epoch (every test row) are the full run's
    for a, b in zip(_rows(full), _rows(sub)):
        assert a["train_loss"] == b["train_loss"]
        assert b.get("test_rows") == (None if b["epoch"] == 3 else 100)
        if b["epoch"] == 3:
            assert strip(a) == strip(b)
    s_full = json.loads((full / "summary.json").read_text())
    s_sub = json.loads((sub / "summary.json").read_text())
    assert s_sub["weights_sha256"] == s_full["weights_sha256"]
    for arm in ("baseline", "mixup"):
        # best over the epochs scored on every row: here the last one alone
        assert s_sub["per_seed"][arm]["0"]["best_test_acc"] == s_sub["per_seed"][arm]["0"]["test_acc"]
        assert s_sub["per_seed"][arm]["0"]["test_acc"] == s_full["per_seed"][arm]["0"]["test_acc"]
    cfg = json.loads((sub / "config.json").read_text())["config"]
    assert cfg["eval_subset"] == 100
    assert not {"channels_last", "compile", "autocast", "eval_subset"} & set(
        json.loads((full / "config.json").read_text())["config"])  # defaults left out: hashes as before


def _failing_compile(monkeypatch):
    calls = {"n": 0}

    def compile_(module, **kw):
        def fails(*a, **k):
            calls["n"] += 1
            raise RuntimeError("InductorError: CppCompileError: C++ compile error (a stand-in)")
        return fails
    monkeypatch.setattr(torch, "compile", compile_)
    return calls


def test_a_failed_compile_runs_eager_with_a_note_and_resumes_eager(tmp_path, capsys, monkeypatch):
    eager = tmp_path / "eager"
    assert cli(["compare", *RUN_ARGS, "--out", eager], capsys)[0] == 0
    calls = _failing_compile(monkeypatch)
    out = tmp_path / "fallback"
    rc, err = cli(["compare", *RUN_ARGS, "--compile", "all", "--out", out], capsys)
    assert rc == 0 and "could not be compiled" in err and "stand-in" in err, err
    assert calls["n"] == 4  # each arm: the training and the eval forward tried once each, then eager
    a, b = result(eager), result(out)
    assert a["weights"] == b["weights"] and a["metrics"] == b["metrics"]  # eager: the eager run's figures
    assert any("could not be compiled" in n for n in b["notes"])
    interrupted_run(tmp_path / "resumed", [*RUN_ARGS, "--compile", "all"])
    calls["n"] = 0
    assert cli(["compare", "--out", tmp_path / "resumed", "--resume", "--quiet"], capsys)[0] == 0
    assert calls["n"] == 0  # the checkpoint said the forwards had fallen back: not tried again
    assert result(tmp_path / "resumed") == b


def test_no_cpp_compiler_means_eager_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T, "compiler_missing", lambda: "no C++ compiler for torch.compile's inductor (stand-in)")
    rc, err = cli(["compare", *RUN_ARGS, "--compile", "eval", "--out", tmp_path / "run"], capsys)
    assert rc == 0 and "not compiled" in err and "stand-in" in err, err


@pytest.mark.parametrize("speed", [["--autocast", "bf16"], ["--compile", "all"], ["--channels-last"]],
                         ids=["bf16", "compile", "channels-last"])
def test_speed_options_resume_bit_for_bit(speed, tmp_path, capsys):
    if "--compile" in speed and T.compiler_missing() is not None:
        pytest.skip(T.compiler_missing())
    full = tmp_path / "full"
    rc, err = cli(["compare", *RUN_ARGS, *speed, "--out", full], capsys)
    assert rc == 0, err
    assert not result(full)["notes"], result(full)["notes"]  # compiled (no fallback) where a compiler exists
    interrupted_run(tmp_path / "resumed", [*RUN_ARGS, *speed])
    assert cli(["compare", "--out", tmp_path / "resumed", "--resume", "--quiet"], capsys)[0] == 0
    assert result(tmp_path / "resumed") == result(full)
