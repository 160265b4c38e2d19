"""The lab refuses bad data at load time: each case builds a tiny bad file here and checks the
exception type and that the one-line message names the file (or option) and what came.

Numbered as in the issue "the lab refuses bad data before it trains":
1 labels out of range, 2 empty splits, 3 image sizes, 4 a class only in the test split,
5 CIFAR label types / batches.meta, 6 CSV label column, 7 optional label_regex group,
8 decompression bombs and oversized tar members, 9 zero-variance channels,
10 crafted CIFAR pickles that decode larger than the file, 11 cache key content hash,
12 high bit depth images (16-bit, 32-bit, float), 13 pickles that nest deep or share
references (and error messages bounded in length), 14 caps on bytes and pixels, 15 the class
count of CIFAR batches comes from their labels, 16 CSV encodings and long fields, 17 a missing
CIFAR batch named, 18 a full disk (the cache, write_idx), 19 refused pickles anywhere.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import struct
import tarfile
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from mixlab_lab.data import load_dataset
from mixlab_lab.data import _cache, _images
from mixlab_lab.data import _cifar as cifar_mod
from mixlab_lab.data._idx import write_idx

# ----- helpers ---------------------------------------------------------------------------------

IDX = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
       "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _idx_set(folder, *, y_train=None, y_test=None, x_train=None, x_test=None):
    """Four plain IDX files: 12 train / 6 test images of 5x5, labels i % 10 unless given."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 5, 5), dtype=np.uint8) if x_train is None else x_train,
        "y_train": (np.arange(12) % 10).astype(np.uint8) if y_train is None else y_train,
        "x_test": rng.integers(0, 256, (6, 5, 5), dtype=np.uint8) if x_test is None else x_test,
        "y_test": (np.arange(6) % 10).astype(np.uint8) if y_test is None else y_test,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for role, a in arrays.items():
        write_idx(folder / IDX[role], a)
    return folder


_CIFAR_NAMES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]


def _cifar(folder, labels=None, meta=None, per_batch=4):
    """Six pickled batches of ``per_batch`` rows; ``labels`` maps a batch name to its label list."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(_CIFAR_NAMES):
        data = np.full((per_batch, 3072), i, dtype=np.uint8)
        lab = (labels or {}).get(name, [j % 4 for j in range(per_batch)])
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": lab}, protocol=2))
    if meta is not None:
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def _png(path, value=0, size=(6, 4), noise=False):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, np.uint8)
    if noise:
        arr[...] = np.random.default_rng(value).integers(0, 256, arr.shape, dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG")


def _png_header(w, h):
    """A PNG whose header claims ``w`` x ``h`` grey pixels and holds no pixel data."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _csv(path, header, rows):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


# ----- 1. labels outside [0, num_classes) ------------------------------------------------------

