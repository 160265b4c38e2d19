"""Every mixing method on the same CIFAR-10 images: the gallery in docs/img/methods.png.

    python examples/methods_gallery.py --data path/to/cifar10-jpg.tar.gz --out docs/img/methods.png

One row per registered method (``mixlab.methods.available()``, built with ``mixlab.methods.get(name).build``),
applied to the same 6 test images with the same partners (a fixed roll, unless the method draws its own),
each panel titled with its lam (the share of the original image), its partner and, where the labels'
weight differs from lam (Remix, SnapMix, Feat-/Hidden-Mix), the label weight of the original. Each method
gets what it needs:

- PuzzleMix: a saliency map (the image-gradient magnitude);
- SnapMix: class activation maps from a small CNN fitted to the 6 images first (``TinyCAMNet``);
- RecursiveMix: two calls, so a history exists: the first on the images rolled by one (the "previous
  batch"), the panel shows the second (row ``i`` holds the previous mixed row ``i``, resized);
- C-Mixup (regression): each image's mean brightness as its target (partners of similar brightness);
- methods that mix no images (Feat-Mix, Hidden-Mix: ``tokens``): the images as ``(B, N, D)`` tokens of
  4x4 patches (the identity patch embedding, so the panel shows which tokens / which embedding
  dimensions come from the partner), or as ``(B, F)`` rows of pixels for a ``vectors``-only method;
  a method mixing none of images, tokens or vectors is listed below the figure with the reason
  (:func:`not_drawn`).

Without ``--data`` (or ``$MIXLAB_CIFAR10``) it draws on synthetic stripes, so it always runs.
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


PATCH = 4  # the token panels: 4x4 patches of the 32x32 images, (B, 64, 3 * 4 * 4) tokens


def methods(seed: int) -> dict:
    """One row per registered method, then the extra rows: ``label -> callable (x, y) -> (mixed images, target)``.

    Image classification methods are keyed by their registry name; the others by a label naming how they
    are shown (``"featmix (4x4 patch tokens)"``). Every callable has ``.method``: its registry name.
    """
    registry = mixlab.methods
    rows = {}
    for name in registry.available():
        info = registry.get(name)
        if info.task == "regression":
            rows[f"{name} (target: brightness)"] = _named(_with_brightness_targets(_build(info, seed)), name)
        elif "images" in info.inputs:
            rows[name] = _named(_build(info, seed), name)
        elif "tokens" in info.inputs:
            rows[f"{name} ({PATCH}x{PATCH} patch tokens)"] = _named(_as_tokens(_build(info, seed)), name)
        elif "vectors" in info.inputs:
            rows[f"{name} (pixels as features)"] = _named(_as_vectors(_build(info, seed)), name)
        else:
            continue  # not_drawn() says why
        rows.update({label: _named(_build(registry.get(of), seed, **options), of)
                     for label, (of, options) in EXTRA_ROWS.items() if of == name})
    return rows


def not_drawn() -> dict:
    """``name -> reason`` for the registered methods the figure cannot show (printed below it)."""
    registry = mixlab.methods
    return {name: f"mixes {', '.join(registry.get(name).inputs)} only: no image panel"
            for name in registry.available()
            if not {"images", "tokens", "vectors"} & set(registry.get(name).inputs)}


def _named(row, name: str):
    call = row if hasattr(row, "mixer") else _Row(row)
    call.method = name
    return call


class _Row:
    """A mixer as a gallery row (so it can carry ``.method``)."""

    def __init__(self, mixer):
        self.mixer = mixer

    def __call__(self, x, y):
        return self.mixer(x, y)


def _build(info, seed: int, **options):
    """``info.build`` with a fixed seed, per-row draws and partners by roll (or the method's own partners),
    wrapped with what a call needs (saliency, a CAM model, a history)."""
    options = {**SMALL_IMAGE_OPTIONS.get(info.cls.__name__, {}), **options}
    common = dict(mode="sample", generator=torch.Generator().manual_seed(seed))
    params = inspect.signature(info.cls).parameters
    own_partners = "pairing" not in params or info.options.get("balanced")
    if not own_partners:  # remix-balanced (by class count) and zetamixup (its ranking) draw their own
        common["pairing"] = "roll"
    if "model" in params and {"saliency", "labels"} <= set(info.needs):  # class saliency (SnapMix's CAMs): a model
        return _with_cam_model(info, seed, common, options)
    if "labels" in info.needs and "num_classes" in params and "class_counts" not in options:
        common["num_classes"] = N  # RecursiveMix keeps soft labels of the history: it needs the class count
    mixer = info.build(alpha=1.0, **common, **options)
    if hasattr(mixer, "state_dict") and hasattr(mixer, "reset"):  # stateful (RecursiveMix): a history first
        return _with_history(mixer)
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


class TinyCAMNet(torch.nn.Module):
    """A small CNN with a CAM-ready head (features, ``avgpool``, ``fc``: found by ``mixlab.methods.snapmix.cam_parts``)."""

    def __init__(self, classes: int):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                      nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())  # (B, 32, 16, 16)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def fit_cam_model(x: torch.Tensor, y: torch.Tensor, *, seed: int, steps: int = 60) -> TinyCAMNet:
    """``TinyCAMNet`` fitted to ``(x, y)`` for ``steps`` Adam steps (deterministic on CPU; well under a second)."""
    torch.manual_seed(seed)
    net = TinyCAMNet(int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _with_cam_model(info, seed: int, common: dict, options: dict):
    """SnapMix with ``model=`` a small CNN fitted to the images of the first call (its CAMs weigh the labels)."""
    state = {}

    def call(x, y):
        if "mixer" not in state:
            net = fit_cam_model(x, y, seed=seed)
            state["mixer"] = call.mixer = info.build(alpha=1.0, model=net, eval_mode=True, **common, **options)
        return state["mixer"](x, y)
    call.mixer = None
    return call


def _with_history(mixer):
    """A stateful method (RecursiveMix) called twice: first on the images rolled by one (the previous batch),
    then on the images; the second call is drawn. Each gallery call starts from an empty history."""
    def call(x, y):
        mixer.reset()
        mixer(x.roll(1, 0), y.roll(1, 0))
        return mixer(x, y)
    call.mixer = mixer
    call.partner = "prev"  # row i takes row i of the previous mixed batch
    return call


def _with_brightness_targets(cmixup):
    """A regression method on the images with each one's mean brightness as its target."""
    def call(x, y):
        return cmixup(x, x.mean(dim=(1, 2, 3)))
    call.mixer = cmixup
    return call


def to_tokens(x: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """``(B, C, H, W)`` images as ``(B, N, D)`` tokens of ``p x p`` patches (``D = C * p * p``, raster order)."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def from_tokens(t: torch.Tensor, shape, p: int = PATCH) -> torch.Tensor:
    """The inverse of :func:`to_tokens`."""
    B, C, H, W = shape
    return t.reshape(B, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def _as_tokens(mixer):
    def call(x, y):
        mixed, target = mixer(to_tokens(x), y)
        return from_tokens(mixed, x.shape), target
    call.mixer = mixer
    return call


def _as_vectors(mixer):
    def call(x, y):
        mixed, target = mixer(x.flatten(1), y)
        return mixed.view_as(x), target
    call.mixer = mixer
    return call


def shares(row, target) -> tuple:
    """``(lam of the inputs (B,), label weight of the original (B,) or None when it equals lam)``."""
    mixer = getattr(row, "mixer", row)
    label = target.lam
    lam = getattr(mixer, "last_input_lam", None)  # Remix: target.lam is the label's weight
    region = getattr(target.params, "region", None)
    if lam is None and region is not None and getattr(region, "lam", None) is not None:
        lam = region.lam  # the exact share of the original (SnapMix, Feat-/Hidden-Mix: labels weigh otherwise)
    if lam is None:
        lam = target.params.lam
    lam = lam.reshape(-1).float()
    return lam, (None if torch.allclose(label.float(), lam, atol=5e-3) else label)


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
    fig, axes = plt.subplots(len(rows) + 1, N, figsize=(1.6 * N, 1.9 * (len(rows) + 1)))
    for j in range(N):
        axes[0, j].imshow(x[j].permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"image {j}", fontsize=7)
    axes[0, 0].set_ylabel("originals", fontsize=7)
    for r, (name, t) in enumerate(rows.items(), start=1):
        mixed, target = t(x, y)
        lam, label = shares(t, target)
        for j in range(N):
            axes[r, j].imshow(mixed[j].clamp(0, 1).permute(1, 2, 0).numpy())
            partners = target.params.index[j]  # k-way methods mix several rows: name the largest partner
            main_partner = getattr(t, "partner", None) or int(partners[1] if partners.ndim else partners)
            title = f"lam {lam[j].item():.2f}, with {main_partner}" + ("+" if partners.ndim else "")
            if label is not None:
                title += f"\nlabel {label[j].item():.2f}"
            axes[r, j].set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    left_out = not_drawn()
    if left_out:
        fig.text(0.01, 0.002, "Not drawn: " + "; ".join(f"{k} ({v})" for k, v in left_out.items()), fontsize=7,
                 va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.01 if left_out else 0, 1, 1))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    fig.savefig(a.out, dpi=110)
    plt.close(fig)
    print(f"wrote {a.out}")
    return a.out


if __name__ == "__main__":
    main()
