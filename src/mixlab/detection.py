"""Mixing for object detection: images with boxes (MixUp, CutMix, Mosaic).

Inputs are ``(images, targets)`` as torchvision's detection models take them: ``images`` a
``(B, C, H, W)`` tensor (or a list of equal-size ``(C, H, W)`` tensors), ``targets`` a list of
``B`` dicts holding ``"boxes"`` ``(N, 4)`` in ``xyxy`` pixels (a plain tensor or
``tv_tensors.BoundingBoxes``) and ``"labels"`` ``(N,)``; other keys are carried along when they
hold one row per box. Each transform returns the same structure, with a per-box loss weight
``"weights"`` ``(N,)`` in every target (1 where the input had none):

- :class:`MixUp` ("Bag of Freebies for Training Object Detection Neural Networks", Zhang et al.
  2019): ``lam * image_i + (1 - lam) * image_j``; the boxes of both images are kept, weighted
  ``lam`` and ``1 - lam`` (``lam ~ Beta(1.5, 1.5)`` by default, the paper's).
- :class:`CutMix`: a box of the partner is pasted (mixlab's CutMix region); the partner's boxes
  are clipped to it and kept when a ``min_visible`` share of them remains; the original's boxes
  are kept when at least ``min_visible`` of their area is still visible.
- :class:`Mosaic` (YOLOv4's four-image mosaic, the k-way region case): four images share the
  canvas around a random centre; each contributes the corner that falls in its quadrant, at its
  own scale; boxes are shifted and clipped to the quadrant and kept when ``min_visible`` of
  their area remains.

Host step: targets are Python lists of per-image tensors, so the box bookkeeping runs per image
and reads the partners and regions back once per call (a sync on an accelerator); the pixels are
mixed by the core, on the device.

Convention: ``lam`` weights the original image; boxes are ``xyxy`` in pixels.
"""
from __future__ import annotations

import sys

import torch

from . import _validate as V
from .ops import mix
from .params import MixParams, sample_box, sample_params
from .pairing import partner_index
from .sampling import rng

__all__ = ["MixUp", "CutMix", "Mosaic", "box_area", "clip_boxes"]


def _stack(images):
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        return images, False
    if isinstance(images, (list, tuple)) and images and all(isinstance(t, torch.Tensor) for t in images):
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) != 1:
            raise ValueError(f"images must all have one size to be mixed, got sizes {sorted(shapes)}; "
                             "resize them (torchvision.transforms.v2.Resize) before mixing")
        return torch.stack(list(images)), True
    raise TypeError(f"images must be a (B, C, H, W) tensor or a list of (C, H, W) tensors, got {V.describe(images)}")


def _check_targets(targets, B: int) -> list:
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        raise ValueError(f"targets must be a list of {B} dicts (one per image), got {V.describe(targets)}")
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' (N, 4) xyxy and 'labels' (N,)")
        boxes = t["boxes"]
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be an (N, 4) tensor of xyxy boxes, got {V.describe(boxes)}")
        fmt = getattr(boxes, "format", None)
        if fmt is not None and str(getattr(fmt, "name", fmt)).upper() != "XYXY":
            raise ValueError(f"targets[{i}]['boxes'] are in format {fmt}; convert them to XYXY "
                             "(torchvision.transforms.v2.ConvertBoundingBoxFormat('XYXY'))")
        n = boxes.shape[0]
        if t["labels"].shape[:1] != (n,):
            raise ValueError(f"targets[{i}]['labels'] must hold {n} labels (one per box), got shape "
                             f"{tuple(t['labels'].shape)}")
        t = dict(t)
        t.setdefault("weights", torch.ones(n, device=boxes.device))
        out.append(t)
    return out


def _plain(boxes: torch.Tensor) -> torch.Tensor:
    return boxes.as_subclass(torch.Tensor) if type(boxes) is not torch.Tensor else boxes


def _rewrap(boxes: torch.Tensor, like: torch.Tensor, canvas) -> torch.Tensor:
    """Keep a ``tv_tensors.BoundingBoxes`` marker (and the canvas size) on new boxes."""
    if type(like) is torch.Tensor or "torchvision.tv_tensors" not in sys.modules:
        return boxes
    tv = sys.modules["torchvision.tv_tensors"]
    return tv.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas)


