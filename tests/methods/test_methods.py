"""FMix and ResizeMix: against ports of their official algorithms, exact lam, masks and labels follow."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.methods import ResizedBox, binarise, fourier_noise


def rows_labelled(B, shape, dtype=torch.float32):
    return torch.arange(B, dtype=dtype).view(B, *[1] * len(shape)).expand(B, *shape).clone()


def official_binarise(mask, lam, in_shape, max_soft, up):
    """ecs-vlc/FMix ``binarise_mask`` (numpy), with its ``random.random() > 0.5`` coin given as ``up``."""
    idx = mask.reshape(-1).argsort()[::-1]
    mask = mask.reshape(-1).copy()
    num = math.ceil(lam * mask.size) if up else math.floor(lam * mask.size)
    eff_soft = max_soft
    if max_soft > lam or max_soft > (1 - lam):
        eff_soft = min(lam, 1 - lam)
    soft = int(mask.size * eff_soft)
    num_low, num_high = num - soft, num + soft
    mask[idx[:num_high]] = 1
    mask[idx[num_low:]] = 0
    mask[idx[num_low:num_high]] = np.linspace(1, 0, (num_high - num_low))
    return mask.reshape((1, *in_shape))


@pytest.mark.parametrize("shape", [(16,), (8, 12), (4, 5, 6)])
@pytest.mark.parametrize("max_soft", [0.0, 0.1])
@pytest.mark.parametrize("lam, up", [(0.3, True), (0.62, False), (0.95, True)])
def test_binarise_matches_the_official_binarise_mask(shape, max_soft, lam, up):
    noise = fourier_noise(1, shape, 3.0, generator=torch.Generator().manual_seed(0)).double()
    N = math.prod(shape)
    num = torch.tensor([math.ceil(lam * N) if up else math.floor(lam * N)])
    ours = 1 - binarise(noise, num, max_soft, lam=torch.tensor([lam], dtype=torch.float64)).double()  # original's
    ref = official_binarise(noise[0].numpy(), lam, shape, max_soft, up)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    torch.testing.assert_close(ours.mean(), torch.tensor(num.item() / N, dtype=torch.float64))  # exact share


def test_fourier_noise_is_low_frequency():
    # the decay makes neighbouring positions correlated (the point of FMix's masks)
    noise = fourier_noise(64, (32, 32), 3.0, generator=torch.Generator().manual_seed(1))
    white = torch.randn(64, 32, 32, generator=torch.Generator().manual_seed(1))

    def neighbour_corr(t):
        a, b = t[:, :, :-1].flatten(), t[:, :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1]

    assert neighbour_corr(noise) > 0.8 and abs(neighbour_corr(white)) < 0.1


@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("max_soft", [0.0, 0.2])
def test_fmix_lam_is_the_exact_share_and_masks_follow(mode, max_soft, gen):
    B, H, W = 8, 12, 10
    batch = {"image": rows_labelled(B, (3, H, W)), "mask": rows_labelled(B, (H, W), torch.int64)}
    fmix = mixlab.FMix(alpha=1.0, max_soft=max_soft, mode=mode, generator=gen)
    params = fmix.sample(batch)
    values = params.region.values
    keep = 1 - values.double() if max_soft else (~values).double()
    torch.testing.assert_close(params.lam.double(), keep.flatten(1).mean(1), atol=1e-7, rtol=0)
    if mode == "batch":
        assert bool((values == values[:1]).all())
    if max_soft:  # soft masks blend floats; integer maps cannot follow them
        with pytest.raises(ValueError, match="soft weights"):
            mixlab.mix(batch, params)
        out = mixlab.mix(batch["image"], params)
        w = values[:, None].float()
        torch.testing.assert_close(out, (1 - w) * batch["image"] + w * batch["image"][params.index])
        return
    out = mixlab.mix(batch, params)
    assert torch.equal(out["mask"], out["image"][:, 0].long())  # every pixel's label names its source row
    moved = params.index != torch.arange(B)
    own = (out["mask"] == torch.arange(B).view(B, 1, 1)).flatten(1).double().mean(1)
    torch.testing.assert_close(own[moved], params.lam[moved].double(), atol=1e-7, rtol=0)


def test_fmix_loss_routes_agree_and_alpha_zero_is_identity(gen):
    x, y = torch.rand(6, 3, 8, 8, generator=gen), torch.randint(0, 4, (6,), generator=gen)
    mixed, target = mixlab.FMix(mode="sample", generator=gen)(x, y)
    logits = torch.randn(6, 4, generator=gen)
    torch.testing.assert_close(target.loss(nn.CrossEntropyLoss(), logits),
                               mixlab.losses.soft_cross_entropy(logits, target.soft(4)))
    same, t0 = mixlab.FMix(alpha=0.0, generator=gen)(x, y)
    assert torch.equal(same, x) and bool((t0.lam == 1).all())


def official_resizemix(img, index, box, mode):
    """OpenMixup's ``resizemix`` body for a given box (one box for the batch)."""
    (y1, y2), (x1, x2) = box
    out = img.clone()
    out[:, :, y1:y2, x1:x2] = F.interpolate(img[index], (y2 - y1, x2 - x1), mode=mode,
                                            **({} if mode == "nearest" else {"align_corners": False}))
    return out, 1 - (x2 - x1) * (y2 - y1) / (img.shape[-1] * img.shape[-2])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_resizemix_equals_the_official_resize_and_paste(interpolation, mode, gen):
    B = 6
    x = torch.rand(B, 3, 20, 24, generator=gen)
    rm = mixlab.ResizeMix(mode=mode, interpolation=interpolation, generator=gen)
    for _ in range(4):
        out, target = rm(x, torch.arange(B))
        p = target.params
        for i in range(B):
            box = p.region.box[i].tolist()
            if box[0][1] == box[0][0] or box[1][1] == box[1][0]:
                assert torch.equal(out[i], x[i])
                continue
            ref, lam = official_resizemix(x, p.index, box, interpolation)
            torch.testing.assert_close(out[i], ref[i], atol=1e-5, rtol=1e-5)
            assert p.lam[i].item() == pytest.approx(lam, abs=1e-7)


