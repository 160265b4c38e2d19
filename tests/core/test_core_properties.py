"""Properties over shapes, dtypes, alpha, mode and pairing (hypothesis, derandomized).

Every test runs on the ``--device`` of the session (``device`` fixture, conftest.py): inputs
are built on the CPU from seeded generators and moved, parameters are drawn on the device.
"""
from __future__ import annotations

import collections

import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

import mixlab
from mixlab import MixedTarget, MixParams
from mixlab.losses import soft_cross_entropy

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.uint8]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def make(shape, dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)  # CPU draws, then moved: the same values on every device
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    return torch.randn(shape, generator=g).to(dtype).to(device)


def reference(x, params):
    w, idx = params.kway()
    xf = x.double()
    out = sum(w[:, j].double().view(-1, *[1] * (x.ndim - 1)) * xf[idx[:, j]] for j in range(w.shape[1]))
    return out


shapes = st.integers(0, 9).flatmap(
    lambda b: st.lists(st.integers(1, 5), min_size=0, max_size=3).map(lambda rest: (b, *rest))
)
configs = st.fixed_dictionaries({
    "alpha": st.sampled_from([0.0, 0.2, 1.0, 4.0]),
    "mode": st.sampled_from(["batch", "sample"]),
    "pairing": st.sampled_from(["permutation", "flip", "roll"]),
    "keep_dominant": st.booleans(),
    "p": st.sampled_from([0.0, 0.5, 1.0]),
})


@given(shape=shapes, dtype=st.sampled_from(DTYPES), cfg=configs, seed=st.integers(0, 2**16))
def test_mix_properties(shape, dtype, cfg, seed, device):
    x = make(shape, dtype, seed, device)
    before, version = x.clone(), x._version
    params = mixlab.sample_params(shape[0], generator=torch.Generator(device=device).manual_seed(seed),
                                  device=device, **cfg)
    out = mixlab.mix(x, params)
    # the caller's tensor is untouched, shape/dtype/device kept
    assert x._version == version and torch.equal(x, before)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    ref = reference(x, params)
    if dtype == torch.uint8:
        assert (out.double() - ref.round()).abs().max().item() <= 1 if x.numel() else True
    else:
        torch.testing.assert_close(out.double(), ref, atol=TOL[dtype] * 8, rtol=TOL[dtype])
    # in place gives the same numbers and writes the caller's tensor
    y = x.clone()
    res = mixlab.mix(y, params, inplace=True)
    assert res.data_ptr() == y.data_ptr() or y.numel() == 0
    torch.testing.assert_close(y, out, atol=1 if dtype == torch.uint8 else TOL[dtype] * 8, rtol=TOL.get(dtype, 0))
    # lam: float32 (B,), in [0, 1]; unmixed configurations return the input exactly
    assert params.lam.dtype == torch.float32 and params.lam.shape == (shape[0],)
    assert params.lam.device == params.index.device == x.device  # drawn on the batch's device
    assert bool(((params.lam >= 0) & (params.lam <= 1)).all())
    if cfg["alpha"] == 0 or cfg["p"] == 0 or shape[0] <= 1:
        assert torch.equal(out, x)
    if cfg["keep_dominant"]:
        assert bool((params.lam >= 0.5).all())


@given(B=st.integers(0, 12), C=st.integers(1, 7), cfg=configs, seed=st.integers(0, 2**16),
       eps=st.sampled_from([0.0, 0.1]))
def test_soft_rows_and_loss_routes(B, C, cfg, seed, eps, device):
    g = torch.Generator(device=device).manual_seed(seed)
    params = mixlab.sample_params(B, generator=g, device=device, **cfg)
    y = torch.randint(0, C, (B,), generator=g, device=device)
    target = MixedTarget(y, params)
    soft = target.soft(C, label_smoothing=eps)
    assert soft.shape == (B, C) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(B, device=device))
    logits = torch.randn(B, C, generator=g, device=device)
    crit = nn.CrossEntropyLoss(label_smoothing=eps)
    if B:
        torch.testing.assert_close(target.loss(crit, logits), soft_cross_entropy(logits, soft))


@given(k=st.integers(3, 5), B=st.integers(0, 10), mode=st.sampled_from(["batch", "sample"]),
       keep=st.booleans(), p=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 999))
def test_kway_weights(k, B, mode, keep, p, seed, device):
    params = mixlab.sample_params(B, alpha=0.5, k=k, mode=mode, keep_dominant=keep, p=p,
                                  generator=torch.Generator(device=device).manual_seed(seed), device=device)
    w = params.weights
    assert w.shape == (B, k) and torch.equal(params.lam, w[:, 0])
    torch.testing.assert_close(w.sum(1), torch.ones(B, device=device))
    if keep and B:
        assert bool((w[:, 0] >= w.max(1).values).all())
    if B:
        assert torch.equal(params.index[:, 0], torch.arange(B, device=device))


