"""Detection targets: checking them, and moving boxes with their per-box values (masks, area, ...).

The shared bookkeeping of :mod:`mixlab.detection` (MixUp, CutMix, Mosaic) and
:mod:`mixlab.detection_copypaste`: the images of a batch (a tensor or a list of sizes), the target
checks, box clipping and filtering, instance masks moved, cropped, resized and padded with their
image, and the base of the transforms (``enabled``, the generator, the worker's stream).

Pixel rule for boxes and masks: pixel ``(r, c)`` is inside box ``xyxy`` iff it overlaps it,
``floor(x0) <= c < ceil(x1)`` and ``floor(y0) <= r < ceil(y1)``; a box computed from a mask
(:func:`masks_to_boxes`) ends one past its last pixel.
"""
from __future__ import annotations

import sys

import torch

from . import _fast
from . import _validate as V
from .mixer import worker_generator

__all__ = ["box_area", "clip_boxes", "masks_to_boxes"]

HANDLED = ("boxes", "labels", "weights", "masks", "area", "iscrowd")
# per-image keys that may happen to have one row per box (torchvision's COCO image_id is (1,), DETR's sizes (2,))
PER_IMAGE = ("image_id", "orig_size", "size")


# --- images ------------------------------------------------------------------------------------

def images_of(images) -> tuple[list, bool]:
    """``(list of (C, H, W) images, listed)``: ``listed`` when the batch came as a list or tuple."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        return list(images.unbind(0)), False
    if isinstance(images, (list, tuple)) and images and all(isinstance(t, torch.Tensor) for t in images):
        bad = next((i for i, t in enumerate(images) if t.ndim != 3), None)
        if bad is not None:
            raise ValueError(f"images[{bad}] must be a (C, H, W) image, got shape {tuple(images[bad].shape)}")
        return list(images), True
    raise TypeError(f"images must be a (B, C, H, W) tensor or a list of (C, H, W) tensors, got {V.describe(images)}")


def sizes_of(images: list) -> list:
    return [tuple(t.shape[-2:]) for t in images]


def one_size(images: list, who: str) -> tuple:
    """The images' common ``(H, W)``, or an error naming ``who`` and the ways out."""
    sizes = sizes_of(images)
    if len(set(sizes)) != 1:
        raise ValueError(f"{who} needs images of one size, got sizes {sorted(set(sizes))}; resize them "
                         "(torchvision.transforms.v2.Resize), or use MixUp (pads to the larger image) or "
                         "Mosaic(size=S) (letterboxes each image into S x S on a 2S x 2S canvas)")
    return sizes[0]


def out_images(images: list, listed: bool):
    return list(images) if listed else torch.stack(images)


def gray(fill, like: torch.Tensor) -> float:
    """The padding value: ``fill``, or 114 of 255 (ultralytics' and mmdetection's gray) by default."""
    if fill is not None:
        return fill
    return 114 / 255 if like.is_floating_point() else 114


def resize_image(image: torch.Tensor, size) -> torch.Tensor:
    """``(C, H, W)`` image resized to ``size``, bilinear with antialiasing (torchvision's ``resize``)."""
    size = tuple(size)
    if tuple(image.shape[-2:]) == size:
        return image
    x = image if image.is_floating_point() else image.float()
    out = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if not image.is_floating_point():
        info = torch.iinfo(image.dtype)
        out = out.round().clamp(info.min, info.max)
    return out.to(image.dtype)


