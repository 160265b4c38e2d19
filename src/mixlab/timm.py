"""A drop-in for timm's ``Mixup`` and ``FastCollateMixup``, built on mixlab's core.

``from mixlab.timm import Mixup`` in place of ``from timm.data import Mixup``: the same
constructor, defaults and attributes (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``,
``mix_prob``, ``switch_prob``, ``mode`` in batch | pair | elem, ``correct_lam``,
``label_smoothing``, ``num_classes``, ``multi_label``, ``mixup_enabled``) and outputs: the batch is
mixed in place and the target comes back as dense ``(B, num_classes)`` rows for
``timm.loss.SoftTargetCrossEntropy`` (timm's ``mixup_target`` formula, smoothing included).
timm's names live here only; the native classes keep one spelling each.

What differs, on purpose:

- Odd batch sizes work (the middle row of a ``flip`` pairing is its own partner, left unmixed);
  timm asserts the batch is even.
- Draws come from torch (a ``generator=`` may be given) instead of numpy's global state. On CPU
  the batch is mixed in place pair by pair (``mixlab._timm_fast``: each flip pair read and written
  once, no copy of the batch; timm clones it); elsewhere, or under autograd, by :func:`mixlab.mix`.
- CutMix boxes follow mixlab's ``sample_box`` (side ``floor(S * sqrt(1 - lam))``, centre anywhere,
  clipped): timm's own box has side ``2 * (cut // 2)``; with ``correct_lam=True`` (the default)
  ``lam`` is the exact pasted share either way.
- Errors are exceptions naming the option, not ``assert``.

This module does not import timm.
"""
from __future__ import annotations

import torch

from . import _fast, _timm_fast
from . import _validate as V
from .ops import mix
from .params import MixParams, sample_box
from .pairing import partner_index
from .regions import Box
from .sampling import rng, sample_beta

__all__ = ["Mixup", "FastCollateMixup", "mixup_target"]

MODES = ("batch", "pair", "elem", "half")


def _check_classes(target, num_classes: int, multi_label: bool) -> None:
    """Class-index targets lie in ``[0, num_classes)`` (read on CPU only, where it is free; no device sync)."""
    if multi_label or not isinstance(target, torch.Tensor) or not target.numel() or not _fast.eager_cpu(target):
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"target holds the class index {lo if lo < 0 else hi}, but num_classes={num_classes}: "
                         f"class indices must lie in [0, {num_classes})")


def mixup_target(target, num_classes: int, lam=1.0, smoothing: float = 0.0, multi_label: bool = False):
    """timm's ``mixup_target``: smoothed one-hot (or smoothed multi-label) rows mixed with their flip.

    ``lam`` may be a float or a ``(B,)`` / ``(B, 1)`` tensor of per-row weights (of the original row).
    Class indices outside ``[0, num_classes)`` are refused naming ``target`` (on CPU).
    """
    _check_classes(target, num_classes, multi_label)
    if multi_label:
        if target.ndim != 2 or target.shape[1] != num_classes:
            raise ValueError(f"multi-label mixup expects dense targets shaped (batch, {num_classes}), got "
                             f"{tuple(target.shape)}")
        y1 = target.float() * (1.0 - smoothing) + 0.5 * smoothing
    else:
        off = smoothing / num_classes
        y1 = torch.full((target.shape[0], num_classes), off, device=target.device)
        y1.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)
    y2 = y1.flip(0)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(y1.device, torch.float32).view(-1, 1)
    return y1 * lam + y2 * (1.0 - lam)


