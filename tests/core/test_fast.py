"""Every fast form of mixup gives the reference numbers: ``lam * x + (1 - lam) * x[index]``.

The reference is computed in float64 and rounded once to the batch's dtype (uint8: to
nearest, so a form may differ by one at an exact .5 tie). Speed is measured by
``mixlab bench``, never asserted here.

Tests taking the ``device`` fixture run on the session's ``--device`` (conftest.py): inputs
are built on the CPU from the seeded ``gen`` and moved, ``lam``/``index`` are drawn on the
device (``dgen``). Off the CPU every batch takes the vector form (``choose_form``), so there
the forms below all check that one form.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mixlab
import mixlab.timm
from mixlab import MixParams, _fast
from test_device_branches import HOST_BY_DESIGN, every_method_call

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.uint8]
# (B, C, H, W): a small batch takes the vector form, 40 CIFAR rows the chunked form (with
# CHUNK_NUMEL lowered by the test), rows of 3*110*110 = 36300 elements the row loop (out of
# place) and the cycle walk (in place). These forms are the CPU's; other devices use the vector form.
SHAPES = [(7, 3, 8, 8), (40, 3, 32, 32), (3, 3, 110, 110)]


def make_batch(shape, dtype, gen, channels_last=False, device="cpu"):
    x = torch.rand(shape, generator=gen) * 255 if dtype == torch.uint8 else torch.randn(shape, generator=gen)
    x = x.to(dtype).to(device)  # drawn on the CPU: the same values on every device
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def reference(x, src, lam, index):
    xd, sd = x.double(), src.double()
    w = lam.double().view(-1, *([1] * (x.ndim - 1)))
    ref = w * xd + (1 - w) * sd[index]  # the paper's weighted sum (article 004)
    if x.dtype == torch.uint8:
        ref = ref.round().clamp(0, 255)
    return ref.to(x.dtype)


def assert_matches(out, ref):
    if ref.dtype == torch.uint8:
        diff = (out.int() - ref.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    else:
        torch.testing.assert_close(out, ref)


def draw(B, gen, pairing="permutation"):
    """``lam`` and ``index`` drawn on ``gen``'s device."""
    lam = torch.rand(B, generator=gen, device=gen.device)
    if pairing == "flip":
        return lam, torch.arange(B - 1, -1, -1, device=gen.device)
    return lam, torch.randperm(B, generator=gen, device=gen.device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_out_of_place_and_out_buffer(dtype, shape, channels_last, gen, monkeypatch, device, dgen):
    monkeypatch.setattr(_fast, "CHUNK_NUMEL", 1 << 14)  # 5 rows of 3x32x32 per chunk
    x = make_batch(shape, dtype, gen, channels_last, device)
    before, version = x.clone(), x._version
    lam, index = draw(shape[0], dgen)
    ref = reference(x, x, lam, index)
    out = _fast.lerp_gather(x, x, lam, index)
    assert_matches(out, ref)
    assert out.dtype == dtype and out.is_contiguous(memory_format=_fast.memory_format(x))
    buf = torch.empty_like(x)
    assert _fast.lerp_gather(x, x, lam, index, out=buf) is buf
    assert_matches(buf, ref)
    assert x._version == version and torch.equal(x, before)  # caller's tensor untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pairing", ["permutation", "flip"])
def test_in_place_forms(dtype, shape, pairing, gen, device, dgen):
    x = make_batch(shape, dtype, gen, channels_last=shape[-1] == 32, device=device)
    lam, index = draw(shape[0], dgen, pairing)
    ref = reference(x, x, lam, index)
    y = x.clone(memory_format=_fast.memory_format(x))
    ptr = y.data_ptr()
    assert _fast.lerp_perm_inplace(y, lam, index) is y and y.data_ptr() == ptr
    assert_matches(y, ref)
    if pairing == "flip":
        z = x.clone()
        assert _fast.lerp_flip_inplace(z, lam) is z
        assert_matches(z, ref)


@pytest.mark.parametrize("inplace", [False, True])
def test_mix_dispatch_matches_reference(inplace, gen, device, dgen):
    x = torch.randn(9, 3, 64, 64, generator=gen).to(device)
    params = mixlab.sample_params(9, alpha=0.4, mode="sample", generator=dgen, device=device)
    ref = reference(x, x, params.lam, params.index)
    y = x.clone() if inplace else x
    out = mixlab.mix(y, params, inplace=inplace)
    assert (out is y) == inplace
    torch.testing.assert_close(out, ref)


def test_two_stream_in_place_writes_only_x(gen, device, dgen):
    x = torch.randn(5, 3, 40, 40, generator=gen).to(device)
    partner = torch.randn(5, 3, 40, 40, generator=gen).to(device)
    lam, index = torch.rand(5, generator=dgen, device=device), torch.arange(5, device=device)
    ref = reference(x, partner, lam, index)
    p_before = partner.clone()
    out = _fast.lerp_gather(x, partner, lam, index, out=x)
    assert out is x and torch.equal(partner, p_before)
    torch.testing.assert_close(x, ref)


@settings(derandomize=True, max_examples=8, deadline=None)
@given(st.permutations(list(range(9))), st.lists(st.floats(0, 1, width=32), min_size=9, max_size=9),
       st.sampled_from([torch.float32, torch.uint8]))
def test_cycle_walk_any_permutation(perm, lams, dtype):
    # CPU only: the cycle walk is a CPU-only form (off the CPU in-place mixing is the vector
    # form, which test_in_place_forms checks on the device)
    gen = torch.Generator().manual_seed(0)
    x = make_batch((9, 33000), dtype, gen)  # 33000-element rows: the cycle walk on CPU
    lam, index = torch.tensor(lams), torch.tensor(perm)
    ref = reference(x, x, lam, index)
    assert_matches(_fast.lerp_perm_inplace(x, lam, index), ref)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=9, max_size=9), st.sampled_from([torch.float32, torch.uint8]))
