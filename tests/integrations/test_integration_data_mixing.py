"""MixCollate (batch mixing in DataLoader workers) and MixupDataset (article 000, done right)."""
from __future__ import annotations

import dataclasses
import math
import re

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


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_collate_mixes_uint8_batches_with_matching_targets():
    collate = MixCollate(mixlab.MixUp(1.0, mode="sample", inplace=True, generator=_seeded(0)))
    x, target = collate([_Images()[i] for i in range(8)])
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 6, 6)
    assert isinstance(target, mixlab.MixedTarget)
    src = torch.arange(8, dtype=torch.float32) * 10
    expected = (target.lam * src + (1 - target.lam) * src[target.params.index]).round()
    assert torch.equal(x[:, 0, 0, 0].float(), expected)
    torch.testing.assert_close(target.soft(4).sum(1), torch.ones(8))
    x2, t2 = MixCollate(mixlab.MixUp(1.0, mode="sample", inplace=True, generator=_seeded(0)))(
        [_Images()[i] for i in range(8)])
    assert torch.equal(x, x2) and torch.equal(target.lam, t2.lam)
    x3, t3 = collate([_Images()[i] for i in range(8)])  # the mixer is kept: its stream goes on
    assert not torch.equal(target.lam, t3.lam)
    # the options spelling builds the same mixer (in place: the collated batch is fresh)
    factory = MixCollate.from_options(alpha=1.0, mode="sample", seed=0)
    assert isinstance(factory.mixer, mixlab.MixUp) and factory.mixer.inplace and factory.mixer.alpha == 1.0
    x4, t4 = factory([_Images()[i] for i in range(8)])
    assert torch.equal(x, x4) and torch.equal(target.lam, t4.lam) and torch.equal(target.params.index, t4.params.index)


@pytest.mark.parametrize("factory", [False, True])
def test_cutmix_and_soft_output(factory):
    if factory:
        collate = MixCollate.from_options(kind="cutmix", alpha=1.0, seed=1, soft=True, num_classes=4)
    else:
        collate = MixCollate(mixlab.CutMix(1.0, soft=True, num_classes=4, inplace=True, generator=_seeded(1)))
    x, soft = collate([_Images()[i] for i in range(8)])
    assert soft.shape == (8, 4) and x.dtype == torch.uint8
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    values = set(x.unique().tolist())
    assert values <= {i * 10 for i in range(8)}  # pasted pixels, never blended


@pytest.mark.parametrize("factory", [False, True])
def test_schedule_is_a_pure_function_of_the_epoch(factory):
    if factory:
        c = MixCollate.from_options(alpha=Linear(0.4, 0.0, 4), p=0.5, stop_epoch=3)
    else:
        c = MixCollate(mixlab.MixUp(0.4, p=0.5, inplace=True), alpha_schedule=Linear(0.4, 0.0, 4), stop_epoch=3)
    samples = [_Images()[i] for i in range(8)]
    seen = []
    for e in [0, 1, 2, 3, 4, 1]:  # back to epoch 1: the same alpha and switch again
        c.set_epoch(e)
        x, target = c(samples)
        seen.append((c.mixer.alpha, c.mixer.enabled, c.mixer.p))
        if e >= 3:
            assert torch.equal(target.lam, torch.ones(8)) and torch.equal(target.params.index, torch.arange(8))
    alphas = [0.4, 0.3, 0.2, 0.1, 0.0, 0.3]
    assert [round(a, 12) for a, _, _ in seen] == alphas and [a for a, _, _ in seen] == [Linear(0.4, 0.0, 4)(e) for e in
                                                                                         [0, 1, 2, 3, 4, 1]]
    assert [(on, p) for _, on, p in seen] == [(True, 0.5)] * 3 + [(False, 0.5)] * 2 + [(True, 0.5)]


