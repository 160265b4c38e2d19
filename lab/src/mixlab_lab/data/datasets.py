"""Real datasets for the lab: one call gives train/test tensors, class names and statistics.

>>> from mixlab_lab.data import load_dataset
>>> d = load_dataset("digits", classes=[3, 7], label_noise=0.2, seed=0)
>>> d.x_train.dtype, d.x_train.shape[1:], d.num_classes
(torch.uint8, torch.Size([1, 8, 8]), 2)

Images are uint8 ``(N, C, H, W)`` tensors decoded once and kept in memory (normalise them on
the fly with ``mean``/``std``); decoded image sets are cached on disk (see ``_cache.py``).
Tabular sets are float32 ``(N, F)``, standardised with the training statistics.

Options are applied in this order, each with its own seeded stream: the split (for sets with
no official one), ``classes``, ``train_size``, ``label_noise``. The same ``seed`` always gives
the same data. Mixing itself is not done here: see ``mixlab.mix`` (``lam`` weights the
original row: ``mixed = lam * x + (1 - lam) * x[index]``).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import _options as opt
from ._cache import cached, source_signature
from ._limits import bound_message, short_list, short_name, short_repr
from ._idx import find_idx_files, load_idx_dir
from ._tabular import SKLEARN_SETS, load_csv, load_sklearn, split_csv_spec

__all__ = ["DataSplits", "load_dataset", "list_datasets", "DATASETS"]

CIFAR_ENV = "MIXLAB_CIFAR10"  # where CIFAR-10 is when --data-dir is not given (a folder or tarball)

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclasses.dataclass(repr=False)
class DataSplits:
    """A dataset split into train and test tensors, ready for the lab.

    Attributes:
        name: dataset name, e.g. ``"fashion-mnist"``.
        x_train: uint8 ``(N, C, H, W)`` for images; float32 ``(N, F)`` for tabular data
            (standardised with the training mean and std).
        y_train: int64 ``(N,)`` labels in ``0..num_classes-1`` (after ``label_noise``, if any).
        x_test, y_test: the same for the test split (labels never corrupted).
        classes: class names; index = label.
        mean, std: per-channel mean and std of ``x_train / 255`` for images (a constant channel
            gets std 1, never 0), None for tabular.
        kind: ``"image"`` or ``"tabular"``.
        source: where the data was read from.
        noisy_mask: bool ``(N,)``, True where ``label_noise`` changed the training label
            (None when ``label_noise`` is 0).
        y_train_clean: the training labels before corruption (None when ``label_noise`` is 0).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    kind: str
    source: str
    noisy_mask: torch.Tensor | None = None
    y_train_clean: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: ``(C, H, W)`` for images, ``(F,)`` for tabular data."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        noisy = "" if self.noisy_mask is None else f", noisy={int(self.noisy_mask.sum())}"
        return (f"DataSplits(name={self.name!r}, kind={self.kind!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}{noisy}, source={self.source!r})")


@dataclasses.dataclass(frozen=True)
class _Spec:
    kind: str
    locations: Callable[[object], list[Path]]  # data_dir -> places looked at, in order
    how_to_get: str
    read: Callable[..., dict]  # (location, **kw) -> entry


def _idx_dirs(default: str | None, torchvision_name: str):
    def locations(data_dir) -> list[Path]:
        roots = [Path(data_dir).expanduser()] if data_dir is not None else []
        if default is not None and data_dir is None:
            roots.append(Path(default))
        out = []
        for r in roots:
            out += [r, r / "raw", r / torchvision_name / "raw"]
        return out
    return locations


def _read_idx(classes: list[str]):
    def read(location: Path, *, cache_dir, **_) -> dict:
        files = find_idx_files(location)

        def build():
            entry = {k: torch.from_numpy(v) for k, v in load_idx_dir(files, num_classes=len(classes)).items()}
            top = max(int(entry["y_train"].max()), int(entry["y_test"].max()))  # the labels set the class count
            return {**entry, "classes": list(classes[:top + 1]), "source": str(location.resolve())}
        return cached("idx", {"files": source_signature(files.values())}, build, cache_dir)
    return read