def test_in_place_walk_any_partner_rows(index, dtype):
    # partners drawn with repeats (C-Mixup's kernel, a user's params) are no permutation: the walk used to
    # loop forever on them; now rows are written only once every reader of theirs is done
    gen = torch.Generator().manual_seed(1)
    x = make_batch((9, 33000), dtype, gen)  # 33000-element rows: the in-place walk on CPU
    lam, idx = torch.rand(9, generator=gen), torch.tensor(index)
    ref = reference(x, x, lam, idx)
    assert_matches(_fast.lerp_perm_inplace(x, lam, idx), ref)
    y = make_batch((9, 3, 110, 100), dtype, torch.Generator().manual_seed(2))  # and through mixlab.mix
    want = mixlab.mix(y, MixParams(lam=lam, index=idx))
    assert torch.equal(mixlab.mix(y, MixParams(lam=lam, index=idx), inplace=True), want)


@pytest.mark.parametrize("policy", _fast.ROW_THREADS_POLICIES)
def test_row_thread_policies_give_the_same_bits(policy, gen):
    # every policy runs the same elementwise kernels; only the thread count of each op differs
    x = torch.randn(24, 3, 110, 110, generator=gen)
    u8 = (torch.rand(24, 3, 110, 110, generator=gen) * 255).to(torch.uint8)
    lam, index = torch.rand(24, generator=gen), torch.randperm(24, generator=gen)
    box = torch.tensor([[[10, 60], [20, 90]]] * 12 + [[[0, 30], [5, 25]]] * 12)
    old = _fast.row_threads("torch")
    try:
        want = [_fast.lerp_gather(t, t, lam, index) for t in (x, u8)]
        want_box = _fast.paste(x, x, lam, index, box, None, inplace=False)
        _fast.row_threads(policy)
        threads = torch.get_num_threads()
        for _ in range(3):  # auto: the first calls try both settings
            for t, w in zip((x, u8), want):
                assert torch.equal(_fast.lerp_gather(t, t, lam, index), w)
                assert torch.equal(_fast.lerp_perm_inplace(t.clone(), lam, index), w)
            assert torch.equal(_fast.paste(x, x, lam, index, box, None, inplace=False), want_box)
            assert torch.equal(_fast.paste(x.clone(), x, lam, index, box, None, inplace=True), want_box)
        assert torch.get_num_threads() == threads  # restored
    finally:
        _fast.row_threads(old)