class Mixup:
    """timm's ``Mixup`` on mixlab's core: ``x, target = mixup_fn(x, target)``.

    Args:
        mixup_alpha: as timm 1.0, like every other option here (same names and defaults:
            ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``, ``mode``, ``correct_lam``,
            ``label_smoothing``, ``num_classes``, ``multi_label``).
        generator: optional ``torch.Generator`` on the batch's device (timm uses numpy's global RNG).
    """

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=0.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode="batch", correct_lam=True, label_smoothing=0.1, num_classes=1000, multi_label=False,
                 generator=None):
        self.mixup_alpha = V.alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_alpha = V.alpha(cutmix_alpha, "cutmix_alpha")
        if cutmix_minmax is not None:
            if not isinstance(cutmix_minmax, (tuple, list)) or len(cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax must be a pair (min, max) of image ratios, got {cutmix_minmax!r}")
            cutmix_minmax = tuple(V.probability(v, "cutmix_minmax") for v in cutmix_minmax)
            self.cutmix_alpha = 1.0  # timm: minmax forces cutmix on
        self.cutmix_minmax = cutmix_minmax
        self.mix_prob = V.probability(prob, "prob")
        self.switch_prob = V.probability(switch_prob, "switch_prob")
        self.mode = V.choice(mode, "mode", MODES)
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.num_classes = V.integer(num_classes, "num_classes", minimum=1)
        self.multi_label = bool(multi_label)
        self.generator = V.generator(generator)
        self.mixup_enabled = True
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("one of mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax must be set")

    def _boxes(self, lam_cut, shape, device):
        """Boxes and their exact kept share for the CutMix rows."""
        n = lam_cut.shape[0]
        if self.cutmix_minmax is None:
            box, kept = sample_box(lam_cut, shape, generator=self.generator)
            return box.box, (kept if self.correct_lam else lam_cut)
        H, W = shape
        lo, hi = self.cutmix_minmax
        u = torch.rand(n, 4, device=device, **rng(self.generator))
        cut = torch.stack([torch.floor(int(H * lo) + u[:, 0] * (int(H * hi) - int(H * lo))),
                           torch.floor(int(W * lo) + u[:, 1] * (int(W * hi) - int(W * lo)))], 1).long()
        sizes = torch.tensor([H, W], device=device)
        start = torch.floor(u[:, 2:] * (sizes - cut + 1)).long()
        box = torch.stack([start, start + cut], dim=2)  # (n, 2, 2)
        return box, Box(box, shape).lam  # minmax: lam is always the exact area (timm too)

    def params(self, x: torch.Tensor) -> MixParams:
        """The random state of one call (flip pairing), as :class:`mixlab.MixParams`."""
        lam, index, box, linear, shape = self._sample(x)
        if box is None:
            return MixParams(lam, index)
        return MixParams(lam, index, Box(box, shape, linear=linear))

    def _sample(self, x: torch.Tensor):
        """One call's draws: ``lam (B,)``, the flip ``index (B,)``, and the CutMix ``box (B, 2, 2)`` with the
        MixUp rows ``linear (B,)`` among them (``box`` None without CutMix, ``linear`` None without MixUp)."""
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise ValueError(f"x must be a batch of images (B, C, H, W), got {V.describe(x)}")
        B, shape, device = x.shape[0], tuple(x.shape[-2:]), x.device
        index = partner_index(B, "flip", device=device)
        if not self.mixup_enabled or B <= 1:
            return torch.ones(B, device=device), index, None, None, shape
        g = self.generator
        n = 1 if self.mode == "batch" else ((B + 1) // 2 if self.mode == "pair" else B)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cut = torch.rand(n, device=device, **rng(g)) < self.switch_prob
        else:
            use_cut = torch.full((n,), self.cutmix_alpha > 0, device=device)
        ones = torch.ones(n, device=device)
        lam_mix = sample_beta(n, self.mixup_alpha, generator=g, device=device) if self.mixup_alpha > 0 else ones
        lam_cut = sample_beta(n, self.cutmix_alpha, generator=g, device=device) if self.cutmix_alpha > 0 else ones
        mixed = torch.rand(n, device=device, **rng(g)) < self.mix_prob
        if self.cutmix_alpha > 0:
            box, lam_cut = self._boxes(lam_cut, shape, device)
        cut = use_cut & mixed
        lam = torch.where(mixed, torch.where(use_cut, lam_cut, lam_mix), ones)
        if self.mode == "batch":
            rows = torch.zeros(B, dtype=torch.long, device=device)
        elif self.mode == "pair":  # both rows of a pair share the first row's draws (and box)
            ar = torch.arange(B, device=device)
            rows = torch.minimum(ar, B - 1 - ar)
        else:
            rows = torch.arange(B, device=device)
        lam = lam[rows].contiguous()
        if self.cutmix_alpha == 0:  # MixUp only: a plain lerp
            return lam, index, None, None, shape
        box = torch.where(cut[:, None, None], box, torch.zeros_like(box))[rows].contiguous()
        linear = None if self.mixup_alpha == 0 else (~cut)[rows].contiguous()  # MixUp rows of a mixed batch
        return lam, index, box, linear, shape

    def _mix_inplace(self, x: torch.Tensor) -> torch.Tensor:
        """Draw and mix ``x`` in place; return the per-row ``lam`` (the original rows' weights)."""
        if not _timm_fast.applies(x):  # accelerators, autograd, compiling: the generic route
            params = self.params(x)
            mix(x, params, inplace=True)
            return params.lam
        lam, _, box, linear, _ = self._sample(x)
        if self.mixup_enabled and x.shape[0] > 1:
            _timm_fast.mix_flip_inplace(x, lam.tolist(), None if box is None else box.tolist(),
                                        None if linear is None else linear.tolist())
        return lam

    def __call__(self, x, target):
        """Mix ``x`` in place (as timm) and return ``(x, dense soft targets (B, num_classes))``."""
        if self.mode == "half":
            raise ValueError("mode='half' is FastCollateMixup's; use batch, pair or elem")
        _check_classes(target, self.num_classes, self.multi_label)  # before x is mixed in place
        lam = self._mix_inplace(x)
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing, self.multi_label)

    def __repr__(self):
        return (f"{type(self).__name__}(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"prob={self.mix_prob}, switch_prob={self.switch_prob}, mode={self.mode!r}, "
                f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes})")