def test_1_idx_label_out_of_range(tmp_path):
    d = _idx_set(tmp_path / "mn", y_train=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1], np.uint8))
    with pytest.raises(ValueError, match=r"IDX file .*train-labels-idx1-ubyte: label 10 at index 10 is outside "
                                         r"0\.\.9 \(10 classes"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


def test_1_idx_float_labels_are_a_type_error(tmp_path):
    d = _idx_set(tmp_path / "mn", y_test=np.arange(6, dtype=np.float32))
    with pytest.raises(TypeError, match=r"t10k-labels-idx1-ubyte: labels must be integers, got float32"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


@pytest.mark.parametrize("bad", [12, -1])
def test_1_cifar_label_out_of_range(tmp_path, bad):
    c = _cifar(tmp_path / "c", labels={"data_batch_2": [0, 1, bad, 3]})
    with pytest.raises(ValueError, match=rf"CIFAR file .*data_batch_2: label {bad} at row 2 is outside 0\.\.9"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_1_csv_numbers_are_class_names_so_never_out_of_range(tmp_path):
    """CSV labels are names mapped to 0..n-1 (documented): -1/1 are two classes, not an out-of-range -1."""
    path = _csv(tmp_path / "t.csv", "a,y", [f"{i},{1 if i % 2 else -1}" for i in range(20)])
    d = load_dataset("csv", data_dir=path, cache_dir=False)
    assert d.classes == ["-1", "1"] and set(torch.cat([d.y_train, d.y_test]).tolist()) == {0, 1}


def test_1_safety_net_checks_every_reader(monkeypatch):
    """A reader that delivers out-of-range labels is caught by load_dataset itself, naming the source."""
    from mixlab_lab.data import datasets
    bad = {"x": torch.zeros(10, 2, dtype=torch.float64), "y": torch.arange(10) % 6, "classes": ["a", "b", "c"],
           "source": "fake-source"}
    monkeypatch.setattr(datasets, "load_sklearn", lambda name: bad)
    with pytest.raises(ValueError, match=r"dataset 'iris' \(fake-source\): data: labels span 0\.\.5; expected 0\.\.2"):
        load_dataset("iris")


# ----- 2. empty train or test splits -----------------------------------------------------------

def test_2_idx_empty_test_file(tmp_path):
    d = _idx_set(tmp_path / "mn", x_test=np.zeros((0, 5, 5), np.uint8), y_test=np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: holds 0 images; expected at least one test image"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


def test_2_cifar_empty_test_batch(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}))
    with pytest.raises(ValueError, match=r"test_batch: the test batch holds no rows"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_2_test_fraction_leaves_test_empty(tmp_path):
    path = _csv(tmp_path / "t.csv", "a,y", ["1,x", "2,x", "3,z", "4,z"])
    with pytest.raises(ValueError, match=r"t\.csv\): test_fraction=0\.2 leaves the test split empty"):
        load_dataset("csv", data_dir=path, test_fraction=0.2)


def test_2_test_fraction_leaves_train_empty(tmp_path):
    path = _csv(tmp_path / "t.csv", "a,y", ["1,x", "2,x", "3,z", "4,z"])
    with pytest.raises(ValueError, match=r"t\.csv\): test_fraction=0\.9 leaves the training split empty"):
        load_dataset("csv", data_dir=path, test_fraction=0.9)


def test_2_classes_leave_test_empty(tmp_path):
    d = _idx_set(tmp_path / "mn")  # test labels 0..5
    with pytest.raises(ValueError, match=r"classes=\[7, 8\]: the test split holds no example of these classes"):
        load_dataset("mnist", data_dir=d, classes=[7, 8], cache_dir=False)


def test_2_classes_without_training_examples(tmp_path):
    d = _idx_set(tmp_path / "mn", y_train=np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 0, 1, 2], np.uint8))  # no 7 anywhere
    with pytest.raises(ValueError, match=r"classes=\[2, 7\]: class 7 \('7'\) has no training example"):
        load_dataset("mnist", data_dir=d, classes=[2, 7], cache_dir=False)


def test_2_train_size_losing_a_class_warns():
    pytest.importorskip("sklearn")
    with pytest.warns(UserWarning, match=r"dataset 'digits' .*train_size=3: the training subset has no example of "
                                         r"class\(es\)"):
        d = load_dataset("digits", train_size=3)
    assert len(d.y_train) == 3


# ----- 3. zero-size images; train and test of different sizes ----------------------------------

def test_3_idx_zero_width_images(tmp_path):
    d = _idx_set(tmp_path / "mn", x_train=np.zeros((12, 5, 0), np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: images of 5x0 pixels \(H x W\); expected a height "
                                         r"and width of at least 1"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


def test_3_idx_train_and_test_sizes_differ(tmp_path):
    d = _idx_set(tmp_path / "mn", x_test=np.zeros((6, 6, 7), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: test images are 6x7 \(H x W\) but the training "
                                         r"images in train-images-idx3-ubyte are 5x5"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


def test_3_zero_height_png_named(tmp_path):
    pytest.importorskip("PIL")
    for c in "ab":
        for i in range(3):
            _png(tmp_path / "t" / c / f"{i}.png", i)
    (tmp_path / "t" / "b" / "flat.png").write_bytes(_png_header(5, 0))
    with pytest.raises(ValueError, match=r"image .*/t/b/flat\.png: cannot be decoded"):
        load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False)


def test_3_image_tree_train_test_sizes_differ_warns(tmp_path):
    pytest.importorskip("PIL")
    for c in "ab":
        for i in range(3):
            _png(tmp_path / "t" / "train" / c / f"{i}.png", i, size=(6, 4))
            _png(tmp_path / "t" / "test" / c / f"{i}.png", i, size=(8, 8))
    _png(tmp_path / "t" / "train" / "a" / "extra.png", 9, size=(6, 4))
    with pytest.warns(UserWarning, match=r"image folder .*: training images are mostly 6x4 but test images mostly "
                                         r"8x8; all images resized to 6x4"):
        d = load_dataset("folder", data_dir=tmp_path / "t", cache_dir=tmp_path / "cache")
    assert d.x_test.shape[2:] == d.x_train.shape[2:] == (4, 6)
    with pytest.warns(UserWarning, match="resized to 6x4"):  # repeated on a cache hit
        load_dataset("folder", data_dir=tmp_path / "t", cache_dir=tmp_path / "cache")


# ----- 4. a class present only in the test split: an error ------------------------------------

def test_4_idx_class_only_in_test(tmp_path):
    d = _idx_set(tmp_path / "mn", y_train=(np.arange(12) % 5).astype(np.uint8))  # train 0..4, test 0..5
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: class 5 is in the test labels but not in the "
                                         r"training labels"):
        load_dataset("mnist", data_dir=d, cache_dir=False)


def test_4_cifar_class_only_in_test(tmp_path):
    c = _cifar(tmp_path / "c", labels={"test_batch": [0, 1, 2, 7]})
    with pytest.raises(ValueError, match=r"test_batch: class 7 \('horse'\) is in the test batch but in no training"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_4_image_tree_class_only_in_test(tmp_path):
    pytest.importorskip("PIL")
    for i in range(2):
        _png(tmp_path / "t" / "train" / "cat" / f"{i}.png", i)
        _png(tmp_path / "t" / "test" / "cat" / f"{i}.png", i)
        _png(tmp_path / "t" / "test" / "zebra" / f"{i}.png", i)
    with pytest.raises(ValueError, match=r"image folder .*t: class 'zebra' has images in test/ but none in train/"):
        load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False)


def test_4_test_fraction_puts_a_whole_class_in_test(tmp_path):
    path = _csv(tmp_path / "t.csv", "a,y", [f"{i},{c}" for i, c in enumerate("aaaabbbbc")])
    with pytest.raises(ValueError, match=r"test_fraction=0\.6 puts all 1 example\(s\) of class 'c' in the test split"):
        load_dataset("csv", data_dir=path, test_fraction=0.6)


# ----- 5. CIFAR label types and batches.meta ---------------------------------------------------

@pytest.mark.parametrize("bad,shown", [(1.0, "float 1.0"), ("3", "str '3'"), (None, "NoneType None")])
def test_5_cifar_labels_wrong_type(tmp_path, bad, shown):
    c = _cifar(tmp_path / "c", labels={"data_batch_4": [0, 1, bad, 3]})
    with pytest.raises(TypeError, match=rf"CIFAR file .*data_batch_4: labels must be integers, got {shown} at index 2"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_5_cifar_float_label_array(tmp_path):
    c = _cifar(tmp_path / "c", labels={"test_batch": np.array([0.0, 1.0, 2.0, 3.0])})
    with pytest.raises(TypeError, match=r"test_batch: labels must be integers, got a float64 array"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_5_cifar_meta_class_count_mismatch(tmp_path):
    c = _cifar(tmp_path / "c", meta={"label_names": ["a", "b", "c"]})  # labels 0..3
    with pytest.raises(ValueError, match=r"batches\.meta: lists 3 class names \(label_names\) but .*data_batch_1 holds "
                                         r"label 3"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_5_cifar_meta_without_label_names(tmp_path):
    c = _cifar(tmp_path / "c", meta={"num_vis": 3072})
    with pytest.raises(ValueError, match=r"batches\.meta: expected 'label_names'"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_5_cifar_meta_names_used(tmp_path):
    c = _cifar(tmp_path / "c", meta={"label_names": ["a", "b", "c", "d"]})
    assert load_dataset("cifar10", data_dir=c, cache_dir=False).classes == ["a", "b", "c", "d"]


# ----- 6. CSV label column ---------------------------------------------------------------------

@pytest.mark.parametrize("cell,shown", [("", "an empty cell"), ("NaN", "'NaN'")])
def test_6_csv_missing_label(tmp_path, cell, shown):
    path = _csv(tmp_path / "t.csv", "a,b,label", ["1,2,x", f"3,4,{cell}", "5,6,y"])
    with pytest.raises(ValueError, match=rf"CSV .*t\.csv: row 3, label column 'label': expected a class label, got "
                                         rf"{shown}"):
        load_dataset("csv", data_dir=path)


def test_6_csv_one_and_one_point_zero_are_one_class(tmp_path):
    cells = ["1", "1.0", "0", "0.0", "01", "1e0"]
    path = _csv(tmp_path / "t.csv", "a,y", [f"{i},{cells[i % 6]}" for i in range(24)])
    d = load_dataset("csv", data_dir=path)
    assert d.classes == ["0", "1"]
    x = torch.cat([d.x_train, d.x_test])[:, 0]
    y = torch.cat([d.y_train, d.y_test])[x.argsort()]
    assert y.tolist() == [0 if cells[i % 6] in ("0", "0.0") else 1 for i in range(24)]


def test_6_csv_continuous_label_non_integer(tmp_path):
    path = _csv(tmp_path / "t.csv", "a,price", [f"{i},{i % 3 + 0.25}" for i in range(60)])
    with pytest.raises(ValueError, match=r"t\.csv: label column 'price' looks continuous: row 2 holds the non-integer "
                                         r"number '0\.25'.*label_column="):
        load_dataset("csv", data_dir=path)


def test_6_csv_too_many_distinct_labels(tmp_path):
    path = _csv(tmp_path / "t.csv", "a,id", [f"{i % 4},{1000 + i}" for i in range(60)])
    with pytest.raises(ValueError, match=r"label column 'id' has 60 distinct values in 60 rows \(more than half the "
                                         r"rows\).*label_column='<name>' \(CLI: --data-dir '.*t\.csv::<name>'\)"):
        load_dataset("csv", data_dir=path)
    d = load_dataset("csv", data_dir=f"{path}::a")  # the suggested fix works (features need not be classes)
    assert d.classes == ["0", "1", "2", "3"]


# ----- 7. an optional label_regex group that takes no part in the match -----------------------

def test_7_regex_group_none(tmp_path):
    pytest.importorskip("PIL")
    for n in ("cat_1.png", "cat_2.png", "dog_3.png", "dog_4.png", "17.png"):
        _png(tmp_path / "im" / n, 0)
    with pytest.raises(ValueError, match=r"label_regex .* matches the file name '17\.png' \(in .*im\) but group 1 "
                                         r"takes no part in the match"):
        load_dataset("folder", data_dir=tmp_path / "im", label_regex=r"^(?:([a-z]+)_)?\d+\.png$", cache_dir=False)


# ----- 8. decompression bombs and oversized tar members ----------------------------------------

def _tree_with(tmp_path, odd_name, odd_bytes):
    for c in "ab":
        for i in range(2):
            _png(tmp_path / "t" / c / f"{i}.png", i, size=(4, 4))
    (tmp_path / "t" / "a" / odd_name).write_bytes(odd_bytes)
    return tmp_path / "t"


def test_8_decompression_bomb_header_refused_fast(tmp_path):
    pytest.importorskip("PIL")
    t = _tree_with(tmp_path, "bomb.png", _png_header(100_000, 100_000))  # 10 G pixels claimed, 60 bytes
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"image .*/t/a/bomb\.png: .*decompression bomb \(limit PIL\.Image\.MAX_IMAGE_"):
        load_dataset("folder", data_dir=t, cache_dir=False)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("side", [12, 20])  # 144 pixels: Pillow only warns; 400 > 2 x limit: Pillow raises
def test_8_decompression_bomb_warning_becomes_error(tmp_path, monkeypatch, side):
    Image = pytest.importorskip("PIL.Image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, format="PNG")
    t = _tree_with(tmp_path, "big.png", buf.getvalue())
    with pytest.raises(ValueError, match=r"image .*/t/a/big\.png: .*decompression bomb \(limit PIL\.Image\.MAX_IMAGE_PIXELS "
                                         r"= 100 pixels\)"):
        load_dataset("folder", data_dir=t, cache_dir=False)


def test_8_tar_member_above_cap(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    _caps(monkeypatch, MAX_FILE_BYTES=2000)
    t = _tree_with(tmp_path, "big.png", b"\x89PNG" + bytes(5000))
    tar = tmp_path / "t.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(t, arcname="t")
    with pytest.raises(ValueError, match=r"tarball .*t\.tar\.gz: member 't/a/big\.png': 5004 bytes .*above the "
                                         r"limit of 2000 bytes"):
        load_dataset("folder", data_dir=tar, cache_dir=False)


def test_8_cifar_member_and_file_above_cap(tmp_path, monkeypatch):
    c = _cifar(tmp_path / "src" / "cifar-10-batches-py")
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(c, arcname="cifar-10-batches-py")
    _caps(monkeypatch, MAX_FILE_BYTES=10_000)  # a batch of 4 rows is ~12 kB
    with pytest.raises(ValueError, match=r"CIFAR tarball .*: member 'cifar-10-batches-py/data_batch_1': \d+ bytes "
                                         r".*above the limit of 10000 bytes"):
        load_dataset("cifar10", data_dir=tar, cache_dir=False)
    with pytest.raises(ValueError, match=r"CIFAR file .*data_batch_1: \d+ bytes .*above the limit of 10000 bytes"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


# ----- 9. zero-variance channels: std 1, never 0 or NaN ----------------------------------------

def test_9_constant_image_channels_get_std_one(tmp_path):
    pytest.importorskip("PIL")
    for c in "ab":
        for i in range(3):
            _png(tmp_path / "t" / c / f"{i}.png", 77)  # every pixel of every channel is 77
    d = load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False, test_fraction=0.34)
    assert d.std == (1.0, 1.0, 1.0) and d.mean == pytest.approx((77 / 255,) * 3)
    norm = (d.x_train.float() / 255 - torch.tensor(d.mean).view(1, 3, 1, 1)) / torch.tensor(d.std).view(1, 3, 1, 1)
    assert bool(torch.isfinite(norm).all())


def test_9_constant_idx_images(tmp_path):
    d = _idx_set(tmp_path / "mn", x_train=np.zeros((12, 5, 5), np.uint8))
    assert load_dataset("mnist", data_dir=d, cache_dir=False).std == (1.0,)


# ----- 10. crafted CIFAR pickles that decode far larger than the file --------------------------

class _Strided:
    """Pickles as numpy.ndarray(shape, dtype, buffer, 0, zero strides): a tiny file, a huge view."""

    def __init__(self, shape, dtype, itemsize):
        self.args = (shape, np.dtype(dtype), b"\x00" * itemsize, 0, (0,) * len(shape))

    def __reduce__(self):
        return (np.ndarray, self.args)


def _zero_stride_batch():
    return pickle.dumps({"data": _Strided((100_000, 3072), "u1", 1), "labels": _Strided((100_000,), "i8", 8)},
                        protocol=2)


def test_10_zero_stride_arrays_refused_quickly_without_allocating(tmp_path):
    blob = _zero_stride_batch()
    assert len(blob) < 1000
    plain = pickle.loads(blob)  # what a plain unpickler makes of it: 100,000 images from 1 byte
    assert plain["data"].shape == (100_000, 3072) and plain["data"].strides == (0, 0)
    folder = tmp_path / "c"
    folder.mkdir()
    for name in _CIFAR_NAMES:  # six tiny files that used to decode as 600,000 images (2.8 GB concatenated)
        (folder / name).write_bytes(blob)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(pickle.UnpicklingError, match=r"CIFAR file .*data_batch_1: refusing to call numpy\.ndarray "
                                                         r"directly"):
            load_dataset("cifar10", data_dir=folder, cache_dir=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 20 * 2**20


class _BigReconstruct:
    def __reduce__(self):
        return (_reconstruct_fn(), (np.ndarray, (100_000, 3072), b"b"))


def _reconstruct_fn():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _HexBomb:
    def __reduce__(self):
        return (codecs.encode, (b"\x00" * 64, "hex"))


@pytest.mark.parametrize("obj,message", [
    (_BigReconstruct(), r"refusing numpy _reconstruct\(ndarray, shape \(100000, 3072\)\)"),
    (_HexBomb(), r"refusing _codecs\.encode\(bytes, 'hex'\)"),
])
def test_10_other_amplifying_calls_refused(tmp_path, obj, message):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_3").write_bytes(pickle.dumps({"data": obj, "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=rf"data_batch_3: {message}"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_10_views_and_row_caps_after_loading(tmp_path, monkeypatch):
    c = _cifar(tmp_path / "c")
    real = cifar_mod.safe_load

    def fake(path, data=None):
        if str(path).endswith("data_batch_2"):
            return {"data": np.broadcast_to(np.zeros(3072, np.uint8), (50, 3072)), "labels": [0] * 50}
        return real(path, data)
    monkeypatch.setattr(cifar_mod, "safe_load", fake)
    with pytest.raises(ValueError, match=r"data_batch_2: 'data' is not a plain array stored in the file \(shape "
                                         r"\(50, 3072\), strides \(0, 1\)"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)
    monkeypatch.setattr(cifar_mod, "safe_load", real)
    monkeypatch.setattr(cifar_mod, "MAX_ROWS", 3)  # batches here hold 4 rows
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1: a list of more than 3 items"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)  # the label list, refused while it is read
    for name in _CIFAR_NAMES:  # labels as an int64 array: the row cap on 'data' refuses the batch
        d = pickle.loads((c / name).read_bytes())
        (c / name).write_bytes(pickle.dumps({**d, "labels": np.array(d["labels"], np.int64)}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: 4 rows, more than the 3 a batch may hold"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


class _ObjectFlaggedDtype:
    """A uint8 dtype whose pickled state sets numpy's "holds Python objects" flags."""

    def __reduce__(self):
        return (np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 0x3F))


def test_10_tampered_dtype_state_refused(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_5").write_bytes(pickle.dumps({"data": _ObjectFlaggedDtype(), "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_5: refusing numpy dtype state \(3, '\|', None, None, "
                                                     r"None, -1, -1, 63\)"):
        load_dataset("cifar10", data_dir=c, cache_dir=False)


def test_10_real_numpy_pickles_still_load(tmp_path):
    for protocol in (2, 4, 5):
        c = _cifar(tmp_path / f"p{protocol}")
        for name in _CIFAR_NAMES:
            d = pickle.loads((c / name).read_bytes())
            (c / name).write_bytes(pickle.dumps({**d, "labels": np.array(d["labels"], np.int64)}, protocol=protocol))
        d = load_dataset("cifar10", data_dir=c, cache_dir=False)
        assert d.x_train.shape == (20, 3, 32, 32) and d.y_test.tolist() == [0, 1, 2, 3]


# ----- 11. cache key: a content hash, not only size and mtime ---------------------------------

def test_11_rewrite_with_same_size_and_mtime_not_served_stale(tmp_path):
    d = _idx_set(tmp_path / "mn")
    first = load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "cache")
    path = d / IDX["y_train"]
    st = path.stat()
    write_idx(path, (np.arange(12)[::-1] % 10).astype(np.uint8))  # same size, other labels
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "cache")
    assert second.y_train.tolist() == (np.arange(12)[::-1] % 10).tolist() != first.y_train.tolist()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_11_large_files_hashed_at_both_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(_cache, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(_cache, "_END_BYTES", 100)
    path = tmp_path / "big"
    path.write_bytes(bytes(5000))
    small = tmp_path / "small"
    small.write_bytes(bytes(500))
    (_, size, _, h), (_, _, _, hs) = _cache.source_signature([path, small])
    assert size == 5000 and h.startswith("ends:") and hs.startswith("whole:")
    path.write_bytes(bytes(4999) + b"\x01")  # last byte changed: noticed
    assert _cache.source_signature([path])[0][3] != h
    path.write_bytes(bytes(2000) + b"\x01" + bytes(2999))  # middle changed: size and mtime are all that cover it
    assert _cache.source_signature([path])[0][3] == h


# ----- shared by 12..19: a bad file ends in one short line naming it ---------------------------

MAX_LINE = 1000  # what the CLI prints after "mixlab: " (long enough for every message, far below MB lines)


def _one_line(exc, *names):
    """The message of ``exc`` is one line of at most MAX_LINE characters naming each of ``names``."""
    text = str(exc)
    assert "\n" not in text and len(text) <= MAX_LINE, (len(text), text[:300])
    for name in names:
        assert str(name) in text, (name, text)
    return text


# ----- 12. high bit depth images: decoded to the lab's 0..255, or refused ----------------------

RAMP = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once


def _tiff(w, h, data: bytes, bits: int, sample_format: int) -> bytes:
    """A one-strip little-endian grey TIFF written by hand (Pillow cannot save unsigned 32-bit)."""
    entries = [(256, 4, w), (257, 4, h), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, h), (279, 4, len(data)), (339, 3, sample_format)]
    ifd_size = 2 + 12 * len(entries) + 4
    entries = [(t, k, 8 + ifd_size if t == 273 else v) for t, k, v in entries]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", t, k, 1) + (struct.pack("<HH", v, 0) if k == 3 else struct.pack("<I", v))
        for t, k, v in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + data


def _encoded(kind: str) -> bytes:
    """RAMP written in a high bit depth; decoding it right gives RAMP back."""
    from PIL import Image
    buf = io.BytesIO()
    if kind in ("png16", "tiff16"):
        Image.fromarray(RAMP.astype(np.uint16) * 257).save(buf, format="PNG" if kind == "png16" else "TIFF")
    elif kind == "tiff-float":
        Image.fromarray(RAMP.astype(np.float32) / 255).save(buf, format="TIFF")
    elif kind == "tiff-int32":
        Image.fromarray(RAMP.astype(np.int32) << 23).save(buf, format="TIFF")  # signed: 0..2**31-1
    elif kind == "tiff-uint32":
        return _tiff(16, 16, (RAMP.astype("<u4") << 24).tobytes(), 32, 1)  # unsigned: up to 0xFF000000
    elif kind == "tiff12":  # packed 12-bit samples, two in three bytes (Pillow reads them into I;16 unscaled)
        v = (RAMP.astype(np.uint32) << 4).ravel()
        packed = bytes(b for a, c in zip(v[0::2], v[1::2]) for b in (a >> 4, (a & 0xF) << 4 | c >> 8, c & 0xFF))
        return _tiff(16, 16, packed, 12, 1)
    elif kind == "pgm16":
        return b"P5 16 16 65535\n" + (RAMP.astype(">u2") * 257).tobytes()
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff-float", "tiff-int32", "tiff-uint32", "tiff12", "pgm16"])
def test_12_high_bit_depth_images_decode_to_the_8_bit_range(kind):
    pytest.importorskip("PIL")
    x = _images.decode_images([_encoded(kind)], [f"a/ramp.{kind}"], workers=1)
    assert x.shape == (1, 1, 16, 16)
    assert np.array_equal(x[0, 0].numpy(), RAMP), (kind, x[0, 0].numpy().ravel()[::17].tolist())


def test_12_high_bit_depth_tree_through_load_dataset(tmp_path):
    pytest.importorskip("PIL")
    for c in "ab":
        for i in range(2):
            (tmp_path / "t" / c).mkdir(parents=True, exist_ok=True)
            (tmp_path / "t" / c / f"{i}.png").write_bytes(_encoded("png16"))
    d = load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False, test_fraction=0.5)
    assert np.array_equal(d.x_train[0, 0].numpy(), RAMP)
    assert d.mean == pytest.approx((127.5 / 255,))  # before: 99.5% of the pixels at 255


def test_12_sixteen_bit_rgb_png_keeps_its_high_byte():
    pytest.importorskip("PIL")
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    px = np.zeros((1, 3, 3), ">u2")
    px[0, 0], px[0, 1], px[0, 2] = (0x1234, 0xFFFF, 0x00FF), (0x8000, 0x0100, 0), (0, 0, 0x7FFF)
    raw = b"".join(b"\x00" + row.tobytes() for row in px)
    blob = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 1, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    x = _images.decode_images([blob], ["rgb16.png"], workers=1)
    assert x[0, :, 0].T.tolist() == [[0x12, 0xFF, 0x00], [0x80, 0x01, 0], [0, 0, 0x7F]]


@pytest.mark.parametrize("values,shown", [
    (np.full((4, 4), 3.5, np.float32), r"float pixels span 3\.5\.\.3\.5"),
    (np.full((4, 4), np.nan, np.float32), r"float pixels hold NaN or infinite values"),
    (np.full((4, 4), -5, np.int32), r"signed 32-bit pixels hold negative values \(min -5\)"),
])
def test_12_high_bit_depth_images_outside_their_range_are_refused(tmp_path, values, shown):
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF")
    t = _tree_with(tmp_path, "odd.tif", buf.getvalue())
    with pytest.raises(ValueError, match=rf"image .*/t/a/odd\.tif: {shown}") as e:
        load_dataset("folder", data_dir=t, cache_dir=False)
    _one_line(e.value, "a/odd.tif")


# ----- 13. pickles that nest deep or share references; error messages bounded ------------------

def _batch_with_extra_item(key_ops: bytes, value_ops: bytes = b"K\x00") -> bytes:
    """A valid one-row batch (protocol 2) with one more dict item, written as raw pickle opcodes
    spliced in before the final SETITEMS (the base pickle's memo is not touched: indices >= 200)."""
    base = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=2)
    assert base.endswith(b"u.")
    return base[:-2] + key_ops + value_ops + b"u."


def _shared_tuples(depth: int) -> bytes:
    """``t = (); t = (t, t)`` ``depth`` times: DUP + TUPLE2, a few bytes per level, 2**depth leaves."""
    return b")" + b"2\x86" * depth


def _wide_shared_tuples(width: int, levels: int) -> bytes:
    """Each level a tuple of ``width`` references to the level below (memo GETs): width**levels leaves."""
    ops = b")"
    for i in range(levels):
        ops += b"q" + bytes([200 + i]) + b"0(" + (b"h" + bytes([200 + i])) * width + b"t"  # PUT, POP, MARK, GETs
    return ops


def test_13_deeply_nested_shared_key_refused(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_2").write_bytes(_batch_with_extra_item(_shared_tuples(20)))  # hashing it: 2**20 tuples
    with pytest.raises(ValueError, match=r"data_batch_2: objects nested more than \d+ levels deep") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)
    assert isinstance(e.value, pickle.UnpicklingError)
    _one_line(e.value, c / "data_batch_2")


def test_13_sixty_four_levels_of_shared_tuples_end_quickly(tmp_path):
    """Before: hashing the key visits 2**64 tuples (never returns; depth 28 took 79 s and 4.5 GB)."""
    import subprocess
    import sys
    path = tmp_path / "data_batch_1"
    path.write_bytes(_batch_with_extra_item(_shared_tuples(64)))
    code = ("import sys; from mixlab_lab.data._cifar import safe_load\n"
            "try:\n    safe_load(sys.argv[1])\nexcept ValueError as e:\n    print(e); sys.exit(3)\n")
    try:
        run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("safe_load did not return within 60 s")
    assert run.returncode == 3, run.stderr[-2000:]
    _one_line(run.stdout.strip(), path, "nested more than")


def test_13_wide_shared_references_refused(tmp_path):
    c = _cifar(tmp_path / "c")  # a key of 200 x 200 x 200 shared references: 8 million tuples to hash
    (c / "data_batch_4").write_bytes(_batch_with_extra_item(_wide_shared_tuples(200, 3)))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"data_batch_4: more than \d+ objects built") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)
    assert time.perf_counter() - start < 5
    _one_line(e.value, c / "data_batch_4")


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _nested_list(width=50, levels=3):
    """Shared nested lists: a few hundred bytes pickled, width**levels items in their repr."""
    v = [0] * width
    for _ in range(levels - 1):
        v = [v] * width
    return v


def _nested_tuple(width=50, levels=3):
    v = ("x" * 100,) * width
    for _ in range(levels - 1):
        v = (v,) * width
    return v


@pytest.mark.parametrize("batch,match", [
    ({"data": np.zeros((1, 3072), np.uint8), "labels": [_nested_list()]},
     r"labels must be integers, got list \[\["),  # before: a 375 kB line
    ({"data": np.zeros((1, 3072), np.uint8), _nested_tuple(): 0},
     r"expected keys 'data' \(numpy array\) and 'labels', found keys"),  # before: 12.5 MB
    ({"data": _Call(np.dtype, _nested_list()), "labels": [0]}, r"refusing numpy dtype \[\["),
    ({"data": _Call(_reconstruct_fn(), np.ndarray, tuple(range(100_000)), b"b"), "labels": [0]},
     r"refusing numpy _reconstruct\(ndarray, shape \(0, 1, 2, "),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "batch_label": "x" * 1_000_000},
     None),  # a long value nobody shows: loads
], ids=["labels", "keys", "dtype", "reconstruct", "long-string"])
def test_13_error_messages_show_bounded_reprs(tmp_path, batch, match):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    if match is None:
        assert load_dataset("cifar10", data_dir=c, cache_dir=False).x_train.shape[0] == 17
        return
    with pytest.raises((ValueError, TypeError), match=rf"data_batch_2: .*{match}") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)
    _one_line(e.value, c / "data_batch_2")


def test_13_real_batches_stay_far_below_the_pickle_caps():
    """A full-size batch (10,000 rows, labels a list of 10,000 ints, as the official files) loads."""
    blob = pickle.dumps({"batch_label": "b", "labels": [i % 10 for i in range(10_000)],
                         "data": np.zeros((10_000, 3072), np.uint8), "filenames": [f"f{i}.png" for i in range(10_000)]},
                        protocol=2)
    x, y = cifar_mod._read_batch("data_batch_1", blob)
    assert x.shape == (10_000, 3, 32, 32) and y.tolist() == [i % 10 for i in range(10_000)]


def _long_cell_csv(tmp_path):
    return _csv(tmp_path / "t.csv", "a,y", ["1,p", "2,q", "x" * 100_000 + ",p", "4,q"]), {}


def _wide_header_csv(tmp_path):
    header = ",".join(f"feature_{i}" for i in range(5000))
    return _csv(tmp_path / "t.csv", header, [",".join(["1"] * 5000)] * 4), {"label_column": "nope"}


def _long_label_csv(tmp_path):  # one example of a class named by 100,000 characters: test_fraction takes it
    rows = [f"{i},{'a' if i % 2 else 'b'}" for i in range(10)] + ["9," + "z" * 100_000]
    return _csv(tmp_path / "t.csv", "a,y", rows), {"test_fraction": 0.6}


def _long_member_tar(tmp_path):
    t = _tree_with(tmp_path, "ok.png", (tmp_path / "ok.png").read_bytes())
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(t, arcname="t")
        info = tarfile.TarInfo("t/a/" + "n" * 5000 + ".png")
        info.size = 10
        tf.addfile(info, io.BytesIO(b"not an img"))
    return tar, {}


def _long_class_names_tar(tmp_path):  # classes only in test/, named by 2,000 characters each (tar names are unbounded)
    pytest.importorskip("PIL")
    src = tmp_path / "src"
    _png(src / "train" / "a" / "0.png")
    _png(src / "test" / "a" / "0.png")
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(src, arcname="t")
        for k in range(5):
            tf.add(src / "test" / "a" / "0.png", arcname=f"t/test/{k}{'c' * 2000}/0.png")
    return tar, {}


@pytest.mark.parametrize("make,name", [(_long_cell_csv, "csv"), (_wide_header_csv, "csv"), (_long_label_csv, "csv"),
                                       (_long_member_tar, "folder"), (_long_class_names_tar, "folder")],
                         ids=["csv-cell", "csv-header", "csv-label", "tar-member-name", "tar-class-names"])
def test_13_every_reader_bounds_what_its_messages_show(tmp_path, make, name):
    """Before: lines of 100 kB (a cell, a class name), 65 kB (a header), 5 to 10 kB (tar names)."""
    pytest.importorskip("PIL")
    _png(tmp_path / "ok.png")
    path, kw = make(tmp_path)
    with pytest.raises(ValueError) as e:
        load_dataset(name, data_dir=path, cache_dir=False, **kw)
    _one_line(e.value, path)


# ----- 14. caps on bytes read and pixels decoded, checked before reading or decoding -----------
# The caps are module constants of mixlab_lab.data._limits; the tests lower them (raising=False: before the
# caps existed, setting them changed nothing) so that small files exercise them.

def _caps(monkeypatch, **caps):
    from mixlab_lab.data import _limits
    for name, value in caps.items():
        monkeypatch.setattr(_limits, name, value, raising=False)


def _peak(fn):
    """Run ``fn`` (it must raise); return (the exception, peak bytes traced by tracemalloc)."""
    tracemalloc.start()
    try:
        with pytest.raises((ValueError, TypeError)) as e:
            fn()
        return e.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_14_idx_gz_with_trailing_zeros_is_read_no_further_than_the_cap(tmp_path, monkeypatch):
    d = _idx_set(tmp_path / "mn")
    raw = (d / IDX["x_train"]).read_bytes()
    (d / IDX["x_train"]).unlink()
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip, written in pieces: 16 MiB of zeros, 16 kB on disk
    parts = [comp.compress(raw)] + [comp.compress(bytes(1 << 20)) for _ in range(16)] + [comp.flush()]
    (d / (IDX["x_train"] + ".gz")).write_bytes(b"".join(parts))
    _caps(monkeypatch, MAX_FILE_BYTES=1 << 20)
    err, peak = _peak(lambda: load_dataset("mnist", data_dir=d, cache_dir=False))
    assert re.search(r"train-images-idx3-ubyte\.gz: .*trailing bytes", str(err)), str(err)
    _one_line(err, d / (IDX["x_train"] + ".gz"))
    assert peak < 4 << 20, peak  # before: the whole 16 MiB decompressed at once


def test_14_idx_plain_file_above_the_cap_is_refused_unread(tmp_path, monkeypatch):
    d = _idx_set(tmp_path / "mn")
    header = b"\x00\x00\x08\x03" + struct.pack(">III", 128, 256, 256)  # 8 MiB of images, sparse on disk
    with open(d / IDX["x_train"], "wb") as f:
        f.write(header)
        f.truncate(len(header) + 128 * 256 * 256)
    write_idx(d / IDX["y_train"], (np.arange(128) % 10).astype(np.uint8))
    _caps(monkeypatch, MAX_FILE_BYTES=1 << 20)
    err, peak = _peak(lambda: load_dataset("mnist", data_dir=d, cache_dir=False))
    assert re.search(r"train-images-idx3-ubyte: .*8388624 bytes .*above the limit of 1048576 bytes .*MAX_FILE_BYTES",
                     str(err)), str(err)
    assert peak < 4 << 20, peak  # the cache key's content hash reads 1 MiB blocks; the 8 MiB are never held


def test_14_idx_total_bytes_cap(tmp_path, monkeypatch):
    d = _idx_set(tmp_path / "mn")  # 316 + 20 + 166 + 14 bytes, read in this order
    _caps(monkeypatch, MAX_TOTAL_BYTES=500)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: .*502 bytes, above the limit of 500 bytes .*"
                                         r"MAX_TOTAL_BYTES") as e:
        load_dataset("mnist", data_dir=d, cache_dir=False)
    _one_line(e.value, d / IDX["x_test"])


def test_14_tar_members_under_the_file_cap_but_over_the_total(tmp_path, monkeypatch):
    """Before: a 735 kB tar.gz of twelve 60 MiB members reached 1.35 GB; here twelve 512 KiB members."""
    tar = tmp_path / "t.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        for i in range(12):
            info = tarfile.TarInfo(f"t/{'ab'[i % 2]}/{i}.png")
            info.size = 512 << 10
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    _caps(monkeypatch, MAX_TOTAL_BYTES=2 << 20)
    err, peak = _peak(lambda: load_dataset("folder", data_dir=tar, cache_dir=False))
    assert re.search(r"t\.tar\.gz: member 't/a/4\.png': .*above the limit of 2097152 bytes .*MAX_TOTAL_BYTES", str(err)), \
        str(err)
    assert peak < 4 << 20, peak


def test_14_sparse_image_file_above_the_cap_is_refused_unread(tmp_path, monkeypatch):
    t = _tree_with(tmp_path, "ok.png", b"")
    (t / "a" / "ok.png").unlink()
    with open(t / "b" / "huge.jpg", "wb") as f:  # before: a 1.5 GB sparse .jpg was read whole
        f.truncate(8 << 20)
    _caps(monkeypatch, MAX_FILE_BYTES=1 << 20)
    err, peak = _peak(lambda: load_dataset("folder", data_dir=t, cache_dir=False))
    assert re.search(r"image file .*/t/b/huge\.jpg: 8388608 bytes .*above the limit of 1048576 bytes .*MAX_FILE_BYTES",
                     str(err)), str(err)
    assert peak < 4 << 20, peak  # the cache key's content hash reads 1 MiB blocks; the 8 MiB are never held


def test_14_pixels_per_image_cap(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    buf = io.BytesIO()
    from PIL import Image
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(buf, format="PNG")
    t = _tree_with(tmp_path, "big.png", buf.getvalue())
    _caps(monkeypatch, MAX_IMAGE_PIXELS=10_000)
    with pytest.raises(ValueError, match=r"image .*/t/a/big\.png: 200x200 = 40000 pixels, above the limit of 10000 "
                                         r"pixels per image \(mixlab_lab\.data\._limits\.MAX_IMAGE_PIXELS\)") as e:
        load_dataset("folder", data_dir=t, cache_dir=False)
    _one_line(e.value, "big.png")


def test_14_pixel_caps_from_the_headers(tmp_path):
    """Before: ten 9000x9000 PNGs (0.9 MB on disk) took 2.9 GB, then a 10 GB allocation failed. Here PNG
    headers claiming those sizes (no pixel data), refused from the headers with the default caps."""
    pytest.importorskip("PIL")
    for i in range(10):  # 81 million pixels each: under Pillow's bomb limit, over MAX_IMAGE_PIXELS
        (tmp_path / "t" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / "ab"[i % 2] / f"{i}.png").write_bytes(_png_header(9000, 9000))
    with pytest.raises(ValueError, match=r"image .*/t/a/0\.png: 9000x9000 = 81000000 pixels, above the limit of "
                                         r"33554432 pixels per image \(mixlab_lab\.data\._limits\.MAX_IMAGE_PIXELS\)"):
        load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False)
    for i in range(12):  # 25 million pixels each: the 11th (in sorted order: b/7) passes 2**28 in all
        (tmp_path / "u" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "u" / "ab"[i % 2] / f"{i}.png").write_bytes(_png_header(5000, 5000))
    with pytest.raises(ValueError, match=r"image .*/u/b/7\.png: its 5000x5000 pixels bring the images to 275000000 "
                                         r"pixels, above the limit of 268435456 pixels per dataset "
                                         r"\(mixlab_lab\.data\._limits\.MAX_TOTAL_PIXELS\)") as e:
        load_dataset("folder", data_dir=tmp_path / "u", cache_dir=False)
    _one_line(e.value, "7.png")


def test_14_total_pixels_after_resizing_to_the_common_size(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    for i in range(3):
        _png(tmp_path / "t" / "a" / f"{i}.png", size=(100, 100))
    for i in range(2):
        _png(tmp_path / "t" / "b" / f"{i}.png", size=(1, 1))
    _caps(monkeypatch, MAX_TOTAL_PIXELS=40_000)  # 30002 pixels as stored, 5 x 100 x 100 once resized
    with pytest.raises(ValueError, match=r"image folder .*/t: 5 images resized to the most common size 100x100 make "
                                         r"50000 pixels, above the limit of 40000 .*MAX_TOTAL_PIXELS") as e:
        load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False)
    _one_line(e.value, tmp_path / "t")


def test_14_decompressed_archive_cap(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    t = _tree_with(tmp_path, "ok.png", b"")
    (t / "a" / "ok.png").unlink()
    (t / "notes.bin").write_bytes(bytes(4 << 20))  # not an image: skipped, but decompressed all the same
    tar = tmp_path / "t.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(t, arcname="t")
    _caps(monkeypatch, MAX_ARCHIVE_BYTES=1 << 20)
    with pytest.raises(ValueError, match=r"t\.tar\.gz: member 't/notes\.bin' ends \d+ bytes into the decompressed "
                                         r"archive, above the limit of 1048576 bytes .*MAX_ARCHIVE_BYTES") as e:
        load_dataset("folder", data_dir=tar, cache_dir=False)
    _one_line(e.value, tar)


def test_14_csv_file_cap(tmp_path, monkeypatch):
    path = _csv(tmp_path / "t.csv", "a,y", [f"{i},{i % 2}" for i in range(100)])
    _caps(monkeypatch, MAX_FILE_BYTES=100)
    with pytest.raises(ValueError, match=r"CSV .*t\.csv: \d+ bytes .*above the limit of 100 bytes .*MAX_FILE_BYTES"):
        load_dataset("csv", data_dir=path, cache_dir=False)


def test_14_cifar_total_bytes_cap(tmp_path, monkeypatch):
    c = _cifar(tmp_path / "c")  # six batches of about 12.5 kB
    _caps(monkeypatch, MAX_TOTAL_BYTES=40_000)
    with pytest.raises(ValueError, match=r"CIFAR file .*data_batch_4: .*above the limit of 40000 bytes .*"
                                         r"MAX_TOTAL_BYTES") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)
    _one_line(e.value, c / "data_batch_4")


# ----- 15. the class count comes from the labels present --------------------------------------

def test_15_cifar_meta_listing_more_names_than_the_labels_use_is_trimmed(tmp_path):
    """Before: a batches.meta of 100 names gave a 100-class model for data labelled 0..3."""
    c = _cifar(tmp_path / "c", meta={"label_names": [f"n{i}" for i in range(100)]})  # labels 0..3
    with pytest.warns(UserWarning, match=r"batches\.meta: lists 100 class names \(label_names\) but the labels of "
                                         r"the batches are 0\.\.3; the class count is 4, taken from the labels"):
        d = load_dataset("cifar10", data_dir=c, cache_dir=tmp_path / "cache")
    assert d.num_classes == 4 and d.classes == ["n0", "n1", "n2", "n3"]
    with pytest.warns(UserWarning, match=r"lists 100 class names"):  # said again when read from the cache
        assert load_dataset("cifar10", data_dir=c, cache_dir=tmp_path / "cache").num_classes == 4


def test_15_cifar_default_names_follow_the_labels(tmp_path):
    c = _cifar(tmp_path / "c", labels={n: [0, 1, 2, 5] for n in _CIFAR_NAMES})
    d = load_dataset("cifar10", data_dir=c, cache_dir=False)
    assert d.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog"]  # before: all 10 names


def test_15_idx_default_names_follow_the_labels(tmp_path):
    d = _idx_set(tmp_path / "mn", y_train=(np.arange(12) % 5).astype(np.uint8),
                 y_test=(np.arange(6) % 5).astype(np.uint8))
    out = load_dataset("fashion-mnist", data_dir=d, cache_dir=False)
    assert out.num_classes == 5 and out.classes[-1] == "Coat"  # before: 10 classes, 5 of them never seen


# ----- 16. CSV files: encodings, binary files, fields over csv's size limit ---------------------

_CSV_TEXT = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n9,10,café\n11,12,café\n"


@pytest.mark.parametrize("content,shown", [
    (_CSV_TEXT.encode("utf-16"), r"UTF-16 text \(it starts with a UTF-16 byte-order mark\); save it as UTF-8"),
    (_CSV_TEXT.encode("utf-16-le"), r"holds NUL bytes \(the first at offset 1, line 1\): a binary file, or UTF-16/32 text"),
    (_CSV_TEXT.encode("latin-1"), r"not UTF-8 text: byte 0xe9 at offset 42 \(line 6\) is not valid UTF-8 \(Latin-1 or "
                                  r"Windows-1252 text\?\); save it as UTF-8"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, r"holds NUL bytes .*a binary file"),
    (b"a,b\n" + b"1," + b"9" * 200_000 + b"\n3,4\n", r"line 2: a field longer than 131072 characters \(the csv "
                                                      r"module's field_size_limit\)"),
], ids=["utf-16", "utf-16-no-bom", "latin-1", "binary", "long-field"])
def test_16_csv_that_is_not_utf8_text_is_refused_naming_the_file(tmp_path, content, shown):
    """Before: a _csv.Error traceback (long field) or a UnicodeDecodeError without the file name."""
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"CSV .*t\.csv: {shown}") as e:
        load_dataset("csv", data_dir=path, cache_dir=False)
    assert not isinstance(e.value, UnicodeError)
    _one_line(e.value, path)