class _FakeClock:
    """A clock whose segments cost ``per_step[mode]`` per step, the mode read from torch's thread count."""

    def __init__(self, cost):
        self.t, self.cost, self.last = 0.0, cost, None

    def __call__(self):
        return self.t


def _run_paced(tune_kind, steps, cost, clock, threads):
    """Run ``steps`` paced steps, each advancing the fake clock by the cost of the thread count in force."""
    seen = []
    with _fast.paced(tune_kind, 1000, clock=clock) as pace:
        for _ in pace.over(range(steps)):
            n = torch.get_num_threads()
            seen.append(n)
            clock.t += cost[0] if n == threads else cost[1]
    return seen


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch threads > 1 to choose between")
@pytest.mark.parametrize("slow_threads", [False, True])
def test_pacer_keeps_the_faster_setting_and_restores_threads(slow_threads, monkeypatch):
    monkeypatch.setattr(_fast, "SEGMENT_NUMEL", 8000)  # 8 steps of 1000 elements a segment, 1 on trial
    kind = f"test-pacer-{slow_threads}"
    _fast._TUNES.pop(kind, None)
    threads = torch.get_num_threads()
    cost = (100.0, 1.0) if slow_threads else (1.0, 1.6)  # shared cores: threads 100x slower; quiet: 1.6x faster
    old = _fast.row_threads("auto")
    try:
        clock = _FakeClock(cost)
        seen = [n for _ in range(20) for n in _run_paced(kind, 128, cost, clock, threads)]
        t_half = clock.t
        seen += [n for _ in range(20) for n in _run_paced(kind, 128, cost, clock, threads)]
        assert torch.get_num_threads() == threads
    finally:
        _fast.row_threads(old)
    late = seen[len(seen) // 2:]
    losing = threads if slow_threads else 1
    share = sum(n == losing for n in late) / len(late)
    assert share < 0.02, share  # the losing setting runs only on its rare tries
    if slow_threads:  # and those tries stay short: within 5% of one thread all along once settled
        assert clock.t - t_half < 1.05 * (len(seen) // 2) * cost[1]


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch threads > 1 to choose between")
def test_pacer_notices_a_change_of_load(monkeypatch):
    monkeypatch.setattr(_fast, "SEGMENT_NUMEL", 8000)
    kind = "test-pacer-change"
    _fast._TUNES.pop(kind, None)
    threads = torch.get_num_threads()
    old = _fast.row_threads("auto")
    try:
        quiet, loaded = (1.0, 1.6), (100.0, 1.0)
        clock = _FakeClock(quiet)
        for _ in range(20):
            _run_paced(kind, 128, quiet, clock, threads)  # settles on the threads
        seen = []
        for _ in range(3):  # then another job takes a core: within a batch or two, one thread runs
            seen += _run_paced(kind, 128, loaded, clock, threads)
        assert sum(n == 1 for n in seen[128:]) / len(seen[128:]) > 0.95
    finally:
        _fast.row_threads(old)


def test_row_threads_policy_is_checked():
    with pytest.raises(ValueError, match="row_threads: policy must be one of"):
        _fast.row_threads("fast")


def test_lam_one_and_fixed_points_leave_rows(gen, device):
    x = torch.randn(6, 3, 110, 110, generator=gen).to(device)  # on the CPU: the cycle walk
    index = torch.tensor([0, 2, 1, 3, 5, 4], device=device)
    lam = torch.tensor([0.3, 1.0, 1.0, 0.5, 0.2, 0.9], device=device)
    y = _fast.lerp_perm_inplace(x.clone(), lam, index)
    for i in (0, 1, 2, 3):  # fixed points (0, 3) and lam = 1 rows (1, 2) are unchanged
        assert torch.equal(y[i], x[i])
    empty = _fast.lerp_perm_inplace(torch.empty(0, 3, device=device), torch.empty(0, device=device),
                                    torch.empty(0, dtype=torch.long, device=device))
    assert empty.shape == (0, 3)


def test_choose_form_uses_static_facts_only():
    # CPU only (plus "meta"): it checks the CPU's form choice, which needs no device
    meta = torch.empty(128, 3, 224, 224, device="meta")  # no values at all
    assert _fast.choose_form(meta) == "vector" and _fast.choose_form(meta, inplace=True) == "vector"
    big, mid, small = torch.empty(4, 3, 128, 128), torch.empty(400, 3, 32, 32), torch.empty(4, 3, 8, 8)
    assert _fast.choose_form(big) == "rows" and _fast.choose_form(big, inplace=True) == "cycles"
    assert _fast.choose_form(mid) == "chunks" and _fast.choose_form(mid, inplace=True) == "vector"
    assert _fast.choose_form(small) == "vector" and _fast.choose_form(small, inplace=True) == "vector"
    assert _fast.choose_form(torch.empty(4, 5000, dtype=torch.int32)) == "vector"


def test_compiled_form_matches_reference(gen, device, dgen):
    pytest.importorskip("torch._inductor")
    if device.type == "cuda":
        pytest.importorskip("triton")  # inductor's GPU backend
    torch._dynamo.reset()
    x = torch.randn(6, 3, 16, 16, generator=gen).to(device)
    lam, index = draw(6, dgen)
    assert_matches(_fast.compiled_lerp_gather(x, x, lam, index), reference(x, x, lam, index))
    torch._dynamo.reset()


def _mask_reference(x, src, params):
    region = params.region
    mask = region.mask(x.ndim)
    base = reference(x, src, torch.where(region.linear, params.lam, torch.ones_like(params.lam))
                     if region.linear is not None else torch.ones_like(params.lam), params.index)
    return torch.where(mask, src[params.index], base)


@pytest.mark.parametrize("transform", [
    lambda g: mixlab.CutMix(alpha=1.0, mode="batch", generator=g),
    lambda g: mixlab.CutMix(alpha=1.0, mode="sample", generator=g),
    lambda g: mixlab.MixUpOrCutMix(mode="sample", generator=g),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("inplace", [False, True])
def test_cutmix_box_copies_match_mask_route(transform, dtype, inplace, gen, device, dgen):
    # off the CPU Box.apply takes the mask route itself: then this checks it against the reference
    x = make_batch((8, 3, 20, 24), dtype, gen, channels_last=True, device=device)
    params = transform(dgen).sample(x)
    ref = _mask_reference(x, x, params)
    y = x.clone(memory_format=torch.channels_last) if inplace else x
    out = mixlab.mix(y, params, inplace=inplace)
    assert (out is y) == inplace and out.is_contiguous(memory_format=torch.channels_last)
    assert_matches(out, ref)
    if not inplace:
        assert torch.equal(x, make_batch((8, 3, 20, 24), dtype, torch.Generator().manual_seed(1234), True, device))


CE_CASES = [  # criterion for C classes on device d
    lambda C, d: nn.CrossEntropyLoss(),
    lambda C, d: nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
    lambda C, d: nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, C, device=d), label_smoothing=0.2),
    lambda C, d: nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, C, device=d), ignore_index=3),
    lambda C, d: F.cross_entropy,
]