class FastCollateMixup(Mixup):
    """timm's ``FastCollateMixup``: a ``collate_fn`` that mixes uint8 images while collating.

    Takes a list of ``(image, label)`` samples (``numpy`` or torch uint8 ``(C, H, W)``) and returns
    ``(uint8 images (B, C, H, W), soft targets (B, num_classes))``; blended pixels are rounded to
    nearest as timm's ``np.rint``. ``mode="half"`` returns only the first half of the batch, each
    row mixed with its mirror in the second half.
    """

    def __call__(self, batch, _=None):
        if not isinstance(batch, (list, tuple)) or not batch:
            raise ValueError("FastCollateMixup needs a non-empty list of (image, label) samples")
        images = torch.stack([torch.as_tensor(b[0]) for b in batch])
        if images.dtype != torch.uint8:
            raise TypeError(f"FastCollateMixup expects uint8 images, got {images.dtype}")
        target = torch.as_tensor([int(b[1]) for b in batch]) if not self.multi_label else \
            torch.stack([torch.as_tensor(b[1]) for b in batch])
        if self.mode == "half":
            B = images.shape[0]
            self.mode = "elem"
            try:
                params = self.params(images)
            finally:
                self.mode = "half"
            h = B // 2
            region = None if params.region is None else params.region.rows(slice(0, h))
            params = MixParams(params.lam[:h].contiguous(), params.index[:h].contiguous(), region)
            mixed = mix(images[:h], params, partner=images)
            lam = params.lam
            soft = mixup_target(target, self.num_classes, torch.ones(B), self.label_smoothing, self.multi_label)
            soft = lam[:, None] * soft[:h] + (1 - lam[:, None]) * soft[params.index]
            return mixed, soft
        lam = self._mix_inplace(images)
        return images, mixup_target(target, self.num_classes, lam, self.label_smoothing, self.multi_label)