def test_collate_argument_errors():
    with pytest.raises(ValueError, match=r"alpha\(0\) must be a finite number >= 0, got -1.0"):
        MixCollate(mixlab.MixUp(inplace=True), alpha_schedule=lambda e: -1.0)
    with pytest.raises(ValueError, match=r"alpha\(0\)"):
        MixCollate.from_options(alpha=lambda e: -1.0)
    with pytest.raises(TypeError, match="alpha schedule must be a function"):
        MixCollate(mixlab.MixUp(inplace=True), alpha_schedule=0.4)
    with pytest.raises(ValueError, match="MixUpOrCutMix has no single alpha"):
        MixCollate(mixlab.MixUpOrCutMix(inplace=True), alpha_schedule=Linear(1.0, 0.0, 2))
    with pytest.raises(ValueError, match="stop_epoch must be an int >= 0, got -2"):
        MixCollate(mixlab.MixUp(), stop_epoch=-2)
    with pytest.raises(ValueError, match="kind must be 'mixup' or 'cutmix', got 'mixdown'"):
        MixCollate.from_options(kind="mixdown")
    with pytest.raises(TypeError, match="p must be a number in"):
        MixCollate.from_options(p=Linear(0.5, 0.0, 2))
    with pytest.raises(ValueError, match="seed or generator"):
        MixCollate.from_options(seed=0, generator=_seeded(0))
    with pytest.raises(ValueError, match="soft=True needs num_classes"):
        MixCollate.from_options(soft=True)
    with pytest.raises(ValueError, match="keep_dominant applies to kind='mixup' only"):
        MixCollate.from_options(kind="cutmix", keep_dominant=True)
    with pytest.raises(TypeError, match=r"\(inputs, labels\)"):
        MixCollate(mixlab.MixUp())([torch.zeros(2)] * 3)
    with pytest.raises(TypeError, match="base_collate must be callable or None"):
        MixCollate(mixlab.MixUp(), base_collate=3)


def test_old_spelling_names_the_new_form_and_the_factory():
    new_form = r"MixCollate\(mixer, \*, base_collate=None, stop_epoch=None, alpha_schedule=None\)"
    for call, got in [(lambda: MixCollate(alpha=0.4), "got alpha=0.4"),
                      (lambda: MixCollate(kind="cutmix", alpha=1.0, seed=1), "got kind='cutmix', alpha=1.0, seed=1"),
                      (lambda: MixCollate(), "got no mixer"),
                      (lambda: MixCollate(mixlab.MixUp(), alpha=0.4), "got alpha=0.4")]:
        with pytest.raises(TypeError) as info:
            call()
        message = str(info.value)
        assert re.search(new_form, message) and "MixCollate.from_options(kind='mixup', alpha=0.4" in message
        assert message.endswith(got), message
    with pytest.raises(TypeError, match="pass the transform as the first argument"):
        MixCollate(transform=mixlab.MixUp())
    # the old first positional argument (base_collate) is not a mixer
    with pytest.raises(TypeError, match="mixer must be a mixlab transform .* got function .*base_collate is keyword"):
        MixCollate(torch.utils.data.default_collate)
    with pytest.raises(TypeError, match="mixer must be a mixlab transform .* got str 'mixup'$"):
        MixCollate("mixup")


def test_persistent_workers_follow_the_epoch_and_runs_repeat():
    kw = dict(num_workers=2, persistent_workers=True)
    runs = [_run(MixCollate.from_options(alpha=1.0, mode="sample", stop_epoch=2), 3, **kw) for _ in range(2)]
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
    collate = MixCollate(choice, stop_epoch=1)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)
    x, target = next(iter(loader))
    assert x.shape == (8, 3, 8, 8) and target.soft(3).shape == (8, 3)
    assert not bool((target.lam == 1).all())
    collate.set_epoch(1)
    x, target = next(iter(loader))
    assert bool((target.lam == 1).all())  # mixing stopped: every transform it chooses from is off
    with pytest.raises(ValueError, match="RandomChoice has no single alpha to schedule"):
        MixCollate(choice, alpha_schedule=Linear(1.0, 0.0, 2))



def _region_key(region):
    """A region's draws as a tuple (a CutMix box, an FMix mask), or None without a region."""
    if region is None:
        return None
    tensors = [getattr(region, f.name) for f in dataclasses.fields(region)]
    return tuple(torch.cat([t.flatten().double() for t in tensors if isinstance(t, torch.Tensor)]).tolist())


def _draws(collate, seed, epochs=2, **loader_kw):
    """Per epoch, per batch: (lam, partners, region) as plain tuples, from a seeded loader with two workers."""
    loader = DataLoader(_Images(64), batch_size=8, collate_fn=collate, num_workers=2, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), **loader_kw)
    out = []
    for epoch in range(epochs):
        collate.set_epoch(epoch)
        batches = []
        for x, t in loader:
            assert x.dtype == torch.uint8 and isinstance(t, mixlab.MixedTarget)  # pickled back from the worker
            batches.append((tuple(t.lam.tolist()), tuple(t.params.index.tolist()), _region_key(t.params.region)))
        out.append(batches)
    return out


