"""Keras 3 (torch backend): Gamma-ratio lambda, MixUp/CutMix maths, article 002's protocol on real data."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from mixlab.keras import CutMix, MixedPyDataset, MixUp, sample_lambda  # noqa: E402

# keras' torch backend converts with np.array(tensor), which this numpy/torch pair flags
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

FMNIST = Path(os.environ.get("MIXLAB_TEST_FMNIST_DIR") or "/usr/share/datasets/fashion-mnist")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_gamma_ratio_lambda_is_beta_and_seeded():
    stats = pytest.importorskip("scipy.stats")
    lam = _np(sample_lambda(4000, 0.2, keras.random.SeedGenerator(0)))
    assert np.isfinite(lam).all() and lam.min() >= 0 and lam.max() <= 1
    assert stats.kstest(lam, stats.beta(0.2, 0.2).cdf).pvalue > 0.01
    small = _np(sample_lambda(20000, 0.02, keras.random.SeedGenerator(1)))
    assert np.isfinite(small).all()  # the naive ratio gives 0/0 here
    again = _np(sample_lambda(4000, 0.2, keras.random.SeedGenerator(0)))
    np.testing.assert_array_equal(lam, again)


def test_mixup_two_streams_and_self_shuffle():
    rng = np.random.default_rng(0)
    x1, x2 = rng.random((8, 5, 5, 1), dtype=np.float32), rng.random((8, 5, 5, 1), dtype=np.float32)
    y1, y2 = rng.integers(0, 4, 8), rng.integers(0, 4, 8)
    x, y = MixUp(0.4, num_classes=4, seed=3)((x1, y1), (x2, y2))
    x, y = _np(x), _np(y)
    lam = y[np.arange(8), y1]  # the label weight of y1's class is lam where the classes differ
    for i in np.nonzero(y1 != y2)[0]:
        np.testing.assert_allclose(x[i], lam[i] * x1[i] + (1 - lam[i]) * x2[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    xs, ys = MixUp(0.4, seed=3)(x1, np.eye(4, dtype=np.float32)[y1])  # one-hot labels, shuffled partner
    assert _np(xs).shape == x1.shape and _np(ys).shape == (8, 4)
    with pytest.raises(ValueError, match="num_classes"):
        MixUp(0.2)(x1, y1)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        MixUp(-0.1)
    off_x, off_y = MixUp(0.0, num_classes=4, seed=3)((x1, y1), (x2, y2))  # alpha 0 is "off", as in the core
    np.testing.assert_allclose(_np(off_x), x1, rtol=1e-6)
    np.testing.assert_allclose(_np(off_y), np.eye(4, dtype=np.float32)[y1])


def test_schedule_callback_stops_mixing():
    from mixlab.keras import Schedule

    rng = np.random.default_rng(0)
    x1, x2 = rng.random((8, 4, 4, 1), dtype=np.float32), rng.random((8, 4, 4, 1), dtype=np.float32)
    y1, y2 = rng.integers(0, 4, 8), rng.integers(0, 4, 8)
    mixup = MixUp(0.4, num_classes=4, seed=3)
    sched = Schedule(mixup, stop_epoch=2, alpha_schedule=lambda e: 0.4 / (e + 1))
    sched.on_epoch_begin(1)
    assert mixup.enabled and mixup.alpha == pytest.approx(0.2)
    assert not np.allclose(_np(mixup((x1, y1), (x2, y2))[0]), x1)
    sched.on_epoch_begin(2)
    assert not mixup.enabled
    np.testing.assert_allclose(_np(mixup((x1, y1), (x2, y2))[0]), x1, rtol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_cutmix_pastes_a_box_and_labels_the_exact_area(data_format):
    x1 = np.zeros((6, 8, 8, 1), np.float32)
    x2 = np.ones((6, 8, 8, 1), np.float32)
    if data_format == "channels_first":
        x1, x2 = x1.transpose(0, 3, 1, 2), x2.transpose(0, 3, 1, 2)
    y1, y2 = np.zeros(6, int), np.ones(6, int)
    x, y = CutMix(1.0, num_classes=2, seed=4, data_format=data_format)((x1, y1), (x2, y2))
    x, y = _np(x), _np(y)
    pasted = x.reshape(6, -1).mean(1)
    np.testing.assert_allclose(y[:, 1], pasted, rtol=1e-6)  # label weight of the partner = pasted area
    assert set(np.unique(x)) <= {0.0, 1.0}


def _read_idx(name):
    with gzip.open(FMNIST / name, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _data(n_train=4000, n_test=1000):
    """A real slice: Fashion-MNIST (article 002) when installed, else scikit-learn's digits."""
    if (FMNIST / "train-images-idx3-ubyte.gz").exists():
        x, y = _read_idx("train-images-idx3-ubyte.gz"), _read_idx("train-labels-idx1-ubyte.gz")
        xt, yt = _read_idx("t10k-images-idx3-ubyte.gz"), _read_idx("t10k-labels-idx1-ubyte.gz")
        x, xt = x[:n_train, :, :, None] / 255.0, xt[:n_test, :, :, None] / 255.0
        return x.astype("float32"), y[:n_train].astype("int64"), xt.astype("float32"), yt[:n_test].astype("int64")
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = np.kron(d.images / 16.0, np.ones((3, 3)))[:, 2:26, 2:26]  # 8x8 -> 24x24 for the 5x5 convolutions
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, :, :, None].astype("float32")
    return x[:1400], d.target[:1400].astype("int64"), x[1400:], d.target[1400:].astype("int64")


class _Batches(keras.utils.PyDataset):
    """Shuffled batches of one-hot labelled images; a new order each epoch from its own seed."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.bs = x, np.eye(10, dtype="float32")[y], batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return len(self.x) // self.bs

    def __getitem__(self, i):
        idx = self.order[i * self.bs:(i + 1) * self.bs]
        return self.x[idx], self.y[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def _article_model():
    layers = keras.layers
    return keras.Sequential([
        layers.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, (5, 5), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(32, (5, 5), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.2), layers.GlobalAveragePooling2D(),
        layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax"),
    ])


def test_article_protocol_same_initial_weights_both_arms_learn(one_thread):
    x, y, xt, yt = _data()
    # 4000 Fashion-MNIST images: 3 epochs; the 1400-image digits fallback needs more steps to learn
    epochs = 3 if (FMNIST / "train-images-idx3-ubyte.gz").exists() else 12
    keras.utils.set_random_seed(0)
    initial = _article_model().get_weights()
    results = {}
    for arm in ("mixup", "baseline"):
        model = _article_model()
        model.set_weights(initial)
        np.testing.assert_array_equal(model.get_weights()[0], initial[0])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        one = _Batches(x, y, 64, seed=1)
        train = MixedPyDataset(one, MixUp(0.2, seed=42), partner=_Batches(x, y, 64, seed=2)) if arm == "mixup" else one
        model.fit(train, epochs=epochs, verbose=0)
        _, acc = model.evaluate(xt, np.eye(10, dtype="float32")[yt], verbose=0)
        results[arm] = acc
    assert results["mixup"] > 0.55 and results["baseline"] > 0.55, results  # chance: 0.1
    assert results["mixup"] != results["baseline"]