def _idx_present(location: Path) -> bool:
    return location.is_dir() and find_idx_files(location) is not None


def _cifar_locations(data_dir) -> list[Path]:
    if data_dir is None:
        data_dir = os.environ.get(CIFAR_ENV) or None
        if data_dir is None:
            return []
    d = Path(data_dir).expanduser()
    return [d, d / "cifar-10-batches-py"]


def _read_cifar(location: Path, *, cache_dir, **_) -> dict:
    from ._cifar import find_cifar_batches, load_cifar_batches, missing_batches_error, partial_cifar_batches
    from ._images import is_image_tree, load_image_tree
    if find_cifar_batches(location) is not None:
        return load_cifar_batches(location, cache_dir=cache_dir, default_classes=CIFAR10_CLASSES)
    partial = None if is_image_tree(location) else partial_cifar_batches(location)
    if partial is not None:  # some batches but not all: name the missing ones
        raise missing_batches_error(partial)
    return load_image_tree(location, cache_dir=cache_dir, label_regex=None, name="cifar10")


def _cifar_present(location: Path) -> bool:
    """Batches (all six, or some: reading names the missing ones), a tarball or an image tree."""
    from ._cifar import find_cifar_batches, partial_cifar_batches
    from ._images import is_image_tree
    return location.exists() and (find_cifar_batches(location) is not None or is_image_tree(location)
                                  or partial_cifar_batches(location) is not None)


def _read_folder(location: Path, *, cache_dir, label_regex, **_) -> dict:
    from ._images import load_image_tree
    return load_image_tree(location, cache_dir=cache_dir, label_regex=label_regex, name="folder")


def _read_csv(location: Path, *, label_column, **_) -> dict:
    return load_csv(location, label_column)


def _given(data_dir) -> list[Path]:
    return [Path(data_dir).expanduser()] if data_dir is not None else []


def _csv_given(data_dir) -> list[Path]:
    return _given(split_csv_spec(data_dir, None)[0]) if data_dir is not None else []


def _read_sklearn(name: str):
    return lambda location, **_: load_sklearn(name)


_SK_HOW = "bundled with scikit-learn: pip install scikit-learn"
_IDX_HOW = ("put the four standard IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; .gz or uncompressed) in one folder "
            "and pass it as data_dir (CLI: --data-dir)")
_SPECS: dict[str, _Spec] = {
    "digits": _Spec("image", lambda d: [], _SK_HOW, _read_sklearn("digits")),
    "fashion-mnist": _Spec(
        "image", _idx_dirs("/usr/share/datasets/fashion-mnist", "FashionMNIST"),
        "on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist (installs them in "
        "/usr/share/datasets/fashion-mnist); elsewhere " + _IDX_HOW, _read_idx(FASHION_CLASSES)),
    "mnist": _Spec("image", _idx_dirs(None, "MNIST"), _IDX_HOW, _read_idx([str(i) for i in range(10)])),
    "kmnist": _Spec("image", _idx_dirs(None, "KMNIST"), _IDX_HOW, _read_idx(KMNIST_CLASSES)),
    "cifar10": _Spec(
        "image", _cifar_locations,
        "pass data_dir = the folder of the python pickle batches (data_batch_1..5, test_batch, e.g. "
        "cifar-10-batches-py/) or the official cifar-10-python.tar.gz itself, or an image tree / tarball laid out "
        "{train,test}/<class>/*.jpg such as cifar10-jpg.tar.gz; or set $MIXLAB_CIFAR10 to one of these", _read_cifar),
    "folder": _Spec(
        "image", _given,
        "pass data_dir = a {train,test}/<class>/ image tree or its .tar(.gz), a <class>/ tree, or one "
        "flat folder of images with label_regex (e.g. r'^(.+)_\\d+\\.jpg$') to take labels from file names",
        _read_folder),
    "csv": _Spec("tabular", _csv_given, "pass data_dir = 'path/to/file.csv' (or 'file.csv::label_column'), "
                 "a CSV with a header row, numeric features and one label column", _read_csv),
    **{n: _Spec("tabular", lambda d: [], _SK_HOW, _read_sklearn(n)) for n in ("wine", "breast-cancer", "iris")},
}
_PRESENT = {"fashion-mnist": _idx_present, "mnist": _idx_present, "kmnist": _idx_present,
            "cifar10": _cifar_present, "folder": Path.exists, "csv": Path.is_file}

