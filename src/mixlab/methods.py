"""Mask-based mixing methods on the region step: FMix and ResizeMix.

Each is a transform like :class:`mixlab.MixUp`: ``t(x, y) -> (mixed, MixedTarget)``,
``t.sample(x) -> MixParams`` (so integer maps and dense targets follow the same region), with
``MixedTarget.params.lam`` the exact share of the original row in every row, on the batch's
device, and no host sync.

- :class:`FMix` (Harris et al. 2020, "FMix: Enhancing Mixed Sample Data Augmentation";
  official code ecs-vlc/FMix): a :class:`~mixlab.regions.Mask` from low-pass filtered Fourier
  noise, binarised by keeping exactly the top ``lam`` fraction of positions (``ceil`` or ``floor``
  of ``lam * N`` with even odds, as the official ``binarise_mask``), with optional soft edges.
- :class:`SaliencyMix` (Uddin et al. 2021, "SaliencyMix: A Saliency Guided Data Augmentation
  Strategy for Better Regularization"; official code afm-shahab-uddin/SaliencyMix): a CutMix box
  of side ``sqrt(1 - lam)`` centred on the peak of the partner's saliency map, here the
  spectral-residual saliency (Hou and Zhang 2007, OpenCV's ``StaticSaliencySpectralResidual``)
  computed in torch for the whole batch at once, on the device.
- :class:`GridMix` (Baek et al. 2021, "GridMix: Strong regularization through local context
  mapping"; the GridMixup code that OpenMixup ports): a grid of square holes over a cut region
  takes the partner, each hole ``sqrt(1 - lam)`` of its cell's side; ``lam`` the exact kept share.
- :class:`SmoothMix` (Lee et al. 2020, "SmoothMix: a Simple Yet Effective Data Augmentation to
  Train Robust Classifiers"; OpenMixup's ``smoothmix``): a soft Gaussian blob of the partner,
  ``sigma ~ U(0.25, 0.5) * H`` around a uniform centre; ``lam`` is the mean of the original's
  per-pixel weight, exactly.
- :class:`TokenMix` (after Liu et al. 2022, "TokenMix: Rethinking Image Mixing for Data
  Augmentation in Vision Transformers"): a random set of ``round((1 - lam) * N)`` tokens taken
  from the partner, on the patch grid of ``(B, C, H, W)`` images or over ``(B, N, D)`` token
  sequences; the label weight is the exact share of tokens kept.
- :class:`ResizeMix` (Qin et al. 2020, "ResizeMix: Mixing Data with Preserved Object
  Information and True Labels"; OpenMixup's ``resizemix``): the whole partner, resized, pasted
  into a box of side ``tau * S`` with ``tau ~ U(scale)``; ``lam = 1 - box area``. The region
  (:class:`ResizedBox`) moves the partner's content, so segmentation maps and dense targets are
  resized the same way (nearest neighbour, values exact).

Convention: ``lam`` weights the original row; a region marks the partner's positions.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from . import _validate as V
from ._fast import memory_format
from .params import MixParams
from .pairing import partner_index
from .regions import Box, Mask
from .sampling import rng
from .transforms import _batch_info, _Mixer, _region_shape

__all__ = ["FMix", "GridMix", "ResizeMix", "SaliencyMix", "SmoothMix", "TokenMix", "ResizedBox", "fourier_noise", "binarise", "spectral_saliency"]

INTERPOLATIONS = ("nearest", "bilinear")


@functools.lru_cache(maxsize=32)
def _spectrum_scale(shape: tuple, decay_power: float, device: torch.device) -> torch.Tensor:
    """``1 / max(|f|, 1 / max(shape)) ** decay_power`` over the rfft frequency grid (static: cached)."""
    axes = [torch.fft.fftfreq(s, device=device) for s in shape[:-1]] + [torch.fft.rfftfreq(shape[-1], device=device)]
    grids = torch.meshgrid(*axes, indexing="ij")
    freqs = torch.sqrt(sum(g * g for g in grids))  # (*F)
    return 1.0 / freqs.clamp(min=1.0 / max(shape)) ** decay_power


def fourier_noise(n: int, shape: tuple, decay_power: float, *, generator=None, device=None) -> torch.Tensor:
    """``n`` low-frequency noise images over ``shape`` (1-D, 2-D or 3-D), as FMix draws them.

    A complex Gaussian spectrum scaled by ``1 / max(f, 1 / max(shape)) ** decay_power`` (``f`` the
    frequency magnitude), taken back with an inverse real FFT: the official
    ``make_low_freq_image`` without its min-max rescale (only the ranking of values matters).

    Returns:
        float32 ``(n, *shape)``.
    """
    D = len(shape)
    spectrum = _spectrum_scale.__wrapped__ if torch.compiler.is_compiling() else _spectrum_scale  # traced inline
    scale = spectrum(tuple(shape), float(decay_power), torch.device(device or "cpu"))  # (*F)
    if n == 0:  # an empty batch (the FFT backends refuse empty transforms)
        return torch.zeros((0,) + tuple(shape), device=device)
    re = torch.randn((n,) + tuple(scale.shape), device=device, **rng(generator)) * scale
    im = torch.randn((n,) + tuple(scale.shape), device=device, **rng(generator)) * scale
    return torch.fft.irfftn(torch.complex(re, im), s=tuple(shape), dim=tuple(range(1, D + 1)))


def binarise(noise: torch.Tensor, num: torch.Tensor, max_soft: float = 0.0, lam: torch.Tensor | None = None
             ) -> torch.Tensor:
    """The partner's share at each position: the ``num`` highest noise values keep the original.

    Args:
        noise: ``(n, *shape)``.
        num: int64 ``(n,)``: positions kept from the original row (``lam * N`` rounded).
        max_soft: soft edge: positions ranked in ``[num - soft, num + soft)`` get weights falling
            linearly from 1 to 0 (official ``binarise_mask``; ``soft = N * min(max_soft, lam,
            1 - lam)`` with ``lam`` the drawn weight, default ``num / N``), so the kept share stays
            ``num / N`` exactly.

    Returns:
        bool ``(n, *shape)`` (True = the partner) when ``max_soft == 0``, else the partner's float
        weight.
    """
    n, N = noise.shape[0], math.prod(noise.shape[1:])
    order = noise.reshape(n, N).argsort(dim=1, descending=True)  # positions by decreasing value
    ar = torch.arange(N, device=noise.device).expand(n, N)
    rank = torch.empty_like(order).scatter_(1, order, ar)  # rank of every position
    if not max_soft:
        return (rank >= num[:, None]).view(noise.shape)
    lam = num.to(torch.float64) / N if lam is None else lam.to(torch.float64)
    eff = torch.minimum(torch.full_like(lam, max_soft), torch.minimum(lam, 1 - lam))
    soft = torch.floor(N * eff).long()  # (n,)
    low, high = (num - soft)[:, None], (num + soft)[:, None]
    span = (high - low - 1).clamp(min=1).to(torch.float64)
    keep = torch.where(rank < low, 1.0, torch.where(rank >= high, 0.0, 1.0 - (rank - low) / span))
    return (1 - keep).to(torch.float32).view(noise.shape)


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _select_cpu(x, src, index, take, inplace):
    """CPU eager: ``torch.where(take, src[index], x)`` as a bitwise select on integer views.

    ``x ^ ((src[index] ^ x) & -take)`` picks every element's bits from one of the two rows, so the
    result is the same bits as ``torch.where`` (NaNs, signed zeros included), in three vectorised
    in-place passes after the partner gather (``torch.where``'s CPU kernel is scalar: several
    times slower at 64x3x64x64). ``take`` is bool, broadcastable to ``x`` (a batch-level mask is
    passed as one row). Returns ``None`` where the form does not apply (the caller takes the
    generic route): dtypes or layouts that differ, non-contiguous leaves, autograd.
    """
    itype = _BITS.get(x.element_size())
    if (itype is None or x.dtype != src.dtype or x.is_complex() or not x.is_contiguous() or not src.is_contiguous()
            or x.shape[1:] != src.shape[1:] or x.device.type != "cpu" or torch.compiler.is_compiling()):
        return None
    bits = take.to(itype).neg_()  # all ones where the partner is taken
    out = src.index_select(0, index)  # (B, ...) the partners
    o, xi = out.view(itype), x.view(itype)
    o.bitwise_xor_(xi).bitwise_and_(bits)  # (partner ^ x) where taken, else 0
    if inplace:  # x's own rows were read by the gather already
        xi.bitwise_xor_(o)
        return x
    o.bitwise_xor_(xi)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class SelectMask(Mask):
    """A :class:`~mixlab.regions.Mask` whose binary paste on CPU is a bitwise select (FMix's masks).

    Same values as :class:`~mixlab.regions.Mask` (``torch.where(mask, src[index], x)``, bit for
    bit); a mask shared by the batch (``values`` expanded along dim 0, FMix's ``mode="batch"``)
    is applied as one broadcast row.
    """

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        v = self.values
        if fast and self.binary and x.device.type == "cpu" and x.shape[0] > 0:
            if v.shape[0] > 1 and v.stride(0) == 0:
                v = v[:1]  # one mask for the batch: broadcast it
            take = v.view((v.shape[0],) + (1,) * (x.ndim - v.ndim) + tuple(v.shape[1:]))
            out = _select_cpu(x, src, index, take, inplace)
            if out is not None:
                return out
        return super().apply(x, src, lam, index, fast=fast, inplace=inplace)


class FMix(_Mixer):
    """FMix (Harris et al. 2020): mix with a binarised low-frequency Fourier mask.

    Args:
        alpha: Beta(alpha, alpha) for ``lam``; default 1.0 (the paper's).
        decay_power: the spectrum's decay (the paper's ``delta``, default 3.0).
        max_soft: soft edge width as a share of the positions (default 0: binary masks).
        mode: ``"batch"`` (one mask and lam for the batch, as the official code) or ``"sample"``
            (one per row).
        box_dims: how many trailing dims the mask covers (default ``x.ndim - 2``: 1-D to 3-D).
        Other arguments as :class:`mixlab.MixUp`.

    Exact lam: ``num / N`` of the positions keep the original row, ``num`` the ceil or floor of
    ``lam * N`` (even odds); ``MixedTarget.params.lam`` is that share.
    """

    def __init__(self, alpha=1.0, *, decay_power=3.0, max_soft=0.0, mode="batch", p=1.0, pairing="permutation",
                 box_dims=None, generator=None, num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.decay_power = V.real(decay_power, "decay_power", positive=True)
        self.max_soft = V.real(max_soft, "max_soft", minimum=0.0, maximum=0.5)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _region_shape(leaf, self.box_dims, type(self).__name__)
        base, n, g = self._base_params(B, device)
        N = math.prod(shape)
        lam = base.lam[:n].to(torch.float64) * N
        up = torch.rand(n, device=device, **rng(g)) > 0.5  # the official coin between ceil and floor
        num = torch.where(up, torch.ceil(lam), torch.floor(lam)).long()
        noise = fourier_noise(n, shape, self.decay_power, generator=g, device=device)
        values = binarise(noise, num, self.max_soft, lam=base.lam[:n])
        lam = Mask(values).kept() if n else torch.ones(0, device=device)  # exact share, from the n distinct masks
        if n != B:
            values, lam = values.expand((B,) + tuple(shape)), lam.expand(B)
        return MixParams(lam.contiguous(), base.index, SelectMask(values))

    def __repr__(self):
        return (f"FMix(alpha={self.alpha}, decay_power={self.decay_power}, max_soft={self.max_soft}, "
                f"mode={self.mode!r}, p={self.p})")


@dataclasses.dataclass(frozen=True, eq=False)
class ResizedBox(Box):
    """A box into which the whole partner is resized (ResizeMix), over the last ``D`` dims.

    ``partner`` returns full-size rows whose box holds the resized partner; ``apply`` pastes
    them. Nearest neighbour (PyTorch's ``F.interpolate(mode="nearest")`` indices) keeps values
    exact, so integer maps and dense labels follow; ``"bilinear"`` (2-D, float leaves only)
    equals ``F.interpolate(mode="bilinear", align_corners=False)``.
    """

    interpolation: str = "nearest"

    def partner(self, src, index):
        xp = src.index_select(0, index)  # (B, ..., *S)
        if self.interpolation == "bilinear" and xp.is_floating_point() and len(self.shape) == 2 and xp.ndim == 4:
            return self._bilinear(xp)
        D, ndim = len(self.shape), xp.ndim
        lo = self.box[..., 0]  # (B, D)
        size = (self.box[..., 1] - lo).clamp(min=1)
        for d, S in enumerate(self.shape):
            pos = torch.arange(S, device=xp.device)
            i = (pos[None, :] - lo[:, d:d + 1]).clamp(min=0)  # (B, S): position inside the box
            scale = S / size[:, d:d + 1].to(torch.float32)  # input / output size, as interpolate computes it
            src_i = torch.floor(i.to(torch.float32) * scale).long().clamp(max=S - 1)
            view = [xp.shape[0]] + [1] * (ndim - 1)
            view[ndim - D + d] = S
            xp = xp.gather(ndim - D + d, src_i.view(view).expand(xp.shape))
        return xp

    def _bilinear(self, xp):
        B, _, H, W = xp.shape
        lo = self.box[..., 0].to(torch.float32)
        size = (self.box[..., 1] - self.box[..., 0]).clamp(min=1).to(torch.float32)
        ys = (2 * (torch.arange(H, device=xp.device)[None] - lo[:, 0:1]) + 1) / size[:, 0:1] - 1  # (B, H)
        xs = (2 * (torch.arange(W, device=xp.device)[None] - lo[:, 1:2]) + 1) / size[:, 1:2] - 1  # (B, W)
        grid = torch.stack([xs[:, None, :].expand(B, H, W), ys[:, :, None].expand(B, H, W)], dim=-1)
        return F.grid_sample(xp, grid.to(xp.dtype), mode="bilinear", padding_mode="border", align_corners=False)

    def _resized(self, rows: torch.Tensor, sizes: list) -> torch.Tensor:
        """``rows`` ``(n, ..., *S)`` resized to ``sizes`` over the last D dims (as ``F.interpolate``)."""
        D, ndim = len(self.shape), rows.ndim
        if self.interpolation == "bilinear" and rows.is_floating_point() and D == 2 and ndim == 4:
            return F.interpolate(rows, size=tuple(sizes), mode="bilinear", align_corners=False)
        for d, (S, b) in enumerate(zip(self.shape, sizes)):  # nearest: select source lines, box-sized first
            src_i = torch.floor(torch.arange(b, dtype=torch.float32) * (S / torch.tensor(b, dtype=torch.float32)))
            rows = rows.index_select(ndim - D + d, src_i.long().clamp(max=S - 1))
        return rows

    def _paste_cpu(self, x, src, index, inplace):
        """CPU eager: resize only into the box (host reads of the box are free on CPU), no full-size mask."""
        out = x if inplace else x.clone(memory_format=memory_format(x))
        boxes, idx = self.box.tolist(), index.tolist()
        lead = (slice(None),) * (x.ndim - len(self.shape))
        nearest = self.interpolation == "nearest" or not x.is_floating_point()
        if all(b == boxes[0] for b in boxes):  # batch mode: one box, one resize
            sizes = [hi - lo for lo, hi in boxes[0]]
            if min(sizes) > 0:
                rows = src if nearest else src.index_select(0, index)
                patch = self._resized(rows, sizes)
                patch = patch.index_select(0, index) if nearest else patch  # select rows after the shrink
                out[lead + tuple(slice(lo, hi) for lo, hi in boxes[0])] = patch.to(x.dtype)
            return out
        patches = []
        for i, (b, j) in enumerate(zip(boxes, idx)):  # patches first: in place, later rows may read written ones
            sizes = [hi - lo for lo, hi in b]
            if min(sizes) > 0:
                patches.append((i, b, self._resized(src[j:j + 1], sizes)[0].to(x.dtype)))
        for i, b, patch in patches:
            out[i][lead[1:] + tuple(slice(lo, hi) for lo, hi in b)] = patch
        return out

    @property
    def pasteable(self) -> bool:
        return True  # integer leaves are resized by nearest neighbour: values stay exact

    def rows(self, sl):
        return ResizedBox(self.box[sl].contiguous(), self.shape, None, self.interpolation)

    def to(self, device):
        return ResizedBox(self.box.to(device), self.shape, None, self.interpolation)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        if self.interpolation == "bilinear" and not x.is_floating_point():
            region = ResizedBox(self.box, self.shape, None, "nearest")  # labels and ids: nearest keeps them exact
            return region.apply(x, src, lam, index, fast=fast, inplace=inplace)
        if fast and x.device.type == "cpu" and not torch.compiler.is_compiling() and x.shape[0] > 0:
            return self._paste_cpu(x, src, index, inplace)
        out = torch.where(self.mask(x.ndim), self.partner(src, index).to(x.dtype), x)
        return out.contiguous(memory_format=memory_format(x))


class ResizeMix(_Mixer):
    """ResizeMix (Qin et al. 2020): paste the whole partner, resized, into a box.

    The box's side is ``floor(tau * S_d)`` in each covered dim with ``tau ~ U(scale)``, its
    centre uniform, its ends ``centre -+ side // 2`` clipped to the tensor (OpenMixup's
    ``rand_bbox_tao``); ``lam = 1 - box volume / prod(S)`` exactly.

    Args:
        scale: range of ``tau``, the box side as a share of the image side (default (0.1, 0.8),
            the paper's).
        interpolation: ``"nearest"`` (default, OpenMixup's; exact for any dtype) or
            ``"bilinear"`` (2-D float leaves; integer leaves still use nearest).
        mode: ``"batch"`` (one box for the batch, as the official code) or ``"sample"``.
        Other arguments as :class:`mixlab.CutMix`.
    """

    def __init__(self, *, scale=(0.1, 0.8), interpolation="nearest", mode="batch", p=1.0, pairing="permutation",
                 box_dims=None, generator=None, num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        if not isinstance(scale, (tuple, list)) or len(scale) != 2:
            raise ValueError(f"scale must be a pair (low, high) with 0 <= low <= high <= 1, got {scale!r}")
        low, high = (V.real(v, "scale", minimum=0.0, maximum=1.0) for v in scale)
        if low > high:
            raise ValueError(f"scale must be a pair (low, high) with 0 <= low <= high <= 1, got {scale!r}")
        self.scale = (low, high)
        self.interpolation = V.choice(interpolation, "interpolation", INTERPOLATIONS)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, box_dims)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        shape = _region_shape(leaf, self.box_dims, type(self).__name__)
        g = self._gen
        n = min(B, 1) if self.mode == "batch" else B
        low, high = self.scale
        tau = low + (high - low) * torch.rand(n, device=device, **rng(g))  # (n,)
        if self.p < 1:
            tau = torch.where(torch.rand(n, device=device, **rng(g)) < self.p, tau, torch.zeros_like(tau))
        sizes = torch.tensor(shape, device=device, dtype=torch.float32)  # (D,)
        cut = torch.floor(tau[:, None] * sizes).long()  # (n, D)
        centre = torch.floor(torch.rand(n, len(shape), device=device, **rng(g)) * sizes).long()
        centre = torch.minimum(centre, sizes.long() - 1)
        lo = (centre - cut // 2).clamp(min=0)
        hi = torch.minimum(centre + cut // 2, sizes.long())
        hi = torch.where(cut > 0, hi, lo)  # tau * S below one pixel: no box
        box = torch.stack([lo, torch.maximum(lo, hi)], dim=2)  # (n, D, 2)
        if n != B:
            box = box.expand(B, -1, -1).contiguous()
        region = ResizedBox(box, shape, None, self.interpolation)
        index = partner_index(B, self.pairing, generator=g, device=device)
        return MixParams(region.kept(), index, region)

    def __repr__(self):
        return f"ResizeMix(scale={self.scale}, interpolation={self.interpolation!r}, mode={self.mode!r}, p={self.p})"


def _saliency_gauss(device) -> torch.Tensor:
    """OpenCV's 5-tap Gaussian (sigma 8), computed on ``device``."""
    k = torch.arange(5, dtype=torch.float32, device=device) - 2
    g = torch.exp(-(k ** 2) / (2 * 8.0 ** 2))
    return g / g.sum()


@functools.lru_cache(maxsize=1)
def _saliency_gauss_cpu() -> tuple:
    """The CPU taps as 0-dim tensors and as python floats (static: cached)."""
    g = _saliency_gauss("cpu")
    return g.unbind(), g.tolist()


def spectral_saliency(x: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Spectral-residual saliency (Hou and Zhang 2007) of a batch of images, as OpenCV computes it.

    The grey image is resized to ``size x size``; the log amplitude spectrum minus its 3x3 box
    average (the spectral residual) is recombined with the phase; the inverse transform's
    magnitude is smoothed by a Gaussian (5x5, sigma 8), squared and resized back (the order of
    OpenCV's ``computeSaliencyImpl``).

    Speed (same bits as the plain form: ``avg_pool2d`` of the reflect-padded log amplitude, two
    ``conv2d`` for the Gaussian, ``interpolate`` both ways; ``tests/test_methods.py`` checks the
    equality): a resize to the same size is the identity and is skipped; on CPU the 3x3 box sum
    is nine slice adds in ``avg_pool2d``'s order and the separable Gaussian is five
    multiply-adds per direction in the convolution's order, in place on small buffers (the CPU
    convolution and pooling kernels cost several times more on these 1-channel maps). Other
    devices keep the pooling and convolution kernels (fewer launches).

    Args:
        x: ``(B, C, H, W)`` images (any real dtype).

    Returns:
        float32 ``(B, H, W)`` saliency (larger = more salient).
    """
    B, _, H, W = x.shape
    if B == 0:  # the FFT backends refuse empty transforms
        return torch.zeros(0, H, W, device=x.device)
    s = size
    grey = x.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    if (H, W) != (s, s):  # bilinear to the same size is the identity
        grey = F.interpolate(grey, size=(s, s), mode="bilinear", align_corners=False)
    spec = torch.fft.fft2(grey[:, 0])  # (B, s, s)
    log_amp = spec.abs().clamp_(min=1e-12).log_()
    padded = F.pad(log_amp[:, None], (1, 1, 1, 1), mode="reflect")
    cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
    if cpu:  # avg_pool2d's sum, in its order (row by row), then / 9
        p = padded[:, 0]
        avg = p[:, 0:s, 0:s].clone()
        for i in range(3):
            for j in range(3):
                if i or j:
                    avg += p[:, i:i + s, j:j + s]
        avg /= 9
    else:
        avg = F.avg_pool2d(padded, 3, stride=1)[:, 0]
    residual = torch.polar(log_amp.sub_(avg).exp_(), torch.angle(spec))
    mag = torch.fft.ifft2(residual).abs()  # (B, s, s)
    mag = F.pad(mag[:, None], (2, 2, 2, 2), mode="reflect")
    if cpu:  # the two convolutions' multiply-adds, in their order
        g, gl = _saliency_gauss_cpu()
        m = mag[:, 0]
        rows = torch.mul(m[:, :, 0:s], gl[0])  # (B, s + 4, s)
        for j in range(1, 5):
            rows.addcmul_(m[:, :, j:j + s], g[j])
        sal = torch.mul(rows[:, 0:s], gl[0])  # (B, s, s)
        for i in range(1, 5):
            sal.addcmul_(rows[:, i:i + s], g[i])
    else:
        g = _saliency_gauss(x.device)
        sal = F.conv2d(F.conv2d(mag, g.view(1, 1, 1, 5)), g.view(1, 1, 5, 1))[:, 0]  # separable Gaussian
    sal = sal.mul_(sal)  # squared
    if (H, W) != (s, s):
        sal = F.interpolate(sal[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    return sal


class SaliencyMix(_Mixer):
    """SaliencyMix (Uddin et al. 2021): a CutMix box centred on the partner's saliency peak.

    ``lam ~ Beta(alpha, alpha)``; the box side is ``int(S * sqrt(1 - lam))`` per dim, centred on
    the argmax of the partner's spectral-residual saliency, ends clipped to the image (the
    official ``saliency_bbox``); ``lam`` is then the exact kept area. The partner's content is
    pasted at the same place (like CutMix), so masks and dense targets follow the box.

    Args:
        alpha: Beta concentration; default 1.0 (the paper's).
        mode: ``"batch"`` (one box from the first partner's saliency, as the official code) or
            ``"sample"`` (each row's box from its own partner).
        Other arguments as :class:`mixlab.CutMix` (2-D images ``(B, C, H, W)`` only).
    """

    def __init__(self, alpha=1.0, *, mode="batch", p=1.0, pairing="permutation", generator=None,
                 num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, None)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        if leaf.ndim != 4:
            raise ValueError(f"SaliencyMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        shape = tuple(leaf.shape[-2:])
        base, n, _ = self._base_params(B, device)
        lam = base.lam[:n]
        sal = spectral_saliency(leaf.index_select(0, base.index[:n]))  # (n, H, W): the partners' saliency
        peak = sal.flatten(1).argmax(dim=1)  # (n,)
        centre = torch.stack([peak // shape[1], peak % shape[1]], dim=1)  # (n, 2)
        sizes = torch.tensor(shape, device=device)
        cut = torch.floor(torch.sqrt(1 - lam.double())[:, None] * sizes).long()  # (n, 2)
        lo = (centre - cut // 2).clamp(min=0)
        hi = torch.minimum(centre + cut // 2, sizes)
        box = torch.stack([lo, torch.maximum(lo, hi)], dim=2)  # (n, 2, 2)
        if n != B:
            box = box.expand(B, -1, -1).contiguous()
        region = Box(box, shape)
        return MixParams(region.kept(), base.index, region)

    def __repr__(self):
        return f"SaliencyMix(alpha={self.alpha}, mode={self.mode!r}, p={self.p})"


class TokenMix(_Mixer):
    """Token-level mixing for vision transformers: a random token set taken from the partner.

    For images ``(B, C, H, W)`` the tokens are the ``patch_size`` x ``patch_size`` patches of the
    ViT's grid (``H`` and ``W`` multiples of it); for token sequences ``(B, N, D)`` (embeddings,
    without a class token) they are the ``N`` positions. Each row takes ``k = round((1 - lam) * N)``
    tokens, chosen uniformly at random, from its partner; ``lam = 1 - k / N`` exactly.

    TokenMix's paper draws block-wise token masks and re-weights the label with a teacher's
    attention; here the set is uniform and the label follows the token share (for an
    attention-based label, re-weight ``target`` yourself, see the methods issue's TransMix API).

    Args:
        alpha: Beta concentration for ``lam``.
        patch_size: the ViT's patch side, for image inputs.
        mode: ``"sample"`` (a set per row, default) or ``"batch"`` (one set for the batch).
        Other arguments as :class:`mixlab.MixUp`.
    """

    def __init__(self, alpha=1.0, *, patch_size=16, mode="sample", p=1.0, pairing="permutation", generator=None,
                 num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.patch_size = V.integer(patch_size, "patch_size", minimum=1)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, None)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        if leaf.ndim == 4:
            H, W = leaf.shape[-2:]
            P = self.patch_size
            if H % P or W % P:
                raise ValueError(f"TokenMix: image size {H}x{W} is not a multiple of patch_size={P}")
            grid = (H // P, W // P)
        elif leaf.ndim == 3:
            grid = (leaf.shape[1],)
        else:
            raise ValueError(f"TokenMix needs images (B, C, H, W) or token sequences (B, N, D), got shape "
                             f"{tuple(leaf.shape)}")
        base, n, g = self._base_params(B, device)
        N = math.prod(grid)
        k = torch.round((1 - base.lam[:n].to(torch.float64)) * N).long()  # tokens from the partner
        order = torch.rand(n, N, device=device, **rng(g)).argsort(dim=1)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(n, N))
        take = (rank < k[:, None]).view((n,) + grid)  # (n, *grid)
        if leaf.ndim == 4:
            take = take.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2)  # (n, H, W)
        else:
            take = take[:, :, None].expand(n, grid[0], leaf.shape[2])  # (n, N, D): whole tokens
        lam = (1 - k.to(torch.float64) / N).to(torch.float32)
        if n != B:
            take, lam = take.expand((B,) + tuple(take.shape[1:])), lam.expand(B)
        return MixParams(lam.contiguous(), base.index, Mask(take))

    def __repr__(self):
        return f"TokenMix(alpha={self.alpha}, patch_size={self.patch_size}, mode={self.mode!r}, p={self.p})"


class SmoothMix(_Mixer):
    """SmoothMix (Lee et al. 2020): blend in the partner under a soft Gaussian blob.

    The partner's weight at pixel ``(y, x)`` is ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``
    with the centre uniform over the pixels and ``sigma ~ U(sigma_range) * H`` (OpenMixup's
    ``smoothmix``: ``U(0.25, 0.5)``); ``lam = 1 - mean(weight)``, the original's exact share.

    Differences from OpenMixup's code, on purpose: its kernel is ``H x H`` (wrong for non-square
    images; here ``H x W``), and it returns the partner's share as ``lam`` beside ``y_a`` (here
    ``lam`` weights the original, as everywhere in mixlab). No Beta draw: OpenMixup draws one
    and then overwrites it with the kernel's mean, so the blob alone sets the share.

    Args:
        sigma: range of sigma as a share of the image height (default (0.25, 0.5)).
        mode: ``"batch"`` (one blob for the batch, as OpenMixup) or ``"sample"``.
        Other arguments as :class:`mixlab.MixUp` (2-D images ``(B, C, H, W)``; integer maps
        cannot follow a soft blob: pass them as the target).
    """

    def __init__(self, *, sigma=(0.25, 0.5), mode="batch", p=1.0, pairing="permutation", generator=None,
                 num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        if not isinstance(sigma, (tuple, list)) or len(sigma) != 2:
            raise ValueError(f"sigma must be a pair (low, high) of shares of the height, got {sigma!r}")
        low, high = (V.real(v, "sigma", positive=True) for v in sigma)
        if low > high:
            raise ValueError(f"sigma must be a pair (low, high) with low <= high, got {sigma!r}")
        self.sigma = (low, high)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, None)

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        if leaf.ndim != 4:
            raise ValueError(f"SmoothMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        H, W = leaf.shape[-2:]
        g = self._gen
        n = min(B, 1) if self.mode == "batch" else B
        u = torch.rand(n, 4, device=device, **rng(g))
        cy, cx = torch.floor(u[:, 0] * H), torch.floor(u[:, 1] * W)  # uniform pixel centres
        low, high = self.sigma
        sigma = (low + (high - low) * u[:, 2]) * H  # (n,)
        yy = torch.arange(H, device=device, dtype=torch.float32)
        xx = torch.arange(W, device=device, dtype=torch.float32)
        d2 = (yy[None, :, None] - cy[:, None, None]) ** 2 + (xx[None, None, :] - cx[:, None, None]) ** 2
        weight = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))  # (n, H, W): the partner's weight
        if self.p < 1:
            weight = torch.where((u[:, 3] < self.p)[:, None, None], weight, torch.zeros_like(weight))
        lam = Mask(weight).kept() if n else torch.ones(0, device=device)
        if n != B:
            weight, lam = weight.expand(B, H, W), lam.expand(B)
        index = partner_index(B, self.pairing, generator=g, device=device)
        return MixParams(lam.contiguous(), index, Mask(weight))

    def __repr__(self):
        return f"SmoothMix(sigma={self.sigma}, mode={self.mode!r}, p={self.p})"


def _range(value, name, *, integer=False, minimum=0.0):
    """A fixed value or a ``(low, high)`` range, as a pair."""
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair (low, high), got {value!r}")
    check = (lambda v: V.integer(v, name, minimum=int(minimum))) if integer else \
        (lambda v: V.real(v, name, minimum=minimum))
    low, high = check(pair[0]), check(pair[1])
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high


class GridMix(_Mixer):
    """GridMix (Baek et al. 2021): a grid of holes over a cut region takes the partner.

    A cut region of ``cut_area_ratio`` of the image (aspect ``cut_aspect_ratio``, placed
    uniformly) is divided into cells ``ceil(width / n_holes)`` wide and ``hole_aspect_ratio`` times
    as tall; in each cell the top-left hole of side ``int(cell * sqrt(1 - lam))`` (at least 1
    pixel, at most the cell less 1) is the partner's. ``lam`` is then the exact kept share.
    Ranges ``(low, high)`` draw each value per batch (or per row in ``"sample"`` mode), as
    OpenMixup's ``gridmix``.

    Args:
        alpha: Beta concentration for the hole size.
        n_holes: holes across the cut region's width (int or range); at most half its width.
        hole_aspect_ratio, cut_area_ratio, cut_aspect_ratio: floats or ranges (default 1.0:
            square holes over the whole image, OpenMixup's defaults).
        mode: ``"batch"`` (one grid, as the reference) or ``"sample"``.
        Other arguments as :class:`mixlab.MixUp` (2-D images ``(B, C, H, W)``).
    """

    def __init__(self, alpha=1.0, *, n_holes=8, hole_aspect_ratio=1.0, cut_area_ratio=1.0, cut_aspect_ratio=1.0,
                 mode="batch", p=1.0, pairing="permutation", generator=None, num_classes=None, label_smoothing=0.0,
                 inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.n_holes = _range(n_holes, "n_holes", integer=True, minimum=1)
        self.hole_aspect_ratio = _range(hole_aspect_ratio, "hole_aspect_ratio", minimum=1e-6)
        self.cut_area_ratio = _range(cut_area_ratio, "cut_area_ratio", minimum=1e-6)
        if self.cut_area_ratio[1] > 1:
            raise ValueError(f"cut_area_ratio must lie in (0, 1], got {cut_area_ratio!r}")
        self.cut_aspect_ratio = _range(cut_aspect_ratio, "cut_aspect_ratio", minimum=1e-6)
        self.p = V.probability(p)
        self._set_box_options(mode, pairing, True, None)

    def _uniform(self, bounds, n, g, device):
        low, high = bounds
        return low + (high - low) * torch.rand(n, device=device, dtype=torch.float64, **rng(g))

    def sample(self, x) -> MixParams:
        B, device, leaf = _batch_info(x)
        if leaf.ndim != 4:
            raise ValueError(f"GridMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        H, W = leaf.shape[-2:]
        base, n, g = self._base_params(B, device)
        lo, hi = self.n_holes
        holes = torch.randint(lo, hi + 1, (n,), device=device, **rng(g))
        hole_ar = self._uniform(self.hole_aspect_ratio, n, g, device)
        area = torch.floor(H * W * self._uniform(self.cut_area_ratio, n, g, device))
        cut_ar = self._uniform(self.cut_aspect_ratio, n, g, device)
        cut_w = torch.floor(torch.sqrt(area / cut_ar)).clamp(1, W).long()
        cut_h = torch.floor(cut_w * cut_ar).clamp(1, H).long()
        if self.mode == "batch" and n and not torch.compiler.is_compiling() and device.type == "cpu":
            if int(holes[0]) > int(cut_w[0]) // 2:
                raise ValueError(f"GridMix: n_holes={int(holes[0])} is more than half the cut region's width "
                                 f"({int(cut_w[0])} pixels); lower n_holes for {H}x{W} images")
        u = torch.rand(n, 2, device=device, dtype=torch.float64, **rng(g))
        x0 = torch.floor((W - cut_w) * u[:, 0]).long()
        y0 = torch.floor((H - cut_h) * u[:, 1]).long()
        pw = torch.ceil(cut_w / holes).long().clamp(min=2)  # cell width
        ph = torch.floor(pw * hole_ar).long().clamp(min=2)  # cell height
        ratio = torch.sqrt(1 - base.lam[:n].to(torch.float64))
        hw = torch.floor(pw * ratio).long().clamp(min=1)
        hw = torch.minimum(hw, pw - 1)
        hh = torch.minimum(torch.floor(ph * ratio).long().clamp(min=1), ph - 1)
        unmixed = base.lam[:n] >= 1  # p's unmixed rows (and alpha 0): no holes
        rx = torch.arange(W, device=device)[None, :] - x0[:, None]  # (n, W)
        ry = torch.arange(H, device=device)[None, :] - y0[:, None]  # (n, H)
        in_x = (rx >= 0) & (rx < cut_w[:, None]) & (rx.remainder(pw[:, None]) < hw[:, None])
        in_y = (ry >= 0) & (ry < cut_h[:, None]) & (ry.remainder(ph[:, None]) < hh[:, None])
        take = in_y[:, :, None] & in_x[:, None, :] & ~unmixed[:, None, None]  # (n, H, W)
        lam = Mask(take).kept() if n else torch.ones(0, device=device)
        if n != B:
            take, lam = take.expand(B, H, W), lam.expand(B)
        return MixParams(lam.contiguous(), base.index, Mask(take))

    def __repr__(self):
        return f"GridMix(alpha={self.alpha}, n_holes={self.n_holes}, mode={self.mode!r}, p={self.p})"