_MAKERS = {  # unseeded mixers draw from each worker's global RNG, which the loader seeds
    "mixup": lambda: MixCollate.from_options(alpha=0.4),
    "cutmix": lambda: MixCollate.from_options(kind="cutmix", alpha=0.4),
    "mixup-seeded": lambda: MixCollate(mixlab.MixUp(0.4, inplace=True, generator=_seeded(3))),
    "fmix-seeded": lambda: MixCollate(mixlab.FMix(0.4, inplace=True, generator=_seeded(3))),
}


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("kind", sorted(_MAKERS))
def test_collate_draws_differ_across_batches_workers_and_epochs_and_repeat(kind, persistent):
    # 8 batches an epoch, 4 per worker (batch i is built by worker i % 2)
    make = _MAKERS[kind]
    run = _draws(make(), seed=7, persistent_workers=persistent)
    for epoch in run:
        assert len(epoch) == 8
        lams = [lam for lam, _, _ in epoch]
        assert len(set(epoch)) == 8, f"batches repeat their draws within an epoch: {[round(v[0], 4) for v in lams]}"
        assert len({index for _, index, _ in epoch}) == 8, "batches repeat their partners"
        if "mixup" in kind:  # a continuous lam (region methods round it to whole pixels of a 6x6 image)
            assert len(set(lams)) == 8
        assert set(epoch[0::2]).isdisjoint(epoch[1::2])  # the two workers never share a draw
    assert set(run[0]).isdisjoint(run[1])  # a new epoch draws anew
    assert _draws(make(), seed=7, persistent_workers=persistent) == run  # a seeded loader repeats exactly
    assert _draws(make(), seed=8, persistent_workers=persistent) != run  # and its seed matters


def test_collate_soft_targets_come_back_from_workers():
    collate = MixCollate(mixlab.CutMix(1.0, soft=True, num_classes=4, inplace=True, generator=_seeded(0)),
                         stop_epoch=1)
    loader = DataLoader(_Images(24), batch_size=8, collate_fn=collate, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    soft = [y for _, y in loader]
    assert all(y.shape == (8, 4) for y in soft) and any((y.max(1).values < 1).any() for y in soft)
    assert len({tuple(y.flatten().tolist()) for y in soft}) == 3
    collate.set_epoch(1)
    for x, y in loader:  # stopped: one-hot rows of each image's own label
        torch.testing.assert_close(y, torch.nn.functional.one_hot((x[:, 0, 0, 0].long() // 10) % 4, 4).float())


def test_mixup_dataset_draws_do_not_repeat_across_workers_and_batches():
    class Floats(Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return torch.full((2,), float(i)), i % 4

    def run(seed):
        ds = MixupDataset(Floats(), num_classes=4, p=1.0, alpha=1.0, seed=5)
        loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=True, persistent_workers=True,
                            generator=torch.Generator().manual_seed(seed))
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out.append([x[:, 0].tolist() for x, _ in loader])
        return ds, out

    ds, first = run(7)
    for epoch, batches in enumerate(first):
        values = [v for batch in batches for v in batch]
        assert len(set(values)) == 64  # no sample's draw repeats another's, in any batch or worker
        # each sample's draw is its own (seed, epoch, index), whichever worker loads it
        expected = [lam * i + (1 - lam) * j for i, (_, j, lam) in ((i, ds.draw(i, epoch)) for i in range(64))]
        torch.testing.assert_close(sorted(values), sorted(expected))
    assert {v for b in first[0] for v in b}.isdisjoint(v for b in first[1] for v in b)  # epochs differ
    assert run(7)[1] == first  # the same loader seed repeats exactly


def test_random_choice_choices_differ_across_workers_and_epochs():
    # 0.2: the choice came from one generator copied into every worker (workers repeated each other, epochs the first)
    choice = mixlab.RandomChoice([mixlab.MixUp(1.0, inplace=True), mixlab.CutMix(1.0, inplace=True)],
                                 generator=_seeded(0))
    runs = _draws(MixCollate(choice), seed=7, epochs=2)
    kinds = [[region is not None for _, _, region in epoch] for epoch in runs]
    assert kinds[0][0::2] != kinds[0][1::2] and kinds[0] != kinds[1]
