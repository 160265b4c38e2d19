"""The one small training loop the examples share (each example supplies its loss step)."""
from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn


def fit(model: nn.Module, x, y, step: Callable, *, epochs: int, batch_size: int = 64, lr: float = 1e-3,
        seed: int = 0) -> list[float]:
    """Train ``model`` with Adam; ``step(model, xb, yb) -> loss`` does the (mixed) forward.

    ``x`` may be a tensor or a tuple of tensors sharing dim 0 (e.g. token ids and a padding
    mask). Returns the mean training loss of each epoch.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = y.shape[0]
    history = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=g).split(batch_size):
            xb = tuple(t[idx] for t in x) if isinstance(x, tuple) else x[idx]
            loss = step(model, xb, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    """Top-1 accuracy of ``model`` in eval mode (``x`` a tensor or a tuple of model inputs)."""
    model.eval()
    logits = model(*x) if isinstance(x, tuple) else model(x)
    model.train()
    return (logits.argmax(1) == y).float().mean().item()


def compare(make_model: Callable[[], nn.Module], train, test, steps: dict, **fit_kw) -> dict:
    """Train one model per named step from the same initial weights; return test accuracies."""
    torch.manual_seed(fit_kw.get("seed", 0))
    initial = make_model().state_dict()
    results = {}
    for name, step in steps.items():
        model = make_model()
        model.load_state_dict(initial)
        history = fit(model, *train, step, **fit_kw)
        results[name] = {"test_accuracy": accuracy(model, *test), "final_train_loss": history[-1]}
    return results


def print_results(title: str, results: dict) -> None:
    print(title)
    for name, r in results.items():
        print(f"  {name:<10} test accuracy {r['test_accuracy']:.4f}   final train loss {r['final_train_loss']:.4f}")


def example_parser(doc: str, *, epochs: int, alpha: float) -> argparse.ArgumentParser:
    """The options every example takes; an example adds its own before :func:`parse`."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--alpha", type=float, default=alpha)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--fast", action="store_true", help="small data and few epochs, for the test suite")
    return p


def parse(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parse ``argv`` and apply ``--threads``."""
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
