"""Unit tests of the lab's pieces: configuration merging, models, metrics, batches, checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mixlab_lab import metrics as M
from mixlab_lab.config import PRESETS, LabConfig, resolve_config
from mixlab_lab.models import MODELS, build_model
from mixlab_lab.store import atomic_write_json, gen_state, load_checkpoint, save_checkpoint, set_gen_state
from mixlab_lab.train import LabData, _crop_flip, _lr_factor, build_mixer, epoch_batches, make_batch


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochs": 7, "alpha": 0.3}))
    cfg = resolve_config({"alpha": 0.5}, preset="keras", config_file=f)
    assert cfg.model == "keras-cnn" and cfg.batch_size == 64      # from the preset
    assert cfg.epochs == 7                                          # file over preset
    assert cfg.alpha == 0.5                                         # flag over file
    assert cfg.optimizer == "adam" and cfg.mode == "sample"
    assert resolve_config({}).epochs == LabConfig().epochs


def test_presets_follow_the_articles():
    k = resolve_config({}, preset="keras")
    assert (k.dataset, k.lr, k.batch_size, k.epochs, k.alpha, k.mode) == ("fashion-mnist", 1e-3, 64, 10, 0.2, "sample")
    a = resolve_config({}, preset="article000")
    assert (a.model, a.loss, a.p, a.batch_size, a.epochs, a.lr) == ("article000-cnn", "bce", 0.2, 128, 30, 1e-3)
    f = resolve_config({}, preset="fastai-mnist-sample")
    assert (f.classes, f.model, f.alpha, f.keep_dominant, f.epochs) == ([3, 7], "simple-cnn", 0.4, True, 8)
    assert set(PRESETS) >= {"demo", "keras", "cifar10-bce", "fastai-mnist-sample", "fmnist-fast", "cifar10-fast"}
    for name in PRESETS:  # every preset is a valid configuration with a registered model
        cfg = resolve_config({}, preset=name)
        from mixlab_lab.models import MODELS
        assert cfg.model is None or cfg.model in MODELS, name


@pytest.mark.parametrize("bad, option", [({"alpha": -0.1}, "--alpha"), ({"p": 1.5}, "--p"),
                                         ({"seeds": []}, "--seeds"), ({"classes": [3]}, "--classes"),
                                         ({"schedule": "step"}, "--schedule"), ({"batch_size": 0}, "--batch-size")])
def test_config_errors_name_the_option(bad, option):
    with pytest.raises(ValueError, match=option):
        resolve_config(bad)


def test_config_file_errors(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_config({}, config_file=f)
    with pytest.raises(ValueError, match="--config"):
        resolve_config({}, config_file=tmp_path / "missing.json")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_models_adapt_to_input_and_classes(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_mlp_on_tabular_and_image_models_refuse_it():
    assert build_model("mlp", (13,), 3)(torch.randn(4, 13)).shape == (4, 3)
    with pytest.raises(ValueError, match="tabular"):
        build_model("fast-cnn", (13,), 3)
    with pytest.raises(ValueError, match="--model"):
        build_model("vgg99", (1, 8, 8), 3)


def test_keras_cnn_matches_the_articles_parameter_count():
    # Keras summary of article 002's model: 416 + 12,832 + 4,224 + 1,290 parameters.
    model = build_model("keras-cnn", (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 416 + 12832 + 4224 + 1290


def test_initial_weights_depend_only_on_the_seed():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model("fast-cnn", (1, 28, 28), 10).state_dict()
    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ece_and_nll_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    y = torch.tensor([0, 1, 1, 0])
    out = M.finalize(M.batch_stats(probs, y))
    assert out["acc"] == pytest.approx(3 / 4)
    assert out["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.55)) / 4)
    # bins of width 1/15: 0.9 -> 13, 0.6 -> 9, 0.7 -> 10, 0.55 -> 8; one sample each
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.55)) / 4
    assert out["ece"] == pytest.approx(expected)
    assert sum(out["bins"]["count"]) == 4


def test_stats_are_additive_across_batches():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(100, 5, generator=g), 1)
    y = torch.randint(0, 5, (100,), generator=g)
    whole = M.finalize(M.batch_stats(probs, y))
    parts = None
    for i in range(0, 100, 30):
        parts = M.add_stats(parts, M.batch_stats(probs[i:i + 30], y[i:i + 30]))
    split = M.finalize(parts)
    for k in ("acc", "nll", "ece"):
        assert split[k] == pytest.approx(whole[k])


def test_epoch_batches_follow_the_generator():
    a = epoch_batches(10, 4, 0, torch.Generator().manual_seed(3))
    b = epoch_batches(10, 4, 0, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert [len(x) for x in epoch_batches(9, 4, 0, torch.Generator().manual_seed(0))] == [4, 4]  # lone row dropped


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (20,), generator=g)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    return LabData(x, y, x, y, mean, std, "image", 4, ["a", "b", "c", "d"])


def test_make_batch_normalises_uint8():
    data = _data()
    x, y = make_batch(data, torch.tensor([2, 5]), train=False)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 8, 8)
    assert torch.allclose(x, (data.x_train[[2, 5]].float() / 255 - 0.5) / 0.25)
    assert torch.equal(y, data.y_train[[2, 5]])


def test_crop_flip_is_a_seeded_shift_or_mirror():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    a = _crop_flip(x, True, torch.Generator().manual_seed(1), pad=2)
    b = _crop_flip(x, True, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(a, b) and a.shape == x.shape
    flipped = _crop_flip(x, False, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    # every nonzero value of a crop comes from the same image (zero padding elsewhere)
    for i in range(2):
        vals = set(a[i][a[i] != 0].tolist())
        assert vals <= set(x[i].flatten().tolist())


def test_build_mixer_uses_core_transforms_and_lam_convention():
    cfg = LabConfig(alpha=0.4, mode="sample", keep_dominant=True)
    mixer = build_mixer(cfg, "mixup", 4, torch.Generator().manual_seed(0))
    x = torch.randn(8, 3, 8, 8)
    y = torch.arange(8) % 4
    mixed, target = mixer(x, y)
    lam, idx = target.lam, target.params.index
    assert (lam >= 0.5).all()  # keep_dominant: the original row dominates
    assert torch.allclose(mixed, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[idx], atol=1e-6)
    assert build_mixer(cfg, "none", 4, None) is None
    assert type(build_mixer(LabConfig(), "cutmix", 4, None)).__name__ == "CutMix"
    assert type(build_mixer(LabConfig(), "mixup-or-cutmix", 4, None)).__name__ == "MixUpOrCutMix"


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_lr_schedules(schedule):
    f = _lr_factor(schedule, 100)
    vals = [f(s) for s in range(101)]
    assert all(0 <= v <= 1 + 1e-12 for v in vals)
    if schedule == "constant":
        assert set(vals) == {1.0}
    else:
        assert vals[-1] == pytest.approx(0.0, abs=1e-9) and max(vals) == pytest.approx(1.0)


def test_checkpoints_round_trip_with_weights_only(tmp_path):
    g = torch.Generator().manual_seed(5)
    state = {"model": {"w": torch.randn(3)}, "rng": {"g": gen_state(g)}, "epoch": 2, "history": [{"a": 1.0}]}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 2 and back["history"] == [{"a": 1.0}] and torch.equal(back["model"]["w"], state["model"]["w"])
    expected = torch.rand(4, generator=g)
    g2 = torch.Generator()
    set_gen_state(g2, back["rng"]["g"])
    assert torch.equal(torch.rand(4, generator=g2), expected)
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob("*.tmp"))
