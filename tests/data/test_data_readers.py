"""File readers on tiny files written here: IDX, CIFAR pickles (safe unpickler), image trees, csv, cache."""
from __future__ import annotations

import gzip
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixlab_lab.data import load_dataset
from mixlab_lab.data._idx import read_idx, write_idx
from mixlab_lab.data._cifar import safe_load


def _write_idx_set(folder, n_train=12, n_test=6, size=5, gz=True):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        write_idx(folder / (stem + ext), a)
    return arrays


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4) if dtype != np.uint8 else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]), seed=st.integers(0, 1000))
def test_idx_round_trip_property(tmp_path_factory, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / "a.gz"
    write_idx(path, a)
    b = read_idx(path)
    assert b.shape == a.shape and b.dtype == a.dtype and np.array_equal(a, b)


def test_idx_header_bytes_exact(tmp_path):
    write_idx(tmp_path / "l", np.array([1, 2, 3], dtype=np.uint8))
    assert (tmp_path / "l").read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"


def test_idx_truncated_and_bad_magic(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 3, 3), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"short.*needs 36 data bytes, found 31 \(truncated\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match="magic.*bad magic number 0x0102"):
        read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07" + raw[3:])
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(tmp_path / "code")
    (tmp_path / "hdr").write_bytes(raw[:6])
    with pytest.raises(ValueError, match="header says 3 dimensions"):
        read_idx(tmp_path / "hdr")
    gz = gzip.compress(raw)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_via_load_dataset(tmp_path, gz):
    arrays = _write_idx_set(tmp_path / "mn", gz=gz)
    d = load_dataset("mnist", data_dir=tmp_path / "mn", cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (12, 1, 5, 5) and d.x_test.shape == (6, 1, 5, 5) and d.num_classes == 10
    assert np.array_equal(d.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    again = load_dataset("mnist", data_dir=tmp_path / "mn", cache_dir=tmp_path / "cache")  # from the cache
    assert torch.equal(again.x_train, d.x_train) and len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_cache_invalidated_by_source_change_and_corrupt_entry_rebuilt(tmp_path, monkeypatch):
    arrays = _write_idx_set(tmp_path / "mn")
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "envcache"))
    d = load_dataset("mnist", data_dir=tmp_path / "mn")  # default cache dir from $MIXLAB_CACHE
    (entry,) = (tmp_path / "envcache").glob("*.pt")
    entry.write_bytes(b"garbage")  # a corrupt entry is ignored and rewritten
    assert torch.equal(load_dataset("mnist", data_dir=tmp_path / "mn").x_train, d.x_train)
    assert entry.read_bytes() != b"garbage"
    new = arrays["train-images-idx3-ubyte"] ^ 0xFF
    path = tmp_path / "mn" / "train-images-idx3-ubyte.gz"
    before = path.stat().st_mtime_ns
    write_idx(path, new)  # new content and a later mtime: a new cache key
    os.utime(path, ns=(before + 10**9, before + 10**9))
    d2 = load_dataset("mnist", data_dir=tmp_path / "mn")
    assert np.array_equal(d2.x_train[:, 0].numpy(), new)


def test_idx_corrupt_file_in_dataset_names_it(tmp_path):
    _write_idx_set(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "fm", cache_dir=False)


def test_idx_label_count_mismatch(tmp_path):
    _write_idx_set(tmp_path / "k", gz=False)
    write_idx(tmp_path / "k" / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="expected 12 labels"):
        load_dataset("kmnist", data_dir=tmp_path / "k", cache_dir=False)


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "kmnist", "cifar10", "folder"])
def test_wrong_data_dir_says_where_and_how(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, data_dir=missing)
    assert str(missing) in str(e.value) and "To get it" in str(e.value)
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in str(e.value)


# ----- CIFAR pickles -------------------------------------------------------------------------

