"""Every CPU fast path's other branch (accelerators, ``torch.compile`` tracing) gives the CPU form's result.

Each fast path in mixlab asks one question, :func:`mixlab._fast.eager_cpu`, before it takes a CPU-only
form (row loops, slice pastes, bitwise selects, host reads of labels and indices). Off the CPU, and under
tracing, the generic torch form runs instead. The tests here build the inputs on the CPU, compute the CPU
form's result there, then run the same call on the ``--device`` (conftest.py) and compare: bit for bit
where both forms are exact (selects, pastes, integer maps, label weights), to float tolerance where the
kernels differ (lerps, pooling, FFTs).

``forced_generic=True`` patches ``mixlab._fast.eager_cpu`` to answer False, so the generic (accelerator)
branch also runs on the CPU: on a machine without a GPU every CUDA branch is still run and checked against
the CPU form. ``pytest --device cuda tests/core/test_device_branches.py`` runs them on the GPU as well.
"""
from __future__ import annotations

import contextlib
import inspect
import pathlib
import re
import traceback
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _registry_cases import small_options

import mixlab
import mixlab.timm as mt
from mixlab import MixParams, _fast, _timm_fast, methods

FORCED = pytest.mark.parametrize("forced_generic", [False, True], ids=["device-forms", "forced-generic"])


@contextlib.contextmanager
def forms(forced_generic: bool):
    """Run the body with every ``eager_cpu`` answer False when ``forced_generic`` (the accelerator branches)."""
    if not forced_generic:
        yield
        return
    real = _fast.eager_cpu
    _fast.eager_cpu = lambda t: False
    try:
        yield
    finally:
        _fast.eager_cpu = real


def cpu_batch(shape, dtype, gen):
    x = torch.rand(shape, generator=gen) * 255 if dtype == torch.uint8 else torch.randn(shape, generator=gen)
    return x.to(dtype)


