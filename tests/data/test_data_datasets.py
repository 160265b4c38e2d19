"""load_dataset on the bundled sets: shapes, dtypes, splits, options (classes, train_size, label_noise)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sklearn")

from mixlab_lab.data import DataSplits, list_datasets, load_dataset  # noqa: E402
from mixlab_lab.data._options import corrupt_labels, stratified_split  # noqa: E402
from mixlab_lab.data.datasets import DATASETS  # noqa: E402


def test_digits_shapes_dtypes_labels():
    d = load_dataset("digits")
    assert isinstance(d, DataSplits) and d.kind == "image" and d.name == "digits"
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert d.input_shape == (1, 8, 8) and d.x_test.shape[1:] == (1, 8, 8)
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.y_train) == len(d.x_train)
    assert d.num_classes == 10 and d.classes == [str(i) for i in range(10)]
    assert int(d.x_train.max()) == 255 and int(d.x_train.min()) == 0
    assert set(d.y_train.tolist()) == set(range(10)) and set(d.y_test.tolist()) == set(range(10))
    # stratified: every class has round(0.2 * n_c) test rows
    full = torch.cat([d.y_train, d.y_test]).bincount()
    assert d.y_test.bincount().tolist() == [round(0.2 * int(n)) for n in full]
    assert d.noisy_mask is None and d.y_train_clean is None
    # mean/std are exactly those of x_train / 255
    xf = d.x_train.double() / 255
    assert d.mean[0] == pytest.approx(float(xf.mean()), abs=1e-12)
    assert d.std[0] == pytest.approx(float(xf.std(unbiased=False)), abs=1e-12)


def test_digits_split_deterministic_and_seeded():
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    d = load_dataset("digits", test_fraction=0.5)
    assert abs(len(d.x_test) - 1797 / 2) <= 10


def test_split_is_disjoint_and_complete():
    y = torch.arange(100) % 3
    tr, te = stratified_split(y, 0.25, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(100))
    assert y[te].bincount().tolist() == [round(0.25 * 34), round(0.25 * 33), round(0.25 * 33)]


@pytest.mark.parametrize("name,n,f,k", [("wine", 178, 13, 3), ("breast-cancer", 569, 30, 2), ("iris", 150, 4, 3)])
def test_tabular_sets_standardised_with_train_stats(name, n, f, k):
    d = load_dataset(name)
    assert d.kind == "tabular" and d.mean is None and d.std is None and d.input_shape == (f,)
    assert d.x_train.dtype == torch.float32 and len(d.x_train) + len(d.x_test) == n and d.num_classes == k
    assert torch.allclose(d.x_train.mean(0), torch.zeros(f), atol=1e-5)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(f), atol=1e-4)


def test_classes_relabel_exact():
    full = load_dataset("digits", seed=3)
    d = load_dataset("digits", seed=3, classes=[7, 3])
    assert d.classes == ["7", "3"] and d.num_classes == 2
    keep = (full.y_train == 7) | (full.y_train == 3)
    assert torch.equal(d.x_train, full.x_train[keep])
    assert torch.equal(d.y_train, (full.y_train[keep] == 3).long())  # 7 -> 0, 3 -> 1
    keep_t = (full.y_test == 7) | (full.y_test == 3)
    assert torch.equal(d.y_test, (full.y_test[keep_t] == 3).long())


def test_classes_accepts_tuple_numpy_and_tensor():
    import numpy as np
    ref = load_dataset("digits", classes=[3, 7]).y_train
    for ids in ((3, 7), np.array([3, 7]), torch.tensor([3, 7])):
        assert torch.equal(load_dataset("digits", classes=ids).y_train, ref)


@pytest.mark.parametrize("bad", [[10], [-1], [3, 3], [], "37", [1.5], 3])
def test_classes_bad_values(bad):
    with pytest.raises(ValueError, match="classes"):
        load_dataset("digits", classes=bad)


def test_train_size_subset():
    full = load_dataset("digits", seed=4)
    d = load_dataset("digits", seed=4, train_size=100)
    assert len(d.x_train) == 100 and torch.equal(d.x_test, full.x_test)
    rows = {tuple(r.flatten().tolist()) for r in full.x_train}
    assert all(tuple(r.flatten().tolist()) in rows for r in d.x_train)
    assert torch.equal(d.x_train, load_dataset("digits", seed=4, train_size=100).x_train)
    assert not torch.equal(d.x_train, load_dataset("digits", seed=5, train_size=100).x_train[:100])
    for bad in (0, -3, 10_000, 2.5, True):
        with pytest.raises(ValueError, match="train_size"):
            load_dataset("digits", train_size=bad)


def test_label_noise_exact_and_only_train():
    clean = load_dataset("digits", seed=6)
    d = load_dataset("digits", seed=6, label_noise=0.3)
    n = len(d.y_train)
    assert int(d.noisy_mask.sum()) == round(0.3 * n) and d.noisy_mask.dtype == torch.bool
    assert torch.equal(d.y_train_clean, clean.y_train) and torch.equal(d.y_test, clean.y_test)
    assert torch.equal(d.x_train, clean.x_train)
    assert torch.equal(d.noisy_mask, d.y_train != d.y_train_clean)  # never the same class
    assert torch.equal(d.y_train, load_dataset("digits", seed=6, label_noise=0.3).y_train)
    assert not torch.equal(d.y_train, load_dataset("digits", seed=7, label_noise=0.3).y_train)


def test_label_noise_after_classes_and_train_size():
    d = load_dataset("digits", classes=[3, 7], train_size=50, label_noise=1.0, seed=0)
    assert len(d.y_train) == 50 and bool(d.noisy_mask.all())
    assert torch.equal(d.y_train, 1 - d.y_train_clean)  # two classes: every label flipped


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.2", True])
def test_label_noise_bad_values(bad):
    with pytest.raises(ValueError, match="label_noise"):
        load_dataset("digits", label_noise=bad)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(n=st.integers(0, 300), c=st.integers(2, 12), noise=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_corrupt_labels_properties(n, c, noise, seed):
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    y0 = y.clone()
    noisy, mask = corrupt_labels(y, noise, c, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(y, y0)  # input untouched
    assert int(mask.sum()) == round(noise * n)
    assert torch.equal(mask, noisy != y) and all(0 <= v < c for v in noisy.tolist())


def test_corrupt_labels_uniform_over_other_classes():
    y = torch.zeros(30_000, dtype=torch.int64)
    noisy, _ = corrupt_labels(y, 1.0, 4, generator=torch.Generator().manual_seed(0))
    counts = noisy.bincount(minlength=4)
    assert counts[0] == 0 and all(abs(int(k) - 10_000) < 4 * (10_000 * 2 / 3) ** 0.5 for k in counts[1:])


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.0)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("digits", seed=-1)
    with pytest.raises(ValueError, match="label_regex"):
        load_dataset("digits", label_regex="(.+)")
    with pytest.raises(ValueError, match="label_column"):
        load_dataset("digits", label_column="y")


def test_list_datasets_schema(tmp_path):
    rows = list_datasets(tmp_path)
    assert [r["name"] for r in rows] == list(DATASETS)
    for r in rows:
        assert set(r) == {"name", "kind", "location", "present", "how_to_get"}
        assert r["kind"] in ("image", "tabular") and isinstance(r["present"], bool) and r["how_to_get"]
    by = {r["name"]: r for r in rows}
    assert by["digits"]["present"] and not by["mnist"]["present"]
    assert str(tmp_path) in by["mnist"]["location"]


def test_repr_is_short():
    text = repr(load_dataset("digits", label_noise=0.1))
    assert "DataSplits(name='digits'" in text and "noisy=" in text and len(text) < 300
