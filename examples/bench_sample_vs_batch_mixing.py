"""Loading speed: sample-level mixing (MixupDataset, as in the TDS tutorial) against batch mixing (MixCollate).

Run:  python examples/bench_sample_vs_batch_mixing.py --n 20000
Fast: python examples/bench_sample_vs_batch_mixing.py --fast

One pass over ``--n`` uint8 28x28 images (Fashion-MNIST's training images when
``/usr/share/datasets/fashion-mnist`` has them, else seeded random pixels: the timing does not
depend on the pixels), each item converted to float in ``__getitem__`` as a typical dataset
does, batch 128, ``num_workers=0``, in the main process with one torch thread (as a DataLoader worker runs). Prints samples per second of:
plain loading, batch mixing in the collate (every row mixed), and sample mixing with
``p=0.2`` (the tutorial's 1 in 5) and ``p=1``. The best of ``--repeats`` passes is reported.
"""
from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mixlab.data import MixCollate, MixupDataset

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


class Images(Dataset):
    """uint8 images ``(N, 28, 28)``; items are ``(float (1, 28, 28) in [0, 1], class)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].unsqueeze(0).float().div(255), int(self.labels[i])


def load_images(n: int):
    if FMNIST.exists():
        with gzip.open(FMNIST, "rb") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
        source = "Fashion-MNIST train images"
    else:
        images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        source = "random uint8 pixels"
    labels = np.arange(len(images)) % 10
    return Images(images.copy(), labels), source


def _rate(loader, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(batch[1]) for batch in loader)
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers run with 1)")
    p.add_argument("--fast", action="store_true", help="a tiny pass, for the test suite")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, repeats = (512, 1) if args.fast else (args.n, args.repeats)
    ds, source = load_images(n)
    loaders = {
        "plain": DataLoader(ds, batch_size=128),
        "batch mixing (MixCollate, every row)": DataLoader(ds, batch_size=128,
                                                           collate_fn=MixCollate.from_options(alpha=0.2, seed=0)),
        "sample mixing (MixupDataset, p=0.2)": DataLoader(MixupDataset(ds, 10, p=0.2, alpha=0.2), batch_size=128),
        "sample mixing (MixupDataset, p=1.0)": DataLoader(MixupDataset(ds, 10, p=1.0, alpha=0.2), batch_size=128),
    }
    rates = {name: _rate(loader, repeats) for name, loader in loaders.items()}
    print(f"{n} items of {source}, batch 128, num_workers=0, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {repeats}")
    for name, rate in rates.items():
        print(f"  {name:<40} {rate:>10.0f} samples/s")
    return rates


if __name__ == "__main__":
    main()
