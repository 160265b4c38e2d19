"""SpecMix against a port of the band rule of the reference implementation (anas-rz/specmix-pytorch, written with
the first author's feedback; no official code was published): ``get_band`` and ``specmix`` with the same draws, on
torchaudio-shaped batches ``(B, 1, n_mels, frames)`` built by hand (torchaudio is not needed). And the lengths and
padding masks of mixed padded waveforms ``(B, C, T)``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixlab
from mixlab.manifold import combine_masks
from mixlab.methods.specmix import SpecMix, mixed_lengths, mixed_padding_mask


# ---------------------------------------------------------------------------------------------- the port
def get_band(mask, band_size, mask_start, band_type):
    """``get_band`` with its ``random.randint`` draws given, on a ``(F, T)`` mask (frequency bins first)."""
    mask_end = mask_start + band_size
    if band_type == 'freq':
        mask[mask_start:mask_end, :] = 1
    if band_type == 'time':
        mask[:, mask_start:mask_end] = 1
    return mask


def specmix(x, y, batch_idx, freq_bands, time_bands, num_classes):
    """``specmix`` with ``prob`` 1 and its draws given: the permutation and the (size, start) of every band
    its loops apply; ``y`` one-hot, as the reference mixes it."""
    mask = torch.zeros(x.size()[-2:])
    for size, start in freq_bands:
        mask = get_band(mask, size, start, 'freq')
    for size, start in time_bands:
        mask = get_band(mask, size, start, 'time')
    lam = torch.sum(mask) / (x.size()[-2] * x.size()[-1])
    x = x * (1 - mask) + x[batch_idx] * mask
    y = F.one_hot(y, num_classes).float()
    y = y * (1 - lam) + y[batch_idx] * lam
    return x, y, lam


def replay_bands(g, size, max_bands, lo, hi):
    """The bands mixlab draws (row 0 in batch mode): a count U{1..max}, then widths and starts."""
    count = int(torch.floor(torch.rand(1, generator=g) * max_bands)) + 1
    w = (lo + torch.floor(torch.rand(1, max_bands, generator=g) * (hi - lo + 1)).long()).clamp(max=size)
    start = torch.floor(torch.rand(1, max_bands, generator=g) * (size - w + 1)).long()
    return [(int(w[0, i]), int(start[0, i])) for i in range(count)]


def mel_batch(B, n_mels=40, frames=101, seed=0):
    """A batch shaped like torchaudio's MelSpectrogram of mono audio: (B, 1, n_mels, frames), log-scaled."""
    g = torch.Generator().manual_seed(seed)
    return torch.log(torch.rand(B, 1, n_mels, frames, generator=g) * 10 + 1e-6)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(5))
def test_specmix_equals_the_reference_band_rule_with_the_same_draws(seed):
    B, C = 6, 4
    x, y = mel_batch(B, seed=seed), torch.arange(B) % C
    t = SpecMix(max_bands=(3, 2), band_width=(2, 12), generator=torch.Generator().manual_seed(seed))
    mixed, target = t(x, y)
    g = torch.Generator().manual_seed(seed)
    batch_idx = torch.randperm(B, generator=g)  # the partners, then the bands, in mixlab's order
    freq = replay_bands(g, 40, 3, 2, 12)
    time = replay_bands(g, 101, 2, 2, 12)
    ref_x, ref_y, lam = specmix(x.clone(), y, batch_idx, freq, time, C)
    assert torch.equal(target.params.index, batch_idx)
    assert torch.equal(mixed, ref_x)
    torch.testing.assert_close(target.params.lam, (1 - lam).expand(B))  # lam: the original's share
    torch.testing.assert_close(target.soft(C), ref_y)


def test_bands_span_whole_axes_and_sample_mode_draws_per_row():
    x, y = mel_batch(5, n_mels=16, frames=30), torch.arange(5)
    mixed, target = SpecMix(mode="sample", generator=torch.Generator().manual_seed(1))(x, y)
    take = target.params.region.values  # (B, F, T)
    for row in take:
        full_f = row.all(dim=1)  # frequency bands: every frame
        full_t = row.all(dim=0)  # time bands: every bin
        assert torch.equal(row, full_f[:, None] | full_t[None, :])
        assert full_f.any() and full_t.any()  # at least one band per axis
    assert len({tuple(r.flatten().tolist()) for r in take}) > 1
    torch.testing.assert_close(target.params.lam, 1 - take.float().mean((1, 2)))


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_bands must be a pair"):
        SpecMix(max_bands=3)
    with pytest.raises(ValueError, match="band_width must be a pair"):
        SpecMix(band_width=(5, 2))
    with pytest.raises(ValueError, match="SpecMix needs spectrograms"):
        SpecMix()(torch.rand(4, 10), torch.arange(4))
    assert mixlab.SpecMix is SpecMix and not mixlab.methods.get("specmix").alpha


def padded_waves(lengths, T=50, C=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), C, T, generator=g)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T): True = padding
    return x.masked_fill(pad[:, None, :], 0.0), pad


@pytest.mark.parametrize("make", [lambda g: mixlab.MixUp(alpha=1.0, generator=g),
                                  lambda g: mixlab.MixUp(alpha=1.0, mode="sample", p=0.6, generator=g),
                                  lambda g: mixlab.CutMix(alpha=1.0, mode="sample", generator=g),
                                  lambda g: mixlab.MixUp(alpha=1.0, k=3, generator=g)],
                         ids=["mixup", "mixup-p", "cutmix-1d", "mixup-3way"])
def test_padded_waveforms_keep_their_padding_and_lengths(make):
    lengths = [50, 20, 35, 8, 41, 50]
    x, pad = padded_waves(lengths)
    mixed, target = make(torch.Generator().manual_seed(3))(x, torch.arange(6))
    params = target.params
    new = mixed_lengths(torch.tensor(lengths), params)
    new_pad = mixed_padding_mask(pad, params)
    assert torch.equal(new_pad, torch.arange(50)[None, :] >= new[:, None])  # the two forms agree
    assert bool((mixed.masked_fill(~new_pad[:, None, :], 0) == 0).all())  # beyond the mixed length: zeros
    assert bool((new >= torch.tensor(lengths)).all())
    valid = mixed_padding_mask(~pad, params, convention="valid")
    assert torch.equal(valid, ~new_pad)
    if params.weights is None:  # two-way: combine_masks's rule on the rows that mix
        moved = (params.lam < 1) & (params.index != torch.arange(6))
        assert torch.equal(new_pad[moved], combine_masks(pad, params.index)[moved])
        assert torch.equal(new_pad[~moved], pad[~moved])