@given(B=st.integers(0, 7), H=st.integers(2, 17), W=st.integers(2, 17), seed=st.integers(0, 999),
       mode=st.sampled_from(["batch", "sample"]))
def test_resizemix_labels_and_maps_follow_the_resized_partner(B, H, W, seed, mode):
    g = torch.Generator().manual_seed(seed)
    image = rows_labelled(B, (1, H, W)) * 1000 + torch.arange(H * W, dtype=torch.float32).view(H, W)
    seg = image[:, 0].long()  # each pixel unique: row and position
    rm = mixlab.ResizeMix(scale=(0.2, 1.0), mode=mode, generator=g)
    params = rm.sample(image)
    out = mixlab.mix({"image": image, "seg": seg}, params)
    assert torch.equal(out["seg"], out["image"][:, 0].long())  # nearest: the map follows pixel for pixel
    target = MixedTarget(seg, params)
    assert torch.equal(torch.where(params.region.mask(3), target.targets[1], target.targets[0]), out["seg"])
    box = params.region.box
    area = (box[..., 1] - box[..., 0]).prod(1).double()
    torch.testing.assert_close(params.lam.double(), 1 - area / (H * W), atol=1e-7, rtol=0)


def test_resizemix_validation_and_region_rows(gen):
    with pytest.raises(ValueError, match="scale must be a pair"):
        mixlab.ResizeMix(scale=(0.8, 0.1))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        mixlab.ResizeMix(interpolation="cubic")
    p = mixlab.ResizeMix(mode="sample", generator=gen).sample(torch.rand(6, 3, 8, 8))
    part = p.rows(2, 5)
    assert isinstance(part.region, ResizedBox) and torch.equal(part.region.box, p.region.box[2:5])
    x = torch.rand(6, 3, 8, 8, generator=gen)
    torch.testing.assert_close(mixlab.mix(x[2:5], part, partner=x), mixlab.mix(x, p)[2:5])


