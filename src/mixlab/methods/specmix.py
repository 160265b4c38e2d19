"""SpecMix (Kim, Han and Ko, Interspeech 2021, "SpecMix: A Mixed Sample Data Augmentation method for
Training with Time-Frequency Domain Features"), and the lengths and padding masks of mixed audio.

SpecMix takes whole frequency bands and whole time bands of a spectrogram ``(B, C, F, T)`` from the
partner: the mask is the union of up to ``max_bands[0]`` bands of frequency bins (every frame) and up
to ``max_bands[1]`` bands of frames (every bin), and ``lam`` is the share the original keeps. No
official code was published; the band rule follows the reference implementation written with the
first author's feedback (anas-rz/specmix-pytorch, ``specmix`` and ``get_band``): a band count
``U{1..max}`` per axis, each band's width ``U{min..max}`` bins and its start uniform over the
positions where it fits, labels weighted by the kept share. One departure: that implementation's
loop (``for i in range(1, n)``) applies ``n - 1`` of the ``n`` bands it draws; here all ``n`` are.

Waveforms ``(B, C, T)`` padded to a common length mix with any sequence method (MixUp, CutMix with a
1-D box); :func:`mixed_lengths` and :func:`mixed_padding_mask` give the mixed batch's lengths and
padding masks: a sample is real where it is real in a source that contributes to the row (the rule
of :func:`mixlab.manifold.combine_masks` for hidden states, applied to inputs).

Convention: ``lam`` weights the original row: the exact share of its time-frequency positions kept.
"""
from __future__ import annotations

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams
from ..regions import Mask
from ..registry import register
from ..sampling import rng

__all__ = ["SpecMix", "band_masks", "mixed_lengths", "mixed_padding_mask"]


def band_masks(n: int, size: int, max_bands: int, width: tuple, *, generator=None, device=None) -> torch.Tensor:
    """Per row, the union of ``U{1..max_bands}`` bands over ``size`` positions, widths ``U{width}``.

    Each band's width is ``U{lo..hi}`` (clipped to ``size``) and its start ``U{0..size - width}``
    (``get_band``'s ``random.randint`` draws); the count, widths and starts are drawn in that order.

    Returns:
        bool ``(n, size)``: True inside a band.
    """
    lo, hi = width
    count = torch.floor(torch.rand(n, device=device, **rng(generator)) * max_bands).long() + 1  # (n,)
    w = lo + torch.floor(torch.rand(n, max_bands, device=device, **rng(generator)) * (hi - lo + 1)).long()
    w = w.clamp(max=size)
    start = torch.floor(torch.rand(n, max_bands, device=device, **rng(generator)) * (size - w + 1)).long()
    active = torch.arange(max_bands, device=device) < count[:, None]  # (n, k)
    pos = torch.arange(size, device=device)
    inside = (pos >= start[..., None]) & (pos < (start + w)[..., None]) & active[..., None]  # (n, k, size)
    return inside.any(dim=1)


@register("specmix", inputs=("images",),
          when="Spectrograms (audio): whole frequency and time bands; above MixUp and CutMix on audio tasks.")
