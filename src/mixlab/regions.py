"""Regions: how a region-based rule (CutMix and every mask method) combines two rows.

MixUp combines two rows with one weight per row (a lerp). Region methods take each position of
the last ``D`` dimensions from one row or the other (CutMix's box, a binary mask), or weigh each
position separately (a soft mask). A :class:`Region` holds that per-position rule for a batch
and knows four things about itself:

- ``mask(ndim)``: which positions come from the partner, broadcastable to a leaf of ``ndim``
  dims, ``(B, 1.., *shape)``: bool for a binary region, else the partner's share per position;
- ``lam``: the exact share of the original row in every row, ``(B,)`` float32;
- ``partner_share(lam, ndim)``: the partner's float32 share at every position (dense targets);
- ``rows(sl)``: the same region for a slice of rows (sharding across ranks);
- ``to(device)``.

One vocabulary everywhere: ``lam`` is the original's share (``MixParams.lam``, ``Region.lam``,
``Box.linear_lam``, ``MixedTarget.lam``), and the partner's is ``1 - lam`` per row or
``partner_share`` per position (a ``Mask``'s ``values``, a ``Box``'s inside).

:func:`mixlab.mix` applies it to every leaf whose trailing dims it covers (``apply``); MixUp
is the same call with no region. A new method is a new ``Region`` subclass plus the transform
that draws it; nothing in :mod:`mixlab.ops`, :mod:`mixlab.targets` or the distributed code
changes.

Convention: a region's mask marks the *partner's* positions; ``lam`` is the weight of the
original row, the ``lam`` of :class:`mixlab.MixParams`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from . import _fast

__all__ = ["Region", "Box", "Mask", "box_mask"]


class Region:
    """Base class of the per-position combination rules. Subclasses are frozen dataclasses.

    Attributes a subclass provides:
        shape: the ``D`` trailing sizes the region covers (static Python ints).
        binary: True when every position comes wholly from one row (pasting keeps values exact,
            so integer leaves such as segmentation maps can follow the region).
    """

    shape: tuple
    binary: bool = True

    @property
    def batch_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask(self, ndim: int) -> torch.Tensor:  # pragma: no cover - abstract
        """``(B, 1.., *shape)``: True (or the partner's weight) where the partner is taken."""
        raise NotImplementedError

    @property
    def lam(self) -> torch.Tensor:  # pragma: no cover - abstract
        """``(B,)`` float32: the exact fraction of each row that stays the original."""
        raise NotImplementedError

    def rows(self, sl: slice) -> "Region":  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device) -> "Region":  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def pasteable(self) -> bool:
        """Whether integer / bool leaves can follow the region exactly (every position from one row)."""
        return self.binary

    def covers(self, leaf: torch.Tensor) -> bool:
        """True when ``leaf``'s trailing dims are the region's: ``(B, ..., *shape)``."""
        D = len(self.shape)
        return leaf.ndim >= D + 1 and tuple(leaf.shape[-D:]) == tuple(self.shape)

    def partner_share(self, lam: torch.Tensor, ndim: int) -> torch.Tensor:
        """The partner's float32 share at every position, ``(B, 1.., *shape)`` (dense targets use it)."""
        return self.mask(ndim).to(torch.float32)

    def partner(self, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The partner rows as they are placed under the region: ``src[index]`` unless the region
        moves content (ResizeMix resizes the whole partner into its box). Dense targets use it too."""
        return src.index_select(0, index)

    def apply(self, x: torch.Tensor, src: torch.Tensor, lam: torch.Tensor, index: torch.Tensor, *,
              fast: bool = True, inplace: bool = False) -> torch.Tensor:
        """Combine ``x`` with its partners ``src[index]`` under the region.

        Args:
            x: the leaf ``(B, ..., *shape)``.
            src: the partner batch (``x`` itself for one-batch mixing).
            lam: ``(B,)`` weight of the original rows (used by rows a region blends).
            index: ``(B,)`` partner rows into ``src``.
            fast: allow the non-differentiable CPU fast paths.
            inplace: the caller will copy the result into ``x`` (a subclass may write it directly).

        Returns:
            The combined leaf, with ``x``'s dtype and memory format.
        """
        xp = self.partner(src, index)  # (B, ...)
        if self.binary:
            out = torch.where(self.mask(x.ndim), xp, x)
        else:
            out = blend(x, xp, self.partner_share(lam, x.ndim))
        return out.contiguous(memory_format=_fast.memory_format(x))


def blend(x: torch.Tensor, xp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(1 - w) * x + w * xp`` per position in float32 (or wider), rounded once to ``x``'s dtype."""
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) or x.is_complex() else torch.float32
    return _fast.cast_back(torch.lerp(x.to(acc), xp.to(acc), w.to(acc)), x)


