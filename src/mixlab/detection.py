"""Mixing for object detection: images with boxes (MixUp, CutMix, Mosaic).

Inputs are ``(images, targets)`` as torchvision's detection models take them: ``images`` a
``(B, C, H, W)`` tensor (or a list of equal-size ``(C, H, W)`` tensors), ``targets`` a list of
``B`` dicts holding ``"boxes"`` ``(N, 4)`` in ``xyxy`` pixels (a plain tensor or
``tv_tensors.BoundingBoxes``) and ``"labels"`` ``(N,)``. Each transform returns the same
structure, with a per-box loss weight ``"weights"`` ``(N,)`` in every target (1 where the input
had none):

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

Per-box keys (a tensor whose first dim is the number of boxes ``N``) follow their boxes:

- ``"masks"`` ``(N, H, W)`` instance masks (plain or ``tv_tensors.Mask``) move with the pixels:
  Mosaic crops them with their image and places them in its tile; CutMix pastes the partner's
  masks cropped to the pasted box and zeroes the original's masks under it. A mask therefore
  lies inside its box under the rule "pixel ``(r, c)`` is inside box ``xyxy`` iff it overlaps
  it: ``floor(x0) <= c < ceil(x1)`` and ``floor(y0) <= r < ceil(y1)``" whenever it did in the
  input (crops and shifts are whole pixels).
- ``"area"`` is recomputed as the visible area: the mask's pixel count when there are masks,
  else the box's area not covered (the clipped box's for moved boxes).
- ``"labels"``, ``"iscrowd"`` and ``"weights"`` are kept, dropped with their box.
- Boxes dropped by the ``min_visible`` filter (on box areas, not mask pixels) drop all of
  their per-box values.
- Other per-box keys (keypoints, for instance) are refused by CutMix and Mosaic, which would
  have to move them, with an error naming the key; MixUp, which moves nothing, concatenates
  every per-box key of both images unchanged.
- Per-image values (non-tensors, ``"image_id"``, ``"orig_size"``, ``"size"``, tensors whose
  first dim is the number of boxes in no target, or of one shape in every target) are the
  original image's. A key with one row per box in some targets and a different number of rows
  in others is refused, naming the key and the target (it would be left shorter than the boxes).

Box weights: only MixUp makes weights other than 1 (CutMix and Mosaic carry the input's).
torchvision's detectors ignore a ``"weights"`` key; two ways to train on MixUp:

- weighted: ``handle = weight_box_losses(model)`` on a Faster / Mask / Keypoint R-CNN, then
  ``model(images, targets)`` with the returned targets: each sampled proposal's box-head
  classification and regression terms are multiplied by the weight of the box it is matched to
  (background proposals weigh 1; the RPN, mask and keypoint losses are not weighted; see
  :func:`weight_box_losses` for exactly what is and is not).
- weight-free (ultralytics' YOLOv5/v8 recipe, and the way for detectors without a box head hook:
  RetinaNet, FCOS, SSD): ``MixUp(alpha=32.0)``, so ``lam ~ Beta(32, 32)`` stays near 0.5
  (standard deviation 0.06), and pass only ``"boxes"`` and ``"labels"``: every box counts fully.

Host step: targets are Python lists of per-image tensors, so the box bookkeeping runs per image
and reads the partners and regions back once per call (a sync on an accelerator); the pixels are
mixed by the core, on the device.

Convention: ``lam`` weights the original image; boxes are ``xyxy`` in pixels.
"""
from __future__ import annotations

import sys
import types

import torch

from . import _validate as V
from .ops import mix
from .params import MixParams, sample_box, sample_params
from .pairing import partner_index
from .sampling import rng

__all__ = ["MixUp", "CutMix", "Mosaic", "box_area", "clip_boxes", "weight_box_losses", "weighted_fastrcnn_loss"]


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


_HANDLED = ("boxes", "labels", "weights", "masks", "area", "iscrowd")
# per-image keys that may happen to have one row per box (torchvision's COCO image_id is (1,), DETR's sizes (2,))
_PER_IMAGE = ("image_id", "orig_size", "size")


def _is_rows(v, n: int) -> bool:
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
        if key in t and not (_is_rows(t[key], n) and t[key].ndim == 1):
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


