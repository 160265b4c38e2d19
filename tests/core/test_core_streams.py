"""Random streams: compile across batch sizes, DataLoader workers, extreme and numpy alphas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, default_collate

import mixlab


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


PER_ROW = [
    lambda g=None: mixlab.MixUp(alpha=0.4, mode="sample", generator=g),
    lambda g=None: mixlab.CutMix(alpha=1.0, mode="sample", generator=g),
    lambda g=None: mixlab.MixUpOrCutMix(mode="sample", generator=g),
]


@pytest.mark.parametrize("make", PER_ROW)
def test_compiled_per_row_transforms_hold_across_batch_sizes(make, fresh_dynamo):
    transform = make()
    criterion = nn.CrossEntropyLoss()

    def step(x, y, logits):
        mixed, target = transform(x, y)
        return mixed, target.loss(criterion, logits)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for B in (8, 8, 7, 9):  # the last partial batch changes the size
        x, y = torch.rand(B, 3, 6, 6), torch.randint(0, 5, (B,))
        mixed, loss = compiled(x, y, torch.randn(B, 5))
        assert mixed.shape == x.shape and loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("make", PER_ROW)
def test_compiled_with_generator_gives_the_eager_numbers(make, fresh_dynamo):
    # dynamo cannot put a torch.Generator in a full graph: fullgraph=False runs the draws eagerly
    eager = make(torch.Generator().manual_seed(5))
    compiled_t = make(torch.Generator().manual_seed(5))
    compiled = torch.compile(lambda x, y: compiled_t(x, y)[0], fullgraph=False, backend="aot_eager")
    for B in (8, 7):
        x = torch.rand(B, 3, 6, 6, generator=torch.Generator().manual_seed(B))
        y = torch.arange(B) % 5
        torch.testing.assert_close(compiled(x, y), eager(x, y)[0])


class _Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.full((2,), float(i)), i


class _Collate:
    """A transform holding a generator, used in collate_fn (picklable, as DataLoader workers need)."""

    def __init__(self, seed):
        self.mixup = mixlab.MixUp(alpha=1.0, mode="sample", generator=torch.Generator().manual_seed(seed))

    def __call__(self, samples):
        x, y = default_collate(samples)
        mixed, target = self.mixup(x, y)
        return target.lam


def _lams(num_workers, seed=0, epochs=1):
    loader = DataLoader(_Rows(), batch_size=8, collate_fn=_Collate(3), num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))
    return [torch.cat(list(loader)) for _ in range(epochs)]


def test_dataloader_workers_draw_their_own_streams_and_repeat_exactly():
    first, second = _lams(2, epochs=2)
    batches = first.view(8, 8)
    # no two batches share their draws (each worker has its own stream)
    assert len({tuple(b.tolist()) for b in batches}) == 8
    assert not torch.equal(first, second)  # a new epoch draws anew
    again = _lams(2, epochs=2)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)  # a seeded loader repeats
    assert not torch.equal(_lams(2, seed=1)[0], first)


def test_main_process_uses_the_generator_itself():
    lams = _lams(0)[0]
    g = torch.Generator().manual_seed(3)
    m = mixlab.MixUp(alpha=1.0, mode="sample", generator=g)
    expected = torch.cat([m(torch.zeros(8, 2), torch.arange(8))[1].lam for _ in range(8)])
    assert torch.equal(lams, expected)


@pytest.mark.parametrize("alpha", [1e-39, 1e-45, 1e-300, 1e-6])
def test_vanishing_alpha_is_a_fair_coin_not_nan(alpha):
    g = torch.Generator().manual_seed(0)
    lam = mixlab.sample_params(4000, alpha=alpha, mode="sample", generator=g).lam
    assert bool(torch.isfinite(lam).all())
    assert bool(((lam < 1e-6) | (lam > 1 - 1e-6)).all())
    assert 0.45 < float((lam > 0.5).float().mean()) < 0.55  # symmetric: each end half the time
    w = mixlab.sample_dirichlet(1000, 3, alpha, generator=g)
    assert bool(torch.isfinite(w).all()) and torch.allclose(w.sum(1), torch.ones(1000))
    assert bool((w.max(1).values > 1 - 1e-6).all())


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25), np.int64(1)])
def test_any_real_scalar_is_an_alpha(value):
    assert mixlab.MixUp(alpha=value).alpha == pytest.approx(float(value))
    assert mixlab.sample_params(4, alpha=value, p=np.float32(0.5)).lam.shape == (4,)


@pytest.mark.parametrize("value, exc", [(True, TypeError), ("0.2", TypeError), (torch.tensor([0.2, 0.3]), TypeError),
                                        (np.float32("nan"), ValueError), (-1, ValueError)])
def test_non_scalar_alphas_are_refused_with_the_value(value, exc):
    with pytest.raises(exc, match="alpha must be"):
        mixlab.MixUp(alpha=value)
