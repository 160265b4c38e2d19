"""Every mixing method on the same CIFAR-10 images: the gallery in docs/img/methods.png.

    python examples/methods_gallery.py --data path/to/cifar10-jpg.tar.gz --out docs/img/methods.png

Each row is one registered method (``mixlab.methods.available(inputs="images")``, built with
``mixlab.methods.get(name).build``) applied to the same 6 test images with the same partners (a
fixed roll, unless the method draws its own), each panel titled with its lam (the share of the
original image) and its partner. Without
``--data`` (or ``$MIXLAB_CIFAR10``) it draws on synthetic stripes, so it always runs.
"""
from __future__ import annotations

import argparse
import inspect
import io
import os
import tarfile

import numpy as np
import torch

import mixlab

N = 6


def cifar_images(path: str, n: int = N) -> torch.Tensor:
    """The first test image of ``n`` classes from the CIFAR-10 JPEG tarball, ``(n, 3, 32, 32)`` in [0, 1]."""
    from PIL import Image

    out, seen = [], set()
    with tarfile.open(path, "r|gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 4 and parts[1] == "test" and parts[2] not in seen:
                seen.add(parts[2])
                img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)  # (3, 32, 32)
                if len(out) == n:
                    break
    return torch.stack(out)


def synthetic_images(n: int = N) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    imgs = [torch.stack([(torch.sin((xx * (i + 1) + yy * (n - i)) / 4) + 1) / 2, torch.full((32, 32), i / n),
                         (torch.cos(yy * (i + 2) / 5) + 1) / 2]) for i in range(n)]
    return torch.stack(imgs)


# Options for 32x32 images where a method's defaults suit 224x224 ones, by class (variants share them).
SMALL_IMAGE_OPTIONS = {
    "GridMix": dict(n_holes=(3, 6)),
    "ResizeMix": dict(scale=(0.3, 0.7)),
    "TokenMix": dict(patch_size=4),
    "Remix": dict(class_counts=(500, 250, 120, 60, 30, 15)),  # a long tail over the 6 images' labels 0..5
}
# Extra rows: a registered method with other options, "label": (name, options).
EXTRA_ROWS = {
    "fmix (soft edges)": ("fmix", dict(max_soft=0.1)),
    "cutmix on the patch grid": ("cutmix", dict(patch_size=8)),
}


def methods(seed: int) -> dict:
    """One row per registered method that mixes images (regression ones need float targets: not here),
    then the extra rows; each a callable ``(x, y) -> (mixed, target)``."""
    registry = mixlab.methods
    rows = {}
    for name in registry.available(inputs="images", task="classification"):
        if "targets" in registry.get(name).needs:
            continue
        rows[name] = _build(registry.get(name), seed)
        rows.update({label: _build(registry.get(of), seed, **options)
                     for label, (of, options) in EXTRA_ROWS.items() if of == name})
    return rows


def _build(info, seed: int, **options):
    """``info.build`` with a fixed seed, per-row draws and partners by roll (or the method's own partners)."""
    options = {**SMALL_IMAGE_OPTIONS.get(info.cls.__name__, {}), **options}
    common = dict(mode="sample", generator=torch.Generator().manual_seed(seed))
    own_partners = "pairing" not in inspect.signature(info.cls).parameters or info.options.get("balanced")
    if not own_partners:  # remix-balanced (by class count) and zetamixup (its ranking) draw their own
        common["pairing"] = "roll"
    mixer = info.build(alpha=1.0, **common, **options)
    return _with_saliency(mixer) if "saliency" in info.needs else mixer


def _with_saliency(puzzle):
    """PuzzleMix takes a saliency map; here the image-gradient magnitude (no model needed for the gallery)."""
    def call(x, y):
        gray = x.mean(1)
        sal = torch.nn.functional.pad((gray[:, 1:] - gray[:, :-1]).abs(), (0, 0, 0, 1)) \
            + torch.nn.functional.pad((gray[:, :, 1:] - gray[:, :, :-1]).abs(), (0, 1))
        return puzzle(x, y, saliency=sal)
    call.mixer = puzzle
    return call


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("MIXLAB_CIFAR10"), help="CIFAR-10 JPEG tarball")
    p.add_argument("--out", default="docs/img/methods.png")
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = cifar_images(a.data) if a.data else synthetic_images()
    y = torch.arange(x.shape[0])
    rows = methods(a.seed)
    fig, axes = plt.subplots(len(rows) + 1, N, figsize=(1.6 * N, 1.75 * (len(rows) + 1)))
    for j in range(N):
        axes[0, j].imshow(x[j].permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"image {j}", fontsize=7)
    axes[0, 0].set_ylabel("originals", fontsize=7)
    for r, (name, t) in enumerate(rows.items(), start=1):
        mixed, target = t(x, y)
        lam = getattr(getattr(t, "mixer", t), "last_input_lam", None)  # Remix: target.lam is the label's weight
        lam = target.lam if lam is None else lam
        for j in range(N):
            axes[r, j].imshow(mixed[j].clamp(0, 1).permute(1, 2, 0).numpy())
            partners = target.params.index[j]  # k-way methods mix several rows: name the largest partner
            main_partner = int(partners[1]) if partners.ndim else int(partners)
            axes[r, j].set_title(f"lam {lam[j].item():.2f}, with {main_partner}" + ("+" if partners.ndim else ""),
                                 fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    fig.savefig(a.out, dpi=110)
    plt.close(fig)
    print(f"wrote {a.out}")
    return a.out


if __name__ == "__main__":
    main()