def _write_cifar(folder, per_batch=4, protocol=2, bytes_keys=False):
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = np.full((per_batch, 3072), i * 10, dtype=np.uint8)
        data[:, 0] = np.arange(per_batch)  # first red pixel = row number
        labels = [(i + j) % 8 for j in range(per_batch)]  # every test class also in training (0..7)
        d = {b"data": data, b"labels": labels} if bytes_keys else {"data": data, "labels": labels,
                                                                     "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
        made[name] = (data, labels)
    return made


@pytest.mark.parametrize("protocol,bytes_keys,sub", [(2, False, False), (4, True, False), (5, False, True)])
def test_cifar_pickles_train_from_data_batches_test_from_test_batch(tmp_path, protocol, bytes_keys, sub):
    folder = tmp_path / "c" / "cifar-10-batches-py" if sub else tmp_path / "c"
    made = _write_cifar(folder, protocol=protocol, bytes_keys=bytes_keys)
    d = load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.classes[0] == "airplane" and d.num_classes == 8  # labels 0..7: the class count follows them
    # train rows come from batches 1..5 in order (fill values 0, 10, .., 40), test from test_batch (50)
    assert d.x_train[:, 1, 0, 0].tolist() == [v for i in range(5) for v in [i * 10] * 4]
    assert d.x_test[:, 1, 0, 0].tolist() == [50] * 4 and d.x_test[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert d.y_train.tolist() == [lab for k in range(1, 6) for lab in made[f"data_batch_{k}"][1]]
    assert d.y_test.tolist() == made["test_batch"][1]
    expected = np.concatenate([made[f"data_batch_{k}"][0] for k in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(d.x_train.numpy(), expected)


def test_cifar_pickles_inside_official_style_tarball(tmp_path):
    made = _write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    (tmp_path / "src" / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, protocol=2))
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.warns(UserWarning, match="lists 10 class names .* the class count is 8"):  # labels 0..7
        d = load_dataset("cifar10", data_dir=tar, cache_dir=False)
    assert d.classes == [f"c{i}" for i in range(8)] and d.x_train.shape == (20, 3, 32, 32)
    assert d.y_test.tolist() == made["test_batch"][1] and d.x_test[:, 1, 0, 0].tolist() == [50] * 4


def test_cifar_truncated_tarball(tmp_path):
    _write_cifar(tmp_path / "src" / "cifar-10-batches-py", per_batch=200)
    tar = tmp_path / "full.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    cut = tmp_path / "cifar-10-python.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size * 2 // 3])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_dataset("cifar10", data_dir=cut, cache_dir=False)
    from mixlab_lab.data import list_datasets
    assert {r["name"]: r for r in list_datasets(cut)}["cifar10"]["present"] is True  # found, unreadable


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("cls", [_Evil, _EvalEvil])
def test_crafted_pickle_refused_without_running(tmp_path, cls):
    marker = tmp_path / "pwned"
    _write_cifar(tmp_path / "c")
    evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": cls(marker)}
    (tmp_path / "c" / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="data_batch_3.*refusing to load"):
        load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=False)
    assert not marker.exists()
    # sanity: the same bytes do run code through plain pickle (so the test would catch a regression)
    pickle.loads((tmp_path / "c" / "data_batch_3").read_bytes())
    assert marker.exists()


def test_cifar_malformed_batches(tmp_path):
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8),
                                                              "labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"test_batch: expected uint8 data \(n, 3072\)"):
        load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=False)
    (tmp_path / "c" / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises((ValueError, pickle.UnpicklingError), match="test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=False)


def test_safe_load_plain_types(tmp_path):
    obj = {"a": [1, 2.5, "s", b"b", (1, 2)], "n": None, "t": True}
    (tmp_path / "p").write_bytes(pickle.dumps(obj, protocol=2))
    assert safe_load(tmp_path / "p") == obj


@pytest.mark.parametrize("content, message", [
    (pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Evil("/nonexistent/pwned")},
                  protocol=2), r"test_batch: refusing to load posix\.system: a CIFAR batch holds only"),
    (b"not a pickle at all", r"test_batch: "),
])
def test_refused_cifar_pickles_are_data_errors(tmp_path, content, message):
    """A refused or unreadable pickle is a ValueError, like every other bad data file (the lab's one-line
    errors), and still a pickle.UnpicklingError for callers that catch that."""
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=message) as e:
        load_dataset("cifar10", data_dir=tmp_path / "c", cache_dir=False)
    assert str(tmp_path / "c" / "test_batch") in str(e.value)
    with pytest.raises(ValueError, match=message):
        safe_load(tmp_path / "c" / "test_batch")


