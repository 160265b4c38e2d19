"""Mixing for object detection and instance segmentation: MixUp, CutMix, Mosaic, Copy-Paste.

Inputs are ``(images, targets)`` as torchvision's detection models take them: ``images`` a
``(B, C, H, W)`` tensor or a list of ``(C, H, W)`` tensors (of different sizes for MixUp, Mosaic
with ``size=`` and Copy-Paste), ``targets`` a list of ``B`` dicts holding ``"boxes"`` ``(N, 4)`` in
``xyxy`` pixels (a plain tensor or ``tv_tensors.BoundingBoxes``) and ``"labels"`` ``(N,)``. Each
transform returns the same structure (a list of images for a list), with a per-box loss weight
``"weights"`` ``(N,)`` in every target (1 where the input had none):

- :class:`MixUp` ("Bag of Freebies for Training Object Detection Neural Networks", Zhang et al.
  2019): ``lam * image_i + (1 - lam) * image_j``; the boxes of both images are kept, weighted
  ``lam`` and ``1 - lam`` (``lam ~ Beta(1.5, 1.5)`` by default, the paper's). Images of different
  sizes are placed at the top left of the larger size (the pair's largest height and width), the
  rest filled with ``fill``; boxes do not move, masks are padded.
- :class:`CutMix`: a box of the partner is pasted (mixlab's CutMix region); the partner's boxes
  are clipped to it and kept when a ``min_visible`` share of them remains; the original's boxes
  are kept when at least ``min_visible`` of their area is still visible. Images of one size.
- :class:`Mosaic` (YOLOv4's four-image mosaic): four images share a canvas around a random centre.
  Without ``size`` the canvas is the images' (equal) size and each image contributes the corner
  that falls in its quadrant; with ``size=S`` each image is letterboxed (resized, aspect kept) to
  fit ``S x S`` and the four are placed around the centre of a ``2S x 2S`` canvas, as ultralytics
  and mmdetection do. Boxes are filtered as ultralytics' ``box_candidates``.
- :class:`~mixlab.detection_copypaste.CopyPaste` (Ghiasi et al. 2021, torchvision's
  ``SimpleCopyPaste``): instances of a partner pasted by their masks; occluded instances of the
  original get new masks, boxes and areas, covered ones are dropped. :func:`copy_paste` is one pair.

Per-box keys (a tensor whose first dim is the number of boxes ``N``) follow their boxes:

- ``"masks"`` ``(N, H, W)`` instance masks (plain or ``tv_tensors.Mask``) move with the pixels:
  Mosaic crops (and resizes) them with their image and places them in its tile; CutMix pastes the
  partner's masks cropped to the pasted box and zeroes the original's under it; Copy-Paste zeroes
  the original's under the pasted instances. A mask therefore lies inside its box under the rule
  "pixel ``(r, c)`` is inside box ``xyxy`` iff it overlaps it: ``floor(x0) <= c < ceil(x1)`` and
  ``floor(y0) <= r < ceil(y1)``" whenever it did in the input (crops and shifts are whole pixels;
  a resized mask is cut to its scaled box).
- ``"area"`` is recomputed as the visible area: the mask's pixel count when there are masks,
  else the box's area not covered (the clipped box's for moved boxes).
- ``"labels"``, ``"iscrowd"`` and ``"weights"`` are kept, dropped with their box.
- Boxes dropped by a filter drop all of their per-box values.
- Other per-box keys (keypoints, for instance) are refused by CutMix, Mosaic and Copy-Paste,
  which would have to move them, with an error naming the key; MixUp, which moves nothing,
  concatenates every per-box key of both images unchanged.
- Per-image values (non-tensors, ``"image_id"``, ``"orig_size"``, ``"size"``, tensors whose
  first dim is the number of boxes in no target, or of one shape in every target) are the
  original image's. A key with one row per box in some targets and a different number of rows
  in others is refused, naming the key and the target (it would be left shorter than the boxes).

Box weights: only MixUp makes weights other than 1 (the others carry the input's). torchvision's
detectors ignore a ``"weights"`` key; two ways to train on MixUp:

- weighted: ``handle = weight_box_losses(model)`` on a Faster / Mask / Keypoint R-CNN, then
  ``model(images, targets)`` with the returned targets: each sampled proposal's box-head
  classification and regression terms are multiplied by the weight of the box it is matched to
  (background proposals weigh 1; the RPN, mask and keypoint losses are not weighted; see
  :func:`~mixlab.detection_weights.weight_box_losses` for exactly what is and is not).
- weight-free (ultralytics' YOLOv5/v8 recipe, and the way for detectors without a box head hook:
  RetinaNet, FCOS, SSD): ``MixUp(alpha=32.0)``, so ``lam ~ Beta(32, 32)`` stays near 0.5
  (standard deviation 0.06), and pass only ``"boxes"`` and ``"labels"``: every box counts fully.

Close mosaic: every transform has ``enabled``; the library's schedules switch it off from
``stop_epoch`` on (``mixlab.transforms.apply_schedule``, ``MixCollate(..., stop_epoch=)``, the
fastai / Lightning / Keras callbacks), ultralytics' ``close_mosaic``. Switched off, a transform
returns the images unchanged and the targets with unit weights. Each transform also has
``sample(images, targets)`` (the draws of one call) and takes them back as ``params=``.

Host step: targets are Python lists of per-image tensors, so the box bookkeeping runs per image
and reads the partners and regions back once per call (a sync on an accelerator).

Convention: ``lam`` weights the original image; boxes are ``xyxy`` in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _validate as V
from .detection_copypaste import CopyPaste, CopyPasteParams, copy_paste
from .detection_targets import (Transform, box_area, cat, clip_boxes, covered, gray, masks_to_boxes, moved,
                                one_size, out_images, pad_to, padded, resize_image, resized, visible_share)
from .detection_weights import weight_box_losses, weighted_fastrcnn_loss
from .ops import mix
from .pairing import partner_index
from .params import MixParams, sample_box, sample_params
from .sampling import rng

__all__ = ["MixUp", "CutMix", "Mosaic", "MosaicParams", "CopyPaste", "CopyPasteParams", "copy_paste", "box_area",
           "clip_boxes", "masks_to_boxes", "weight_box_losses", "weighted_fastrcnn_loss"]


def _fill(fill):
    return None if fill is None else V.real(fill, "fill")


class MixUp(Transform):
    """Detection MixUp (Zhang et al. 2019): blend two images, keep both images' boxes, weighted.

    Images of different sizes: the pair is blended on the larger size (their largest height and
    width), each at the top left, the rest ``fill``; boxes keep their coordinates, masks are padded.

    Args:
        alpha: Beta(alpha, alpha) for ``lam`` (default 1.5, the paper's).
        mode: ``"batch"`` (one ``lam``) or ``"sample"`` (one per image).
        fill: padding value for images of different sizes (default 114 of 255, ultralytics' gray).
        enabled: ``False`` returns the batch unmixed (schedules set it).
        generator: random generator on the images' device.

    ``sample(images, targets)`` returns the :class:`~mixlab.MixParams` (``lam``, ``index``).
    """

    def __init__(self, alpha: float = 1.5, *, mode: str = "sample", fill=None, enabled: bool = True,
                 generator=None):
        super().__init__(enabled=enabled, generator=generator)
        self.alpha = V.alpha(alpha)
        self.mode = V.choice(mode, "mode", ("batch", "sample"))
        self.fill = _fill(fill)

    def _draw(self, images, targets):
        return sample_params(len(images), alpha=self.alpha, mode=self.mode, generator=self._rng(),
                             device=images[0].device)

    def _apply(self, images, listed, targets, keys, params):
        index = params.index.tolist()
        if len({tuple(x.shape) for x in images}) == 1:
            mixed = list(mix(torch.stack(images), params).unbind(0))
        else:
            mixed = [self._blend(images[i], images[j], params.lam[i]) if j != i else images[i]
                     for i, j in enumerate(index)]
        out = []
        for i, j in enumerate(index):
            lam = params.lam[i]
            if j == i:  # its own partner: unmixed
                out.append(dict(targets[i]))
                continue
            size = tuple(mixed[i].shape[-2:])
            a = dict(padded(targets[i], size), weights=targets[i]["weights"] * lam)
            b = dict(padded(targets[j], size), weights=targets[j]["weights"] * (1 - lam))
            out.append(cat(a, b, keys))
        return out_images(mixed, listed), out

    def _blend(self, a, b, lam):
        size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))
        fill = gray(self.fill, a)
        acc = torch.float32 if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16) else a.dtype
        lam = lam.to(acc)
        out = lam * pad_to(a, size, fill).to(acc) + (1 - lam) * pad_to(b.to(a.dtype), size, fill).to(acc)
        if not a.is_floating_point():
            info = torch.iinfo(a.dtype)
            out = out.round().clamp(info.min, info.max)
        return out.to(a.dtype)


class CutMix(Transform):
    """Detection CutMix: paste a box of the partner; its boxes are clipped to the pasted region.

    Args:
        alpha: Beta(alpha, alpha) for the kept share (default 1.0).
        min_visible: keep a box when at least this share of its area stays visible (default 0.3).
        mode: ``"batch"`` (one region) or ``"sample"`` (one per image).
        enabled: ``False`` returns the batch unmixed (schedules set it).
        generator: random generator on the images' device.

    ``sample(images, targets)`` returns the :class:`~mixlab.MixParams` with its ``Box`` region.
    """

    moves = "CutMix"

    def __init__(self, alpha: float = 1.0, *, min_visible: float = 0.3, mode: str = "sample",
                 enabled: bool = True, generator=None):
        super().__init__(enabled=enabled, generator=generator)
        self.alpha = V.alpha(alpha)
        self.min_visible = V.probability(min_visible, "min_visible")
        self.mode = V.choice(mode, "mode", ("batch", "sample"))

    def _draw(self, images, targets):
        (H, W), B, g = one_size(images, "CutMix"), len(images), self._rng()
        base = sample_params(B, alpha=self.alpha, mode=self.mode, generator=g, device=images[0].device)
        n = min(B, 1) if self.mode == "batch" else B
        region, lam = sample_box(base.lam[:n], (H, W), generator=g)
        if n != B:
            region = type(region)(region.box.expand(B, -1, -1).contiguous(), (H, W))
        return MixParams(region.lam, base.index, region)

    def _apply(self, images, listed, targets, keys, params):
        H, W = one_size(images, "CutMix")
        mixed = mix(torch.stack(images), params)
        out = []
        for i, j in enumerate(params.index.tolist()):
            (y0, y1), (x0, x1) = params.region.box[i].tolist()
            if j == i or y1 <= y0 or x1 <= x0:
                out.append(dict(targets[i]))
                continue
            rect = (y0, y1, x0, x1)
            a = covered(targets[i], rect, self.min_visible, (H, W))
            b = moved(targets[j], rect, rect, visible_share(self.min_visible), (H, W))
            out.append(cat(a, b, keys))
        return out_images(list(mixed.unbind(0)), listed), out


@dataclass(frozen=True)
class MosaicParams:
    """The draws of one :class:`Mosaic` call.

    Attributes:
        parts: ``(4, B)`` int64, the images of the top-left, top-right, bottom-left and
            bottom-right tiles of mosaic ``i`` (``parts[0]`` is ``arange(B)``).
        centre: ``(B, 2)`` int64 ``(y, x)`` of each mosaic's centre on its canvas.
    """

    parts: torch.Tensor
    centre: torch.Tensor


def _windows(yc, xc, canvas, sizes):
    """ultralytics' ``_mosaic4`` placement: per tile, the (canvas, image) windows ``(y0, y1, x0, x1)``."""
    CH, CW = canvas
    out = []
    for q, (h, w) in enumerate(sizes):
        top, left = q in (0, 1), q in (0, 2)
        y0, y1 = (max(yc - h, 0), yc) if top else (yc, min(CH, yc + h))
        x0, x1 = (max(xc - w, 0), xc) if left else (xc, min(CW, xc + w))
        sy0 = h - (y1 - y0) if top else 0
        sx0 = w - (x1 - x0) if left else 0
        out.append(((y0, y1, x0, x1), (sy0, sy0 + y1 - y0, sx0, sx0 + x1 - x0)))
    return out


class Mosaic(Transform):
    """Four-image mosaic (YOLOv4; ultralytics' and mmdetection's ``Mosaic`` with ``size``).

    Image ``i`` and three partners fill the top-left, top-right, bottom-left and bottom-right of a
    canvas around a random centre, each with the corner of the image that touches the centre.

    - ``size=None``: the canvas is the images' own size (they must share it), no resizing: each
      image keeps its scale and shows the part of it that falls in its quadrant.
    - ``size=S``: each image is letterboxed (resized bilinearly, aspect kept, to fit ``S x S``; its
      boxes scaled, its masks resized nearest) and the four are placed around the centre of a
      ``2S x 2S`` canvas filled with ``fill``, exactly as ultralytics' ``_mosaic4`` places them.
      Images of different sizes are welcome; the output is ``(C, 2S, 2S)`` per image.

    The centre is uniform in the ``centre`` share of the canvas (``(0.25, 0.75)``: ultralytics'
    ``[S/2, 3S/2]``). Boxes move with their image, are clipped to its tile and kept as ultralytics'
    ``box_candidates`` keeps them: both sides longer than ``min_side`` pixels, more than
    ``min_visible`` of their (letterboxed) area visible, aspect ratio below ``max_aspect``.

    Args:
        size: ``None`` or the tile size ``S`` (int), giving a ``2S x 2S`` canvas.
        centre: range of the centre, as a share of the canvas size.
        min_visible: keep a box when more than this share of its area stays visible (default 0.3;
            ultralytics 0.1, mmdetection's affine 0.2).
        min_side: keep a box when both its sides exceed this many pixels (default 2, ultralytics').
        max_aspect: keep a box when ``max(w / h, h / w)`` is below this (default 100, ultralytics').
        fill: the canvas value where no image falls (default 114 of 255, ultralytics' gray).
        enabled: ``False`` returns the batch unchanged (``close_mosaic``; schedules set it).
        generator: random generator on the images' device.

    ``sample(images, targets)`` returns a :class:`MosaicParams`.
    """

    moves = "Mosaic"

    def __init__(self, *, size: int | None = None, centre=(0.25, 0.75), min_visible: float = 0.3,
                 min_side: float = 2.0, max_aspect: float = 100.0, fill=None, enabled: bool = True, generator=None):
        super().__init__(enabled=enabled, generator=generator)
        if not isinstance(centre, (tuple, list)) or len(centre) != 2:
            raise ValueError(f"centre must be a pair (low, high) within [0, 1], got {centre!r}")
        low, high = (V.probability(v, "centre") for v in centre)
        if low > high:
            raise ValueError(f"centre must be a pair (low, high) with low <= high, got {centre!r}")
        self.size = None if size is None else V.integer(size, "size", minimum=1)
        self.centre = (low, high)
        self.min_visible = V.probability(min_visible, "min_visible")
        self.min_side = V.real(min_side, "min_side", minimum=0.0)
        self.max_aspect = V.real(max_aspect, "max_aspect", minimum=1.0)
        self.fill = _fill(fill)

    def _canvas(self, images):
        if self.size is not None:
            return 2 * self.size, 2 * self.size
        sizes = sorted({tuple(x.shape[-2:]) for x in images})
        if len(sizes) != 1:
            raise ValueError(f"images have different sizes {sizes}; Mosaic(size=S) letterboxes each image into "
                             "S x S and builds a 2S x 2S canvas (ultralytics, mmdetection), or resize them first")
        return sizes[0]

    def _draw(self, images, targets):
        B, (H, W), g, device = len(images), self._canvas(images), self._rng(), images[0].device
        parts = [torch.arange(B, device=device)] + [partner_index(B, generator=g, device=device) for _ in range(3)]
        u = torch.rand(B, 2, device=device, **rng(g))
        low, high = self.centre
        cy = (H * (low + (high - low) * u[:, 0])).long().clamp(0, H)
        cx = (W * (low + (high - low) * u[:, 1])).long().clamp(0, W)
        return MosaicParams(torch.stack(parts), torch.stack([cy, cx], 1))

    def _keep(self, before, after):
        """ultralytics' ``box_candidates`` (``eps = 1e-16``) with this transform's thresholds."""
        eps = 1e-16
        w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
        w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
        aspect = torch.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
        return (w2 > self.min_side) & (h2 > self.min_side) & (w2 * h2 / (w1 * h1 + eps) > self.min_visible) \
            & (aspect < self.max_aspect)

    def _letterboxed(self, images, targets, needed):
        """Each needed image (and its target) resized to fit ``size x size``, aspect kept."""
        if self.size is None:
            return {j: (images[j], targets[j]) for j in needed}
        out = {}
        for j in needed:
            h, w = images[j].shape[-2:]
            r = min(self.size / h, self.size / w)
            new = (min(self.size, max(1, round(h * r))), min(self.size, max(1, round(w * r))))
            out[j] = (resize_image(images[j], new), resized(targets[j], (h, w), new))
        return out

    def _apply(self, images, listed, targets, keys, params):
        canvas = self._canvas(images)
        parts, centre = params.parts.tolist(), params.centre.tolist()
        tiles = self._letterboxed(images, targets, sorted({j for row in parts for j in row}))
        mixed, out = [], []
        for i, (yc, xc) in enumerate(centre):
            js = [parts[q][i] for q in range(4)]
            first = images[i]
            image = first.new_full((first.shape[0], *canvas), gray(self.fill, first))
            acc = None
            for j, (dst, src) in zip(js, _windows(yc, xc, canvas, [tuple(tiles[j][0].shape[-2:]) for j in js])):
                (dy0, dy1, dx0, dx1), (sy0, sy1, sx0, sx1) = dst, src
                image[:, dy0:dy1, dx0:dx1] = tiles[j][0][:, sy0:sy1, sx0:sx1]
                part = moved(tiles[j][1], src, dst, self._keep, canvas)
                acc = part if acc is None else cat(acc, part, keys)
            mixed.append(image)
            out.append(acc)
        return out_images(mixed, listed), out