class SpecMix(Mixer):
    """SpecMix (Kim et al. 2021): frequency bands and time bands of a spectrogram from the partner.

    On ``(B, C, F, T)`` spectrograms (for example torchaudio's ``MelSpectrogram`` output, ``(B, 1,
    n_mels, frames)``): up to ``max_bands[0]`` frequency bands (all frames of some bins) and up to
    ``max_bands[1]`` time bands (all bins of some frames) come from the partner; ``lam`` is the exact
    share of positions the original keeps, and the labels are weighted by it. No ``alpha``: the bands
    set the share.

    Args:
        max_bands: ``(frequency, time)``: the most bands per axis (each axis draws ``U{1..max}``;
            default (3, 3), the reference implementation's).
        band_width: ``(lo, hi)`` band width in bins / frames (each band ``U{lo..hi}``, clipped to the axis).
        mode: ``"batch"`` (default: one mask for the batch, as the reference) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer`.
    """

    def __init__(self, *, max_bands=(3, 3), band_width=(1, 8), **common):
        super().__init__(**common)
        if not isinstance(max_bands, (tuple, list)) or len(max_bands) != 2:
            raise ValueError(f"max_bands must be a pair (frequency, time) of band counts >= 1, got {max_bands!r}")
        self.max_bands = tuple(V.integer(m, "max_bands", minimum=1) for m in max_bands)
        if not isinstance(band_width, (tuple, list)) or len(band_width) != 2:
            raise ValueError(f"band_width must be a pair (lo, hi) of widths with 0 <= lo <= hi, got {band_width!r}")
        lo, hi = (V.integer(w, "band_width", minimum=0) for w in band_width)
        if lo > hi:
            raise ValueError(f"band_width must be a pair (lo, hi) of widths with 0 <= lo <= hi, got {band_width!r}")
        self.band_width = (lo, hi)

    def draw(self, leaf, lam, index, g, *, y=None):
        if leaf.ndim < 3:
            raise ValueError(f"SpecMix needs spectrograms (B, C, F, T) or (B, F, T), got shape {tuple(leaf.shape)}")
        B, device = leaf.shape[0], leaf.device
        F_, T = leaf.shape[-2:]
        n = self.distinct(B)
        freq = band_masks(n, F_, self.max_bands[0], self.band_width, generator=g, device=device)  # (n, F)
        time = band_masks(n, T, self.max_bands[1], self.band_width, generator=g, device=device)  # (n, T)
        take = (freq[:, :, None] | time[:, None, :]) & (lam[:n] < 1)[:, None, None]  # (n, F, T): the partner's
        if n != B:
            take = take.expand(B, -1, -1)
        return Mask(take)


# ----------------------------------------------------------------------------------------------
# padded audio

def _contributes(params: MixParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (B, k), contributes (B, k))``: every source row and whether its weight is above 0."""
    weights, index = params.kway()
    if params.weights is None and params.label_weights is not None:  # the inputs' shares, not the labels'
        weights = torch.stack([params.lam, 1 - params.lam], 1)
    return index, weights > 0


def mixed_lengths(lengths: torch.Tensor, params: MixParams) -> torch.Tensor:
    """The valid lengths of a batch of padded sequences after mixing with ``params``.

    A mixed row is real up to the longest of the rows that contribute to it (weight above 0):
    ``max(lengths[i], lengths[index[i]])`` for a mixed row, its own length for a row left unmixed.
    Beyond it both sources are padding, so (with zero padding) the mixed row is zero there too.

    Args:
        lengths: int ``(B,)`` valid lengths of the original rows.
        params: the :class:`~mixlab.MixParams` that mixed them (two-way or k-way).

    Returns:
        ``(B,)`` lengths, ``lengths``' dtype.
    """
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (params.batch_size,):
        raise ValueError(f"lengths must be a ({params.batch_size},) tensor, got {V.describe(lengths)}")
    index, used = _contributes(params)
    src = lengths.to(index.device)[index]  # (B, k)
    return torch.where(used, src, torch.zeros_like(src)).amax(dim=1).to(lengths.dtype)


def mixed_padding_mask(mask: torch.Tensor, params: MixParams, *, convention: str = "padding") -> torch.Tensor:
    """The padding mask ``(B, T)`` of a mixed batch: a position is real if it is real in a contributing row.

    Args:
        mask: bool ``(B, T)``: ``True`` = padding (``convention="padding"``, PyTorch's ``key_padding_mask``)
            or ``True`` = real (``"valid"``, Hugging Face's ``attention_mask``, also 0/1 integers).
        params: the parameters that mixed the rows.

    Returns:
        The mask of the mixed rows, same dtype and convention (:func:`mixlab.manifold.combine_masks`'s
        rule, restricted to the rows that contribute).
    """
    if convention not in ("padding", "valid"):
        raise ValueError(f"convention must be 'padding' or 'valid', got {convention!r}")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != params.batch_size:
        raise ValueError(f"mask must be a (B, T) tensor with B = {params.batch_size}, got {V.describe(mask)}")
    index, used = _contributes(params)
    real = mask.bool() if convention == "valid" else ~mask.bool()  # (B, T): True = real
    real = (real[index] & used[..., None]).any(dim=1)  # (B, T)
    out = real if convention == "valid" else ~real
    return out.to(mask.dtype)