DATASETS: tuple[str, ...] = tuple(_SPECS)


def _sklearn_present() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _locate(name: str, data_dir) -> Path:
    """First place where ``name`` is present, or FileNotFoundError saying where we looked and how to get it."""
    spec = _SPECS[name]
    looked = spec.locations(data_dir)
    for loc in looked:
        if _PRESENT[name](loc):
            return loc
    where = ", ".join(str(p) for p in looked) or "(no data_dir given)"
    raise FileNotFoundError(f"dataset {short_repr(name)} not found; looked in: {where}. To get it: {spec.how_to_get}.")


def list_datasets(data_dir=None) -> list[dict]:
    """Every dataset name with where it is looked for and whether it is present.

    Returns:
        One dict per name: ``{"name", "kind", "location", "present", "how_to_get"}``.
        ``location`` is where it was found, else the places looked at (``;``-separated).
    """
    out = []
    for name, spec in _SPECS.items():
        if name in SKLEARN_SETS:
            present, location = _sklearn_present(), f"scikit-learn (sklearn.datasets.{SKLEARN_SETS[name]})"
        else:
            try:
                present, location = True, str(_locate(name, data_dir))
            except FileNotFoundError:
                present = False
                location = "; ".join(str(p) for p in spec.locations(data_dir)) or "data_dir (required)"
        out.append({"name": name, "kind": spec.kind, "location": location, "present": present,
                    "how_to_get": spec.how_to_get})
    return out


def _read(name, data_dir, cache_dir, label_regex, label_column) -> dict:
    if name == "csv" and data_dir is not None:
        label_column = split_csv_spec(data_dir, label_column)[1]
    location = None if name in SKLEARN_SETS else _locate(name, data_dir)
    return _SPECS[name].read(location, cache_dir=cache_dir, label_regex=label_regex, label_column=label_column)


def _where(name: str, entry: dict) -> str:
    return f"dataset {short_repr(name)} ({short_name(entry['source'], 240)})"


def _check_entry(name: str, entry: dict, kind: str) -> None:
    """What every reader must deliver, checked on every load (cache hits too); the readers' own checks
    name the offending file, this one the source. Labels int64 in ``0..len(classes)-1``, no empty
    split, images at least 1x1 and of one size in both splits, no class only in the test split."""
    where, n = _where(name, entry), len(entry["classes"])
    if n < 1:
        raise ValueError(f"{where}: no classes; expected at least one")
    if "x" in entry:
        pairs = [("data", entry["x"], entry["y"])]
    else:
        pairs = [("training split", entry["x_train"], entry["y_train"]),
                 ("test split", entry["x_test"], entry["y_test"])]
    for what, x, y in pairs:
        if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{where}: {what}: expected int64 labels (N,) for {len(x)} rows, got {y.dtype} "
                             f"{tuple(y.shape)}")
        if len(y) == 0:
            raise ValueError(f"{where}: the {what} holds no examples; expected at least one")
        if kind == "image" and (x.ndim != 4 or x.shape[2] < 1 or x.shape[3] < 1):
            raise ValueError(f"{where}: {what}: images of shape {tuple(x.shape[1:])}; expected (C, H, W) with "
                             "H and W at least 1")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"{where}: {what}: labels span {lo}..{hi}; expected 0..{n - 1} ({n} classes)")
    if "x" not in entry:
        if entry["x_train"].shape[1:] != entry["x_test"].shape[1:]:
            raise ValueError(f"{where}: training inputs are {tuple(entry['x_train'].shape[1:])} but test inputs "
                             f"{tuple(entry['x_test'].shape[1:])}; both splits must have one shape")
        only = _only_in_test(entry["y_train"], entry["y_test"])
        if only:
            raise ValueError(f"{where}: class {short_repr(entry['classes'][only[0]])} is in the test split but has no "
                             f"training example ({len(only)} such class(es)); every class needs training examples")


