"""torch.compile(fullgraph=True) of mix and of the transforms' calls: no graph break."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mixlab


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_mix_compiles_fullgraph_with_inductor(gen):
    x = torch.randn(8, 3, 6, 6, generator=gen)
    params = mixlab.sample_params(8, alpha=0.4, mode="sample", generator=gen)
    compiled = torch.compile(mixlab.mix, fullgraph=True)
    torch.testing.assert_close(compiled(x, params), mixlab.mix(x, params))
    big = torch.randn(4, 3, 80, 80, generator=gen)  # rows that take the eager CPU row loop
    p4 = mixlab.sample_params(4, alpha=0.4, mode="sample", generator=gen)
    torch.testing.assert_close(compiled(big, p4), mixlab.mix(big, p4))


@pytest.mark.parametrize("make", [
    lambda: mixlab.MixUp(alpha=0.4, mode="sample"),
    lambda: mixlab.MixUp(alpha=0.4, mode="batch", p=0.5, keep_dominant=True),
    lambda: mixlab.MixUp(alpha=0.4, k=3),
    lambda: mixlab.CutMix(alpha=1.0, mode="sample"),
    lambda: mixlab.MixUpOrCutMix(mode="sample"),
])
def test_transform_call_compiles_fullgraph(make, gen):
    transform = make()
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    logits = torch.randn(8, 5, generator=gen)

    def step(x, y, logits):
        mixed, target = transform(x, y)
        return mixed, target.loss(criterion, logits), target.soft(5)

    mixed, loss, soft = torch.compile(step, fullgraph=True, backend="aot_eager")(x, y, logits)
    assert mixed.shape == x.shape and loss.ndim == 0 and soft.shape == (8, 5)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))


def test_inplace_mix_compiles_fullgraph(gen):
    x = torch.randn(6, 4, generator=gen)
    params = mixlab.sample_params(6, alpha=0.4, mode="sample", generator=gen)
    expected = mixlab.mix(x, params)
    y = x.clone()
    torch.compile(lambda t, p: mixlab.mix(t, p, inplace=True), fullgraph=True, backend="aot_eager")(y, params)
    torch.testing.assert_close(y, expected)
