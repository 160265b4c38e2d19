"""The methods added in 0.3 run in the lab (RecursiveMix, SpecMix, SnapMix), and the lab refuses, in one line and
before training, methods that do not mix this dataset's kind of input or that need what the model lacks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mixlab_lab.cli import main
from mixlab_lab.config import LabConfig
from mixlab_lab.models import FastCNN, PreActResNet18
from mixlab_lab.train import build_mixer


@pytest.mark.parametrize("mix,extra", [("recursivemix", []), ("specmix", []), ("mixpro", []), ("smmix", []),
                                       ("skmixup", []), ("featmix", ["--dataset", "wine"]),
                                       ("snapmix", ["--model", "preact-resnet18"])])
def test_new_methods_train_in_the_lab(mix, extra, tmp_path):
    out = tmp_path / mix
    data = [] if "--dataset" in extra else ["--dataset", "digits", "--train-size", "300", "--test-size", "100"]
    assert main(["train", *data, "--epochs", "1", "--quiet", "--mix", mix, *extra, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"] == [mix] and math.isfinite(summary["per_seed"][mix]["0"]["train_loss"])


def test_snapmix_takes_the_trained_models_class_activation_maps():
    cfg = LabConfig(alpha=1.0)
    model = PreActResNet18(1, 4).eval()
    mixer = build_mixer(cfg, "snapmix", 4, torch.Generator().manual_seed(0), input_shape=(1, 16, 16), model=model)
    assert mixer.model is model
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6) % 4
    _, target = mixer(x, y)
    assert target.params.label_weights is not None and target.params.label_weights.shape == (6, 2)
    # no model (previews, the options check): a fixed stand-in gives the maps
    preview = build_mixer(cfg, "snapmix", 4, torch.Generator().manual_seed(0), input_shape=(1, 16, 16))
    assert preview(x, y)[1].params.label_weights is not None


def test_snapmix_refuses_a_model_without_an_average_pooled_linear_head():
    with pytest.raises(ValueError, match="--mix snapmix needs class activation maps.*resnet18"):
        build_mixer(LabConfig(), "snapmix", 4, torch.Generator(), input_shape=(1, 16, 16), model=FastCNN(1, 4))


@pytest.mark.parametrize("mix,shape,kind", [("featmix", (3, 8, 8), "images"), ("hiddenmix", (3, 8, 8), "images"),
                                            ("cutmix", (20,), "vectors")])
def test_methods_that_do_not_mix_this_kind_of_input_are_refused(mix, shape, kind):
    with pytest.raises(ValueError, match=f"--mix {mix} mixes .*, not {kind}"):
        build_mixer(LabConfig(), mix, 4, torch.Generator(), input_shape=shape)


def test_recursivemix_resumes_with_its_history(tmp_path, capsys):
    # RecursiveMix keeps the previous mixed batch: the checkpoint carries it, so a resumed run is bit-identical
    from _runs import interrupted_run, result

    args = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--threads", "1", "--quiet", "--seeds", "0",
            "--mix", "recursivemix", "--train-size", "300", "--test-size", "100"]
    ref = tmp_path / "ref"
    assert main(["compare", *args, "--out", str(ref)]) == 0
    out = tmp_path / "resumed"
    interrupted_run(out, args)
    from mixlab_lab.store import load_checkpoint

    state = load_checkpoint(out / "checkpoints" / "seed0_recursivemix.pt")["mixer"]
    assert state["inputs"] is not None and state["inputs"].ndim == 4  # the history is in the checkpoint
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0
    assert result(out) == result(ref)


def test_snapmix_with_a_model_without_class_activation_maps_is_refused_before_the_baseline_trains(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["compare", "--dataset", "digits", "--mix", "none,snapmix", "--epochs", "1", "--quiet",
               "--train-size", "200", "--test-size", "100", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--mix snapmix" in err and "resnet18" in err
    assert not list(out.glob("checkpoints/*baseline*"))  # nothing trained
