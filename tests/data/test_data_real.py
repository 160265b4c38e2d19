"""Real data, skipped when absent: Fashion-MNIST (Debian's package) and the shared CIFAR-10 JPEG tarball."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch

from mixlab_lab.data import list_datasets, load_dataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[2]
CIFAR_TGZ = REPO.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
    return load_dataset("fashion-mnist", cache_dir=tmp_path_factory.mktemp("cache"))


def test_fashion_mnist_shapes_and_label_counts(fmnist):
    d = fmnist
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert d.y_train.bincount().tolist() == [6000] * 10 and d.y_test.bincount().tolist() == [1000] * 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert d.mean[0] == pytest.approx(0.2860, abs=1e-3) and d.std[0] == pytest.approx(0.3530, abs=1e-3)


def test_fashion_mnist_options_on_real_data(tmp_path):
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST absent")
    d = load_dataset("fashion-mnist", classes=[0, 6], train_size=1000, label_noise=0.4, seed=0,
                     cache_dir=tmp_path)
    assert d.classes == ["T-shirt/top", "Shirt"] and len(d.y_train) == 1000 and len(d.y_test) == 2000
    assert int(d.noisy_mask.sum()) == 400 and torch.equal(d.y_train[d.noisy_mask], 1 - d.y_train_clean[d.noisy_mask])


def test_cifar_tarball_slice(monkeypatch):
    """Reads the real tarball's member list and decodes a few images of each split (fast)."""
    if not CIFAR_TGZ.is_file():
        pytest.skip("../shared/datasets/cifar10-jpg.tar.gz absent")
    from mixlab_lab.data._images import decode_images
    names, blobs = [], []
    with tarfile.open(CIFAR_TGZ, "r|gz") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith("/0000.jpg"):
                names.append(m.name)
                blobs.append(tf.extractfile(m).read())
    splits = {n.split("/")[1] for n in names}
    classes = sorted({n.split("/")[2] for n in names})
    assert splits == {"train", "test"} and len(names) == 20
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    x = decode_images(blobs, names)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and 0 < x.float().mean() < 255
    monkeypatch.delenv("MIXLAB_CIFAR10", raising=False)
    assert not {r["name"]: r for r in list_datasets()}["cifar10"]["present"]  # no development path built in
    monkeypatch.setenv("MIXLAB_CIFAR10", str(CIFAR_TGZ))
    row = {r["name"]: r for r in list_datasets()}["cifar10"]
    assert row["present"] and row["location"] == str(CIFAR_TGZ)