def _only_in_test(y_train: torch.Tensor, y_test: torch.Tensor) -> list[int]:
    """Class ids with test examples and no training example."""
    return sorted(set(torch.unique(y_test).tolist()) - set(torch.unique(y_train).tolist()))


def _check_split(where: str, y: torch.Tensor, y_train, y_test, names, test_fraction) -> None:
    """The seeded split must leave both sides non-empty and every test class some training rows."""
    sizes = torch.bincount(y)
    largest = int(sizes.max())
    if len(y_test) == 0:
        raise ValueError(f"{where}: test_fraction={test_fraction} leaves the test split empty (round(test_fraction "
                         f"* n) is 0 for every class; largest class: {largest} examples); use a larger test_fraction "
                         "or more data")
    if len(y_train) == 0:
        raise ValueError(f"{where}: test_fraction={test_fraction} leaves the training split empty (every example "
                         f"goes to the test split; largest class: {largest} examples); use a smaller test_fraction "
                         "or more data")
    only = _only_in_test(y_train, y_test)
    if only:
        c = only[0]
        raise ValueError(f"{where}: test_fraction={test_fraction} puts all {int(sizes[c])} example(s) of class "
                         f"{short_repr(names[c])} in the test split, leaving it no training example ({len(only)} such "
                         "class(es)); use a smaller test_fraction or add examples of that class")


def _check_classes(where: str, classes, y_train, y_test, names) -> None:
    """Every selected class has training examples, and the test split keeps some example."""
    ids = classes.tolist() if hasattr(classes, "tolist") else list(classes)
    have = set(torch.unique(y_train).tolist())
    missing = [c for c in ids if c not in have]
    if missing:
        raise ValueError(f"{where}: classes={short_repr(ids)}: class {missing[0]} "
                         f"({short_repr(names[missing[0]])}) has no training example; every selected class needs "
                         f"training data (classes with training examples: {short_repr(sorted(have))})")
    if not bool(torch.isin(y_test, torch.tensor(ids, dtype=y_test.dtype)).any()):
        raise ValueError(f"{where}: classes={short_repr(ids)}: the test split holds no example of these classes, so "
                         f"it would be empty (classes in the test split: "
                         f"{short_repr(sorted(set(torch.unique(y_test).tolist())))})")