@pytest.mark.parametrize("make", [lambda g: mixlab.FMix(mode="sample", generator=g),
                                  lambda g: mixlab.ResizeMix(mode="sample", generator=g)])
def test_batch_of_one_and_zero(make, gen):
    t = make(gen)
    x1 = torch.rand(1, 3, 6, 6, generator=gen)
    out, target = t(x1, torch.tensor([2]))
    torch.testing.assert_close(out, x1)
    out, target = t(torch.rand(0, 3, 6, 6), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 3, 6, 6) and target.soft(3).shape == (0, 3)


# Only the options the registry-wide case does not compile: tests/methods/test_conformance.py compiles every
# registered method in mode="sample" (FMix, ResizeMix, SaliencyMix, SmoothMix, GridMix, TokenMix with patch 4
# among them) with fullgraph=True and aot_eager over changing batch sizes; batch mode, FMix's max_soft and
# ResizeMix's bilinear paste are other code paths, compiled here.
@pytest.mark.parametrize("make", [lambda: mixlab.FMix(mode="batch", max_soft=0.1),
                                  lambda: mixlab.ResizeMix(mode="batch", interpolation="bilinear")])
def test_methods_compile_fullgraph_across_batch_sizes(make):
    torch._dynamo.reset()
    t = make()
    compiled = torch.compile(lambda x, y: t(x, y)[0], fullgraph=True, backend="aot_eager")
    for B in (4, 4, 3, 5):
        x = torch.rand(B, 3, 8, 8)
        assert compiled(x, torch.arange(B)).shape == x.shape
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_resizemix_cpu_paste_equals_the_mask_route(mode, interpolation, dtype, gen):
    x = (torch.rand(6, 3, 12, 9, generator=gen) * 200).to(dtype)
    p = mixlab.ResizeMix(mode=mode, interpolation=interpolation, generator=gen).sample(x.float())
    generic = p.region.apply(x, x, p.lam, p.index, fast=False)  # full-size gathers and a mask
    fast = p.region.apply(x, x, p.lam, p.index, fast=True)      # CPU: resize into the box only
    torch.testing.assert_close(fast, generic, atol=1e-5, rtol=1e-5)
    y = x.clone()
    assert mixlab.mix(y, p, inplace=True) is y
    torch.testing.assert_close(y, generic, atol=1e-5, rtol=1e-5)


def _saliency_reference(img, size=64):
    """Hou and Zhang's spectral residual in numpy, step by step as OpenCV's StaticSaliencySpectralResidual."""
    grey = torch.nn.functional.interpolate(torch.as_tensor(img).float().mean(0)[None, None], size=(size, size),
                                           mode="bilinear", align_corners=False)[0, 0].double().numpy()
    spec = np.fft.fft2(grey)
    log_amp = np.log(np.maximum(np.abs(spec), 1e-12))
    padded = np.pad(log_amp, 1, mode="reflect")
    avg = sum(padded[i:i + size, j:j + size] for i in range(3) for j in range(3)) / 9
    mag = np.abs(np.fft.ifft2(np.exp(log_amp - avg) * np.exp(1j * np.angle(spec))))
    k = np.exp(-((np.arange(5) - 2) ** 2) / (2 * 64.0))
    k /= k.sum()
    p = np.pad(mag, 2, mode="reflect")
    rows = sum(k[j] * p[:, j:j + size] for j in range(5))
    blurred = sum(k[i] * rows[i:i + size, :] for i in range(5))
    return blurred ** 2


def test_spectral_saliency_matches_a_numpy_port(gen):
    x = torch.rand(3, 3, 64, 64, generator=gen)
    ours = mixlab.methods.spectral_saliency(x)
    for i in range(3):
        np.testing.assert_allclose(ours[i].double().numpy(), _saliency_reference(x[i]), rtol=2e-3, atol=1e-6)


