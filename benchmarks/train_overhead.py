"""Training-step overhead of mixup: the same model, batch and optimizer with and without mixing.

Steps are timed interleaved (baseline, mixlab, the paper's weighted sum, one after the other,
round after round) after a warm-up, and the median step time of each is printed with its
overhead over the baseline (and the same for the minimum step). Goal from issue 4: mixlab's step at
most 3% slower.

The model is the CNN of Ta-Ying Cheng's tutorial *Enhancing Neural Networks with Mixup in PyTorch* (4 conv + 2 fc) on a CIFAR-sized float32 batch (default
128x3x32x32, 10 classes); the loss is cross-entropy, mixed through ``MixedTarget.loss``.

    python benchmarks/train_overhead.py [--batch 128] [--runs 15] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn

import mixlab


class TutorialCNN(nn.Module):
    """The tutorial's network: 4 conv layers then 2 fully connected layers, for 3x32x32 inputs."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.fc(self.conv(x))


def make_steps(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (batch,), generator=g)
    torch.manual_seed(seed)
    model = TutorialCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    mixup = mixlab.MixUp(alpha=0.2, mode="sample", generator=g)

    def train(inputs, loss_fn):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs))
        loss.backward()
        opt.step()

    def baseline():
        train(x, lambda out: criterion(out, y))

    def with_mixlab():
        mixed, target = mixup(x, y)
        train(mixed, lambda out: target.loss(criterion, out))

    def with_paper():  # the official code's mixup_data / mixup_criterion
        lam = float(torch.distributions.Beta(0.2, 0.2).sample())
        index = torch.randperm(batch, generator=g)
        mixed = lam * x + (1 - lam) * x[index]
        train(mixed, lambda out: lam * criterion(out, y) + (1 - lam) * criterion(out, y[index]))

    return {"no mixup": baseline, "mixlab MixUp": with_mixlab, "paper mixup_data": with_paper}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    ap.add_argument("--json", default=None)
    ns = ap.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    steps = make_steps(ns.batch, ns.seed)
    for f in steps.values():
        for _ in range(ns.warmup):
            f()
    times = {k: [] for k in steps}
    for _ in range(ns.runs):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["no mixup"])
    print(f"# train-step overhead | torch {torch.__version__} | {torch.get_num_threads()} threads | "
          f"load avg {[round(v, 2) for v in os.getloadavg()]}\n# the tutorial's CNN, batch {ns.batch}x3x32x32 "
          f"float32, Adam; median of {ns.runs} interleaved steps after {ns.warmup} warm-up steps")
    base_min = min(times["no mixup"])
    print(f"{'step':<20}{'median ms':>11}{'overhead':>10}{'min ms':>10}{'overhead':>10}")
    rows = []
    for k, v in times.items():
        m, lo = statistics.median(v), min(v)
        rows.append({"name": k, "median_ms": m * 1e3, "overhead": m / base - 1,
                     "min_ms": lo * 1e3, "overhead_min": lo / base_min - 1})
        print(f"{k:<20}{m * 1e3:>11.2f}{(m / base - 1) * 100:>9.1f}%{lo * 1e3:>10.2f}{(lo / base_min - 1) * 100:>9.1f}%")
    if ns.json:
        tmp = ns.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"batch": ns.batch, "runs": ns.runs, "rows": rows}, f, indent=1)
        os.replace(tmp, ns.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