def _check_targets(targets, B: int, size, moves: str | None = None) -> tuple[list, tuple]:
    """Check the targets and find their per-box keys.

    Args:
        targets: the list of ``B`` target dicts.
        B: the batch size.
        size: ``(H, W)`` of the images (instance masks must have it).
        moves: the transform's name when it moves or crops boxes (per-box keys it does not handle are
            then refused), ``None`` when it does not (MixUp: every per-box key is carried unchanged).

    Returns:
        The targets (copies, with unit ``"weights"`` added where missing) and their per-box keys.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        raise ValueError(f"targets must be a list of {B} dicts (one per image), got {V.describe(targets)}")
    out = [_check_one(t, i, size) for i, t in enumerate(targets)]
    keys = []
    for key in dict.fromkeys(k for t in out for k in t):
        present = [i for i, t in enumerate(out) if key in t]
        rows = [i for i in present if _is_rows(out[i][key], out[i]["boxes"].shape[0])]
        if key in _PER_IMAGE or not rows:
            continue  # a per-image value: the original image's is kept
        if key not in _HANDLED and len(rows) < len(present):
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
        if moves and key not in _HANDLED:
            i = rows[0]
            raise ValueError(f"targets[{i}][{key!r}] holds one row per box (shape {tuple(out[i][key].shape)}) "
                             f"and {moves} moves and crops boxes; it handles {', '.join(_HANDLED)} only. "
                             f"Drop {key!r} before mixing (MixUp, which moves nothing, carries it)")
        keys.append(key)
    return out, tuple(keys)


def _plain(boxes: torch.Tensor) -> torch.Tensor:
    return boxes.as_subclass(torch.Tensor) if type(boxes) is not torch.Tensor else boxes


def _rewrap(value: torch.Tensor, like: torch.Tensor, canvas) -> torch.Tensor:
    """Keep a ``tv_tensors`` marker (BoundingBoxes with the canvas size, or Mask) on new values."""
    if type(like) is torch.Tensor or "torchvision.tv_tensors" not in sys.modules:
        return value
    tv = sys.modules["torchvision.tv_tensors"]
    if isinstance(like, tv.BoundingBoxes):
        return tv.BoundingBoxes(value, format="XYXY", canvas_size=canvas)
    if isinstance(like, tv.Mask):
        return tv.Mask(value)
    return value


def _take(t: dict, keep: torch.Tensor, boxes: torch.Tensor, masks, visible: torch.Tensor, canvas) -> dict:
    """The target ``t`` restricted to its ``keep`` boxes, with new boxes and (if ``t`` has them) masks.

    ``area``, when present, becomes the visible area: the masks' pixel count when there are masks,
    else ``visible[keep]``.
    """
    n = t["boxes"].shape[0]
    out = {k: (_plain(v)[keep] if k in _HANDLED and _is_rows(v, n) else v) for k, v in t.items()}
    out["boxes"] = _rewrap(boxes[keep], t["boxes"], canvas)
    if masks is not None:
        out["masks"] = _rewrap(masks, t["masks"], canvas)
    if "area" in t:
        area = masks.flatten(1).sum(1) if masks is not None else visible[keep]
        out["area"] = area.to(t["area"].dtype)
    return out


def _moved(t: dict, src, dst, min_visible: float, canvas) -> dict:
    """``t``'s instances seen through the window ``src`` of their image, pasted at ``dst``.

    Windows are ``(y0, y1, x0, x1)`` integer pixel rectangles of one size. Boxes are shifted and
    clipped to ``dst`` and kept when their clipped area is positive and at least ``min_visible`` of
    their own; masks are cropped to ``src`` and placed at ``dst`` on an empty canvas, like the pixels.
    """
    (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1) = src, dst
    b = _plain(t["boxes"]).float()
    shift = b.new_tensor([dx0 - sx0, dy0 - sy0, dx0 - sx0, dy0 - sy0])
    clipped = clip_boxes(b + shift, dx0, dy0, dx1, dy1)
    visible = box_area(clipped)
    keep = (visible > 0) & (visible >= min_visible * box_area(b).clamp(min=1e-12))
    masks = None
    if "masks" in t:
        m = _plain(t["masks"])[keep]
        masks = m.new_zeros((m.shape[0], *canvas))
        masks[:, dy0:dy1, dx0:dx1] = m[:, sy0:sy1, sx0:sx1]
    return _take(t, keep, clipped.to(t["boxes"].dtype), masks, visible, canvas)


def _covered(t: dict, rect, min_visible: float, canvas) -> dict:
    """``t``'s instances with the rectangle ``rect`` ``(y0, y1, x0, x1)`` pasted over them.

    Boxes are kept unchanged when at least ``min_visible`` of their area stays uncovered; their
    masks are zeroed under ``rect``.
    """
    y0, y1, x0, x1 = rect
    b = _plain(t["boxes"])
    area = box_area(b.float())
    visible = area - box_area(clip_boxes(b.float(), x0, y0, x1, y1))
    keep = visible >= min_visible * area.clamp(min=1e-12)
    masks = None
    if "masks" in t:
        masks = _plain(t["masks"])[keep].clone()
        masks[:, y0:y1, x0:x1] = 0
    return _take(t, keep, b, masks, visible, canvas)


def _cat(a: dict, b: dict, keys) -> dict:
    """``a`` with ``b``'s boxes appended: the per-box ``keys`` concatenated, the rest ``a``'s."""
    out = dict(a)
    for k in keys:
        va, vb = _plain(a[k]), _plain(b[k])
        if va.shape[1:] != vb.shape[1:]:
            raise ValueError(f"targets' {k!r} rows must have one shape to be concatenated, got "
                             f"{tuple(va.shape[1:])} and {tuple(vb.shape[1:])}")
        out[k] = _rewrap(torch.cat([va, vb.to(va.dtype)]), a[k], getattr(a[k], "canvas_size", None))
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
        targets, keys = _check_targets(targets, x.shape[0], tuple(x.shape[-2:]))
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
            out.append(_cat(a, b, keys))
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
        targets, keys = _check_targets(targets, B, (H, W), moves="CutMix")
        base = sample_params(B, alpha=self.alpha, mode=self.mode, generator=self.generator, device=x.device)
        n = min(B, 1) if self.mode == "batch" else B
        region, lam = sample_box(base.lam[:n], (H, W), generator=self.generator)
        if n != B:
            region = type(region)(region.box.expand(B, -1, -1).contiguous(), (H, W))
        params = MixParams(region.lam, base.index, region)
        mixed = mix(x, params)
        out = []
        for i, j in enumerate(params.index.tolist()):
            (y0, y1), (x0, x1) = params.region.box[i].tolist()
            if j == i or y1 <= y0 or x1 <= x0:
                out.append(dict(targets[i]))
                continue
            rect = (y0, y1, x0, x1)
            a = _covered(targets[i], rect, self.min_visible, (H, W))
            b = _moved(targets[j], rect, rect, self.min_visible, (H, W))
            out.append(_cat(a, b, keys))
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
        targets, keys = _check_targets(targets, B, (H, W), moves="Mosaic")
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
                part = _moved(targets[j], (sy0, sy1, sx0, sx1), (dy0, dy1, dx0, dx1), self.min_visible, (H, W))
                acc = part if acc is None else _cat(acc, part, keys)
            out_t.append(acc)
        return _out_images(out_x, listed), out_t


# --- box weights in torchvision's two-stage detectors ----------------------------------------------

_SAMPLES = "_mixlab_box_weight_samples"
_OUTPUTS = "_mixlab_box_weight_outputs"


def weighted_fastrcnn_loss(class_logits, box_regression, labels, regression_targets, weights):
    """torchvision's Fast R-CNN box-head loss with one weight per sampled proposal.

    ``torchvision.models.detection.roi_heads.fastrcnn_loss`` with each proposal's term multiplied
    by its weight; the sums are divided by the number of sampled proposals ``N`` as torchvision
    does, so weights of 1 give its losses (up to summation order) and a weight of 0 removes the
    proposal's terms.

    Args:
        class_logits: ``(N, num_classes)`` box-head class scores.
        box_regression: ``(N, 4 * num_classes)`` box-head regressions.
        labels: per image, the ``(n_i,)`` int64 labels of the sampled proposals (0 background).
        regression_targets: per image, the ``(n_i, 4)`` encoded box targets.
        weights: per image, the ``(n_i,)`` proposal weights.

    Returns:
        ``(classification_loss, box_loss)``: ``sum_p w_p * CE_p / N`` and
        ``sum_{p: label_p > 0} w_p * smooth_l1_p / N`` (``beta = 1/9``, summed over the 4 coordinates).
    """
    F = torch.nn.functional
    labels = torch.cat(labels, dim=0)
    targets = torch.cat(regression_targets, dim=0)
    w = torch.cat(weights, dim=0)
    if w.shape != labels.shape:
        raise ValueError(f"weights must hold one weight per sampled proposal, shape {tuple(labels.shape)}, "
                         f"got shape {tuple(w.shape)}")
    N = labels.numel()
    ce = F.cross_entropy(class_logits, labels, reduction="none")
    classification = (w.to(ce.dtype) * ce).sum() / N
    pos = torch.where(labels > 0)[0]
    pred = box_regression.reshape(N, box_regression.size(-1) // 4, 4)[pos, labels[pos]]
    l1 = F.smooth_l1_loss(pred, targets[pos], beta=1 / 9, reduction="none").sum(1)
    box = (w[pos].to(l1.dtype) * l1).sum() / N
    return classification, box


def _proposal_weights(targets, matched, labels) -> list:
    """Per image, each sampled proposal's weight: its matched box's for foreground, 1 for background."""
    out = []
    for i, (t, idx, lab) in enumerate(zip(targets, matched, labels)):
        ones = torch.ones(lab.shape, device=lab.device)
        w = t.get("weights")
        if w is None:
            out.append(ones)
            continue
        n = t["boxes"].shape[0]
        if not _is_rows(w, n) or w.ndim != 1:
            raise ValueError(f"targets[{i}]['weights'] must hold one weight per box, shape ({n},), "
                             f"got {V.describe(w)}")
        out.append(torch.where(lab > 0, _plain(w).to(ones)[idx], ones) if n else ones)
    return out


def _select_weighted(heads, proposals, targets):
    """``RoIHeads.select_training_samples``, keeping the sampled proposals' labels, targets and weights."""
    proposals, matched, labels, regression = type(heads).select_training_samples(heads, proposals, targets)
    setattr(heads, _SAMPLES, (labels, regression, _proposal_weights(targets, matched, labels)))
    return proposals, matched, labels, regression


