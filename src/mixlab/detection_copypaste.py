"""Copy-Paste for instance segmentation and detection (Ghiasi et al. 2021).

"Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation" (CVPR 2021,
arXiv:2012.07177): instances of one image, cut out by their masks, are pasted onto another; the
pasted pixels hide what they cover. Reference: torchvision's ``references/detection/transforms.py``
(``SimpleCopyPaste`` and ``_copy_paste``), which :func:`copy_paste` follows and is tested against
(``tests/methods/test_detection_copypaste.py``: equal images, masks, labels, areas, iscrowd and
boxes on the same inputs and selection, with and without blending, with the partner resized).

Where it departs from torchvision's, on purpose:

- Boxes of covered instances: torchvision recomputes every original box with ``masks_to_boxes``,
  whose ``x1``/``y1`` is the last pixel, then drops boxes one pixel wide or high as degenerate.
  Here only the boxes of instances that lost pixels are recomputed, as the remaining pixels' box
  (``x1`` one past the last pixel, mixlab's pixel rule) intersected with the annotated box, and an
  instance is kept when at least ``min_pixels`` of it stays visible (1: torchvision's "not all
  zero"), so a one-pixel-wide instance is kept.
- A partner of another size is resized to the image's (bilinear with antialiasing, masks nearest,
  boxes scaled, as torchvision), and each resized mask is then cut to its scaled box, which a
  nearest-resized mask can overstep by a pixel.
- Pasted instances with fewer than ``min_pixels`` mask pixels are not pasted (torchvision pastes
  an instance with an empty mask as a box over nothing).
- An image paired with itself is left unchanged (torchvision pastes its instances onto themselves).
- Every per-box key mixlab knows (``masks``, ``area``, ``iscrowd``, ``weights``) follows its
  instance; others are refused, never carried stale (torchvision keeps them unfiltered).

Blending: torchvision blurs the pasted region's binary mask (5 x 5 Gaussian, sigma 2) and casts it
back to bool, which makes any pixel within two of a pasted pixel (a 5 x 5 square) the partner's:
a dilation, not a soft edge. ``blending=True`` does exactly that (the original's masks lose the
dilated region too, as in torchvision); ``blending=False`` pastes the masks' pixels only. The paper
finds blending makes no difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _validate as V
from .detection_targets import (Transform, cat, check_targets, masks_to_boxes, out_images, plain, resize_image,
                                resized, sizes_of, take)
from .pairing import check_pairing, partner_index
from .sampling import rng

__all__ = ["CopyPaste", "CopyPasteParams", "copy_paste"]


@dataclass(frozen=True)
class CopyPasteParams:
    """The draws of one :class:`CopyPaste` call.

    Attributes:
        index: ``(B,)`` int64, the partner whose instances image ``i`` receives.
        selected: per image, the ``(k,)`` int64 indices of the partner's instances pasted.
    """

    index: torch.Tensor
    selected: list


def _need_masks(targets, who: str) -> None:
    for i, t in enumerate(targets):
        if "masks" not in t:
            raise ValueError(f"targets[{i}] has no 'masks': {who} pastes instances by their masks; give each target "
                             f"'masks' (N, H, W), one binary mask per box")


def _selection(selected, n: int) -> torch.Tensor:
    ok = isinstance(selected, torch.Tensor) and selected.ndim == 1 and not selected.is_floating_point() \
        and not selected.is_complex() and selected.dtype != torch.bool \
        and (selected.numel() == 0 or (0 <= int(selected.min()) and int(selected.max()) < n))
    if not ok:
        raise ValueError(f"selected must be a 1-D tensor of instance indices in [0, {n}), got {V.describe(selected)}"
                         + (f" holding {selected.tolist()}" if isinstance(selected, torch.Tensor)
                            and selected.numel() <= 8 else ""))
    return selected.long()


def _dilate(alpha: torch.Tensor, r: int) -> torch.Tensor:
    """``max_pool2d(alpha, 2r + 1, 1, r) > 0`` of a bool ``(H, W)`` map, as ``2r`` ORs of shifted rows then of
    shifted columns (a 5 x 5 max-pool of one 256 x 256 map costs over a millisecond on the CPU; this, tens of us)."""
    H, W = alpha.shape
    padded = alpha.new_zeros(H + 2 * r, W + 2 * r)
    padded[r:r + H, r:r + W] = alpha
    rows = padded[:, 0:W].clone()  # (H + 2r, W)
    for j in range(1, 2 * r + 1):
        rows |= padded[:, j:j + W]
    out = rows[0:H].clone()
    for i in range(1, 2 * r + 1):
        out |= rows[i:i + H]
    return out


def _occluded(t: dict, alpha: torch.Tensor, min_pixels: int, canvas) -> dict:
    """The original's instances with the pasted region ``alpha`` ``(H, W)`` bool over them."""
    masks = plain(t["masks"])
    left = masks.masked_fill(alpha, 0)
    before, after = torch.count_nonzero(masks.flatten(1), dim=1), torch.count_nonzero(left.flatten(1), dim=1)
    b = plain(t["boxes"])
    tight = masks_to_boxes(left).to(b)
    inter = torch.cat([tight[:, :2].maximum(b[:, :2]), tight[:, 2:].minimum(b[:, 2:])], 1)
    boxes = torch.where((after < before)[:, None], inter, b)
    keep = (after >= min_pixels) & (boxes[:, 2:] > boxes[:, :2]).all(1)
    return take(t, keep, boxes, left[keep], None, canvas)