def test_16_csv_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(_CSV_TEXT.replace("x", "é").encode("utf-8-sig"))
    d = load_dataset("csv", data_dir=path, cache_dir=False, test_fraction=0.5)
    assert d.classes == ["café", "y", "é"] and d.input_shape == (2,)


# ----- 17. a missing CIFAR batch is named ------------------------------------------------------

@pytest.mark.parametrize("sub", [False, True])
def test_17_missing_cifar_batch_is_named(tmp_path, sub):
    """Before: "dataset 'cifar10' not found; looked in: ..." without the missing file's name."""
    from mixlab_lab.data import list_datasets
    folder = tmp_path / "c" / "cifar-10-batches-py" if sub else tmp_path / "c"
    _cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=rf"CIFAR batches in .*: {re.escape(str(folder / 'data_batch_3'))} is "
                                                r"missing \(expected data_batch_1\.\.5 and test_batch") as e:
        load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=False)
    _one_line(e.value, folder / "data_batch_3")
    row = {r["name"]: r for r in list_datasets(tmp_path / "c")}["cifar10"]
    assert row["present"] and row["location"] == str(tmp_path / "c")  # found, unreadable (as a truncated tarball)


# ----- 18. a full disk: the cache goes on without caching; other writes name the file ----------

def _run_with_file_size_limit(code: str, limit: int, *args) -> "subprocess.CompletedProcess":
    """Run ``code`` in a fresh interpreter whose files may not grow past ``limit`` bytes (RLIMIT_FSIZE:
    writes past it fail with EFBIG, as on a full disk; Python ignores the SIGXFSZ signal)."""
    import subprocess
    import sys
    prelude = (f"import resource, sys\nimport mixlab_lab.data.datasets, mixlab_lab.data._idx\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n")
    return subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_18_full_cache_disk_means_no_cache(tmp_path):
    """Before: RuntimeError: basic_ios::clear: iostream error (a torch traceback) and a .tmp left in the cache."""
    d = _idx_set(tmp_path / "mn")
    code = ("from mixlab_lab.data import load_dataset\n"
            "for _ in range(2):\n"
            "    print(load_dataset('mnist', data_dir=sys.argv[1], cache_dir=sys.argv[2]).x_train.shape[0])\n")
    run = _run_with_file_size_limit(code, 1000, d, tmp_path / "cache")  # a cache entry here is ~2.5 kB
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["12", "12"]
    warned = [line for line in run.stderr.splitlines() if "UserWarning" in line]
    assert len(warned) == 1 and "cannot write to the cache" in warned[0] and str(tmp_path / "cache") in warned[0], \
        run.stderr[-3000:]
    assert list((tmp_path / "cache").iterdir()) == []  # no .tmp, no partial entry


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                                                "failed writing file data/0: file write failed")])
def test_18_failed_cache_write_warns_once_and_leaves_nothing(tmp_path, monkeypatch, error):
    d = _idx_set(tmp_path / "mn")

    def save(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half an entry")
        raise error
    monkeypatch.setattr(_cache.torch, "save", save)
    monkeypatch.setattr(_cache, "_WARNED", set(), raising=False)
    with pytest.warns(UserWarning, match=r"cannot write to the cache .*cache.*continuing without it") as w:
        for _ in range(3):
            assert load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "cache").x_train.shape[0] == 12
    assert len([x for x in w if "cache" in str(x.message)]) == 1
    assert list((tmp_path / "cache").iterdir()) == []