def close(got, want, *, exact=False):
    """``got`` (any device) against the CPU form's ``want``: bits when ``exact``; uint8 within 1 (a .5 tie)."""
    got = got.cpu()
    assert got.dtype == want.dtype and got.shape == want.shape
    if exact:
        if want.is_floating_point():  # NaNs and signed zeros keep their bits
            assert torch.equal(got.contiguous().view(torch.uint8), want.contiguous().view(torch.uint8))
        else:
            assert torch.equal(got, want)
    elif want.dtype == torch.uint8:
        diff = (got.int() - want.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    else:
        torch.testing.assert_close(got, want)


# -- the switch: every CPU branch goes through eager_cpu -------------------------------------------------------

def test_every_cpu_branch_asks_eager_cpu():
    # one switch covers every CPU-only form: no other `device.type == "cpu"` test in the library (a new fast
    # path must ask _fast.eager_cpu, so accelerators, tracing and these tests all take its other branch)
    src = pathlib.Path(mixlab.__file__).parent
    hits = [f"{p.relative_to(src)}:{i}" for p in sorted(src.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"""device\.type\s*==\s*["']cpu["']|is_cuda\b""", line)]
    assert hits == ["_fast.py:" + str(_eager_cpu_line(src / "_fast.py"))], hits


def _eager_cpu_line(path):
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def eager_cpu("))
    return next(i for i in range(start, len(lines)) if 'device.type == "cpu"' in lines[i]) + 1


def test_forcing_the_switch_takes_every_generic_branch(gen, monkeypatch):
    x = torch.randn(4, 3, 128, 128, generator=gen)
    lam, index = torch.rand(4, generator=gen), torch.tensor([1, 2, 3, 0])
    box = torch.tensor([[[2, 9], [3, 7]]] * 4)
    take = torch.rand(4, 1, 128, 128, generator=gen) < 0.5
    pools, convs, asserts = [], [], []
    real_pool, real_conv, real_assert = F.avg_pool2d, F.conv2d, torch._assert_async
    monkeypatch.setattr(F, "avg_pool2d", lambda *a, **k: pools.append(1) or real_pool(*a, **k))
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: convs.append(1) or real_conv(*a, **k))
    monkeypatch.setattr(torch, "_assert_async", lambda *a, **k: asserts.append(1) or real_assert(*a, **k))
    padded = torch.rand(2, 1, 10, 10, generator=gen)
    y = torch.randint(0, 5, (4,), generator=gen)
    for forced in (False, True):
        pools.clear(), convs.clear(), asserts.clear()
        with forms(forced):
            assert _fast.choose_form(x) == ("vector" if forced else "rows")
            assert _fast.choose_form(x, inplace=True) == ("vector" if forced else "cycles")
            assert (_fast.paste(x, x, lam, index, box, None, inplace=False) is None) == forced
            assert (_fast.select(x, x, index, take, inplace=False) is None) == forced
            resized = _fast.resized_paste(x, x, index, box, lambda r, s: r[..., :s[0], :s[1]], nearest=True,
                                          inplace=False)
            assert (resized is None) == forced
            assert _timm_fast.applies(x) == (not forced)
            _fast.box_mean3(padded), _fast.gauss5(padded, torch.ones(5) / 5)
            assert bool(pools) == forced and len(convs) == 2 * forced
            t = mixlab.MixedTarget(y, MixParams(lam, index))
            t.loss(nn.CrossEntropyLoss(), torch.randn(4, 5, generator=gen))
            assert bool(asserts) == forced  # the label range is checked on the device, not read on the host
            if forced:  # the host read of MixParams.index is skipped (the device's index kernel checks it)
                MixParams(lam, torch.tensor([-1, 0, 1, 2]))
            else:
                with pytest.raises(ValueError, match="partner rows >= 0"):
                    MixParams(lam, torch.tensor([-1, 0, 1, 2]))


# -- lerp forms: choose_form, lerp_gather, lerp_perm_inplace, lerp_flip_inplace, mix ---------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.uint8]
SHAPES = [(7, 3, 8, 8), (40, 3, 32, 32), (3, 3, 110, 110)]  # CPU: vector, chunks (CHUNK_NUMEL lowered), rows


@FORCED
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lerp_forms_match_the_cpu_forms(shape, dtype, forced_generic, gen, device, monkeypatch):
    monkeypatch.setattr(_fast, "CHUNK_NUMEL", 1 << 14)
    B = shape[0]
    x = cpu_batch(shape, dtype, gen)
    other = cpu_batch(shape, dtype, gen)
    lam, perm = torch.rand(B, generator=gen), torch.randperm(B, generator=gen)
    repeats = torch.randint(0, B, (B,), generator=gen)  # partners with repeats (C-Mixup, a user's params)
    flip = torch.arange(B - 1, -1, -1)
    want = {
        "gather": _fast.lerp_gather(x, x, lam, perm),
        "two-stream": _fast.lerp_gather(x.clone(), other, lam, perm, out=x.clone()),
        "perm": _fast.lerp_perm_inplace(x.clone(), lam, perm),
        "repeats": _fast.lerp_perm_inplace(x.clone(), lam, repeats),
        "flip": _fast.lerp_flip_inplace(x.clone(), lam),
    }
    xd, od = x.to(device), other.to(device)
    ld, pd, rd = lam.to(device), perm.to(device), repeats.to(device)
    with forms(forced_generic):
        if device.type != "cpu" or forced_generic:
            assert _fast.choose_form(xd) == "vector" and _fast.choose_form(xd, inplace=True) == "vector"
        got = {
            "gather": _fast.lerp_gather(xd, xd, ld, pd),
            "two-stream": _fast.lerp_gather(xd.clone(), od, ld, pd, out=xd.clone()),
            "perm": _fast.lerp_perm_inplace(xd.clone(), ld, pd),
            "repeats": _fast.lerp_perm_inplace(xd.clone(), ld, rd),
            "flip": _fast.lerp_flip_inplace(xd.clone(), ld),
        }
        buf = torch.empty_like(xd)
        assert _fast.lerp_gather(xd, xd, ld, pd, out=buf) is buf
        got["out="] = buf
        want["out="] = want["gather"]
        assert torch.equal(_fast.lerp_gather(xd, xd, ld, flip.to(device)).cpu(), want["flip"])  # same form
    for k in want:
        close(got[k], want[k])
    assert got["gather"].device == xd.device and torch.equal(xd.cpu(), x)  # the input untouched


@FORCED
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mix_matches_the_cpu_forms(inplace, channels_last, forced_generic, gen, device):
    x = torch.randn(9, 3, 110, 110, generator=gen)  # rows / cycles on the CPU
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    p = mixlab.sample_params(9, alpha=0.4, mode="sample", generator=gen)
    want = mixlab.mix(x.clone(), p, inplace=inplace)
    xd = x.to(device)
    with forms(forced_generic):
        y = xd.clone(memory_format=_fast.memory_format(x)) if inplace else xd
        out = mixlab.mix(y, p.to(device), inplace=inplace)
    assert (out is y) == inplace and out.is_contiguous(memory_format=_fast.memory_format(x))
    close(out, want)


# -- paste (Box.apply), select (Mask.apply), resized_paste (ResizeMix), the saliency filters ------------------

@FORCED
@pytest.mark.parametrize("transform", ["cutmix-batch", "cutmix-sample", "mixup-or-cutmix"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8, torch.int64], ids=str)
@pytest.mark.parametrize("inplace", [False, True])
def test_paste_matches_the_cpu_slice_copies(transform, dtype, inplace, forced_generic, gen, device):
    g = torch.Generator().manual_seed(7)
    mixer = {"cutmix-batch": lambda: mixlab.CutMix(alpha=1.0, mode="batch", generator=g),
             "cutmix-sample": lambda: mixlab.CutMix(alpha=1.0, mode="sample", generator=g),
             "mixup-or-cutmix": lambda: mixlab.MixUpOrCutMix(mode="sample", generator=g)}[transform]()
    x = (torch.rand(8, 3, 20, 24, generator=gen) * 200).to(dtype).contiguous(memory_format=torch.channels_last)
    other = (torch.rand(8, 3, 20, 24, generator=gen) * 200).to(dtype)
    p = mixer.sample(x.float())
    blends = p.region.linear is not None and bool(p.region.linear.any())
    if blends and not dtype.is_floating_point and dtype != torch.uint8:
        pytest.skip("blended rows of integer maps are refused (roles=)")
    want = mixlab.mix(x.clone(memory_format=torch.channels_last), p, inplace=inplace)
    want2 = p.region.apply(x, other, p.lam, p.index)  # a partner batch of its own
    xd, pd = x.to(device), p.to(device)
    with forms(forced_generic):
        y = xd.clone(memory_format=torch.channels_last) if inplace else xd
        out = mixlab.mix(y, pd, inplace=inplace)
        out2 = pd.region.apply(xd, other.to(device), pd.lam, pd.index)
    assert (out is y) == inplace and out.is_contiguous(memory_format=torch.channels_last)
    close(out, want, exact=not blends)  # copies are exact; blended rows are lerps (row kernel vs vector form)
    close(out2, want2, exact=not blends)


@FORCED
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8, torch.int64, torch.bool], ids=str)
@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("inplace", [False, True])
def test_select_matches_the_cpu_bitwise_select(dtype, mode, inplace, forced_generic, gen, device):
    shape = (6, 3, 12, 9)
    x = (torch.randn(shape, generator=gen) * 100).to(dtype)
    if dtype.is_floating_point:  # signed zeros and non-finite values keep their bits
        x.view(-1)[::5] = -0.0
        x.view(-1)[3], x.view(-1)[4] = float("nan"), float("-inf")
    other = (torch.randn(shape, generator=gen) * 100).to(dtype)
    p = mixlab.FMix(mode=mode, generator=gen).sample(x.float())
    assert isinstance(p.region, mixlab.regions.Mask) and p.region.binary
    want = mixlab.mix(x.clone(), p, inplace=inplace)
    want2 = p.region.apply(x, other, p.lam, p.index)
    xd, pd = x.to(device), p.to(device)
    with forms(forced_generic):
        y = xd.clone() if inplace else xd
        out = mixlab.mix(y, pd, inplace=inplace)
        out2 = pd.region.apply(xd, other.to(device), pd.lam, pd.index)
    assert (out is y) == inplace
    close(out, want, exact=True)
    close(out2, want2, exact=True)