# ----- mixlab_lab.data._limits: bounded text, capped archives ---------------------------------------

def test_short_repr_is_bounded_in_time_and_length_on_shared_structures():
    import time

    from mixlab_lab.data._limits import clip, short_list, short_name, short_repr
    t = ()
    for _ in range(64):
        t = (t, t)  # 2**64 leaves: repr() or hash() would never return
    v = [0] * 1000
    for _ in range(3):
        v = [v] * 1000
    start = time.perf_counter()
    texts = [short_repr(t), short_repr(v), short_repr({"k" * 10_000: b"\x00" * 10**6}), short_repr(7 ** 100_000),
             short_list(iter(range(10**9))), short_name("d/" * 10_000 + "data_batch_1"), clip("a\nb " * 10**6)]
    assert time.perf_counter() - start < 1
    assert all(len(s) <= 420 and "\n" not in s for s in texts), [len(s) for s in texts]
    assert texts[3] == "<int of 280736 bits>" and texts[5].endswith("/data_batch_1")


def test_tar_extended_header_above_the_cap_is_refused(tmp_path, monkeypatch):
    from mixlab_lab.data import _limits
    src = tmp_path / "t" / "a"
    src.mkdir(parents=True)
    (src / "x.png").write_bytes(b"not read")
    tar = tmp_path / "t.tar.gz"
    with tarfile.open(tar, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        tf.add(src / "x.png", arcname="t/a/" + "n" * 5000 + ".png")  # a GNU long-name header of 5009 bytes
    monkeypatch.setattr(_limits, "MAX_TAR_HEADER_BYTES", 1000)
    with pytest.raises(ValueError, match=r"tarball .*t\.tar\.gz: corrupt or truncated \(HeaderError: an extended header "
                                         r"\(names, attributes\) of 5009 bytes, above the limit of 1000 bytes"):
        load_dataset("folder", data_dir=tar, cache_dir=False)


def test_is_tarball_never_raises(tmp_path):
    from mixlab_lab.data._limits import is_tarball
    src = tmp_path / "f.txt"
    src.write_text("x")
    with tarfile.open(tmp_path / "ok.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="f.txt")
    data = (tmp_path / "ok.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[:30])  # tarfile.is_tarfile raises EOFError here
    (tmp_path / "junk").write_bytes(os.urandom(600))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n"))  # gzip, but no archive inside
    assert [is_tarball(tmp_path / n) for n in ("ok.tar.gz", "cut.tar.gz", "junk", "empty", "csv.gz", "f.txt")] \
        == [True, True, False, False, True, False]
    assert is_tarball(tmp_path) is False and is_tarball(tmp_path / "missing") is False


def test_read_idx_shares_a_byte_budget(tmp_path, monkeypatch):
    from mixlab_lab.data import _limits
    write_idx(tmp_path / "a", np.zeros((10, 10), np.uint8))  # 4 + 8 + 100 bytes
    monkeypatch.setattr(_limits, "MAX_TOTAL_BYTES", 200)
    budget = _limits.ByteBudget()
    assert read_idx(tmp_path / "a", budget).shape == (10, 10) and budget.total == 112
    with pytest.raises(ValueError, match=r"IDX file .*a: its 112 bytes bring the data read to 224 bytes, above the "
                                         r"limit of 200 bytes"):
        read_idx(tmp_path / "a", budget)


def test_decode_images_of_nothing_is_a_value_error():
    pytest.importorskip("PIL")
    from mixlab_lab.data._images import decode_images
    with pytest.raises(ValueError, match="images: no images to decode"):  # before: IndexError
        decode_images([], [])


def test_read_capped_refuses_a_file_that_grows_while_read(tmp_path, monkeypatch):
    from mixlab_lab.data import _limits
    path = tmp_path / "f.png"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat
    monkeypatch.setattr(_limits.os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 5, *real_fstat(fd)[7:])))
    with pytest.raises(ValueError, match=r"image file f\.png: grew while it was read \(it had 5 bytes\)"):
        _limits.read_capped(path, "image file f.png")