def test_18_write_idx_on_a_full_disk_names_the_file(tmp_path):
    """Before: OSError: [Errno 27] File too large as a traceback naming no file, and big.gz.tmp left."""
    code = ("import numpy as np\nfrom mixlab_lab.data._idx import write_idx\n"
            "try:\n    write_idx(sys.argv[1], np.arange(1 << 16, dtype=np.int32))\n"
            "except ValueError as e:\n    print(isinstance(e, OSError), e); sys.exit(3)\n")
    path = tmp_path / "big.idx"
    run = _run_with_file_size_limit(code, 4096, path)
    assert run.returncode == 3, run.stderr[-3000:]
    is_oserror, _, message = run.stdout.strip().partition(" ")
    assert is_oserror == "True"
    _one_line(message, path, "File too large")
    assert list(tmp_path.iterdir()) == []


# ----- 19. refused or broken pickles anywhere in mixlab.data: one line, or a rebuilt cache -----

class _EncodeWithUnknownHandler:
    def __reduce__(self):  # _codecs.encode('€', 'latin1', 'no-such-handler'): a LookupError, not a ValueError
        return (codecs.encode, ("\u20ac", "latin1", "no-such-handler"))


def test_19_any_error_inside_the_cifar_unpickler_is_one_line(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_1").write_bytes(pickle.dumps({"data": _EncodeWithUnknownHandler(), "labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: not a readable pickle \(LookupError: ") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)  # before: a LookupError traceback
    _one_line(e.value, c / "data_batch_1")


@pytest.mark.parametrize("pkl", [
    b"\x80\x02cbuiltins\neval\n.",   # refused by torch's weights_only unpickler (a multi-line UnpicklingError)
    b"\x80\x02j\xff\xff\x00\x00.",    # a memo GET of nothing: KeyError
    b"\x80\x02(\x86.",                # TUPLE2 on an empty stack: IndexError
    b"\x80\x04}]K\x01s.",             # a list as a dict key: TypeError (and a UserWarning about protocol 4)
    b"\x80\x02]" + b"]" * 1000 + b".",  # loads, but is not an entry
], ids=["refused", "keyerror", "indexerror", "typeerror", "not-an-entry"])
def test_19_a_cache_entry_that_does_not_unpickle_is_rebuilt(tmp_path, pkl):
    import zipfile
    d = _idx_set(tmp_path / "mn")
    first = load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.pt")
    with zipfile.ZipFile(entry) as src:
        members = {n: src.read(n) for n in src.namelist()}
    with zipfile.ZipFile(entry, "w", zipfile.ZIP_STORED) as dst:
        for n, data in members.items():
            dst.writestr(n, pkl if n.endswith("data.pkl") else data)
    again = load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "cache")  # before: KeyError, IndexError...
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
    assert torch.equal(torch.load(entry, weights_only=True)["x_train"], first.x_train[:, :])  # rewritten


# ----- 20. damaged archives, and a seeded fuzz of every reader --------------------------------

def _cifar_tar(tmp_path):
    c = _cifar(tmp_path / "src" / "cifar-10-batches-py")
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(c, arcname="cifar-10-batches-py")
    return tar


@pytest.mark.parametrize("keep", [30, 200])
def test_20_cifar_tarball_cut_inside_its_first_header(tmp_path, keep):
    """Before: EOFError: Compressed file ended before the end-of-stream marker was reached (a traceback
    from tarfile.is_tarfile, which raises for a damaged gzip stream)."""
    tar = _cifar_tar(tmp_path)
    tar.write_bytes(tar.read_bytes()[:keep])
    with pytest.raises(ValueError, match=r"tarball .*cifar-10-python\.tar\.gz: corrupt or truncated") as e:
        load_dataset("cifar10", data_dir=tar, cache_dir=False)
    _one_line(e.value, tar)


def test_20_cifar_tarball_failing_its_gzip_crc_is_refused(tmp_path):
    """Before: loaded, with the changed pixel: the gzip stream was not read to its CRC."""
    tar = _cifar_tar(tmp_path)
    good = tar.read_bytes()
    import gzip
    raw = bytearray(gzip.decompress(good))
    at = raw.index(b"\x02" * 64, raw.index(b"data_batch_3"))  # the pixels of data_batch_3 (all 2)
    raw[at + 10] = 3  # one pixel changed: the batch still unpickles
    tar.write_bytes(gzip.compress(bytes(raw), mtime=0)[:-8] + good[-8:])  # the original CRC and size
    with pytest.raises(ValueError, match=r"CIFAR tarball .*: corrupt or truncated \(BadGzipFile: CRC check failed"):
        load_dataset("cifar10", data_dir=tar, cache_dir=False)


def _mutate(rng, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(b[:rng.randrange(len(b))])  # cut
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(300)))  # junk
    i = rng.randrange(len(b))
    if kind == 2:
        return bytes(b[:i] + b[i + rng.randint(1, 50):])  # a run deleted
    if kind == 3:
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))) + b[i:])  # inserted
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.randrange(256)  # bytes changed
    return bytes(b)


