"""FMix (Harris et al. 2020, "FMix: Enhancing Mixed Sample Data Augmentation"; official code
ecs-vlc/FMix): a :class:`~mixlab.regions.Mask` from low-pass filtered Fourier noise, binarised by
keeping exactly the top ``lam`` fraction of positions (``ceil`` or ``floor`` of ``lam * N`` with
even odds, as the official ``binarise_mask``), with optional soft edges.

Convention: ``lam`` weights the original row: the exact share of positions it keeps.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Mask
from ..registry import register
from ..sampling import rng
from .cutmix import region_shape

__all__ = ["FMix", "SelectMask", "fourier_noise", "binarise"]


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



@dataclasses.dataclass(frozen=True, eq=False)
class SelectMask(Mask):
    """FMix's masks: a :class:`~mixlab.regions.Mask` (whose binary paste takes :func:`mixlab._fast.select`
    on CPU, bit for bit ``torch.where(mask, src[index], x)``; every binary mask does so since 0.3)."""


@register("fmix", inputs=("images", "sequences", "volumes"),
          when="As CutMix with varied mask shapes: matches or beats it on images, and works on 1-D and 3-D data too.")
class FMix(Mixer):
    """FMix (Harris et al. 2020): mix with a binarised low-frequency Fourier mask.

    Args:
        alpha: Beta(alpha, alpha) for ``lam``; default 1.0 (the paper's).
        decay_power: the spectrum's decay (the paper's ``delta``, default 3.0).
        max_soft: soft edge width as a share of the positions (default 0: binary masks).
        box_dims: how many trailing dims the mask covers (default ``x.ndim - 2``: 1-D to 3-D).
        mode: ``"batch"`` (one mask and lam for the batch, as the official code) or ``"sample"``
            (one per row).
        Shared options: see :class:`mixlab.Mixer`.

    Exact lam: ``num / N`` of the positions keep the original row, ``num`` the ceil or floor of
    ``lam * N`` (even odds); ``MixedTarget.params.lam`` is that share.
    """

    def __init__(self, alpha=1.0, *, decay_power=3.0, max_soft=0.0, box_dims=None, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.decay_power = V.real(decay_power, "decay_power", positive=True)
        self.max_soft = V.real(max_soft, "max_soft", minimum=0.0, maximum=0.5)
        self.box_dims = None if box_dims is None else V.integer(box_dims, "box_dims", minimum=1)

    def draw(self, leaf, lam, index, g, *, y=None):
        B, device = leaf.shape[0], leaf.device
        shape = region_shape(leaf, self.box_dims, type(self).__name__)
        n = self.distinct(B)
        N = math.prod(shape)
        want = lam[:n].to(torch.float64) * N
        up = torch.rand(n, device=device, **rng(g)) > 0.5  # the official coin between ceil and floor
        num = torch.where(up, torch.ceil(want), torch.floor(want)).long()
        noise = fourier_noise(n, shape, self.decay_power, generator=g, device=device)
        values = binarise(noise, num, self.max_soft, lam=lam[:n])
        if n != B:
            values = values.expand((B,) + tuple(shape))
        return SelectMask(values)