def _check_call(name, label_regex, label_column, label_noise, test_fraction, seed):
    if name not in _SPECS:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}; got {short_repr(name)}")
    if label_regex is not None and name not in ("folder",):
        raise ValueError(f"label_regex applies to dataset 'folder' only, got it for {short_repr(name)}")
    if label_column is not None and name != "csv":
        raise ValueError(f"label_column applies to dataset 'csv' only, got it for {short_repr(name)}")
    opt.check_fraction(label_noise, "label_noise", low_open=False, high_open=False)
    opt.check_fraction(test_fraction, "test_fraction", low_open=True, high_open=True)
    opt.seeded_generator(seed, "split")  # validates seed


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    classes: Sequence[int] | None = None,
    label_noise: float = 0.0,
    train_size: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    label_regex: str | None = None,
    test_fraction: float = 0.2,
    label_column: str | None = None,
    imbalance: float | None = None,
    test_size: int | None = None,
) -> DataSplits:
    """Load a real dataset as in-memory train/test tensors.

    Args:
        name: one of ``DATASETS``.
        data_dir: where to read it (see ``list_datasets()`` for the defaults). When given, only
            this place is searched (a wrong folder is an error, never a silent fallback). For
            ``csv`` the file, optionally ``"file.csv::label_column"``. Ignored by the bundled
            scikit-learn sets (digits, wine, breast-cancer, iris).
        classes: keep only these class ids, relabelled ``0..len(classes)-1`` in the given order
            (``[3, 7]`` makes 3 -> 0 and 7 -> 1, as fastai's MNIST_SAMPLE).
        label_noise: fraction in [0, 1] of training labels to corrupt: exactly
            ``round(label_noise * N)`` rows get a uniformly drawn *different* class
            (see ``_options.corrupt_labels``). Test labels are never changed.
        train_size: keep a seeded random subset of this many training samples.
        seed: fixes the split (for sets without an official one), ``train_size`` and ``label_noise``.
        cache_dir: folder for decoded-image caches; default ``$MIXLAB_CACHE`` or ``~/.cache/mixlab``;
            ``False`` disables caching.
        label_regex: ``folder`` only: take labels from file names, group 1 (or the whole match).
        test_fraction: test share of the seeded stratified split, in (0, 1), used by sets without
            an official split (digits, scikit-learn tabular sets, csv, flat or class-only folders).
        label_column: ``csv`` only: the label column's header name (default: the last column).
        imbalance: make the training set long-tailed: class ``c`` keeps
            ``floor(n_max * imbalance ** (-c / (C - 1)))`` seeded-random rows (``n_max`` the
            smallest class count; Cao et al. 2019's CIFAR-10-LT profile, ratio 100 in the
            Remix paper). Applied after ``classes`` and ``train_size``, before ``label_noise``;
            the test split stays as it is (balanced for the standard sets).
        test_size: keep a random subset of this many test samples, the SAME for every ``seed``
            (drawn from a fixed stream), so that all seeds and arms are scored on one sample of
            test images; a cheaper evaluation for short experiments, at the price of wider
            intervals.

    Returns:
        A ``DataSplits``. For IDX files and CIFAR batches the class count is their largest label
        + 1 (the built-in names, or those of ``batches.meta``, are cut to it).

    Raises:
        FileNotFoundError: the dataset is not where it was looked for; the message says where
            that was and how to get it.
        ValueError: a bad option value (the message names the option) or a corrupt or
            unusable file (the message names it): labels outside ``0..num_classes-1``, an
            empty train or test split (also one left empty by ``test_fraction``, ``classes``),
            a class with test examples but no training example (also when ``test_fraction``
            or ``classes`` makes it so), images of zero height or width, or of different sizes
            in the train and test IDX files, and the checks of each reader (see ``_idx.py``,
            ``_cifar.py``, ``_images.py``, ``_tabular.py``).
        TypeError: labels of the wrong type in a file (e.g. float or string CIFAR labels,
            float IDX labels).

    Warns:
        UserWarning: ``train_size`` left some class of the test split without a training
            example (training goes on: the subset was asked for); the train and test images
            of a ``{train,test}`` image tree have different sizes (all are resized to one).
    """
    _check_call(name, label_regex, label_column, label_noise, test_fraction, seed)
    try:
        entry = _read(name, data_dir, cache_dir, label_regex, label_column)
    except (ValueError, TypeError) as e:  # the readers' messages are short; a library's may not be
        bound_message(e)
        raise
    kind, names = _SPECS[name].kind, list(entry["classes"])
    for message in entry.get("warnings", ()):  # kept in the cache entry, so repeated on cache hits
        warnings.warn(message, stacklevel=2)
    _check_entry(name, entry, kind)
    where = _where(name, entry)
    x_train, y_train, x_test, y_test = _split(entry, where, names, test_fraction, seed)
    if classes is not None:
        x_train, y_train, x_test, y_test, names = _keep_classes(where, classes, x_train, y_train, x_test, y_test,
                                                                names)
    if train_size is not None:
        x_train, y_train = _train_subset(where, train_size, seed, x_train, y_train, y_test, names)
    if test_size is not None:
        x_test, y_test = _test_subset(test_size, x_test, y_test)
    if imbalance is not None:
        x_train, y_train, _ = opt.long_tail(x_train, y_train, imbalance, len(names),
                                            generator=opt.seeded_generator(seed, "imbalance"))
    noisy_mask = y_clean = None
    if label_noise > 0:
        y_clean = y_train
        y_train, noisy_mask = opt.corrupt_labels(y_train, label_noise, len(names),
                                                 generator=opt.seeded_generator(seed, "label_noise"))
    if kind == "image":
        mean, std = opt.channel_stats(x_train)
    else:
        x_train, x_test = opt.standardise(x_train.double(), x_test.double())
        mean = std = None
    return DataSplits(name=name, x_train=x_train.contiguous(), y_train=y_train, x_test=x_test.contiguous(),
                      y_test=y_test, classes=names, mean=mean, std=std, kind=kind, source=entry["source"],
                      noisy_mask=noisy_mask, y_train_clean=y_clean)