def _fuzz_case(tmp_path, kind):
    """A small valid dataset of ``kind``: ``(load_dataset kwargs, files that may be damaged)``."""
    if kind in ("idx", "idx.gz"):
        d = tmp_path / "mn"
        d.mkdir()
        for role, a in (("x_train", np.arange(300, dtype=np.uint8).reshape(12, 5, 5)),
                        ("y_train", (np.arange(12) % 10).astype(np.uint8)),
                        ("x_test", np.arange(150, dtype=np.uint8).reshape(6, 5, 5)),
                        ("y_test", (np.arange(6) % 10).astype(np.uint8))):
            write_idx(d / (IDX[role] + (".gz" if kind == "idx.gz" else "")), a)
        return {"name": "mnist", "data_dir": d}, sorted(d.iterdir())
    if kind == "cifar":
        c = _cifar(tmp_path / "c", meta={"label_names": list("abcd")})
        return {"name": "cifar10", "data_dir": c}, sorted(c.iterdir())
    if kind == "cifar.tar.gz":
        tar = _cifar_tar(tmp_path)
        return {"name": "cifar10", "data_dir": tar}, [tar]
    if kind in ("png", "jpeg", "tar", "tar.gz"):
        from PIL import Image
        for split in ("train", "test"):
            for c in "ab":
                for i in range(2):
                    p = tmp_path / "t" / split / c / f"{i}.{'jpg' if kind == 'jpeg' else 'png'}"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(p, format=kind.upper() if kind in
                                                                                    ("png", "jpeg") else "PNG")
        if kind in ("png", "jpeg"):
            return {"name": "folder", "data_dir": tmp_path / "t"}, sorted(p for p in (tmp_path / "t").rglob("*.*"))
        tar = tmp_path / f"t.{kind}"
        with tarfile.open(tar, "w:gz" if kind == "tar.gz" else "w") as tf:
            tf.add(tmp_path / "t", arcname="t")
        return {"name": "folder", "data_dir": tar}, [tar]
    path = _csv(tmp_path / "t.csv", "a,b,label", [f"{i},{2 * i},{'xyz'[i % 3]}" for i in range(30)])
    return {"name": "csv", "data_dir": path}, [path]