def _take(t: dict, keep: torch.Tensor, boxes: torch.Tensor, weights: torch.Tensor, canvas) -> dict:
    """The target ``t`` restricted to ``keep`` rows, with new boxes and weights."""
    n = t["boxes"].shape[0]
    out = {k: (v[keep] if isinstance(v, torch.Tensor) and v.shape[:1] == (n,) else v) for k, v in t.items()}
    out["boxes"] = _rewrap(boxes[keep], t["boxes"], canvas)
    out["weights"] = weights[keep]
    return out


def _cat(a: dict, b: dict) -> dict:
    out = {}
    for k in a:
        va, vb = a[k], b.get(k)
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.ndim and vb.ndim \
                and va.shape[1:] == vb.shape[1:]:
            out[k] = torch.cat([_plain(va), _plain(vb)])
            if k == "boxes":
                out[k] = _rewrap(out[k], va, getattr(va, "canvas_size", None))
        else:
            out[k] = va
    return out


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` areas of ``xyxy`` boxes (0 for empty ones)."""
    b = _plain(boxes)
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def clip_boxes(boxes: torch.Tensor, x0, y0, x1, y1) -> torch.Tensor:
    """``xyxy`` boxes clipped to the rectangle ``[x0, x1] x [y0, y1]``."""
    b = _plain(boxes).clone()
    b[:, 0::2] = b[:, 0::2].clamp(min=x0, max=x1)
    b[:, 1::2] = b[:, 1::2].clamp(min=y0, max=y1)
    return b


def _out_images(mixed: torch.Tensor, listed: bool):
    return list(mixed.unbind(0)) if listed else mixed


class MixUp:
    """Detection MixUp (Zhang et al. 2019): blend two images, keep both images' boxes, weighted.

    Args:
        alpha: Beta(alpha, alpha) for ``lam`` (default 1.5, the paper's).
        mode: ``"batch"`` (one ``lam``) or ``"sample"`` (one per image).
        generator: random generator on the images' device.
    """

    def __init__(self, alpha: float = 1.5, *, mode: str = "sample", generator=None):
        self.alpha = V.alpha(alpha)
        self.mode = V.choice(mode, "mode", ("batch", "sample"))
        self.generator = V.generator(generator)

    def __call__(self, images, targets):
        x, listed = _stack(images)
        targets = _check_targets(targets, x.shape[0])
        params = sample_params(x.shape[0], alpha=self.alpha, mode=self.mode, generator=self.generator,
                               device=x.device)
        mixed = mix(x, params)
        out = []
        for i, j in enumerate(params.index.tolist()):
            lam = params.lam[i]
            a = dict(targets[i], weights=targets[i]["weights"] * lam)
            if j == i:  # its own partner: unmixed
                out.append(dict(targets[i]))
                continue
            b = dict(targets[j], weights=targets[j]["weights"] * (1 - lam))
            out.append(_cat(a, b))
        return _out_images(mixed, listed), out


class CutMix:
    """Detection CutMix: paste a box of the partner; its boxes are clipped to the pasted region.

    Args:
        alpha: Beta(alpha, alpha) for the kept share (default 1.0).
        min_visible: keep a box when at least this share of its area stays visible (default 0.3).
        mode: ``"batch"`` (one region) or ``"sample"`` (one per image).
        generator: random generator on the images' device.
    """

    def __init__(self, alpha: float = 1.0, *, min_visible: float = 0.3, mode: str = "sample", generator=None):
        self.alpha = V.alpha(alpha)
        self.min_visible = V.probability(min_visible, "min_visible")
        self.mode = V.choice(mode, "mode", ("batch", "sample"))
        self.generator = V.generator(generator)

    def __call__(self, images, targets):
        x, listed = _stack(images)
        B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        targets = _check_targets(targets, B)
        base = sample_params(B, alpha=self.alpha, mode=self.mode, generator=self.generator, device=x.device)
        n = min(B, 1) if self.mode == "batch" else B
        region, lam = sample_box(base.lam[:n], (H, W), generator=self.generator)
        if n != B:
            region = type(region)(region.box.expand(B, -1, -1).contiguous(), (H, W))
        params = MixParams(region.kept(), base.index, region)
        mixed = mix(x, params)
        out = []
        for i, j in enumerate(params.index.tolist()):
            (y0, y1), (x0, x1) = params.region.box[i].tolist()
            if j == i or y1 <= y0 or x1 <= x0:
                out.append(dict(targets[i]))
                continue
            own, other = targets[i], targets[j]
            ob = _plain(own["boxes"]).float()
            area = box_area(ob)
            hidden = box_area(clip_boxes(ob, x0, y0, x1, y1))
            keep_own = (area - hidden) >= self.min_visible * area.clamp(min=1e-12)
            pb = clip_boxes(other["boxes"].float(), x0, y0, x1, y1)
            keep_other = box_area(pb) >= self.min_visible * box_area(other["boxes"]).clamp(min=1e-12)
            a = _take(own, keep_own, ob.to(own["boxes"].dtype), own["weights"], (H, W))
            b = _take(other, keep_other & (box_area(pb) > 0), pb.to(other["boxes"].dtype), other["weights"], (H, W))
            out.append(_cat(a, b))
        return _out_images(mixed, listed), out


class Mosaic:
    """Four-image mosaic (YOLOv4): four images share the canvas around a random centre.

    Image ``i`` and three partners fill the top-left, top-right, bottom-left and bottom-right
    quadrants with the corner of each image that falls there (no resizing: each image keeps its
    scale); boxes move with their image, are clipped to its quadrant and kept when
    ``min_visible`` of their area remains. The centre is uniform in the middle half of the image
    (``centre=(0.25, 0.75)``).

    Args:
        centre: range of the centre, as a share of the image size.
        min_visible: keep a box when at least this share of its area stays visible.
        generator: random generator on the images' device.
    """

    def __init__(self, *, centre=(0.25, 0.75), min_visible: float = 0.3, generator=None):
        if not isinstance(centre, (tuple, list)) or len(centre) != 2:
            raise ValueError(f"centre must be a pair (low, high) within [0, 1], got {centre!r}")
        low, high = (V.probability(v, "centre") for v in centre)
        if low > high:
            raise ValueError(f"centre must be a pair (low, high) with low <= high, got {centre!r}")
        self.centre = (low, high)
        self.min_visible = V.probability(min_visible, "min_visible")
        self.generator = V.generator(generator)

    def __call__(self, images, targets):
        x, listed = _stack(images)
        B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        targets = _check_targets(targets, B)
        g = self.generator
        parts = [torch.arange(B, device=x.device)] + [partner_index(B, generator=g, device=x.device) for _ in range(3)]
        u = torch.rand(B, 2, device=x.device, **rng(g))
        low, high = self.centre
        cy = (H * (low + (high - low) * u[:, 0])).long().clamp(0, H).tolist()
        cx = (W * (low + (high - low) * u[:, 1])).long().clamp(0, W).tolist()
        out_x = torch.empty_like(x)
        out_t = []
        for i in range(B):
            # (source row, destination rectangle, source rectangle): quadrants TL, TR, BL, BR
            quads = [((0, cy[i]), (0, cx[i]), (H - cy[i], H), (W - cx[i], W)),
                     ((0, cy[i]), (cx[i], W), (H - cy[i], H), (0, W - cx[i])),
                     ((cy[i], H), (0, cx[i]), (0, H - cy[i]), (W - cx[i], W)),
                     ((cy[i], H), (cx[i], W), (0, H - cy[i]), (0, W - cx[i]))]
            acc = None
            for q, ((dy0, dy1), (dx0, dx1), (sy0, sy1), (sx0, sx1)) in enumerate(quads):
                j = int(parts[q][i])
                out_x[i, :, dy0:dy1, dx0:dx1] = x[j, :, sy0:sy1, sx0:sx1]
                t = targets[j]
                b = _plain(t["boxes"]).float()
                shifted = b + torch.tensor([dx0 - sx0, dy0 - sy0, dx0 - sx0, dy0 - sy0], dtype=b.dtype, device=b.device)
                clipped = clip_boxes(shifted, dx0, dy0, dx1, dy1)
                keep = (box_area(clipped) > 0) & (box_area(clipped) >= self.min_visible * box_area(b).clamp(min=1e-12))
                part = _take(t, keep, clipped.to(t["boxes"].dtype), t["weights"], (H, W))
                acc = part if acc is None else _cat(acc, part)
            out_t.append(acc)
        return _out_images(out_x, listed), out_t