def pad_to(x: torch.Tensor, size, fill) -> torch.Tensor:
    """``x`` ``(..., h, w)`` placed at the top left of a ``size`` canvas filled with ``fill``."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    out = x.new_full((*x.shape[:-2], *size), fill)
    out[..., :h, :w] = x
    return out


# --- targets -----------------------------------------------------------------------------------

def is_rows(v, n: int) -> bool:
    return isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n


def _check_one(t, i: int, size) -> dict:
    """Check ``targets[i]`` (boxes, labels and the handled per-box keys); add unit ``weights``."""
    if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
        raise ValueError(f"targets[{i}] must be a dict with 'boxes' (N, 4) xyxy and 'labels' (N,), "
                         f"got {V.describe(t)}")
    boxes = t["boxes"]
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"targets[{i}]['boxes'] must be an (N, 4) tensor of xyxy boxes, got {V.describe(boxes)}")
    fmt = getattr(boxes, "format", None)
    if fmt is not None and str(getattr(fmt, "name", fmt)).upper() != "XYXY":
        raise ValueError(f"targets[{i}]['boxes'] are in format {fmt}; convert them to XYXY "
                         "(torchvision.transforms.v2.ConvertBoundingBoxFormat('XYXY'))")
    n = boxes.shape[0]
    for key in ("labels", "weights", "area", "iscrowd"):
        if key in t and not (is_rows(t[key], n) and t[key].ndim == 1):
            raise ValueError(f"targets[{i}][{key!r}] must be a tensor of shape ({n},) (one value per box), "
                             f"got {V.describe(t[key])}")
    if "masks" in t:
        m = t["masks"]
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (n, *size):
            raise ValueError(f"targets[{i}]['masks'] must be ({n}, {size[0]}, {size[1]}) instance masks "
                             f"(one per box, the image's size), got {V.describe(m)}")
    t = dict(t)
    t.setdefault("weights", torch.ones(n, device=boxes.device))
    return t


def check_targets(targets, sizes: list, moves: str | None = None) -> tuple[list, tuple]:
    """Check the targets and find their per-box keys.

    Args:
        targets: the list of ``B`` target dicts.
        sizes: ``(H, W)`` of each image (its instance masks must have it).
        moves: the transform's name when it moves or crops boxes (per-box keys it does not handle are
            then refused), ``None`` when it does not (MixUp: every per-box key is carried unchanged).

    Returns:
        The targets (copies, with unit ``"weights"`` added where missing) and their per-box keys.
    """
    B = len(sizes)
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        raise ValueError(f"targets must be a list of {B} dicts (one per image), got {V.describe(targets)}")
    out = [_check_one(t, i, size) for i, (t, size) in enumerate(zip(targets, sizes))]
    keys = []
    for key in dict.fromkeys(k for t in out for k in t):
        present = [i for i, t in enumerate(out) if key in t]
        rows = [i for i in present if is_rows(out[i][key], out[i]["boxes"].shape[0])]
        if key in PER_IMAGE or not rows:
            continue  # a per-image value: the original image's is kept
        if key not in HANDLED and len(rows) < len(present):
            shapes = {tuple(out[i][key].shape) if isinstance(out[i][key], torch.Tensor) else None for i in present}
            if len(shapes) == 1:
                continue  # one shape in every target (a per-image value that matches some box count): kept as such
            i = next(i for i in present if i not in rows)
            v, n = out[i][key], out[i]["boxes"].shape[0]
            got = f"{v.shape[0]} row{'s' if v.shape[0] != 1 else ''}" if isinstance(v, torch.Tensor) and v.ndim \
                else V.describe(v)
            raise ValueError(f"targets[{i}][{key!r}] has {got} but targets[{i}] has {n} boxes, while "
                             f"targets[{rows[0]}][{key!r}] holds one row per box: a per-box key needs one row per box "
                             f"in every target")
        if len(present) < B:
            missing = next(i for i in range(B) if i not in present)
            raise ValueError(f"targets[{present[0]}] has the per-box key {key!r} and targets[{missing}] has not; "
                             f"every target must hold the same per-box keys to be mixed")
        if moves and key not in HANDLED:
            i = rows[0]
            raise ValueError(f"targets[{i}][{key!r}] holds one row per box (shape {tuple(out[i][key].shape)}) "
                             f"and {moves} moves and crops boxes; it handles {', '.join(HANDLED)} only. "
                             f"Drop {key!r} before mixing (MixUp, which moves nothing, carries it)")
        keys.append(key)
    return out, tuple(keys)


def plain(boxes: torch.Tensor) -> torch.Tensor:
    return boxes.as_subclass(torch.Tensor) if type(boxes) is not torch.Tensor else boxes


def rewrap(value: torch.Tensor, like: torch.Tensor, canvas) -> torch.Tensor:
    """Keep a ``tv_tensors`` marker (BoundingBoxes with the canvas size, or Mask) on new values."""
    if type(like) is torch.Tensor or "torchvision.tv_tensors" not in sys.modules:
        return value
    tv = sys.modules["torchvision.tv_tensors"]
    if isinstance(like, tv.BoundingBoxes):
        return tv.BoundingBoxes(value, format="XYXY", canvas_size=tuple(canvas))
    if isinstance(like, tv.Mask):
        return tv.Mask(value)
    return value


def take(t: dict, keep: torch.Tensor, boxes: torch.Tensor, masks, visible, canvas) -> dict:
    """The target ``t`` restricted to its ``keep`` boxes, with new boxes and (if ``t`` has them) masks.

    ``masks`` are the kept instances' new masks; ``area``, when present, becomes the visible area: the
    masks' pixel count when there are masks, else ``visible[keep]``.
    """
    n = t["boxes"].shape[0]
    out = {k: (plain(v)[keep] if k in HANDLED and is_rows(v, n) else v) for k, v in t.items()}
    out["boxes"] = rewrap(boxes[keep], t["boxes"], canvas)
    if masks is not None:
        out["masks"] = rewrap(masks, t["masks"], canvas)
    if "area" in t:
        area = (masks != 0).flatten(1).sum(1) if masks is not None else visible[keep]
        out["area"] = area.to(t["area"].dtype)
    return out


def visible_share(min_visible: float):
    """The box filter of CutMix: kept when its clipped area is positive and at least ``min_visible`` of its own."""
    def keep(before, after):
        visible = box_area(after)
        return (visible > 0) & (visible >= min_visible * box_area(before).clamp(min=1e-12))
    return keep


def moved(t: dict, src, dst, box_filter, canvas) -> dict:
    """``t``'s instances seen through the window ``src`` of their image, pasted at ``dst``.

    Windows are ``(y0, y1, x0, x1)`` integer pixel rectangles of one size. Boxes are shifted and
    clipped to ``dst`` and kept where ``box_filter(shifted, clipped)`` holds; masks are cropped to
    ``src`` and placed at ``dst`` on an empty ``canvas``-sized mask, like the pixels.
    """
    (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1) = src, dst
    b = plain(t["boxes"]).float()
    shifted = b + b.new_tensor([dx0 - sx0, dy0 - sy0, dx0 - sx0, dy0 - sy0])
    clipped = clip_boxes(shifted, dx0, dy0, dx1, dy1)
    keep = box_filter(shifted, clipped)
    masks = None
    if "masks" in t:
        m = plain(t["masks"])[keep]
        masks = m.new_zeros((m.shape[0], *canvas))
        masks[:, dy0:dy1, dx0:dx1] = m[:, sy0:sy1, sx0:sx1]
    return take(t, keep, clipped.to(t["boxes"].dtype), masks, box_area(clipped), canvas)


def covered(t: dict, rect, min_visible: float, canvas) -> dict:
    """``t``'s instances with the rectangle ``rect`` ``(y0, y1, x0, x1)`` pasted over them.

    Boxes are kept unchanged when at least ``min_visible`` of their area stays uncovered; their
    masks are zeroed under ``rect``.
    """
    y0, y1, x0, x1 = rect
    b = plain(t["boxes"])
    area = box_area(b.float())
    visible = area - box_area(clip_boxes(b.float(), x0, y0, x1, y1))
    keep = visible >= min_visible * area.clamp(min=1e-12)
    masks = None
    if "masks" in t:
        masks = plain(t["masks"])[keep].clone()
        masks[:, y0:y1, x0:x1] = 0
    return take(t, keep, b, masks, visible, canvas)


def cat(a: dict, b: dict, keys) -> dict:
    """``a`` with ``b``'s boxes appended: the per-box ``keys`` concatenated, the rest ``a``'s."""
    out = dict(a)
    for k in keys:
        va, vb = plain(a[k]), plain(b[k])
        if va.shape[1:] != vb.shape[1:]:
            raise ValueError(f"targets' {k!r} rows must have one shape to be concatenated, got "
                             f"{tuple(va.shape[1:])} and {tuple(vb.shape[1:])}")
        out[k] = rewrap(torch.cat([va, vb.to(va.dtype)]), a[k], getattr(a[k], "canvas_size", None))
    return out


def footprints(boxes: torch.Tensor, size) -> torch.Tensor:
    """``(N, H, W)`` bool: the pixels each ``xyxy`` box overlaps (the pixel rule)."""
    H, W = size
    b = plain(boxes).float()
    c = torch.arange(W, device=b.device).view(1, 1, W)
    r = torch.arange(H, device=b.device).view(1, H, 1)
    x0, y0 = b[:, 0].floor().view(-1, 1, 1), b[:, 1].floor().view(-1, 1, 1)
    x1, y1 = b[:, 2].ceil().view(-1, 1, 1), b[:, 3].ceil().view(-1, 1, 1)
    return (c >= x0) & (c < x1) & (r >= y0) & (r < y1)


def resized(t: dict, src_size, dst_size) -> dict:
    """``t``'s instances for its image resized from ``src_size`` to ``dst_size`` ``(H, W)``.

    Boxes are scaled per axis (as torchvision, ultralytics and mmdetection do); masks are resized
    nearest-neighbour (torchvision's rule for masks) and cut to their scaled box's pixels, which a
    nearest-resized mask can overstep by one pixel where a box edge falls inside a pixel.
    """
    if tuple(src_size) == tuple(dst_size):
        return t
    (sh, sw), (dh, dw) = src_size, dst_size
    out = dict(t)
    b = plain(t["boxes"])
    boxes = b * b.new_tensor([dw / sw, dh / sh, dw / sw, dh / sh])
    out["boxes"] = rewrap(boxes, t["boxes"], dst_size)
    if "masks" in t:
        m = plain(t["masks"])
        up = torch.nn.functional.interpolate(m[None].float(), size=tuple(dst_size), mode="nearest")[0].to(m.dtype)
        out["masks"] = rewrap(up.masked_fill(~footprints(boxes, dst_size), 0), t["masks"], dst_size)
    return out


def padded(t: dict, size) -> dict:
    """``t`` for its image placed at the top left of a ``size`` canvas (boxes unchanged, masks padded)."""
    if "masks" not in t or tuple(t["masks"].shape[-2:]) == tuple(size):
        return t
    return dict(t, masks=rewrap(pad_to(plain(t["masks"]), size, 0), t["masks"], size))


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` areas of ``xyxy`` boxes (0 for empty ones)."""
    b = plain(boxes)
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def clip_boxes(boxes: torch.Tensor, x0, y0, x1, y1) -> torch.Tensor:
    """``xyxy`` boxes clipped to the rectangle ``[x0, x1] x [y0, y1]``."""
    b = plain(boxes).clone()
    b[:, 0::2] = b[:, 0::2].clamp(min=x0, max=x1)
    b[:, 1::2] = b[:, 1::2].clamp(min=y0, max=y1)
    return b


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` float ``xyxy`` boxes of ``(N, H, W)`` masks, ``x1``/``y1`` one past the last pixel.

    (torchvision's ``ops.masks_to_boxes`` gives the last pixel itself, so a one-pixel-wide mask has an
    empty box there.) An empty mask gives an empty box ``(W, H, 0, 0)``.
    """
    m = plain(masks) != 0
    N, H, W = m.shape
    rows, cols = m.any(2), m.any(1)  # (N, H), (N, W)
    r = torch.arange(H, device=m.device).expand(N, H)
    c = torch.arange(W, device=m.device).expand(N, W)
    x0 = torch.where(cols, c, W).amin(1)
    x1 = torch.where(cols, c + 1, 0).amax(1)
    y0 = torch.where(rows, r, H).amin(1)
    y1 = torch.where(rows, r + 1, 0).amax(1)
    return torch.stack([x0, y0, x1, y1], 1).float()


# --- the transforms' base ----------------------------------------------------------------------

class Transform:
    """What every detection transform shares: ``enabled``, ``generator``, a stream per DataLoader worker.

    ``transform(images, targets, params=None)`` checks the batch, draws its parameters with
    :meth:`sample` (or takes ``params`` from an earlier :meth:`sample`) and applies them. With
    ``enabled = False`` (the switch the library's schedules set: ``stop_epoch``, ultralytics'
    ``close_mosaic``) it returns the images unchanged and the checked targets (with unit weights).
    """

    moves: str | None = None  # the name used in errors when the transform moves boxes

    def __init__(self, *, enabled: bool = True, generator=None):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, got {V.describe(enabled)}")
        self.enabled = enabled
        self.generator = V.generator(generator)
        self._worker = {}

    def _rng(self):
        return worker_generator(self.generator, self._worker)

    def _batch(self, images, targets):
        images, listed = images_of(images)
        targets, keys = check_targets(targets, sizes_of(images), moves=self.moves)
        return images, listed, targets, keys

    def sample(self, images, targets):
        """Draw the parameters of one call (the transform's own draws; see its ``params`` type)."""
        images, listed, targets, keys = self._batch(images, targets)
        return self._draw(images, targets)

    def __call__(self, images, targets, *, params=None):
        batch, listed, checked, keys = self._batch(images, targets)
        if not self.enabled:
            return (list(batch) if listed else images), checked
        def call():
            drawn = self._draw(batch, checked) if params is None else params
            return self._apply(batch, listed, checked, keys, drawn)

        if not len(batch):
            return call()
        # On the CPU the call runs with torch's threads or one thread, whichever is faster now (_fast.paced): its
        # many per-image ops each stall when another process holds a core.
        numel = sum(im.numel() for im in batch)
        kind = f"detection:{type(self).__name__}:{batch[0].dtype}:{numel.bit_length()}"
        return _fast.paced_call(kind, batch[0], numel, call)

    def _draw(self, images: list, targets: list):  # pragma: no cover - each transform defines it
        raise NotImplementedError

    def _apply(self, images: list, listed: bool, targets: list, keys: tuple, params):  # pragma: no cover
        raise NotImplementedError

    def __getstate__(self):
        return dict(vars(self), _worker={})  # a worker's stream is never shipped