Point = collections.namedtuple("Point", ["features", "label"])


def test_pytree_structure_kept_and_int_leaves_untouched(gen, device, dgen):
    B = 5
    batch = {
        "image": torch.rand(B, 3, 4, 4, generator=gen).to(device),
        "raw": torch.randint(0, 256, (B, 1, 4, 4), generator=gen, dtype=torch.uint8).to(device),
        "meta": [Point(torch.randn(B, 2, generator=gen).to(device), torch.arange(B, device=device)),
                 (torch.ones(B, dtype=torch.bool, device=device),)],
    }
    params = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=dgen, device=device)
    out = mixlab.mix(batch, params)
    assert set(out) == set(batch) and isinstance(out["meta"], list)
    assert isinstance(out["meta"][0], Point) and isinstance(out["meta"][1], tuple)
    assert out["meta"][0].label is batch["meta"][0].label  # integer leaves pass through
    assert out["meta"][1][0] is batch["meta"][1][0]
    torch.testing.assert_close(out["meta"][0].features, reference(batch["meta"][0].features, params).float())
    assert out["raw"].dtype == torch.uint8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("rows", [(3, 5, 5), (3, 80, 80)])
def test_channels_last_kept(dtype, rows, gen, device, dgen):
    x = make((6, *rows), dtype, 3, device).contiguous(memory_format=torch.channels_last)
    params = mixlab.sample_params(6, alpha=1.0, mode="sample", generator=dgen, device=device)
    for out in (mixlab.mix(x, params), mixlab.CutMix(mode="sample", generator=dgen, labels_getter=None)(x)):
        assert out.is_contiguous(memory_format=torch.channels_last)
    out = mixlab.mix(x, params)
    ref = reference(x, params)
    atol = 1 if dtype == torch.uint8 else TOL[dtype] * 8
    torch.testing.assert_close(out.double(), ref.round() if dtype == torch.uint8 else ref, atol=atol, rtol=TOL.get(dtype, 0))


def test_batch_of_one_and_zero(gen, device, dgen):
    for transform in (mixlab.MixUp(alpha=1.0, generator=dgen), mixlab.CutMix(generator=dgen),
                      mixlab.MixUpOrCutMix(generator=dgen), mixlab.MixUp(alpha=1.0, k=3, generator=dgen)):
        x1, y1 = torch.rand(1, 3, 4, 4, generator=gen).to(device), torch.tensor([2], device=device)
        out, target = transform(x1, y1)
        assert torch.equal(out, x1)  # no partner: returned unmixed
        torch.testing.assert_close(target.soft(4), torch.tensor([[0.0, 0.0, 1.0, 0.0]], device=device))
        x0, y0 = torch.rand(0, 3, 4, 4, device=device), torch.zeros(0, dtype=torch.long, device=device)
        out, target = transform(x0, y0)
        assert out.shape == (0, 3, 4, 4) and target.soft(4).shape == (0, 4)


def test_pair_mode_shares_lambda_within_flip_pairs(device, dgen):
    params = mixlab.sample_params(9, alpha=1.0, mode="pair", pairing="flip", generator=dgen, device=device)
    torch.testing.assert_close(params.lam, params.lam.flip(0))
    torch.testing.assert_close(params.index, torch.arange(9, device=device).flip(0))


def test_pairings_exact(device, dgen):
    assert torch.equal(mixlab.partner_index(5, "flip", device=device), torch.tensor([4, 3, 2, 1, 0], device=device))
    x = torch.arange(5, device=device)
    assert torch.equal(x[mixlab.partner_index(5, "roll", device=device)], x.roll(1, 0))  # torchvision's pairing
    perm = mixlab.partner_index(50, "permutation", generator=dgen, device=device)
    assert torch.equal(perm.sort().values, torch.arange(50, device=device))


def test_same_generator_seed_same_params(device):
    a = mixlab.sample_params(16, alpha=0.4, mode="sample", generator=torch.Generator(device=device).manual_seed(7),
                             device=device)
    b = mixlab.sample_params(16, alpha=0.4, mode="sample", generator=torch.Generator(device=device).manual_seed(7),
                             device=device)
    assert torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)


def test_float_labels_mixed_linearly(gen, device, dgen):
    B = 7
    y = torch.randn(B, 3, generator=gen).to(device)  # regression targets
    params = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=dgen, device=device)
    torch.testing.assert_close(MixedTarget(y, params).soft(), reference(y, params).float())