def _split(entry: dict, where: str, names: list, test_fraction: float, seed: int) -> tuple:
    """The official train/test split, or a seeded stratified one for sets without it."""
    if "x" not in entry:
        return entry["x_train"], entry["y_train"], entry["x_test"], entry["y_test"]
    tr, te = opt.stratified_split(entry["y"], test_fraction, generator=opt.seeded_generator(seed, "split"))
    y_train, y_test = entry["y"][tr], entry["y"][te]
    _check_split(where, entry["y"], y_train, y_test, names, test_fraction)
    return entry["x"][tr], y_train, entry["x"][te], y_test


def _keep_classes(where: str, classes, x_train, y_train, x_test, y_test, names: list) -> tuple:
    """Only ``classes``, relabelled ``0..len(classes)-1`` in the given order, in both splits."""
    x_train, y_train_sel, _ = opt.select_classes(x_train, y_train, classes, names)  # validates the ids
    _check_classes(where, classes, y_train, y_test, names)
    x_test, y_test, kept = opt.select_classes(x_test, y_test, classes, names)
    return x_train, y_train_sel, x_test, y_test, kept


def _train_subset(where: str, train_size: int, seed: int, x_train, y_train, y_test, names: list) -> tuple:
    """A seeded subset of ``train_size`` training rows; warns if a class of the test split lost every example."""
    x_train, y_train = opt.subset_train(x_train, y_train, train_size, generator=opt.seeded_generator(seed, "train_size"))
    lost = _only_in_test(y_train, y_test)
    if lost:
        warnings.warn(f"{where}: train_size={train_size}: the training subset has no example of class(es) "
                      f"{short_list(names[c] for c in lost)} ({len(lost)} of {len(names)}) that the test split "
                      "holds; those test examples cannot be learned (use a larger train_size)", stacklevel=3)
    return x_train, y_train


def _test_subset(test_size, x_test, y_test) -> tuple:
    """The same ``test_size`` test rows for every seed (a fixed stream), or all of them."""
    if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 1:
        raise ValueError(f"test_size must be a positive integer, got {short_repr(test_size)}")
    if test_size > len(y_test):
        raise ValueError(f"test_size={test_size} is larger than the {len(y_test)} test samples available")
    if test_size < len(y_test):
        x_test, y_test = opt.subset_train(x_test, y_test, test_size, generator=opt.seeded_generator(0, "test_size"))
    return x_test, y_test