@FORCED
@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64], ids=str)
@pytest.mark.parametrize("inplace", [False, True])
def test_resized_paste_matches_the_cpu_form(mode, interpolation, dtype, inplace, forced_generic, gen, device):
    x = (torch.rand(6, 3, 12, 9, generator=gen) * 200).to(dtype)
    p = mixlab.ResizeMix(mode=mode, interpolation=interpolation, generator=gen).sample(x.float())
    want = mixlab.mix(x.clone(), p, inplace=inplace)
    xd = x.to(device)
    with forms(forced_generic):
        y = xd.clone() if inplace else xd
        out = mixlab.mix(y, p.to(device), inplace=inplace)
    assert (out is y) == inplace
    if dtype.is_floating_point and interpolation == "bilinear":  # F.interpolate into the box vs grid_sample
        torch.testing.assert_close(out.cpu(), want, atol=1e-5, rtol=1e-5)
    else:  # nearest: the same source pixels
        close(out, want, exact=True)


@FORCED
@pytest.mark.parametrize("shape", [(5, 3, 32, 40), (3, 1, 64, 64)], ids=lambda s: "x".join(map(str, s)))
def test_saliency_filters_match_the_cpu_forms(shape, forced_generic, gen, device):
    x = torch.rand(shape, generator=gen)
    padded3 = torch.rand(4, 1, 18, 18, generator=gen)
    padded5 = torch.rand(4, 1, 20, 20, generator=gen)
    taps = torch.softmax(torch.rand(5, generator=gen), 0)
    want = (mixlab.methods.spectral_saliency(x), _fast.box_mean3(padded3), _fast.gauss5(padded5, taps))
    with forms(forced_generic):
        got = (mixlab.methods.spectral_saliency(x.to(device)), _fast.box_mean3(padded3.to(device)),
               _fast.gauss5(padded5.to(device), taps.to(device)))
    for a, b in zip(got, want):
        if device.type == "cpu":  # the CPU's pooling and convolution kernels: the same bits
            assert torch.equal(a, b)
        else:  # other kernels (cuFFT, cuDNN): float tolerance
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-6)