def _keep_outputs(predictor, inputs, output):
    setattr(predictor, _OUTPUTS, output)


def _reweight(heads, inputs, output):
    samples = vars(heads).pop(_SAMPLES, None)
    outputs = vars(heads.box_predictor).pop(_OUTPUTS, None)
    if not heads.training or samples is None or outputs is None:
        return None
    result, losses = output
    classification, box = weighted_fastrcnn_loss(*outputs, *samples)
    return result, dict(losses, loss_classifier=classification, loss_box_reg=box)


class _BoxWeightsHandle:
    """Undoes :func:`weight_box_losses` with :meth:`remove`."""

    def __init__(self, heads, hooks):
        self._heads, self._hooks = heads, hooks

    def remove(self) -> None:
        """Restore torchvision's box-head losses on the model."""
        for h in self._hooks:
            h.remove()
        vars(self._heads).pop("select_training_samples", None)
        vars(self._heads).pop(_SAMPLES, None)


def weight_box_losses(model):
    """Weight a torchvision two-stage detector's box-head losses by the targets' ``"weights"``.

    For Faster / Mask / Keypoint R-CNN (``model.roi_heads`` a ``RoIHeads``): in training, each
    sampled proposal's classification (cross-entropy) and, for foreground proposals, box-regression
    (smooth L1) term is multiplied by the weight of the ground-truth box it is matched to (IoU at
    least ``box_fg_iou_thresh``, 0.5 by default); background proposals weigh 1. The sums are divided
    by the number of sampled proposals as in torchvision (:func:`weighted_fastrcnn_loss`), so
    weights of 1, or targets without ``"weights"``, give torchvision's losses and a weight of 0
    removes the proposals matched to that box from ``loss_classifier`` and ``loss_box_reg``.

    Not weighted: the RPN's ``loss_objectness`` and ``loss_rpn_box_reg`` (class-agnostic: a box of
    weight 0 still trains the RPN to propose it), the mask and keypoint losses, and the sampling (a
    box of weight 0 still claims its proposals, which do not become background, and they count in
    the sampler's foreground quota). Installed with hooks on this model object (deep copies keep
    them; re-apply after building or loading a model).

    Args:
        model: a torchvision ``GeneralizedRCNN`` (``fasterrcnn_*``, ``maskrcnn_*``,
            ``keypointrcnn_*``).

    Returns:
        A handle whose ``remove()`` restores torchvision's losses.
    """
    try:
        from torchvision.models.detection.roi_heads import RoIHeads
    except ImportError as err:  # pragma: no cover - torchvision is needed for its detectors
        raise ImportError("weight_box_losses needs torchvision (pip install torchvision)") from err
    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, RoIHeads):
        raise TypeError(f"model must be a torchvision two-stage detector (Faster/Mask/Keypoint R-CNN, whose "
                        f"model.roi_heads is a RoIHeads), got {type(model).__name__}; for other detectors "
                        "use the weight-free MixUp(alpha=32.0) (see mixlab.detection)")
    if "select_training_samples" in vars(heads):
        raise ValueError("model.roi_heads.select_training_samples is already replaced (weight_box_losses "
                         "called twice?); remove the first handle before installing again")
    heads.select_training_samples = types.MethodType(_select_weighted, heads)
    hooks = [heads.box_predictor.register_forward_hook(_keep_outputs), heads.register_forward_hook(_reweight)]
    return _BoxWeightsHandle(heads, hooks)