@pytest.mark.parametrize("kind", ["idx", "idx.gz", "cifar", "cifar.tar.gz", "png", "jpeg", "tar", "tar.gz", "csv"])
def test_20_every_damaged_file_is_one_line_naming_it_or_loads(tmp_path, kind):
    """Seeded damage (cuts, junk, deleted / inserted runs, changed bytes) to one file of a valid
    dataset: it loads (the damage left a valid file) or fails with one short line naming the file."""
    import random
    pytest.importorskip("PIL")
    from mixlab_lab.cli import _raised_by_mixlab
    rng = random.Random(kind)
    for case in range(12):
        root = tmp_path / str(case)
        root.mkdir()
        kwargs, files = _fuzz_case(root, kind)
        victim = rng.choice(files)
        victim.write_bytes(_mutate(rng, victim.read_bytes()))
        try:
            load_dataset(**kwargs, cache_dir=False)
        except (ValueError, TypeError, FileNotFoundError) as e:
            assert not isinstance(e, TypeError) or _raised_by_mixlab(e), e
            _one_line(e, victim)


# ----- the CLI: each kind of bad file above is one line, "mixlab: <message>", status 2 ---------

def _bad_float_tiff(tmp_path):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 3.5, np.float32)).save(buf, format="TIFF")
    return "folder", _tree_with(tmp_path, "odd.tif", buf.getvalue()), "odd.tif"