@FORCED
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_saliencymix_matches_the_cpu_form(mode, forced_generic, gen, device):
    x = torch.rand(6, 3, 32, 40, generator=gen)
    y = torch.arange(6)
    mixed, target = mixlab.SaliencyMix(mode=mode, generator=torch.Generator().manual_seed(3))(x, y)
    p = target.params
    if device.type == "cpu":  # the same draws on the CPU: the same boxes (saliency bits are equal)
        with forms(forced_generic):
            m2, t2 = mixlab.SaliencyMix(mode=mode, generator=torch.Generator().manual_seed(3))(x, y)
        assert torch.equal(t2.params.region.box, p.region.box) and torch.equal(m2, mixed)
    with forms(forced_generic):  # the CPU's box pasted on the device
        out = mixlab.mix(x.to(device), p.to(device))
    close(out, mixed, exact=True)


# -- the host reads of labels and indices: targets, losses, Remix, C-Mixup, timm, mix's index check -------------

CE = [lambda C, d: nn.CrossEntropyLoss(),
      lambda C, d: nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
      lambda C, d: nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, C, device=d), ignore_index=3),
      lambda C, d: F.cross_entropy]


@FORCED
@pytest.mark.parametrize("case", range(len(CE)))
@pytest.mark.parametrize("k", [2, 3])
def test_fused_loss_matches_the_cpu_form(case, k, forced_generic, gen, device):
    B, C = 12, 7
    y = torch.randint(0, C, (B,), generator=gen)
    y[0] = 3
    p = mixlab.sample_params(B, alpha=0.4, mode="sample", k=k, generator=gen)
    logits = torch.randn(B, C, generator=gen).requires_grad_()
    loss = mixlab.MixedTarget(y, p).loss(CE[case](C, "cpu"), logits)
    (grad,) = torch.autograd.grad(loss, logits)
    with forms(forced_generic):
        ld = logits.detach().to(device).requires_grad_()
        got = mixlab.MixedTarget(y.to(device), p.to(device)).loss(CE[case](C, device), ld)
        (gd,) = torch.autograd.grad(got, ld)
        soft = mixlab.MixedTarget(y.to(device), p.to(device)).soft(C)
    torch.testing.assert_close(got.cpu(), loss)
    torch.testing.assert_close(gd.cpu(), grad)
    close(soft, mixlab.MixedTarget(y, p).soft(C))


