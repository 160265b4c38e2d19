"""Mixup on tabular data: scikit-learn's wine or breast-cancer set, a small MLP, with and without mixup.

Run:  python examples/tabular_mixup.py --dataset wine --epochs 200
Fast: python examples/tabular_mixup.py --fast   (what tests/project/test_examples.py runs)

Features are standardised with the training split's statistics, then mixed like any float
tensor: ``x = lam * x + (1 - lam) * x[index]`` (lam weights the original row) and the loss is
mixed through :class:`mixlab.MixedTarget`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mixlab  # noqa: E402
from _loop import compare, example_parser, parse, print_results  # noqa: E402

LOADERS = {"wine": "load_wine", "breast-cancer": "load_breast_cancer"}


def load(name: str, seed: int = 0):
    """Standardised (train, test) splits, 70/30, stratified by a seeded permutation per class."""
    from sklearn import datasets

    d = getattr(datasets, LOADERS[name])()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in y.unique():
        rows = torch.nonzero(y == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        cut = int(0.7 * len(rows))
        train_idx.append(rows[:cut])
        test_idx.append(rows[cut:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    mean, std = x[tr].mean(0), x[tr].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    return (x[tr], y[tr]), (x[te], y[te]), int(y.max()) + 1


def main(argv=None) -> dict:
    p = example_parser(__doc__, epochs=200, alpha=0.4)
    p.add_argument("--dataset", choices=sorted(LOADERS), default="wine")
    args = parse(p, argv)
    epochs = 30 if args.fast else args.epochs
    train, test, num_classes = load(args.dataset, args.seed)
    features = train[0].shape[1]
    criterion = nn.CrossEntropyLoss()
    mixup = mixlab.MixUp(args.alpha, mode="sample", generator=torch.Generator().manual_seed(args.seed))

    def make_model():
        return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, num_classes))

    def plain(model, xb, yb):
        return criterion(model(xb), yb)

    def mixed(model, xb, yb):
        xb, target = mixup(xb, yb)  # (B, F) features, target: MixedTarget
        return target.loss(criterion, model(xb))

    results = compare(make_model, train, test, {"baseline": plain, "mixup": mixed}, epochs=epochs,
                      batch_size=32, lr=1e-3, seed=args.seed)
    print_results(f"{args.dataset}: {len(train[1])} train / {len(test[1])} test rows, {epochs} epochs", results)
    return results


if __name__ == "__main__":
    main()
