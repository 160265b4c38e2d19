"""Data pipeline throughput: mixing whole uint8 batches in memory vs a per-sample mixing ``Dataset``.

Both pipelines start from the same decoded CIFAR-10 training images held in memory as uint8
(decoding is not timed), go through a ``torch.utils.data.DataLoader`` (``num_workers=0``,
batch 128, shuffled) and hand the training loop normalised float32 images and 10-class soft
labels, with mixup on about 1 image in 5 at alpha 0.2, as in Ta-Ying Cheng's tutorial
*Enhancing Neural Networks with Mixup in PyTorch* (Towards Data Science; "the tutorial" below).

- the tutorial: a ``Dataset`` whose ``__getitem__`` transforms one image (``ToTensor`` +
  ``Normalize``) and, for every 5th index, transforms a random second image and mixes the two
  images and their one-hot labels (the tutorial's code, with its bugs fixed).
- mixlab: a ``Dataset`` that returns a whole uint8 batch for a list of indices (a
  ``BatchSampler``); the batch is mixed in place by ``mixlab.MixUp(alpha=0.2, p=0.2,
  mode="sample", inplace=True)``, either in uint8 before converting and normalising, or in
  float32 after; soft labels from the target.

Images come from ``--data`` (or ``$MIXLAB_CIFAR10``): a CIFAR-10 JPEG tarball
(``cifar10-jpg/{train,test}/<class>/<nnnn>.jpg``; the first ``--images`` training JPEGs), else
random uint8 images (printed in the header).
Goal: the mixlab pipeline at least 5x the tutorial's images per second.

    python benchmarks/pipeline.py [--data cifar10-jpg.tar.gz] [--images 10000] [--repeats 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

import mixlab

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TARBALL = Path(os.environ.get("MIXLAB_CIFAR10", "cifar10-jpg.tar.gz"))  # --data overrides it


def load_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` training images as uint8 (n, 32, 32, 3) and int64 labels, and where they came from."""
    if TARBALL.is_file():
        from PIL import Image

        images, labels, classes = [], [], {}
        with tarfile.open(TARBALL) as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or "train" not in parts or not member.name.endswith(".jpg"):
                    continue
                cls = parts[-2]
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                labels.append(classes.setdefault(cls, len(classes)))
                if len(images) == n:
                    break
        return np.stack(images), np.asarray(labels, dtype=np.int64), f"CIFAR-10 JPEG ({TARBALL.name}), {len(images)} train images"
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return imgs, rng.integers(0, 10, size=n).astype(np.int64), f"random uint8 images ({TARBALL} absent)"


class TutorialDataset(Dataset):
    """The tutorial's dataset, corrected: per-sample transform, mixup on every 5th index."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, seed: int):
        from torchvision import transforms

        self.data, self.targets = data, targets  # (N, 32, 32, 3) uint8 HWC, (N,)
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        label = torch.zeros(10)
        label[self.targets[idx]] = 1.0
        image = self.transform(self.data[idx])  # (3, 32, 32) float32
        if idx > 0 and idx % 5 == 0:
            j = int(self.rng.integers(len(self.data)))
            other = torch.zeros(10)
            other[self.targets[j]] = 1.0
            lam = float(self.rng.beta(0.2, 0.2))
            image = lam * image + (1 - lam) * self.transform(self.data[j])
            label = lam * label + (1 - lam) * other
        return image, label


class BatchDataset(Dataset):
    """Whole uint8 batches by a list of indices (used with a BatchSampler and batch_size=None)."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor):
        self.data, self.targets = data, targets  # (N, 3, 32, 32) uint8, (N,)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, indices):
        idx = torch.as_tensor(indices)
        return self.data[idx], self.targets[idx]  # (B, 3, 32, 32) uint8, (B,)


def tutorial_epoch(data, targets, batch, seed) -> int:
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(TutorialDataset(data, targets, seed), batch_size=batch, shuffle=True, generator=g)
    n = 0
    for images, labels in loader:
        n += images.shape[0]
    return n


def mixlab_epoch(data, targets, batch, seed, *, mix_uint8: bool = True) -> int:
    g = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(len(data)), generator=g), batch_size=batch, drop_last=False)
    loader = DataLoader(BatchDataset(data, targets), batch_size=None, sampler=sampler)
    mixup = mixlab.MixUp(alpha=0.2, p=0.2, mode="sample", generator=g, inplace=True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    inv_std = 1 / (torch.tensor(STD).view(1, 3, 1, 1) * 255)
    n = 0
    for xb, yb in loader:
        if mix_uint8:
            xb, target = mixup(xb, yb)  # uint8, mixed in place, rounded
            images = (xb.float() - mean) * inv_std  # (B, 3, 32, 32) float32, normalised
        else:
            images, target = mixup((xb.float() - mean) * inv_std, yb)  # normalise, then mix in place
        labels = target.soft(10)  # (B, 10)
        assert labels.shape == (images.shape[0], 10)
        n += images.shape[0]
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved epochs per pipeline (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    ap.add_argument("--json", default=None)
    ap.add_argument("--data", default=None, help="a CIFAR-10 JPEG tarball (default: $MIXLAB_CIFAR10)")
    ns = ap.parse_args(argv)
    if ns.data:
        global TARBALL
        TARBALL = Path(ns.data)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    data, targets, source = load_images(ns.images, ns.seed)
    chw = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8, once
    ys = torch.from_numpy(targets)
    runs = {"tutorial (per-sample Dataset)": lambda: tutorial_epoch(data, targets, ns.batch, ns.seed),
            "mixlab (mixed in uint8)": lambda: mixlab_epoch(chw, ys, ns.batch, ns.seed),
            "mixlab (normalised, mixed in f32)": lambda: mixlab_epoch(chw, ys, ns.batch, ns.seed, mix_uint8=False)}
    rates = {k: [] for k in runs}
    for _ in range(ns.repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            n = f()
            rates[k].append(n / (time.perf_counter() - t0))
    print(f"# data pipeline | torch {torch.__version__} | {torch.get_num_threads()} threads | load avg "
          f"{[round(v, 2) for v in os.getloadavg()]}\n# {source}; batch {ns.batch}, DataLoader num_workers=0, "
          f"mixup alpha 0.2 on ~1 in 5 images; median of {ns.repeats} interleaved epochs")
    base = statistics.median(rates["tutorial (per-sample Dataset)"])
    print(f"{'pipeline':<36}{'images/s':>12}{'x tutorial':>11}")
    rows = []
    for k, v in rates.items():
        m = statistics.median(v)
        rows.append({"name": k, "images_per_s": m, "ratio": m / base})
        print(f"{k:<36}{m:>12.0f}{m / base:>11.1f}")
    if ns.json:
        tmp = ns.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"source": source, "batch": ns.batch, "rows": rows}, f, indent=1)
        os.replace(tmp, ns.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