def test_bad_labels_are_refused_on_the_generic_route(gen):
    # CPU only: on a GPU a failed device assert ends the CUDA context, so the error path is checked here, where the
    # generic branch's assert raises at once
    y = torch.tensor([0, 1, 9, 2])
    p = mixlab.sample_params(4, alpha=1.0, mode="sample", generator=gen)
    logits = torch.randn(4, 5, generator=gen)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\)"):
        mixlab.MixedTarget(y, p).loss(nn.CrossEntropyLoss(), logits)
    with forms(True), pytest.raises(RuntimeError, match=r"class labels must lie in \[0, 5\)"):
        mixlab.MixedTarget(y, p).loss(nn.CrossEntropyLoss(), logits)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    bad = MixParams(p.lam, torch.tensor([1, 2, 3, 7]))
    with pytest.raises(IndexError, match="partner rows in"):
        mixlab.mix(x, bad)
    with forms(True), pytest.raises(RuntimeError, match=r"params.index must lie in \[0, 4\)"):
        mixlab.mix(x, bad)


@FORCED
@pytest.mark.parametrize("balanced", [False, True])
def test_remix_label_weights_match_the_cpu_form(balanced, forced_generic, gen, device):
    counts = [500.0, 40.0, 300.0, 5.0, 90.0]
    remix = mixlab.Remix(class_counts=counts, balanced=balanced, generator=gen)
    y = torch.randint(0, 5, (16,), generator=gen)
    x = torch.rand(16, 3, 8, 8, generator=gen)
    mixed, target = remix(x, y)
    p = target.params
    inputs = MixParams(remix.last_input_lam, p.index)
    with forms(forced_generic):
        lab = mixlab.Remix(class_counts=counts).target_params(inputs.to(device), y.to(device))
        out = mixlab.mix(x.to(device), inputs.to(device))
    close(lab.lam, p.lam, exact=True)
    close(lab.index, p.index, exact=True)
    close(out, mixed)
    if device.type == "cpu":  # labels out of range: a ValueError on the CPU, the index kernel's error otherwise
        bad = torch.tensor([0, 1, 7, 2])
        with pytest.raises(ValueError, match="class_counts has 5 classes"):
            remix(x[:4], bad)
        with forms(True), pytest.raises((IndexError, RuntimeError)):
            remix(x[:4], bad)


@FORCED
def test_cmixup_warns_on_the_cpu_only_and_mixes_alike(forced_generic, gen, device):
    y = torch.arange(8, dtype=torch.float32)[:, None] * 100.0
    x = torch.rand(8, 3, 8, 8, generator=gen)
    with forms(forced_generic), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mixer = mixlab.CMixup(bandwidth=0.1, generator=torch.Generator(device=device).manual_seed(0))
        mixed, target = mixer(x.to(device), y.to(device))
    narrow = [w for w in seen if "far below the distance" in str(w.message)]
    assert len(narrow) == (device.type == "cpu" and not forced_generic)  # a host read: CPU only
    close(mixed, mixlab.mix(x, target.params.to("cpu")))