def _paste(image, t, paste_image, p, selected, keys, blending: bool, min_pixels: int):
    size = tuple(image.shape[-2:])
    if selected.numel() == 0:
        return image, t
    chosen = take(p, selected, plain(p["boxes"]), plain(p["masks"])[selected], None, p["masks"].shape[-2:])
    if tuple(paste_image.shape[-2:]) != size:
        src = tuple(paste_image.shape[-2:])
        paste_image = resize_image(paste_image, size)
        chosen = resized(chosen, src, size)
    pm = plain(chosen["masks"])
    count = torch.count_nonzero(pm.flatten(1), dim=1)
    pb = plain(chosen["boxes"])
    keep = (count >= min_pixels) & (pb[:, 2:] > pb[:, :2]).all(1)
    pasted = take(chosen, keep, pb, pm[keep], None, size)
    alpha = (plain(pasted["masks"]) != 0).any(0) if int(keep.sum()) else torch.zeros(size, dtype=torch.bool,
                                                                                    device=image.device)
    if blending and alpha.any():  # torchvision's blur-then-bool: a 5 x 5 dilation
        alpha = _dilate(alpha, 2)
    out_image = torch.where(alpha, paste_image.to(image.dtype), image)
    return out_image, cat(_occluded(t, alpha, min_pixels, size), pasted, keys)


def copy_paste(image, target: dict, paste_image, paste_target: dict, selected, *, blending: bool = True,
               min_pixels: int = 1):
    """Paste the ``selected`` instances of ``paste_target`` onto ``image`` (one pair; no randomness).

    Args:
        image: ``(C, H, W)`` the image that receives.
        target: its target: ``"boxes"`` ``(N, 4)`` xyxy, ``"labels"`` ``(N,)``, ``"masks"`` ``(N, H, W)``,
            optionally ``"area"``, ``"iscrowd"``, ``"weights"``.
        paste_image: ``(C, H', W')`` the partner (resized to ``(H, W)`` when its size differs).
        paste_target: its target, with ``"masks"`` ``(M, H', W')``.
        selected: ``(k,)`` int64 indices into the partner's ``M`` instances.
        blending: dilate the pasted region by two pixels as torchvision's blending does.
        min_pixels: keep an instance (original or pasted) with at least this many visible pixels.

    Returns:
        ``(image, target)``: the original's surviving instances (occluded ones with their remaining
        masks, boxes and areas) followed by the pasted ones, in their selected order.
    """
    sizes = sizes_of([image, paste_image])
    (t, p), keys = check_targets([target, paste_target], sizes, moves="CopyPaste")
    _need_masks([t, p], "copy_paste")
    selected = _selection(selected, p["boxes"].shape[0])
    return _paste(image, t, paste_image, p, selected, keys, bool(blending), V.integer(min_pixels, "min_pixels",
                                                                                       minimum=1))


class CopyPaste(Transform):
    """Simple Copy-Paste (Ghiasi et al. 2021; torchvision's ``SimpleCopyPaste``).

    Each image receives instances of a partner, cut out by their instance masks and pasted at the
    same place (a partner of another size is resized to the image's, as torchvision does). The
    original's instances lose the pixels pasted over them: their masks, boxes (recomputed from the
    remaining pixels, never larger than before) and areas are updated, and an instance with fewer
    than ``min_pixels`` visible pixels is dropped with every per-box value. See
    :mod:`mixlab.detection_copypaste` for where this departs from torchvision's reference.

    Args:
        select: ``"random"`` (torchvision's draw: the distinct values of ``n`` draws from
            ``[0, n)``, about 63% of the partner's ``n`` instances) or ``"all"``.
        blending: torchvision's blending (the pasted region dilated by two pixels); default True
            as torchvision.
        min_pixels: drop an instance with fewer visible mask pixels (default 1: fully covered).
        pairing: ``"permutation"`` (default), ``"roll"`` (torchvision's: image ``i`` receives image
            ``i - 1``) or ``"flip"``. An image paired with itself is unchanged.
        enabled: ``False`` returns the batch unchanged (schedules set it).
        generator: random generator on the images' device.

    Targets need ``"masks"``. ``sample(images, targets)`` returns a :class:`CopyPasteParams`.
    """

    moves = "CopyPaste"

    def __init__(self, *, select: str = "random", blending: bool = True, min_pixels: int = 1,
                 pairing: str = "permutation", enabled: bool = True, generator=None):
        super().__init__(enabled=enabled, generator=generator)
        self.select = V.choice(select, "select", ("random", "all"))
        if not isinstance(blending, bool):
            raise TypeError(f"blending must be True or False, got {V.describe(blending)}")
        self.blending = blending
        self.min_pixels = V.integer(min_pixels, "min_pixels", minimum=1)
        self.pairing = check_pairing(pairing)

    def _batch(self, images, targets):
        batch = super()._batch(images, targets)
        _need_masks(batch[2], "CopyPaste")
        return batch

    def _draw(self, images, targets):
        g, device = self._rng(), images[0].device
        index = partner_index(len(images), self.pairing, generator=g, device=device)
        selected = []
        for j in index.tolist():
            n = targets[j]["boxes"].shape[0]
            if self.select == "all":
                selected.append(torch.arange(n, device=device))
            else:
                selected.append(torch.randint(0, max(n, 1), (n,), device=device, **rng(g)).unique())
        return CopyPasteParams(index, selected)

    def _apply(self, images, listed, targets, keys, params):
        out_x, out_t = [], []
        for i, j in enumerate(params.index.tolist()):
            if j == i:
                out_x.append(images[i])
                out_t.append(dict(targets[i]))
                continue
            sel = _selection(params.selected[i], targets[j]["boxes"].shape[0])
            x, t = _paste(images[i], targets[i], images[j], targets[j], sel, keys, self.blending, self.min_pixels)
            out_x.append(x)
            out_t.append(t)
        return out_images(out_x, listed), out_t
