"""Seeded dataset options: stratified split, class subset, training subset, symmetric label noise.

Every function is deterministic given its ``generator`` and never touches global random state.
Labels are int64 tensors with values ``0..num_classes-1``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ._limits import short_repr

__all__ = [
    "seeded_generator", "stratified_split", "select_classes", "subset_train", "corrupt_labels",
    "channel_stats", "standardise",
]

# Distinct streams per option so that, e.g., the split does not move when label_noise changes.
_STREAMS = {"split": 1, "train_size": 2, "label_noise": 3, "imbalance": 4, "test_size": 5}


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one option (``split``, ``train_size``, ``label_noise``) of one seed."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {short_repr(seed)}")
    return torch.Generator().manual_seed(int(seed) * 7919 + _STREAMS[stream])


def check_fraction(value, name: str, *, low_open: bool, high_open: bool) -> float:
    """Validate a real number in the interval between 0 and 1 (ends open or closed as asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number between 0 and 1, got {short_repr(value)}")
    value = float(value)
    if value < 0 or value > 1 or (low_open and value == 0) or (high_open and value == 1):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def stratified_split(y: torch.Tensor, test_fraction: float, *, generator: torch.Generator):
    """Split indices per class: ``round(test_fraction * n_c)`` of each class go to the test side.

    Args:
        y: int64 labels ``(N,)``.
        test_fraction: in (0, 1).
        generator: source of the per-class permutations.

    Returns:
        ``(train_idx, test_idx)``: int64 index tensors, each sorted ascending.
    """
    test_fraction = check_fraction(test_fraction, "test_fraction", low_open=True, high_open=True)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def select_classes(x, y, classes: Sequence[int], names: list[str]):
    """Keep the rows whose label is in ``classes`` and relabel ``classes[i] -> i``.

    Returns ``(x, y, names)`` with ``names`` reordered to match the new labels.
    """
    n = len(names)
    given = classes.tolist() if hasattr(classes, "tolist") else classes  # numpy / torch ids too
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) == 0:
        raise ValueError(f"classes must be a non-empty sequence of class ids in 0..{n - 1}, got {short_repr(classes)}")
    ids = []
    for c in given:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < n:
            raise ValueError(f"classes: each id must be an integer in 0..{n - 1} ({n} classes), got {short_repr(c)}")
        ids.append(int(c))
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes must not repeat an id, got {short_repr(list(given))}")
    lookup = torch.full((n,), -1, dtype=torch.int64)
    lookup[torch.tensor(ids)] = torch.arange(len(ids))
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep], [names[i] for i in ids]


def subset_train(x, y, train_size, *, generator: torch.Generator):
    """A seeded random subset of ``train_size`` rows, kept in their original order."""
    n = len(y)
    if isinstance(train_size, bool) or not isinstance(train_size, numbers.Integral) or train_size < 1:
        raise ValueError(f"train_size must be a positive integer, got {short_repr(train_size)}")
    if train_size > n:
        raise ValueError(f"train_size={train_size} is larger than the {n} training samples available")
    idx = torch.randperm(n, generator=generator)[: int(train_size)].sort().values
    return x[idx], y[idx]


def long_tail(x, y, imbalance, num_classes: int, *, generator: torch.Generator):
    """A long-tailed training subset: class ``c`` keeps ``floor(n_max * imbalance ** (-c / (C - 1)))`` rows.

    The exponential profile of Cao et al. 2019 (LDAM) and Chou et al. 2020 (Remix) for
    CIFAR-10-LT: class 0 keeps ``n_max`` rows (the smallest class count present, so every
    class can supply its share), class ``C - 1`` keeps ``n_max / imbalance`` (at least one);
    the rows kept in each class are a seeded random subset, in their original order.

    Returns:
        ``(x, y, counts)`` with ``counts`` the kept rows per class, a list of ints.
    """
    if isinstance(imbalance, bool) or not isinstance(imbalance, numbers.Real) or not imbalance >= 1:
        raise ValueError(f"imbalance must be a number >= 1 (the ratio of the largest to the smallest class), "
                         f"got {short_repr(imbalance)}")
    counts = torch.bincount(y.long(), minlength=num_classes)
    if int(counts.min()) == 0:
        raise ValueError(f"imbalance={imbalance}: class {int(counts.argmin())} has no training example to keep")
    n_max = int(counts.min())
    keep_n = [max(1, int(n_max * float(imbalance) ** (-c / max(num_classes - 1, 1)))) for c in range(num_classes)]
    keep = []
    for c in range(num_classes):
        rows = (y == c).nonzero().flatten()
        keep.append(rows[torch.randperm(rows.numel(), generator=generator)[:keep_n[c]]])
    idx = torch.cat(keep).sort().values
    return x[idx], y[idx], keep_n


def corrupt_labels(y: torch.Tensor, label_noise: float, num_classes: int, *, generator: torch.Generator):
    """Symmetric label noise: exactly ``round(label_noise * N)`` labels replaced by a different class.

    (``round`` is Python's: halves go to the even integer, so 0.5 * 5 rows gives 2.)

    The rows to corrupt are a uniform random subset of that size; each chosen label ``c`` is
    replaced by a class drawn uniformly from the ``num_classes - 1`` classes other than ``c``.
    So the reported noise rate is the true one. (Zhang et al. 2018, sec. 3.3, replace labels
    with a class drawn from *all* classes, which keeps about ``1/num_classes`` of the chosen
    labels unchanged and makes the effective rate ``label_noise * (1 - 1/num_classes)``.)

    Returns:
        ``(noisy_y, mask)``: the new labels (a new tensor; ``y`` is not modified) and a bool
        mask ``(N,)`` of the corrupted rows.
    """
    label_noise = check_fraction(label_noise, "label_noise", low_open=False, high_open=False)
    n = len(y)
    k = int(round(label_noise * n))
    if k and num_classes < 2:
        raise ValueError(f"label_noise={label_noise} needs at least 2 classes, got {num_classes}")
    rows = torch.randperm(n, generator=generator)[:k]
    shift = torch.randint(1, max(num_classes, 2), (k,), generator=generator)  # 1..C-1: never the same class
    noisy = y.clone()
    noisy[rows] = (y[rows] + shift) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[rows] = True
    return noisy, mask


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (population) of ``x / 255`` for uint8 images ``(N, C, H, W)``.

    Computed from a 256-bin histogram per channel, so it needs no float copy of the data. A
    constant channel (std 0) gets std 1, as ``standardise`` does for a constant column, so that
    normalising by it never divides by zero.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum().clamp_min(1)
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        std = float(var.sqrt())
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def standardise(x_train: torch.Tensor, x_test: torch.Tensor):
    """Standardise float features with the training mean and std (a constant column gets std 1)."""
    mean = x_train.mean(0, keepdim=True) if len(x_train) else torch.zeros(1, x_train.shape[1])
    std = x_train.std(0, unbiased=False, keepdim=True) if len(x_train) else torch.ones(1, x_train.shape[1])
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((x_train - mean) / std).float(), ((x_test - mean) / std).float()