@FORCED
@pytest.mark.parametrize("alphas", [(0.8, 1.0), (1.0, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=str)
def test_timm_mixup_matches_the_cpu_pair_kernel(alphas, mode, dtype, forced_generic, gen, device):
    x = torch.rand(7, 3, 12, 10, generator=gen)
    x = (x * 255).to(dtype) if dtype == torch.uint8 else x
    y = torch.arange(7) % 5
    kw = dict(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode, prob=0.8, num_classes=5)
    xd, yd = x.to(device), y.to(device)
    p = mt.Mixup(generator=torch.Generator(device=device).manual_seed(4), **kw).params(xd).to("cpu")
    want = x.clone()  # the CPU pair kernel on the same draws
    box = None if p.region is None else p.region.box.tolist()
    linear = None if p.region is None or p.region.linear is None else p.region.linear.tolist()
    _timm_fast.mix_flip_inplace(want, p.lam.tolist(), box, linear)
    with forms(forced_generic):
        if device.type != "cpu" or forced_generic:
            assert not _timm_fast.applies(xd)
        out, target = mt.Mixup(generator=torch.Generator(device=device).manual_seed(4), **kw)(xd.clone(), yd)
    close(out, want)
    close(target, mt.mixup_target(y, 5, p.lam, 0.1))


# -- every registered method, both modes, on the generic branches ------------------------------------------------

C = 10


def build_method(name, mode, device):
    """The registered ``name`` for (B, 3, 16, 16) images on ``device``, its labels and its call context."""
    info = methods.get(name)
    options = small_options(name, C)
    if "num_classes" in inspect.signature(info.cls).parameters and info.task == "classification":
        options["num_classes"] = C
    if "block_num" in options:  # PuzzleMix: saliency maps given per call
        options.update(model=None, criterion=None)
    g = torch.Generator(device=device).manual_seed(0)
    mixer = info.build(**{"alpha": 1.0, "generator": g, "mode": mode, **options})
    return mixer, info


def method_inputs(info, B, device):
    x = torch.rand(B, 3, 16, 16, device=device) if "images" in info.inputs else torch.rand(B, 4, 6, device=device)
    if info.task == "regression":
        y = torch.arange(B, dtype=torch.float32, device=device)[:, None]
    else:
        y = torch.arange(B, device=device) % C
    context = {"saliency": torch.rand(B, *x.shape[2:], device=device)} if "saliency" in info.needs else {}
    return x, y, context


# Methods that read the host on every call by design (excluded from the no-sync checks):
HOST_BY_DESIGN = {
    "puzzlemix": "its graph cut runs on the host (scipy max-flow over the block saliency, lam read as floats)",
    "snapmix": "its boxes are read on the host: each row's crop is resized to its box size by F.interpolate",
}


def every_method_call(device, names=None, watch=contextlib.nullcontext):
    """Call every registered method in sample and batch modes on float32 and uint8 batches, and its loss's
    backward; ``watch()`` wraps the calls only (the mixers and inputs are built before)."""
    for name in methods.available() if names is None else names:
        for mode in ("sample", "batch"):
            if mode not in methods.get(name).modes:
                continue
            mixer, info = build_method(name, mode, device)
            for dtype in (torch.float32, torch.uint8):
                if dtype == torch.uint8 and "saliency" in info.needs:
                    continue  # PuzzleMix and SnapMix mix float images
                x, y, context = method_inputs(info, 16, device)
                x = (x * 255).to(dtype) if dtype == torch.uint8 else x
                logits = torch.randn(16, C, device=device, requires_grad=True)
                outs = []
                with watch():
                    for _ in range(2):  # RecursiveMix: the second call pastes its history
                        mixed, target = mixer(x.clone(), y, **context)
                        if info.task == "classification":
                            target.loss(nn.CrossEntropyLoss(label_smoothing=0.1), logits).backward()
                        outs.append(mixed)
                for mixed in outs:
                    assert mixed.device == x.device and mixed.shape == x.shape and mixed.dtype == x.dtype


@FORCED
@pytest.mark.parametrize("name", methods.available())
def test_every_method_runs_its_generic_branches(name, forced_generic, device):
    # the calls test_no_host_device_sync_on_gpu (test_fast.py) makes under CUDA's sync debug mode, here on --device
    with forms(forced_generic):
        every_method_call(device, [name])


class HostReads:
    """Records what would wait for a GPU if the tensors were on one: scalar reads (``item``, ``bool``, ``int``,
    ``float``, ``tolist``), ops whose output size depends on values (``nonzero``, boolean indexing, ...), and
    ``torch.tensor(python data, device=the batch's device)``: a pageable host-to-device copy, which CUDA's sync
    debug mode reports as a synchronizing operation (pytorch/pytorch#120996). Not seen on the CPU: ``.to(device)``
    of a host tensor (no copy there), e.g. Remix's ``class_counts.to(y.device)``."""

    SIZE_FROM_VALUES = ("aten.nonzero.", "aten.masked_select.", "aten._unique2.", "aten.unique_",
                        "aten.repeat_interleave.Tensor", "aten._local_scalar_dense.")
    ALLOWED = ("F.one_hot(",)  # torch's one_hot checks the labels on the host on CPU only (CUDA: scatter's assert)

    def __init__(self):
        self.seen = []

    def _note(self, what):
        frames = [f for f in traceback.extract_stack() if "/mixlab/" in f.filename and "/tests/" not in f.filename]
        line = frames[-1] if frames else None
        where = "?" if line is None else f"{line.filename.split('/mixlab/')[-1]}:{line.lineno}: {line.line}"
        if line is None or not any(a in (line.line or "") for a in self.ALLOWED):
            self.seen.append(f"{what} at {where}")

    @contextlib.contextmanager
    def __call__(self):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode
        rec = self

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = str(func)
                if name.startswith(rec.SIZE_FROM_VALUES) or (
                        name.startswith("aten.index.Tensor")
                        and any(i is not None and i.dtype == torch.bool for i in args[1])):
                    rec._note(name)
                return func(*args, **(kwargs or {}))

        class Reads(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__"):
                    rec._note(name)
                elif name in ("tensor", "as_tensor") and (kwargs or {}).get("device") is not None:
                    rec._note(f"torch.{name}(host data, device=) (a host-to-device copy)")  # issue #120996
                return func(*args, **(kwargs or {}))

        with Ops(), Reads():
            yield


# Known host-to-device copies per call (torch.tensor(shape, device=...) for the box sizes): each syncs on a GPU,
# so test_no_host_device_sync_on_gpu fails on them there too. Strict: fixing one makes its case pass here.
H2D_PER_CALL: dict = {}  # none left: box sizes are built by fills (_fast.consts), Remix's counts copied pinned


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=H2D_PER_CALL[n])) if n in H2D_PER_CALL else n
    for n in methods.available() if n not in HOST_BY_DESIGN])
def test_generic_branches_read_nothing_on_the_host(name):
    # CPU only: the stand-in for test_no_host_device_sync_on_gpu on a machine without a GPU. With every
    # eager_cpu answer False, a method's call and loss must not read a value on the host (each would be a
    # host-device sync on a GPU) nor run an op whose output size depends on values
    watch = HostReads()
    with forms(True):
        every_method_call(torch.device("cpu"), [name], watch=watch)
    assert watch.seen == []
    with forms(False):  # and the check sees the CPU branches' host reads (it is not blind)
        probe = HostReads()
        with probe():
            _fast.paste(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.ones(2), torch.arange(2),
                        torch.tensor([[[0, 2], [0, 2]]] * 2), None, inplace=False)
        assert any("tolist" in s for s in probe.seen)