def _deep_key_cifar(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_2").write_bytes(_batch_with_extra_item(_shared_tuples(64)))
    return "cifar10", c, c / "data_batch_2"


def _lookup_error_cifar(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_1").write_bytes(pickle.dumps({"data": _EncodeWithUnknownHandler(), "labels": [0]}, protocol=2))
    return "cifar10", c, c / "data_batch_1"


def _missing_batch(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "test_batch").unlink()
    return "cifar10", c, c / "test_batch"


def _utf16_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(_CSV_TEXT.encode("utf-16"))
    return "csv", path, path


def _long_field_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n" + b"1," + b"9" * 200_000 + b"\n3,4\n")
    return "csv", path, path


def _cut_cifar_tar(tmp_path):
    tar = _cifar_tar(tmp_path)
    tar.write_bytes(tar.read_bytes()[:30])
    return "cifar10", tar, tar


def _bomb_headers(tmp_path):
    for i in range(4):
        (tmp_path / "t" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / "ab"[i % 2] / f"{i}.png").write_bytes(_png_header(9000, 9000))
    return "folder", tmp_path / "t", "0.png"


@pytest.mark.parametrize("make", [_bad_float_tiff, _deep_key_cifar, _lookup_error_cifar, _missing_batch, _utf16_csv,
                                  _long_field_csv, _cut_cifar_tar, _bomb_headers],
                         ids=["float-tiff", "deep-pickle", "lookup-error-pickle", "missing-batch", "utf16-csv",
                              "long-field-csv", "cut-cifar-tar", "9000x9000-headers"])
def test_cli_prints_one_line_naming_the_bad_file(tmp_path, capsys, make):
    pytest.importorskip("PIL")
    from mixlab_lab.cli import main
    name, data_dir, victim = make(tmp_path)
    rc = main(["preview", "--dataset", name, "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"),
               "--out", str(tmp_path / "mixed.png")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("mixlab: "), err[-2000:]
    _one_line(err.strip(), victim)


def test_13_a_label_of_5000_digits_is_named_not_printed(tmp_path):
    c = _cifar(tmp_path / "c")
    (c / "data_batch_2").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10 ** 5000]},
                                                  protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_2: a label does not fit in int64 \(range 0\.\.<int of 16610 "
                                         r"bits>\)") as e:
        load_dataset("cifar10", data_dir=c, cache_dir=False)  # before: "Exceeds the limit (4300 digits) for integer
    _one_line(e.value, c / "data_batch_2")                    # string conversion", naming no file


def test_13_a_flood_of_empty_lists_costs_no_more_than_the_lists(tmp_path, monkeypatch):
    """Each opcode counts against MAX_PICKLE_WORK; the bookkeeping of containers must not multiply the
    memory an opcode flood takes (before: ~230 bytes more per empty list, 460 MB at the 2 million cap)."""
    monkeypatch.setattr(cifar_mod, "MAX_PICKLE_WORK", 200_000)
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02" + b"]" * 300_000 + b".")  # EMPTY_LIST, 300,000 times
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"data_batch_1: more than 200000 objects built"):
            cifar_mod.safe_load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 25 << 20, peak  # the 200,000 lists themselves: about 13 MB
