"""MixCollate (batch mixing in DataLoader workers) and MixupDataset (article 000, done right)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import mixlab
from mixlab.data import MixCollate, MixupDataset
from mixlab.data.mixing import Linear


class _Images(Dataset):
    """uint8 (1, 6, 6) images whose pixels all equal the index; label = index % 4."""

    def __init__(self, n=24):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((1, 6, 6), i * 10 % 256, dtype=torch.uint8), i % 4


def _run(collate, epochs, **loader_kw):
    loader = DataLoader(_Images(), batch_size=8, collate_fn=collate, generator=torch.Generator().manual_seed(5),
                        shuffle=True, **loader_kw)
    out = []
    for epoch in range(epochs):
        collate.set_epoch(epoch)
        out.append([(x, t.lam.clone(), t.params.index.clone(), t.y.clone()) for x, t in loader])
    return out


def test_collate_mixes_uint8_batches_with_matching_targets():
    collate = MixCollate(alpha=1.0, mode="sample", seed=0)
    x, target = collate([_Images()[i] for i in range(8)])
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 6, 6)
    assert isinstance(target, mixlab.MixedTarget)
    src = torch.arange(8, dtype=torch.float32) * 10
    expected = (target.lam * src + (1 - target.lam) * src[target.params.index]).round()
    assert torch.equal(x[:, 0, 0, 0].float(), expected)
    torch.testing.assert_close(target.soft(4).sum(1), torch.ones(8))
    x2, t2 = MixCollate(alpha=1.0, mode="sample", seed=0)([_Images()[i] for i in range(8)])
    assert torch.equal(x, x2) and torch.equal(target.lam, t2.lam)


def test_cutmix_and_soft_output():
    collate = MixCollate(kind="cutmix", alpha=1.0, seed=1, soft=True, num_classes=4)
    x, soft = collate([_Images()[i] for i in range(8)])
    assert soft.shape == (8, 4) and x.dtype == torch.uint8
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    values = set(x.unique().tolist())
    assert values <= {i * 10 for i in range(8)}  # pasted pixels, never blended


def test_schedule_is_a_pure_function_of_the_epoch():
    c = MixCollate(alpha=Linear(0.4, 0.0, 4), p=0.5, stop_epoch=3)
    assert [c.at(e) for e in range(5)] == [(0.4, 0.5), (0.30000000000000004, 0.5), (0.2, 0.5), (0.0, 0.0), (0.0, 0.0)]
    with pytest.raises(ValueError, match="alpha"):
        MixCollate(alpha=lambda e: -1.0)
    with pytest.raises(ValueError, match="stop_epoch"):
        MixCollate(stop_epoch=-2)
    with pytest.raises(ValueError, match="kind"):
        MixCollate(kind="mixdown")
    with pytest.raises(TypeError, match=r"\(inputs, labels\)"):
        MixCollate()([torch.zeros(2)] * 3)


def test_persistent_workers_follow_the_epoch_and_runs_repeat():
    kw = dict(num_workers=2, persistent_workers=True)
    runs = [_run(MixCollate(alpha=1.0, mode="sample", stop_epoch=2), 3, **kw) for _ in range(2)]
    for epoch in range(3):
        for (xa, la, ia, ya), (xb, lb, ib, yb) in zip(runs[0][epoch], runs[1][epoch]):
            assert torch.equal(xa, xb) and torch.equal(la, lb) and torch.equal(ia, ib)
    mixed = [torch.cat([lam for _, lam, _, _ in runs[0][e]]) for e in range(3)]
    assert (mixed[0] < 1).any() and (mixed[1] < 1).any()
    assert torch.equal(mixed[2], torch.ones_like(mixed[2]))  # epoch 2 >= stop_epoch reached the workers
    for x, _, _, y in runs[0][2]:  # unmixed: pixels still encode their own index
        assert torch.equal((x[:, 0, 0, 0].long() // 10) % 4, y)
    # the two workers draw different parameters (not one copied generator)
    assert not torch.equal(runs[0][0][0][1], runs[0][0][1][1])


def test_mixup_dataset_uses_the_partner_label_and_repeats():
    ds = MixupDataset(_Images(40), num_classes=4, p=0.5, alpha=1.0, seed=3)
    n_mixed = 0
    for i in range(len(ds)):
        mixed, j, lam = ds.draw(i, 0)
        x, soft = ds[i]
        torch.testing.assert_close(soft.sum(), torch.tensor(1.0))
        if not mixed:
            assert torch.equal(soft, torch.nn.functional.one_hot(torch.tensor(i % 4), 4).float())
            continue
        n_mixed += 1
        expected = torch.zeros(4)
        expected[i % 4] += lam
        expected[j % 4] += 1 - lam
        torch.testing.assert_close(soft, expected)
        assert x[0, 0, 0].item() == round(lam * (i * 10 % 256) + (1 - lam) * (j * 10 % 256))
        x2, soft2 = ds[i]
        assert torch.equal(x, x2) and torch.equal(soft, soft2)
    assert 10 <= n_mixed <= 30
    ds.set_epoch(1)
    assert [ds.draw(i, 1) for i in range(40)] != [ds.draw(i, 0) for i in range(40)]


def test_mixup_dataset_mixing_rate_matches_p():
    ds = MixupDataset(_Images(4000), num_classes=4, p=0.2, alpha=0.2, seed=0)
    n = sum(ds.draw(i, 0)[0] for i in range(4000))
    sd = math.sqrt(4000 * 0.2 * 0.8)
    assert abs(n - 800) < 4 * sd


def test_mixup_dataset_in_workers_and_stop_epoch():
    ds = MixupDataset(_Images(16), num_classes=4, p=1.0, alpha=1.0, stop_epoch=1)
    loader = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True)
    ds.set_epoch(0)
    first = torch.cat([y for _, y in loader])
    assert (first.max(1).values < 1).any()
    ds.set_epoch(1)
    second = torch.cat([y for _, y in loader])
    assert torch.equal(second.max(1).values, torch.ones(16))
    with pytest.raises(ValueError, match="num_classes"):
        MixupDataset(_Images(), num_classes=None)
    with pytest.raises(ValueError, match=r"class label must lie in \[0, 3\)"):
        MixupDataset(_Images(), num_classes=3)[3]


def test_mix_collate_takes_any_transform_and_its_stop_epoch():
    import mixlab
    from torch.utils.data import DataLoader

    ds = [(torch.rand(3, 8, 8), i % 3) for i in range(16)]
    choice = mixlab.RandomChoice([mixlab.MixUp(alpha=1.0), mixlab.FMix(), mixlab.CutMix()],
                                 generator=torch.Generator().manual_seed(0))
    collate = MixCollate(transform=choice, stop_epoch=1, num_classes=3)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)
    x, target = next(iter(loader))
    assert x.shape == (8, 3, 8, 8) and target.soft(3).shape == (8, 3)
    assert not bool((target.lam == 1).all())
    collate.set_epoch(1)
    x, target = next(iter(loader))
    assert bool((target.lam == 1).all())  # mixing stopped
    with pytest.raises(ValueError, match=r"\['alpha'\] would be ignored"):
        MixCollate(transform=choice, alpha=0.4)


def _draws(collate, seed, epochs=2, **loader_kw):
    """Per epoch, per batch: (lam, partners, box) as plain tuples, from a seeded loader with two workers."""
    loader = DataLoader(_Images(64), batch_size=8, collate_fn=collate, num_workers=2, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), **loader_kw)
    out = []
    for epoch in range(epochs):
        collate.set_epoch(epoch)
        batches = []
        for _, t in loader:
            box = None if t.params.region is None else tuple(t.params.region.box.flatten().tolist())
            batches.append((tuple(t.lam.tolist()), tuple(t.params.index.tolist()), box))
        out.append(batches)
    return out


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_collate_draws_differ_across_batches_workers_and_epochs_and_repeat(kind, persistent):
    # 8 batches an epoch, 4 per worker (batch i is built by worker i % 2)
    make = lambda: MixCollate(kind=kind, alpha=0.4)  # noqa: E731
    run = _draws(make(), seed=7, persistent_workers=persistent)
    for epoch in run:
        assert len(epoch) == 8
        lams = [lam for lam, _, _ in epoch]
        assert len(set(lams)) == 8, f"batches repeat their lam within an epoch: {[round(v[0], 4) for v in lams]}"
        assert len({index for _, index, _ in epoch}) == 8, "batches repeat their partners"
        if kind == "cutmix":
            assert len({box for _, _, box in epoch}) == 8, "batches repeat their box"
        assert set(lams[0::2]).isdisjoint(lams[1::2])  # the two workers never share a draw
    assert set(run[0]).isdisjoint(run[1])  # a new epoch draws anew
    assert _draws(make(), seed=7, persistent_workers=persistent) == run  # a seeded loader repeats exactly
    assert _draws(make(), seed=8, persistent_workers=persistent) != run  # and its seed matters
