"""Image trees, tarballs, regex labels and CSV files written here."""
from __future__ import annotations

import re
import tarfile

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")

from mixlab_lab.data import load_dataset  # noqa: E402


def _png(path, value, size=(6, 4), mode="RGB"):
    """A flat image whose first channel is ``value``, so the test can recognise it after decoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = np.full(shape, 200, np.uint8)
    if mode == "RGB":
        arr[..., 0] = value
    else:
        arr[...] = value
    Image.fromarray(arr).save(path, format="PNG")  # PNG whatever the suffix: lossless


def _tree(root, top="pics", splits=("train", "test"), classes=("cat", "dog", "ant"), n=3):
    """``root/top/{split}/{class}/{i}.png`` with red value 10*class_index + i (+100 for test)."""
    for s in splits:
        for ci, c in enumerate(classes):
            for i in range(n):
                _png(root / top / s / c / f"{i:04d}.png", 10 * ci + i + (100 if s != "train" else 0))
    return root / top


def test_image_tarball_read(tmp_path):
    tree = _tree(tmp_path / "src")
    _png(tree / "cover.png", 0)  # a stray image beside the split folders is ignored
    tar = tmp_path / "pics.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tree, arcname="pics")
    d = load_dataset("folder", data_dir=tar, cache_dir=tmp_path / "cache")
    assert d.classes == ["ant", "cat", "dog"]  # sorted folder names
    assert d.x_train.shape == (9, 3, 4, 6) and d.x_test.shape == (9, 3, 4, 6) and d.x_train.dtype == torch.uint8
    # class 'cat' was written with index 0 -> red values 0,1,2 and label 1 (sorted order)
    red = d.x_train[:, 0, 0, 0]
    assert sorted(red[d.y_train == 1].tolist()) == [0, 1, 2]
    assert sorted(red[d.y_train == 0].tolist()) == [20, 21, 22]
    assert sorted(d.x_test[:, 0, 0, 0][d.y_test == 2].tolist()) == [110, 111, 112]
    assert bool((d.x_train[:, 1:] == 200).all())
    assert d.source.endswith("pics.tar.gz")
    cached = load_dataset("folder", data_dir=tar, cache_dir=tmp_path / "cache")
    assert torch.equal(cached.x_train, d.x_train) and len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_truncated_tarball_clear_error(tmp_path):
    tree = _tree(tmp_path / "src", n=20)
    tar = tmp_path / "pics.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tree, arcname="pics")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"tarball .*cut\.tar\.gz: corrupt or truncated"):
        load_dataset("folder", data_dir=cut, cache_dir=False)


def test_cifar10_from_image_tree_folder_with_valid_split(tmp_path):
    root = _tree(tmp_path, top="c10", splits=("train", "valid"), classes=("airplane", "truck"), n=2)
    _png(root / "preview.png", 0)  # stray files outside the split folders are ignored
    _png(root / "models" / "x" / "y.png", 0)
    d = load_dataset("cifar10", data_dir=root, cache_dir=False)
    assert d.classes == ["airplane", "truck"] and len(d.x_train) == 4 and len(d.x_test) == 4


def test_regex_labels_flat_folder(tmp_path):
    names = ["great_pyrenees_1.jpg", "great_pyrenees_20.jpg", "Abyssinian_3.jpg", "Abyssinian_4.jpg",
             "Abyssinian_5.jpg", "pug_7.jpg", "pug_8.jpg"]
    for i, n in enumerate(names):
        _png(tmp_path / "images" / n, 10 * i)
    d = load_dataset("folder", data_dir=tmp_path / "images", label_regex=r"^(.+)_\d+\.jpg$",
                     test_fraction=0.34, cache_dir=False, seed=0)
    assert d.classes == ["Abyssinian", "great_pyrenees", "pug"]
    assert len(d.x_train) + len(d.x_test) == 7 and len(d.x_test) == 1 + 1 + 1  # round(0.34 * n_c) each
    by_value = {10 * i: n.rsplit("_", 1)[0] for i, n in enumerate(names)}
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        for img, lab in zip(x, y):
            assert d.classes[int(lab)] == by_value[int(img[0, 0, 0])]


def test_regex_errors(tmp_path):
    _png(tmp_path / "im" / "a_1.jpg", 0)
    _png(tmp_path / "im" / "nolabel.jpg", 0)
    with pytest.raises(ValueError, match="does not match the file name 'nolabel.jpg'"):
        load_dataset("folder", data_dir=tmp_path / "im", label_regex=r"^(.+)_\d+\.jpg$", cache_dir=False)
    with pytest.raises(ValueError, match="label_regex .* not a valid regular expression"):
        load_dataset("folder", data_dir=tmp_path / "im", label_regex="(", cache_dir=False)


def test_class_tree_mixed_sizes_and_grey(tmp_path):
    for i in range(4):
        _png(tmp_path / "t" / "a" / f"{i}.png", i, size=(8, 8))
        _png(tmp_path / "t" / "b" / f"{i}.png", 50 + i, size=(8, 8), mode="L")
    _png(tmp_path / "t" / "b" / "odd.png", 99, size=(16, 12), mode="L")  # resized to the common 8x8
    d = load_dataset("folder", data_dir=tmp_path / "t", cache_dir=False, test_fraction=0.25)
    assert d.input_shape == (3, 8, 8) and len(d.x_train) + len(d.x_test) == 9
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    grey = x[y == 1]
    assert bool((grey[:, 0] == grey[:, 1]).all())  # grey images repeated over RGB
    assert 99 in grey[:, 0, 0, 0].tolist()


def test_all_grey_tree_has_one_channel(tmp_path):
    for c in "xy":
        for i in range(3):
            _png(tmp_path / "g" / "train" / c / f"{i}.png", i, mode="L")
            _png(tmp_path / "g" / "test" / c / f"{i}.png", i, mode="L")
    d = load_dataset("folder", data_dir=tmp_path / "g", cache_dir=False)
    assert d.input_shape == (1, 4, 6) and len(d.mean) == 1


def test_bad_layout_and_bad_image(tmp_path):
    _png(tmp_path / "deep" / "a" / "b" / "c" / "1.png", 0)
    _png(tmp_path / "deep" / "a" / "2.png", 0)
    with pytest.raises(ValueError, match="expected {train,test}/<class>/<file>"):
        load_dataset("folder", data_dir=tmp_path / "deep", cache_dir=False)
    (tmp_path / "bad" / "train" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "test" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "a" / "x.png").write_bytes(b"not a png")
    _png(tmp_path / "bad" / "test" / "a" / "y.png", 0)
    with pytest.raises(ValueError, match="x.png: cannot be decoded"):
        load_dataset("folder", data_dir=tmp_path / "bad", cache_dir=False)


def _csv(path, text):
    path.write_text(text)
    return path


def test_csv_string_labels_and_standardisation(tmp_path):
    rows = ["f1,f2,species"] + [f"{i},{2 * i % 7},{['b', 'a', 'c'][i % 3]}" for i in range(30)]
    path = _csv(tmp_path / "t.csv", "\n".join(rows) + "\n")
    d = load_dataset("csv", data_dir=path, seed=0)
    assert d.kind == "tabular" and d.classes == ["a", "b", "c"] and d.input_shape == (2,)
    assert len(d.x_train) == 24 and len(d.x_test) == 6 and d.x_train.dtype == torch.float32
    assert torch.allclose(d.x_train.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(2), atol=1e-5)
    # labels follow their rows: f1 = i and label = ['b', 'a', 'c'][i % 3] -> ids [1, 0, 2][i % 3]
    x = torch.cat([d.x_train, d.x_test])[:, 0]
    order = x.argsort()
    y = torch.cat([d.y_train, d.y_test])[order]
    assert y.tolist() == [[1, 0, 2][k % 3] for k in range(30)]
    assert torch.equal(load_dataset("csv", data_dir=path, seed=0).y_train, d.y_train)


def test_csv_label_column_by_name_and_suffix(tmp_path):
    path = _csv(tmp_path / "t.csv", "y,a,b\n" + "".join(f"{i % 2},{i},{i * i}\n" for i in range(20)))
    a = load_dataset("csv", data_dir=path, label_column="y")
    b = load_dataset("csv", data_dir=f"{path}::y")
    assert a.input_shape == (2,) and a.classes == ["0", "1"] and torch.equal(a.x_train, b.x_train)
    with pytest.raises(ValueError, match="label_column 'zz' is not in the header"):
        load_dataset("csv", data_dir=path, label_column="zz")
    with pytest.raises(ValueError, match="disagrees"):
        load_dataset("csv", data_dir=f"{path}::y", label_column="a")


def test_csv_semicolon_and_tab(tmp_path):
    for sep in (";", "\t"):
        text = sep.join(["a", "b", "label"]) + "\n" + "".join(
            sep.join([f"{i}.5", str(-i), "yes" if i % 2 else "no"]) + "\n" for i in range(10))
        d = load_dataset("csv", data_dir=_csv(tmp_path / "s.csv", text), test_fraction=0.2)
        assert d.input_shape == (2,) and d.classes == ["no", "yes"] and len(d.y_test) == 2


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"looked in: .*none\.csv\. To get it"):
        load_dataset("csv", data_dir=tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="To get it"):
        load_dataset("csv")
    bad = _csv(tmp_path / "b.csv", "a,b,label\n1,2,x\n3,oops,y\n")
    with pytest.raises(ValueError, match="row 3, feature column 'b': expected a number, got 'oops'"):
        load_dataset("csv", data_dir=bad)
    short = _csv(tmp_path / "s.csv", "a,b,label\n1,2\n")
    with pytest.raises(ValueError, match="row 2 has 2 fields"):
        load_dataset("csv", data_dir=short)


@pytest.mark.parametrize("mode, suffix", [("w:gz", "tar.gz"), ("w", "tar"), ("w:xz", "tar.xz")])
def test_a_tarball_cut_at_every_point_is_refused_never_read_in_part(tmp_path, mode, suffix):
    # a cut at a member boundary looks like a complete archive to tarfile: it must still be refused
    tree = _tree(tmp_path / "src", n=4)
    tar = tmp_path / f"pics.{suffix}"
    with tarfile.open(tar, mode) as tf:
        tf.add(tree, arcname="pics")
    data = tar.read_bytes()
    full = load_dataset("folder", data_dir=tar, cache_dir=tmp_path / "cache")
    refused = 0
    for i, frac in enumerate((0.2, 0.35, 0.5, 0.65, 0.8, 0.95)):
        cut = tmp_path / f"cut{i}.{suffix}"
        cut.write_bytes(data[: int(len(data) * frac)])
        try:
            part = load_dataset("folder", data_dir=cut, cache_dir=tmp_path / "cache")
        except ValueError as e:
            assert re.search("corrupt or truncated|no image files", str(e)), e
            refused += 1
            continue
        # only a cut inside the trailing padding of an uncompressed tar may load, and then nothing is lost
        assert len(part.y_train) == len(full.y_train) and len(part.y_test) == len(full.y_test)
    assert refused >= 5
