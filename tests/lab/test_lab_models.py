"""The lab's CPU-sized fast models (airbench-cpu*, resnet9-narrow): shapes, small inputs, one lab epoch, TTA.

Each new model must adapt to 1- and 3-channel inputs of 28 and 32 px, return ``(B, num_classes)``
logits, train one ``mixlab train`` epoch on ``digits`` (8x8 single channel), and its test-time
augmentation (TTA) option must change only the eval-mode outputs.
"""
from __future__ import annotations

import json

import pytest
import torch

from mixlab_lab.cli import main
from mixlab_lab.models import MODELS, AirbenchCPU, ResNet9Narrow, build_model

NEW = ["airbench-cpu", "airbench-cpu-notta", "airbench-cpu-wide", "resnet9-narrow"]


@pytest.fixture(autouse=True)
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)


def test_new_models_are_registered():
    assert set(NEW) <= set(MODELS)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32), (1, 8, 8)])
def test_builds_and_returns_logits(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    x = torch.randn(4, *shape)
    model.train()
    out = model(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.float().sum().backward()  # gradients flow
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (4, 7)


def test_too_small_input_is_refused_clearly():
    with pytest.raises(ValueError, match="at least 2x2 pixels"):
        build_model("airbench-cpu", (1, 1, 1), 3)
    with pytest.raises(ValueError, match=r"images \(C, H, W\)"):
        build_model("airbench-cpu", (20,), 3)


def test_whitening_is_set_from_the_first_training_batch_only():
    torch.manual_seed(0)
    model = AirbenchCPU(3, 10, (32, 32), widths=(8, 8, 8))
    assert not bool(model.whitened)
    x = torch.randn(16, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    model.eval()
    model(x)  # an eval forward does not initialise
    assert not bool(model.whitened)
    model.train()
    model(x)
    assert bool(model.whitened) and not model.whiten.weight.requires_grad
    w = model.whiten.weight.detach().clone()
    # the first half of the filters whiten the 2x2 patches: their outputs are decorrelated with unit variance
    k = 2
    patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3 * k * k)
    f = w[:12].reshape(12, -1)
    z = patches @ f.T
    cov = z.T @ z / z.shape[0]
    assert torch.allclose(cov, torch.eye(12), atol=2e-2)
    model(torch.randn(16, 3, 32, 32))  # later batches leave the filters alone
    assert torch.equal(model.whiten.weight, w)
    # the flag travels in the state dict, so a resumed model keeps the filters
    fresh = AirbenchCPU(3, 10, (32, 32), widths=(8, 8, 8))
    fresh.load_state_dict(model.state_dict())
    assert bool(fresh.whitened) and torch.equal(fresh.whiten.weight, w)


@pytest.mark.parametrize("cls,kwargs", [(AirbenchCPU, {"widths": (8, 16, 16)}), (ResNet9Narrow, {"widths": (4, 8, 8, 8)})])
@pytest.mark.parametrize("tta", ["flip", "flip-translate"])
def test_tta_changes_only_eval_outputs(cls, kwargs, tta):
    torch.manual_seed(0)
    plain = cls(3, 5, (32, 32), tta="none", **kwargs)
    with_tta = cls(3, 5, (32, 32), tta=tta, **kwargs)
    with_tta.load_state_dict(plain.state_dict())
    x = torch.randn(6, 3, 32, 32)
    plain.train(), with_tta.train()
    assert torch.equal(plain(x), with_tta(x))  # training forwards are identical (same batch statistics)
    plain.eval(), with_tta.eval()
    with torch.no_grad():
        a, b = plain(x), with_tta(x)
        assert not torch.allclose(a, b)  # eval outputs differ ...
        if tta == "flip":  # ... and are the mean of the image's and its mirror's logits
            assert torch.allclose(b, 0.5 * (plain(x) + plain(x.flip(-1))), atol=1e-5)
            # flip-TTA logits are invariant to mirroring the input
            assert torch.allclose(with_tta(x.flip(-1)), b, atol=1e-5)


def test_bad_tta_is_refused():
    with pytest.raises(ValueError, match="tta must be one of"):
        AirbenchCPU(3, 10, (32, 32), tta="mirror")


@pytest.mark.parametrize("name,extra", [
    ("airbench-cpu", ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.85", "--weight-decay", "1e-3",
                      "--label-smoothing", "0.2", "--mix", "mixup"]),
    ("resnet9-narrow", ["--augment", "crop-flip", "--mix", "cutmix"]),
])
def test_one_lab_epoch_on_digits(name, extra, tmp_path):
    out = tmp_path / name
    argv = ["train", "--dataset", "digits", "--model", name, "--epochs", "1", "--batch-size", "64",
            "--train-size", "600", "--seeds", "0", "--quiet", "--out", str(out), *extra]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and rows[0]["train_time_s"] > 0