def _generic(target, criterion, logits):
    """The generic route: one criterion call per target, as MixedTarget.loss does without the fast route."""
    per, norm = None, 0.0
    weight, ignore = getattr(criterion, "weight", None), getattr(criterion, "ignore_index", -100)
    for j, t in enumerate(target.targets):
        if isinstance(criterion, nn.Module):
            one = F.cross_entropy(logits, t, weight=weight, ignore_index=ignore,
                                  label_smoothing=criterion.label_smoothing, reduction="none")
        else:
            one = criterion(logits, t, reduction="none")
        per = target.weights[:, j] * one if per is None else per + target.weights[:, j] * one
        cw = torch.ones(logits.shape[1], device=logits.device) if weight is None else weight
        norm = norm + (target.weights[:, j] * cw[t.clamp(min=0)] * (t != ignore)).sum()
    own = getattr(criterion, "reduction", "mean")
    # "mean": torch's class-index convention, divided by the mixed (class-)weight
    return per.sum() if own == "sum" else per.sum() / norm


@pytest.mark.parametrize("case", CE_CASES)
@pytest.mark.parametrize("k", [2, 3])
def test_fused_cross_entropy_equals_generic_route(case, k, gen, device, dgen):
    B, C = 12, 7
    criterion = case(C, device)
    y = torch.randint(0, C, (B,), generator=gen).to(device)
    y[0] = 3  # hits ignore_index=3 in one case
    params = mixlab.sample_params(B, alpha=0.4, mode="sample", k=k, generator=dgen, device=device)
    target = mixlab.MixedTarget(y, params)
    logits = torch.randn(B, C, generator=gen).to(device).requires_grad_()
    fast = target.loss(criterion, logits)
    (g_fast,) = torch.autograd.grad(fast, logits)
    slow = _generic(target, criterion, logits)
    (g_slow,) = torch.autograd.grad(slow, logits)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(g_fast, g_slow)
    if k == 2 and not getattr(criterion, "ignore_index", -100) == 3:  # equals soft-label CE (affine in target)
        eps = getattr(criterion, "label_smoothing", 0.0)
        if getattr(criterion, "weight", None) is None:
            soft = mixlab.losses.soft_cross_entropy(logits, target.soft(C, label_smoothing=eps),
                                                    reduction=getattr(criterion, "reduction", "mean"))
            torch.testing.assert_close(fast, soft)