def box_mask(box: torch.Tensor, shape: tuple, ndim: int) -> torch.Tensor:
    """Boolean mask of boxes ``(B, D, 2)`` (``[lo, hi)`` per dim) over ``shape``, as ``(B, 1.., *shape)``."""
    B, D = box.shape[0], len(shape)
    mask = None
    for d, size in enumerate(shape):
        ar = torch.arange(size, device=box.device)
        m = (ar >= box[:, d, 0:1]) & (ar < box[:, d, 1:2])  # (B, S_d)
        view = [B] + [1] * (ndim - 1)
        view[ndim - D + d] = size
        m = m.view(view)
        mask = m if mask is None else mask & m
    return mask


def _rows(t: Optional[torch.Tensor], sl: slice) -> Optional[torch.Tensor]:
    return None if t is None else t[sl].contiguous()


def _move(t: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    return None if t is None else t.to(device)


@dataclasses.dataclass(frozen=True, eq=False)
class Box(Region):
    """CutMix boxes (Yun et al. 2019), one per row, over the last ``D`` dims (1-D, 2-D or 3-D).

    Attributes:
        box: int64 ``(B, D, 2)``: ``[lo, hi)`` in each of the last ``D`` dims; inside it the
            partner is pasted.
        shape: the ``D`` sizes the boxes were drawn for.
        linear: optional bool ``(B,)``: rows marked True are blended with ``lam`` instead of
            pasted (the MixUp rows of a per-row MixUp-or-CutMix batch; their boxes are empty).
            Integer leaves cannot be blended, so a region with ``linear`` does not paste them.
        linear_lam: optional float32 ``(B,)``: the original's share (lam) in the ``linear`` rows, so that
            :attr:`lam` comes from the region for every row.
    """

    box: torch.Tensor
    shape: tuple
    linear: Optional[torch.Tensor] = None
    linear_lam: Optional[torch.Tensor] = None

    def __post_init__(self):
        shape = tuple(self.shape)
        object.__setattr__(self, "shape", shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"Box.shape must be a non-empty tuple of positive ints, got {self.shape!r}")
        box = self.box
        if not isinstance(box, torch.Tensor) or box.dtype != torch.int64 or box.ndim != 3 \
                or box.shape[1:] != (len(shape), 2):
            got = tuple(box.shape) if isinstance(box, torch.Tensor) else type(box).__name__
            raise ValueError(f"Box.box must be an int64 tensor of shape (B, {len(shape)}, 2) for shape={shape}, "
                             f"got {got}")
        lin = self.linear
        if lin is not None and (not isinstance(lin, torch.Tensor) or lin.dtype != torch.bool
                                or lin.shape != (box.shape[0],)):
            raise ValueError(f"Box.linear must be a bool tensor of shape ({box.shape[0]},) or None")
        bl = self.linear_lam
        if bl is not None and (lin is None or not isinstance(bl, torch.Tensor) or not bl.is_floating_point()
                               or bl.shape != (box.shape[0],)):
            raise ValueError(f"Box.linear_lam must be a float tensor of shape ({box.shape[0]},), given with Box.linear")

    @property
    def batch_size(self) -> int:
        return self.box.shape[0]

    @property
    def pasteable(self) -> bool:
        return self.linear is None

    def mask(self, ndim: int) -> torch.Tensor:
        return box_mask(self.box, self.shape, ndim)

    @property
    def lam(self) -> torch.Tensor:
        volume = (self.box[..., 1] - self.box[..., 0]).clamp(min=0).prod(dim=1).to(torch.float64)
        kept = (1 - volume / math.prod(self.shape)).to(torch.float32)
        if self.linear_lam is not None:
            kept = torch.where(self.linear, self.linear_lam.to(torch.float32), kept)
        return kept

    def partner_share(self, lam: torch.Tensor, ndim: int) -> torch.Tensor:
        w = self.mask(ndim).to(torch.float32)
        if self.linear is None:
            return w
        view = (-1,) + (1,) * (ndim - 1)
        return torch.where(self.linear.view(view), (1 - lam.to(torch.float32)).view(view), w)

    def rows(self, sl: slice) -> "Box":
        return Box(_rows(self.box, sl), self.shape, _rows(self.linear, sl), _rows(self.linear_lam, sl))

    def to(self, device) -> "Box":
        return Box(self.box.to(device), self.shape, _move(self.linear, device), _move(self.linear_lam, device))

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        if fast:  # CPU eager: slice copies of the boxes, no full-size mask or gather (the door decides)
            out = _fast.paste(x, src, lam, index, self.box, self.linear, inplace=inplace)
            if out is not None:
                return out
        if self.linear is None:
            return super().apply(x, src, lam, index, fast=fast, inplace=inplace)
        blend_lam = torch.where(self.linear, lam, torch.ones_like(lam))
        base = _fast.lerp(x, src, blend_lam, index, fast=fast)
        out = torch.where(self.mask(x.ndim), src.index_select(0, index), base)
        return out.contiguous(memory_format=_fast.memory_format(x))


@dataclasses.dataclass(frozen=True, eq=False)
class Mask(Region):
    """A per-row mask over the last ``D`` dims: binary (bool, True = partner) or soft (float weights).

    The general region: FMix's thresholded Fourier noise, GridMix's grid, token sets of a ViT
    patch grid or a ``(B, N)`` token sequence are binary masks; SmoothMix's Gaussian blob is a
    soft one. ``lam`` is ``1 - mean(mask)`` over the covered positions, exactly.

    Attributes:
        values: ``(B, *shape)`` bool, or float in [0, 1] (the partner's weight per position).
    """

    values: torch.Tensor

    def __post_init__(self):
        m = self.values
        if not isinstance(m, torch.Tensor) or m.ndim < 2 or not (m.dtype == torch.bool or m.is_floating_point()):
            got = f"dtype {m.dtype} and shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"Mask.values must be a bool or float tensor of shape (B, *shape), got {got}")

    @property
    def shape(self) -> tuple:  # type: ignore[override]
        return tuple(self.values.shape[1:])

    @property
    def binary(self) -> bool:  # type: ignore[override]
        return self.values.dtype == torch.bool

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    def mask(self, ndim: int) -> torch.Tensor:
        m = self.values
        return m.view((m.shape[0],) + (1,) * (ndim - m.ndim) + tuple(m.shape[1:]))

    @property
    def lam(self) -> torch.Tensor:
        taken = self.values.flatten(1).to(torch.float64).mean(dim=1)
        return (1 - taken).to(torch.float32)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        """A binary mask takes :func:`mixlab._fast.select` where it applies (CPU eager): the bits of
        ``torch.where(mask, src[index], x)`` in a few vectorised passes, in place without a full-size mask of
        ``x``'s size; a mask shared by the batch (``values`` expanded along dim 0) is applied as one broadcast row."""
        v = self.values
        if fast and self.binary:
            if v.shape[0] > 1 and v.stride(0) == 0:
                v = v[:1]  # one mask for the batch: broadcast it
            take = v.view((v.shape[0],) + (1,) * (x.ndim - v.ndim) + tuple(v.shape[1:]))
            out = _fast.select(x, src, index, take, inplace=inplace)
            if out is not None:
                return out
        return super().apply(x, src, lam, index, fast=fast, inplace=inplace)

    def rows(self, sl: slice) -> "Mask":
        return Mask(_rows(self.values, sl))

    def to(self, device) -> "Mask":
        return Mask(self.values.to(device))
