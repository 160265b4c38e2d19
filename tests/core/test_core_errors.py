"""Bad input gets a clear error naming the argument, what was expected and what came."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mixlab
from mixlab import MixedTarget, MixParams


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"alpha": -1.0}, ValueError, r"alpha must be a finite number >= 0, got -1.0"),
    ({"alpha": float("nan")}, ValueError, "alpha"),
    ({"alpha": "0.2"}, TypeError, "alpha must be a real number"),
    ({"alpha": 1.0, "p": 1.5}, ValueError, r"p must be in \[0, 1\], got 1.5"),
    ({"alpha": 1.0, "p": -0.1}, ValueError, r"p must be in \[0, 1\]"),
    ({"alpha": 1.0, "mode": "row"}, ValueError, "mode must be one of"),
    ({"alpha": 1.0, "pairing": "shuffle"}, ValueError, "pairing must be one of"),
    ({"alpha": 1.0, "k": 1}, ValueError, "k must be an int >= 2, got 1"),
    ({"alpha": 1.0, "mode": "pair"}, ValueError, "pairing='flip'"),
    ({"alpha": 1.0, "k": 3, "pairing": "flip"}, ValueError, "one partner"),
])
def test_sample_params_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        mixlab.sample_params(4, **kwargs)


def test_transform_errors():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -0.5"):
        mixlab.MixUp(alpha=-0.5)
    with pytest.raises(TypeError, match="mixup_alpha"):  # one spelling per option: timm's names live in its adapter
        mixlab.MixUp(alpha=0.2, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="pairing='flip'"):  # pair mode is not switched to flip behind your back
        mixlab.MixUp(alpha=0.2, mode="pair")
    with pytest.raises(ValueError, match="mode must be one of"):
        mixlab.MixUp(alpha=0.2, mode="elem")
    with pytest.raises(ValueError, match=r"switch_prob must be in \[0, 1\]"):
        mixlab.MixUpOrCutMix(switch_prob=2)
    with pytest.raises(ValueError, match="label_smoothing"):
        mixlab.MixUp(label_smoothing=1.0)
    with pytest.raises(TypeError, match="generator"):
        mixlab.MixUp(generator=0)


def params(B=4):
    return mixlab.sample_params(B, alpha=1.0, mode="sample", generator=torch.Generator().manual_seed(0))


def test_mix_errors():
    p = params()
    with pytest.raises(ValueError, match=r"batch\['b'\] has batch size 3, but the params were drawn for batch size 4"):
        mixlab.mix({"a": torch.rand(4, 2), "b": torch.rand(3, 2)}, p)
    with pytest.raises(TypeError, match=r"batch\[1\] must be a torch.Tensor, got str"):
        mixlab.mix((torch.rand(4, 2), "text"), p)
    with pytest.raises(ValueError, match="0-dim tensor"):
        mixlab.mix(torch.tensor(1.0), p)
    with pytest.raises(TypeError, match="params must be a MixParams"):
        mixlab.mix(torch.rand(4, 2), (p.lam, p.index))


def test_params_errors():
    with pytest.raises(TypeError, match="index must be an int64 tensor"):
        MixParams(torch.ones(3), torch.arange(3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"must both have shape \(B,\)"):
        MixParams(torch.ones(3), torch.arange(4))


def test_target_errors():
    p = params()
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\), got values in \[0, 5\]"):
        MixedTarget(torch.tensor([0, 1, 5, 2]), p).soft(3)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        MixedTarget(torch.tensor([0, -1, 1, 2]), p).soft(3)
    with pytest.raises(ValueError, match="num_classes is required"):
        MixedTarget(torch.tensor([0, 1, 1, 2]), p).soft()
    with pytest.raises(TypeError, match="torch.bool"):
        MixedTarget(torch.zeros(4, 3, dtype=torch.bool), p)
    with pytest.raises(ValueError, match="y has batch size 5"):
        MixedTarget(torch.zeros(5, dtype=torch.long), p)
    with pytest.raises(ValueError, match="num_classes=4 does not match float labels of shape"):
        MixedTarget(torch.rand(4, 3), p).soft(4)
    with pytest.raises(ValueError, match="logits must have batch size 4"):
        MixedTarget(torch.tensor([0, 1, 1, 2]), p).loss(nn.CrossEntropyLoss(), torch.rand(3, 3))
    with pytest.raises(TypeError, match="per-sample losses"):
        MixedTarget(torch.tensor([0, 1, 1, 2]), p).loss(lambda a, b: (a - b).sum(), torch.rand(4, 3))
    with pytest.raises(TypeError, match="BCEWithLogitsLoss needs float targets, but y holds integer class labels"):
        MixedTarget(torch.tensor([0, 1, 1, 2]), p).loss(nn.BCEWithLogitsLoss(), torch.rand(4, 3))
    with pytest.raises(ValueError, match="reduction must be"):
        MixedTarget(torch.tensor([0, 1, 1, 2]), p).loss(nn.CrossEntropyLoss(), torch.rand(4, 3), reduction="avg")


def test_loss_helpers_errors():
    with pytest.raises(ValueError, match="target_probs must have the logits' shape"):
        mixlab.losses.soft_cross_entropy(torch.rand(4, 3), torch.rand(4, 2))
    with pytest.raises(TypeError, match="float tensor of probabilities"):
        mixlab.losses.soft_cross_entropy(torch.rand(4, 3), torch.zeros(4, 3, dtype=torch.long))