@pytest.mark.parametrize("criterion", [  # built on the test's device
    lambda d: nn.NLLLoss(), lambda d: nn.NLLLoss(weight=torch.linspace(0.5, 2.0, 5, device=d), ignore_index=1),
    lambda d: F.nll_loss])
def test_fused_nll_equals_per_target_nll(criterion, gen, device, dgen):
    criterion = criterion(device)
    B, C = 9, 5
    y = torch.randint(0, C, (B,), generator=gen).to(device)
    target = mixlab.MixedTarget(y, mixlab.sample_params(B, alpha=1.0, mode="sample", generator=dgen, device=device))
    logp = torch.randn(B, C, generator=gen).to(device).log_softmax(1).requires_grad_()
    fast = target.loss(criterion, logp, reduction="sum")
    w = getattr(criterion, "weight", None)
    ig = getattr(criterion, "ignore_index", -100)
    slow = sum((target.weights[:, j] * F.nll_loss(logp, t, weight=w, ignore_index=ig, reduction="none")).sum()
               for j, t in enumerate(target.targets))
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(torch.autograd.grad(fast, logp)[0], torch.autograd.grad(slow, logp)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_device_sync_on_gpu():  # CUDA only by design (whatever --device says): sync debug mode
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(16, 3, 64, 64, device=dev)
    xu = (x * 255).to(torch.uint8)
    y = torch.randint(0, 10, (16,), device=dev)
    logits = torch.randn(16, 10, device=dev, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for transform in (mixlab.MixUp(alpha=0.4, mode="sample", generator=g),
                          mixlab.MixUp(alpha=0.4, mode="pair", pairing="flip", generator=g, inplace=True),
                          mixlab.CutMix(alpha=1.0, generator=g), mixlab.MixUpOrCutMix(mode="sample", generator=g)):
            for batch in (x, xu):
                mixed, target = transform(batch.clone(), y)
                target.loss(nn.CrossEntropyLoss(label_smoothing=0.1), logits).backward()
        p = mixlab.sample_params(16, alpha=0.4, mode="sample", generator=g, device=dev)
        _fast.lerp_perm_inplace(x.clone(), p.lam, p.index)
        _fast.lerp_flip_inplace(x.clone(), p.lam)
        _fast.lerp_gather(x, x, p.lam, p.index, out=torch.empty_like(x))
        # every registered method's call (sample and batch modes, float32 and uint8) and its loss's backward;
        # PuzzleMix (host graph cut) and SnapMix (boxes read on the host) read the host by design: see
        # HOST_BY_DESIGN in test_device_branches.py, whose CPU stand-in test checks the same calls without a GPU
        every_method_call(dev, [n for n in mixlab.methods.available() if n not in HOST_BY_DESIGN])
        timm_mixup = mixlab.timm.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=10, generator=g)
        timm_mixup(x.clone(), y)  # timm's drop-in: in place, the generic route off the CPU
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_mixed_params_batch_of_one_and_zero(device):
    for B in (0, 1):
        x = torch.randn(B, 3, 40, 40).to(device)
        p = MixParams(torch.ones(B, device=device), torch.arange(B, device=device))
        torch.testing.assert_close(mixlab.mix(x, p), x)
        torch.testing.assert_close(mixlab.mix(x.clone(), p, inplace=True), x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_huge_page_outputs_change_no_number_and_keep_the_layout(channels_last):
    # outputs of at least HUGE_MIN_BYTES are advised onto transparent huge pages (Linux); only time changes
    g = torch.Generator().manual_seed(5)
    x = torch.rand(48, 3, 128, 128, generator=g)  # 9 MiB: above HUGE_MIN_BYTES
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    lam, index = torch.rand(48, generator=g), torch.randperm(48, generator=g)
    box = torch.tensor([[[10, 60], [20, 90]]] * 48)
    old = _fast.huge_pages(False)
    try:
        plain = [_fast.lerp_gather(x, x, lam, index), _fast.paste(x, x, lam, index, box, None, inplace=False)]
        assert _fast.huge_pages(True) is False
        huge = [_fast.lerp_gather(x, x, lam, index), _fast.paste(x, x, lam, index, box, None, inplace=False)]
    finally:
        _fast.huge_pages(old)
    for a, b in zip(plain, huge):
        assert torch.equal(a, b) and a.stride() == b.stride() == x.stride()
    out = _fast.empty_out(x)
    assert out.shape == x.shape and out.stride() == x.stride() and out.data_ptr() != x.data_ptr()


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch threads > 1 to choose between")
def test_a_mixer_call_on_the_cpu_is_paced_and_restores_threads(monkeypatch):
    # the whole call (draw and mix) of a method of a few parallel ops runs under _fast.paced too
    seen = []
    real = _fast.paced

    def spy(kind, step_numel, **kw):
        seen.append((kind, step_numel))
        return real(kind, step_numel, **kw)

    monkeypatch.setattr(_fast, "paced", spy)
    threads = torch.get_num_threads()
    x, y = torch.rand(4, 3, 16, 16), torch.arange(4)
    a = mixlab.CutMix(generator=torch.Generator().manual_seed(0))(x, y)[0]
    old = _fast.row_threads("one")
    try:
        b = mixlab.CutMix(generator=torch.Generator().manual_seed(0))(x, y)[0]
    finally:
        _fast.row_threads(old)
    assert torch.equal(a, b) and torch.get_num_threads() == threads
    assert ("call:CutMix:torch.float32:" + str(x.numel().bit_length()), x.numel()) in seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("criterion", [nn.CrossEntropyLoss(), F.cross_entropy], ids=["module", "function"])
def test_plain_cross_entropy_shortcut_equals_the_general_route(dtype, criterion):
    # MixedTarget.loss's shortcut for cross-entropy with torch's defaults: the general fused route's numbers
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 7, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, 7, (12,), generator=g)
    params = mixlab.sample_params(12, alpha=1.0, mode="sample", generator=g)
    target = mixlab.MixedTarget(y, params)
    assert target._plain_ce
    got = target.loss(criterion, logits)
    (g_got,) = torch.autograd.grad(got, logits)
    want = mixlab.losses.mixed_cross_entropy(logits, torch.stack([y, y[params.index]], 1),
                                             torch.stack([params.lam, 1 - params.lam], 1).to(dtype), reduction="mean")
    (g_want,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)
    per_target = params.lam.to(dtype) * F.cross_entropy(logits, y, reduction="none") + \
        (1 - params.lam.to(dtype)) * F.cross_entropy(logits, y[params.index], reduction="none")
    torch.testing.assert_close(got, per_target.mean())
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\)"):
        target.loss(criterion, logits[:, :5])  # labels up to 6 for 5 classes: one clear line