def _saliency_plain(x, size=64):
    """``spectral_saliency`` as first written (pooling, two convolutions, resizes both ways): the fast form's bits."""
    B, _, H, W = x.shape
    grey = x.float().mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    spec = torch.fft.fft2(small[:, 0])
    log_amp = torch.log(spec.abs().clamp(min=1e-12))
    avg = F.avg_pool2d(F.pad(log_amp[:, None], (1, 1, 1, 1), mode="reflect"), 3, stride=1)[:, 0]
    residual = torch.polar(torch.exp(log_amp - avg), torch.angle(spec))
    mag = torch.fft.ifft2(residual).abs()
    k = torch.arange(5, dtype=torch.float32, device=x.device) - 2
    g = torch.exp(-(k ** 2) / (2 * 8.0 ** 2))
    g = g / g.sum()
    mag = F.pad(mag[:, None], (2, 2, 2, 2), mode="reflect")
    mag = F.conv2d(F.conv2d(mag, g.view(1, 1, 1, 5)), g.view(1, 1, 5, 1))
    return F.interpolate(mag * mag, size=(H, W), mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("shape", [(16, 3, 64, 64), (5, 3, 32, 40), (2, 3, 100, 70), (3, 1, 8, 8)])
@pytest.mark.parametrize("kind", ["rand", "randn", "constant", "uint8", "smooth"])
def test_spectral_saliency_fast_form_is_bit_identical_to_the_plain_form(shape, kind, gen):
    if kind == "rand":
        x = torch.rand(shape, generator=gen)
    elif kind == "randn":
        x = torch.randn(shape, generator=gen) * 50
    elif kind == "constant":  # ties everywhere: the argmax must pick the same one
        x = torch.full(shape, 0.3)
    elif kind == "uint8":
        x = torch.randint(0, 256, shape, generator=gen).to(torch.uint8)
    else:
        x = F.interpolate(torch.rand(shape[0], shape[1], 4, 4, generator=gen), size=shape[2:], mode="bilinear")
    ours, plain = mixlab.methods.spectral_saliency(x), _saliency_plain(x)
    assert torch.equal(ours, plain) or (ours.isnan().all() and plain.isnan().all())
    assert torch.equal(ours.flatten(1).argmax(1), plain.flatten(1).argmax(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("shape", [(6, 3, 12, 9), (5, 2, 7), (3, 2, 4, 5, 6), (1, 3, 8, 8)])
def test_fmix_cpu_select_is_bit_identical_to_the_mask_route(dtype, mode, shape, gen):
    x = (torch.randn(shape, generator=gen) * 100).to(dtype)
    if dtype.is_floating_point:  # signed zeros and non-finite values keep their bits
        x.view(-1)[::5] = -0.0
        x.view(-1)[3], x.view(-1)[4] = float("nan"), float("-inf")
    other = (torch.randn(shape, generator=gen) * 100).to(dtype)
    p = mixlab.FMix(mode=mode, generator=gen).sample(x.float())
    assert isinstance(p.region, mixlab.regions.Mask)
    plain = mixlab.regions.Mask(p.region.values)

    def bits(t):
        return t.contiguous().view(torch.uint8) if t.dtype != torch.bool else t

    for src in (x, other):
        ref = plain.apply(x, src, p.lam, p.index)  # torch.where(mask, src[index], x)
        fast = p.region.apply(x, src, p.lam, p.index)
        assert fast.dtype == ref.dtype and torch.equal(bits(fast), bits(ref))
    y = x.clone()
    assert mixlab.mix(y, p, inplace=True) is y
    assert torch.equal(bits(y), bits(plain.apply(x, x, p.lam, p.index)))


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_saliencymix_box_is_centred_on_the_partners_peak(mode, gen):
    B, H, W = 6, 32, 40
    x = torch.rand(B, 3, H, W, generator=gen)
    mixed, target = mixlab.SaliencyMix(mode=mode, generator=gen)(x, torch.arange(B))
    p = target.params
    sal = mixlab.methods.spectral_saliency(x[p.index])
    box = p.region.box
    for i in range(B):
        src = 0 if mode == "batch" else i  # batch mode: the first partner's saliency, as the official code
        peak = sal[src].argmax().item()
        cy, cx = divmod(peak, W)
        for (lo, hi), c, S in zip(box[i].tolist(), (cy, cx), (H, W)):
            if hi == lo:
                continue  # a box under one pixel: nothing pasted
            assert lo <= c <= hi  # the peak lies in the box
            if 0 < lo and hi < S:  # unclipped: the box is centred on the peak, side 2 * (cut // 2)
                assert lo + hi == 2 * c
    vol = (box[..., 1] - box[..., 0]).prod(1).double()
    torch.testing.assert_close(p.lam.double(), 1 - vol / (H * W), atol=1e-7, rtol=0)
    own = (mixed == x).flatten(1).double().mean(1)
    moved = p.index != torch.arange(B)
    torch.testing.assert_close(own[moved], p.lam[moved].double(), atol=1e-7, rtol=0)


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_tokenmix_takes_whole_tokens_and_lam_is_the_token_share(mode, gen):
    B, P = 6, 4
    img = rows_labelled(B, (3, 16, 12))
    params = mixlab.TokenMix(alpha=1.0, patch_size=P, mode=mode, generator=gen).sample(img)
    out = mixlab.mix(img, params)
    src = out[:, 0]  # (B, 16, 12): row each pixel came from
    patches = src.unfold(1, P, P).unfold(2, P, P)  # (B, 4, 3, P, P)
    assert bool((patches == patches[..., :1, :1]).all())  # every patch wholly from one row
    moved = params.index != torch.arange(B)
    own = (src == torch.arange(B).view(B, 1, 1)).flatten(1).double().mean(1)
    torch.testing.assert_close(own[moved], params.lam[moved].double(), atol=1e-7, rtol=0)
    seq = rows_labelled(B, (10, 8))  # (B, N, D) token embeddings
    p2 = mixlab.TokenMix(alpha=1.0, mode=mode, generator=gen).sample(seq)
    out2 = mixlab.mix(seq, p2)
    assert bool((out2 == out2[..., :1]).all())  # whole tokens
    own2 = (out2[..., 0] == torch.arange(B).view(B, 1)).double().mean(1)
    moved2 = p2.index != torch.arange(B)
    torch.testing.assert_close(own2[moved2], p2.lam[moved2].double(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        mixlab.TokenMix(patch_size=5).sample(img)


def test_cutmix_patch_size_snaps_boxes_to_the_patch_grid(gen):
    img = rows_labelled(8, (3, 32, 32))
    cut = mixlab.CutMix(mode="sample", patch_size=8, generator=gen)
    for _ in range(5):
        out, target = cut(img, torch.arange(8))
        assert bool((target.params.region.box % 8 == 0).all())
        torch.testing.assert_close(target.lam, target.params.region.lam)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        mixlab.CutMix(patch_size=5).sample(img)


def test_random_choice_picks_each_transform_at_its_rate(gen):
    choice = mixlab.RandomChoice([mixlab.MixUp(generator=gen), mixlab.FMix(generator=gen),
                                  mixlab.TokenMix(patch_size=4, generator=gen)], p=[0.5, 0.3, 0.2],
                                 generator=torch.Generator().manual_seed(0))
    counts = {}
    x, y = torch.rand(4, 3, 8, 8, generator=gen), torch.arange(4)
    for _ in range(1000):
        out, target = choice(x, y)
        counts[type(choice.last).__name__] = counts.get(type(choice.last).__name__, 0) + 1
        assert out.shape == x.shape
    assert abs(counts["MixUp"] - 500) < 60 and abs(counts["FMix"] - 300) < 60 and abs(counts["TokenMix"] - 200) < 50
    with pytest.raises(ValueError, match="one non-negative probability per transform"):
        mixlab.RandomChoice([mixlab.MixUp()], p=[0.5, 0.5])
    with pytest.raises(TypeError, match=r"transforms\[0\] must be a mixlab transform"):
        mixlab.RandomChoice([lambda x, y: x])


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_smoothmix_blends_a_gaussian_blob_and_lam_is_its_exact_mean(mode, gen):
    B, H, W = 5, 16, 24
    x = torch.rand(B, 3, H, W, generator=gen)
    mixed, target = mixlab.SmoothMix(mode=mode, generator=gen)(x, torch.arange(B))
    p = target.params
    w = p.region.values  # (B, H, W): the partner's weight
    torch.testing.assert_close(mixed, (1 - w[:, None]) * x + w[:, None] * x[p.index])
    torch.testing.assert_close(p.lam.double(), 1 - w.double().flatten(1).mean(1), atol=1e-6, rtol=0)
    peak = w.flatten(1).max(1).values
    torch.testing.assert_close(peak, torch.ones(B))  # the blob's centre is a pixel: weight 1 there
    with pytest.raises(ValueError, match="soft weights"):
        mixlab.mix({"x": x, "seg": torch.zeros(B, H, W, dtype=torch.long)}, p)


def test_transmix_reweights_labels_by_attention_on_the_originals_patches(gen):
    B, P = 4, 4
    img = torch.rand(B, 3, 16, 16, generator=gen)
    mixed, target = mixlab.CutMix(mode="sample", patch_size=P, generator=gen)(img, torch.arange(B))
    partner_patches = target.params.region.mask(3).float()[:, ::P, ::P].reshape(B, 16)  # whole patches
    uniform = torch.ones(B, 16)
    torch.testing.assert_close(mixlab.policies.transmix_target(target, uniform).lam, target.lam)  # = area share
    attn = torch.rand(B, 16, generator=gen)
    new = mixlab.policies.transmix_target(target, attn)
    expected = 1 - (attn * partner_patches).sum(1) / attn.sum(1)
    torch.testing.assert_close(new.lam, expected)
    torch.testing.assert_close(new.soft(B).sum(1), torch.ones(B))
    torch.testing.assert_close(target.lam, target.params.region.lam)  # the original target is unchanged
    with pytest.raises(ValueError, match="do not tile"):
        mixlab.policies.transmix_target(target, torch.rand(B, 15))


def reference_gridmix_mask(H, W, lam, n_holes, hole_ar, cut_area, cut_ar, cx, cy):
    """The hole grid of GridMixup / OpenMixup's ``rand_grid`` with its random draws given (H, W order fixed)."""
    area = int(H * W * cut_area)
    cut_w = int(math.sqrt(area / cut_ar))
    cut_h = int(cut_w * cut_ar)
    xc1, yc1 = int((W - cut_w) * cx), int((H - cut_h) * cy)
    pw = math.ceil(cut_w / n_holes)
    ph = int(pw * hole_ar)
    ny = math.ceil(cut_h / ph)
    r = math.sqrt(1 - lam)
    hw, hh = min(max(int(pw * r), 1), pw - 1), min(max(int(ph * r), 1), ph - 1)
    mask = torch.zeros(H, W, dtype=torch.bool)
    for i in range(n_holes + 1):
        for j in range(ny + 1):
            x1, y1 = min(pw * i, cut_w), min(ph * j, cut_h)
            x2, y2 = min(x1 + hw, cut_w), min(y1 + hh, cut_h)
            mask[yc1 + y1:yc1 + y2, xc1 + x1:xc1 + x2] = True
    return mask


@pytest.mark.parametrize("lam, n_holes, cut_area, cx, cy", [(0.3, 4, 1.0, 0.2, 0.7), (0.8, 6, 0.5, 0.9, 0.1),
                                                            (0.55, 3, 0.7, 0.5, 0.5)])
def test_gridmix_mask_equals_the_reference_grid(lam, n_holes, cut_area, cx, cy, monkeypatch):
    H = W = 32
    t = mixlab.GridMix(n_holes=n_holes, cut_area_ratio=cut_area)
    # fix the draws: lam, the region's place (cx, cy)
    real_rand = torch.rand

    def fake_rand(*size, **kw):
        if size and size[-1] == 2 and kw.get("dtype") == torch.float64:
            return torch.tensor([[cx, cy]], dtype=torch.float64)
        return real_rand(*size, **kw)

    monkeypatch.setattr(torch, "rand", fake_rand)
    monkeypatch.setattr(mixlab.mixer, "sample_params",
                        lambda B, **kw: MixParams(torch.full((B,), lam), torch.arange(B).flip(0)))
    p = t.sample(torch.rand(2, 3, H, W))
    ref = reference_gridmix_mask(H, W, lam, n_holes, 1.0, cut_area, 1.0, cx, cy)
    assert torch.equal(p.region.values[0], ref)
    torch.testing.assert_close(p.lam[0].double(), 1 - ref.double().mean(), atol=1e-7, rtol=0)


def test_gridmix_rows_and_errors(gen):
    x = rows_labelled(6, (3, 32, 32))
    p = mixlab.GridMix(mode="sample", n_holes=(2, 6), generator=gen).sample(x)
    out = mixlab.mix(x, p)
    own = (out[:, 0] == torch.arange(6).view(6, 1, 1)).flatten(1).double().mean(1)
    moved = p.index != torch.arange(6)
    torch.testing.assert_close(own[moved], p.lam[moved].double(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="n_holes up to 20 is more than half"):
        mixlab.GridMix(n_holes=20).sample(torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_gridmix_n_holes_check_is_static_in_every_mode(mode):
    # 0.2 checked the drawn value on CPU in batch mode only: sample mode (and every accelerator) went on silently
    t = mixlab.GridMix(n_holes=(2, 12), cut_area_ratio=(0.5, 1.0), mode=mode, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"n_holes up to 12 is more than half the narrowest cut region's width \(22"):
        t.sample(torch.rand(3, 3, 32, 32))
    # the check reads no drawn value (host reads of a device tensor would sync): the same on every device
    mixlab.GridMix(n_holes=(2, 11), cut_area_ratio=(0.5, 1.0), mode=mode).sample(torch.rand(3, 3, 32, 32))


ALL_METHODS = {
    "FMix": lambda g, mode: mixlab.FMix(mode=mode, generator=g),
    "GridMix": lambda g, mode: mixlab.GridMix(n_holes=(2, 4), mode=mode, generator=g),
    "ResizeMix": lambda g, mode: mixlab.ResizeMix(mode=mode, generator=g),
    "SaliencyMix": lambda g, mode: mixlab.SaliencyMix(mode=mode, generator=g),
    "TokenMix": lambda g, mode: mixlab.TokenMix(patch_size=4, mode=mode, generator=g),
    "CutMix(patch_size)": lambda g, mode: mixlab.CutMix(patch_size=4, mode=mode, generator=g),
    "SmoothMix": lambda g, mode: mixlab.SmoothMix(mode=mode, generator=g),
}


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("B", [0, 1, 3, 5])
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_every_method_keeps_dtype_and_gives_the_exact_share(name, dtype, B, mode, gen):
    # rows labelled 10 * i, so the share of each source is countable in every dtype
    x = (rows_labelled(B, (3, 16, 16)) * 10).to(dtype)
    t = ALL_METHODS[name](gen, mode)
    out, target = t(x, torch.arange(B))
    assert out.shape == x.shape and out.dtype == dtype
    p = target.params
    assert p.lam.shape == (B,) and p.lam.dtype == torch.float32
    if B == 0:
        return
    if B == 1:
        torch.testing.assert_close(out, x)
        return
    if name == "SmoothMix":  # soft: lam is the mean weight of the original
        torch.testing.assert_close(p.lam.double(), 1 - p.region.values.double().flatten(1).mean(1), atol=1e-6, rtol=0)
        return
    own = (out[:, 0].float() == (10 * torch.arange(B)).view(B, 1, 1).float()).flatten(1).double().mean(1)
    moved = p.index != torch.arange(B)
    torch.testing.assert_close(own[moved], p.lam[moved].double(), atol=1e-7, rtol=0)


def test_a_method_names_itself_when_the_input_has_no_spatial_dims():
    with pytest.raises(ValueError, match=r"^FMix needs inputs shaped \(B, C, \*spatial\)"):
        mixlab.FMix()(torch.rand(4, 13), torch.arange(4))
    with pytest.raises(ValueError, match=r"^ResizeMix needs inputs shaped"):
        mixlab.ResizeMix().sample(torch.rand(4, 13))
