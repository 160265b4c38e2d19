"""The rows of ``mixlab bench``: floors, mixlab's forms, the textbook forms and the peers.

Every factory returns the zero-argument callable to time, or raises :class:`Skip` with the
reason. Rows that overwrite their input work on their own copy of the batch, so the other
rows always see the original. Peers are imported lazily: a missing one is a skipped row.
Convention for mixlab's rows: ``lam`` weights the original row.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab import kernels as _fast

from .timing import Skip, make_row


def _peer(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{module.split('.')[0]} is not installed ({e.name})") from None


def _float_only(x, who):
    if not x.is_floating_point():
        raise Skip(f"{who} takes floating images only, got {x.dtype}")


def input_rows(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, compiled: bool, seed: int) -> list:
    """Rows for one ``(shape, dtype)`` group of the input side."""
    B = x.shape[0]
    g = torch.Generator(device=x.device).manual_seed(seed)
    params = mixlab.sample_params(B, alpha=1.0, mode="sample", generator=g, device=x.device)
    lam, index = params.lam, params.index
    floor_dst = torch.empty_like(x)
    out_buf = torch.empty_like(x)
    work = x.clone()  # in-place rows mix this copy over and over (convex mixes stay in range)
    lam_b = float(lam[0])  # the paper: one python-float lambda per batch

    def rows_for(name, make, note=""):
        return make_row(name, make, note)

    def paper():
        return lambda: lam_b * x + (1 - lam_b) * x[index]

    def fastai_lerp():
        _float_only(x, "torch.lerp")
        w = lam.to(x.dtype).view(B, *([1] * (x.ndim - 1)))
        return lambda: torch.lerp(x[index], x, w)

    def ml_compiled():
        if not compiled:
            raise Skip("compile off (--no-compile or --quick)")
        _fast.compiled_lerp_gather(x, x, lam, index)  # compile now, outside the timed rounds
        return lambda: _fast.compiled_lerp_gather(x, x, lam, index)

    ml_mixup = mixlab.MixUp(alpha=1.0, mode="sample", generator=g)
    ml_mixup_ip = mixlab.MixUp(alpha=1.0, mode="sample", generator=g, inplace=True)
    ml_cut = mixlab.CutMix(alpha=1.0, mode="batch", generator=g)
    ml_cut_ip = mixlab.CutMix(alpha=1.0, mode="batch", generator=g, inplace=True)
    rows = [
        rows_for("copy floor", lambda: lambda: floor_dst.copy_(x), "dst.copy_(x) into a preallocated tensor"),
        rows_for("x.clone()", lambda: lambda: x.clone()),
        rows_for("mixlab mix (out of place)", lambda: lambda: mixlab.mix(x, params),
                 f"per-sample lam, fixed params; form {_fast.choose_form(x)}"),
        rows_for("mixlab mix (in place)", lambda: lambda: mixlab.mix(work, params, inplace=True),
                 f"form {_fast.choose_form(x, inplace=True)}"),
        rows_for("mixlab mix (out=)", lambda: lambda: _fast.lerp_gather(x, x, lam, index, out=out_buf),
                 "reuses a buffer"),
        rows_for("mixlab compiled", ml_compiled, "torch.compile: gather+lerp fused"),
        rows_for("mixlab MixUp call", lambda: lambda: ml_mixup(x, y), "sampling + mix + target, per-sample lam"),
        rows_for("mixlab MixUp call (in place)", lambda: lambda: ml_mixup_ip(work, y), "sampling + mix + target"),
        rows_for("mixlab CutMix call", lambda: lambda: ml_cut(x, y), "batch mode: one box"),
        rows_for("mixlab CutMix call (in place)", lambda: lambda: ml_cut_ip(work, y), "batch mode: one box"),
        rows_for("paper weighted sum", paper, "the paper's mixup_data: lam*x + (1-lam)*x[idx]"
                 + ("; uint8 promotes to float32" if x.dtype == torch.uint8 else "")),
        rows_for("fastai lerp form", fastai_lerp, "torch.lerp(x[idx], x, lam)"),
    ]
    rows += peer_rows(x, y, num_classes, work)
    return rows


def _timm_row(work, y, num_classes: int, mode: str, **alphas):
    """A row factory for ``timm.data.Mixup`` with these alphas and ``mode``, mixing ``work`` (its own copy of the
    batch) in place, as timm does."""
    def make():
        m = _peer("timm.data").Mixup(mode=mode, num_classes=num_classes, label_smoothing=0.0, **alphas)
        if work.shape[0] % 2:
            raise Skip("timm needs an even batch size")
        return lambda: m(work, y)
    return make


def peer_rows(x, y, num_classes, work) -> list:
    """The peers' own calls, each as its library documents it (sampling included)."""
    onehot = F.one_hot(y, num_classes).float()

    def timm_mixup(mode):
        return _timm_row(work, y, num_classes, mode, mixup_alpha=1.0, cutmix_alpha=0.0)

    def tv(name):
        def make():
            cls = getattr(_peer("torchvision.transforms.v2"), name)
            t = cls(num_classes=num_classes)
            return lambda: t(x, y)
        return make

    def kornia(name, **kw):
        def make():
            _float_only(x, "kornia")
            t = getattr(_peer("kornia.augmentation"), name)(p=1.0, data_keys=["input", "class"], **kw)
            return lambda: t(x, y)
        return make

    def pypi_mixup(name):
        def make():
            t = getattr(_peer("mixup.methods"), name)(alpha=1.0)
            return lambda: t(x, onehot)
        return make

    u8 = "; uint8: lam is cast to uint8 (0), wrong numbers" if x.dtype == torch.uint8 else ""
    return [
        make_row("timm Mixup (batch)", timm_mixup("batch"), "in place, flip pairs"),
        make_row("timm Mixup (elem)", timm_mixup("elem"), "in place, python loop over rows"),
        make_row("torchvision v2 MixUp", tv("MixUp"), "roll(1) pairs"),
        make_row("torchvision v2 CutMix", tv("CutMix"), "roll(1) pairs"),
        make_row("kornia RandomMixUpV2", kornia("RandomMixUpV2")),
        make_row("kornia RandomCutMixV2", kornia("RandomCutMixV2", use_correct_lambda=True)),
        make_row("mixup VanillaMixUp", pypi_mixup("VanillaMixUp"), "PyPI `mixup`" + u8),
        make_row("mixup CutMix", pypi_mixup("CutMix"), "PyPI `mixup`"),
    ]


TIMM_RECIPE = dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, prob=1.0, label_smoothing=0.1)
TIMM_MODES = ("batch", "pair", "elem")


def timm_rows(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int) -> list:
    """Rows for timm's common recipe (mixup 0.8, cutmix 1.0, switch 0.5, smoothing 0.1), each mode: the
    ``mixlab.timm.Mixup`` drop-in against ``timm.data.Mixup`` itself, both mixing their own copy of the batch
    in place (as timm does), sampling and dense targets included; the copy floor and mixlab's own
    ``MixUpOrCutMix`` (per row, out of place) for scale."""
    from mixlab import timm as ml_timm

    floor_dst = torch.empty_like(x)
    work = x.clone()  # every in-place row mixes this copy over and over (convex mixes stay in range)

    def gen():  # one generator per row: a row's draws (MixUp or CutMix, batch mode) do not hang on other rows
        return torch.Generator(device=x.device).manual_seed(seed)

    def ours(mode):
        m = ml_timm.Mixup(mode=mode, num_classes=num_classes, generator=gen(), **TIMM_RECIPE)
        return lambda: lambda: m(work, y)

    def theirs(mode):
        def make():
            m = _peer("timm.data").Mixup(mode=mode, num_classes=num_classes, **TIMM_RECIPE)
            if x.shape[0] % 2:
                raise Skip("timm needs an even batch size")
            return lambda: m(work, y)
        return make

    native = mixlab.MixUpOrCutMix(0.8, 1.0, mode="sample", generator=gen())
    rows = [
        make_row("copy floor", lambda: lambda: floor_dst.copy_(x), "dst.copy_(x) into a preallocated tensor"),
        make_row("mixlab MixUpOrCutMix (sample)", lambda: lambda: native(x, y), "native, out of place, per row"),
    ]
    for mode in TIMM_MODES:
        rows += [make_row(f"mixlab.timm Mixup ({mode})", ours(mode), "in place, flip pairs, dense targets"),
                 make_row(f"timm Mixup ({mode})", theirs(mode), "timm.data.Mixup, in place")]
    return rows


def target_rows(batch: int, num_classes: int, *, device, seed: int) -> list:
    """Rows for the target side: forward + backward of the loss w.r.t. the logits."""
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(batch, num_classes, generator=g, device=device, requires_grad=True)
    y = torch.randint(0, num_classes, (batch,), generator=g, device=device)
    params = mixlab.sample_params(batch, alpha=1.0, mode="sample", generator=g, device=device)
    target = mixlab.MixedTarget(y, params)
    ce = nn.CrossEntropyLoss()
    lam, y_b = params.lam, y[params.index]

    def grad(loss_fn):
        return lambda: torch.autograd.grad(loss_fn(), logits)

    return [
        make_row("plain CE", lambda: grad(lambda: ce(logits, y)), "F.cross_entropy, int targets"),
        make_row("mixlab .loss (int targets)", lambda: grad(lambda: target.loss(ce, logits)),
                 "one log_softmax, one gather"),
        make_row("paper mixup_criterion", lambda: grad(lambda: (lam * F.cross_entropy(logits, y, reduction="none")
                 + (1 - lam) * F.cross_entropy(logits, y_b, reduction="none")).mean()), "two CE calls"),
        make_row("dense soft targets", lambda: grad(lambda: mixlab.losses.soft_cross_entropy(
            logits, target.soft(num_classes))), "build (B, C) rows, then soft CE"),
    ]


def _gradient_saliency(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)``: the image-gradient magnitude, a saliency map given per call (PuzzleMix, SnapMix's CAMs)."""
    gray = x.float().mean(1)
    return F.pad((gray[:, 1:] - gray[:, :-1]).abs(), (0, 0, 0, 1)) + F.pad((gray[:, :, 1:] - gray[:, :, :-1]).abs(),
                                                                         (0, 1))


def method_rows(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int) -> list:
    """Rows for the mask methods (FMix, ResizeMix, SaliencyMix), mixlab's batch and per-row forms against the PyPI
    ``mixup`` package's (one mask / box per batch, like mixlab's ``mode="batch"``), MixUp as the floor; SnapMix
    (CAMs given), SpecMix, RecursiveMix (its history primed) and Feat-/Hidden-Mix (the batch as patch tokens),
    which no installable peer implements."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    onehot = F.one_hot(y, num_classes).float()

    def ours(cls, **kw):
        t = cls(generator=g, **kw)
        return lambda: lambda: t(x, y)

    def pypi(name):
        def make():
            t = getattr(_peer("mixup.methods"), name)(alpha=1.0)
            return lambda: t(x, onehot)
        return make

    def puzzle():  # saliency given (the image-gradient magnitude), as a training loop passes it
        t = mixlab.PuzzleMix(block_num=4, generator=g)
        sal = _gradient_saliency(x)
        return lambda: lambda: t(x, y, saliency=sal)

    def timm_cutmix(mode):
        return _timm_row(work, y, num_classes, mode, mixup_alpha=0.0, cutmix_alpha=1.0)

    def tv_cutmix():
        t = _peer("torchvision.transforms.v2").CutMix(num_classes=num_classes)
        return lambda: t(x, y)

    def snapmix(mode):  # the CAMs given per call (t(x, y, saliency=cams)), so no model forward is timed
        def make():
            t = mixlab.SnapMix(mode=mode, generator=g)
            cams = _gradient_saliency(x) + 1e-3  # any positive (B, H, W) map: the rule normalises it
            return lambda: t(x, y, saliency=cams)
        return make

    def recursivemix(mode):  # stateful: one call first, so each timed call pastes the previous mixed batch
        def make():
            t = mixlab.RecursiveMix(mode=mode, num_classes=num_classes, generator=g)
            t(x, y)
            return lambda: t(x, y)
        return make

    def on_tokens(cls):  # the batch's bytes as (B, N, D) patch tokens: the same floor applies
        def make():
            B, C, H, W = x.shape
            p = token_patch
            tokens = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5) \
                .reshape(B, (H // p) * (W // p), C * p * p).contiguous()
            t = cls(generator=g)
            return lambda: t(tokens, y)
        return make

    work = x.clone()
    mine = x.clone()  # mixlab's in-place rows mix their own copy (convex mixes stay in range)

    def in_place(cls, **kw):
        t = cls(generator=g, inplace=True, **kw)
        return lambda: lambda: t(mine, y)

    patch = 16 if x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0 else 1
    token_patch = patch if patch > 1 else (4 if x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0 else 1)
    no_peer = "no peer package installs here (the official code is a repository, not a package; openmixup needs mmcv)"
    tokens_note = f"the batch as (B, N, D) tokens of {token_patch}x{token_patch} patches; {no_peer}"
    return [
        make_row("mixlab MixUp call (sample)", ours(mixlab.MixUp, alpha=1.0, mode="sample"), "the floor: a lerp"),
        make_row("mixlab CutMix (batch)", ours(mixlab.CutMix, mode="batch"), "one box per batch"),
        make_row("mixlab CutMix (sample)", ours(mixlab.CutMix, mode="sample"), "one box per row"),
        make_row("mixlab CutMix (batch, in place)", in_place(mixlab.CutMix, mode="batch"),
                 "one box per batch, on its own copy (as timm)"),
        make_row("mixlab CutMix (sample, in place)", in_place(mixlab.CutMix, mode="sample"),
                 "one box per row, on its own copy (as timm)"),
        make_row("timm CutMix (batch)", timm_cutmix("batch"), "timm Mixup, cutmix only: in place, flip pairs"),
        make_row("timm CutMix (elem)", timm_cutmix("elem"), "timm Mixup, cutmix only: a box per row"),
        make_row("torchvision v2 CutMix", tv_cutmix, "one box per batch, roll(1) pairs"),
        make_row("mixup CutMix", pypi("CutMix"), "PyPI `mixup`: one box per batch"),
        make_row("mixlab GridMix (batch)", ours(mixlab.GridMix, mode="batch"), "one grid per batch"),
        make_row("mixlab GridMix (sample)", ours(mixlab.GridMix, mode="sample"), "one grid per row"),
        make_row("mixlab SmoothMix (batch)", ours(mixlab.SmoothMix, mode="batch"), "one soft blob per batch"),
        make_row("mixlab SmoothMix (sample)", ours(mixlab.SmoothMix, mode="sample"), "one soft blob per row"),
        make_row("mixlab TokenMix (sample)", ours(mixlab.TokenMix, patch_size=patch), f"{patch}x{patch} patches per row"),
        make_row("mixlab FMix (batch)", ours(mixlab.FMix, mode="batch"), "one mask per batch"),
        make_row("mixlab FMix (sample)", ours(mixlab.FMix, mode="sample"), "one mask per row"),
        make_row("mixlab ResizeMix (batch)", ours(mixlab.ResizeMix, mode="batch"), "one box per batch, nearest"),
        make_row("mixlab ResizeMix (sample)", ours(mixlab.ResizeMix, mode="sample"), "one box per row, nearest"),
        make_row("mixlab SaliencyMix (batch)", ours(mixlab.SaliencyMix, mode="batch"), "one box per batch"),
        make_row("mixlab SaliencyMix (sample)", ours(mixlab.SaliencyMix, mode="sample"), "one box per row"),
        make_row("mixup FMix", pypi("FMix"), "PyPI `mixup`: one mask per batch"),
        make_row("mixup SaliencyMix", pypi("SaliencyMix"), "PyPI `mixup`: heuristic saliency, per row"),
        make_row("mixup ResizeMix", pypi("ResizeMix"), "PyPI `mixup`: one box per batch"),
        make_row("mixlab PuzzleMix (batch)", puzzle(), "block_num 4, given saliency; graph cut on the host"),
        make_row("mixup PuzzleMix", pypi("PuzzleMix"), "PyPI `mixup`: a block-swap heuristic, not the paper's"),
        make_row("mixlab SnapMix (batch)", snapmix("batch"),
                 f"one box pair per batch, given CAMs (no model forward); {no_peer}"),
        make_row("mixlab SnapMix (sample)", snapmix("sample"), "a box pair per row, given CAMs"),
        make_row("mixlab SpecMix (batch)", ours(mixlab.SpecMix, mode="batch"),
                 "one band mask per batch (H as frequency, W as time); no peer package (no official code; the "
                 "reference specmix-pytorch is not on PyPI)"),
        make_row("mixlab SpecMix (sample)", ours(mixlab.SpecMix, mode="sample"), "a band mask per row"),
        make_row("mixlab RecursiveMix (batch)", recursivemix("batch"),
                 f"pastes the previous mixed batch, resized (nearest), one box; soft-label history; {no_peer}"),
        make_row("mixlab FeatMix (sample, tokens)", on_tokens(mixlab.FeatMix), tokens_note),
        make_row("mixlab HiddenMix (sample, tokens)", on_tokens(mixlab.HiddenMix), tokens_note),
        make_row("mixlab MixPro (batch)", ours(mixlab.MixPro, patch_size=token_patch),
                 f"MaskMix cells of {token_patch}x{token_patch} pixels, area labels (no attention given); {no_peer}"),
        make_row("mixlab SMMix (sample)", ours(mixlab.SMMix, patch_size=token_patch, mode="sample"),
                 f"random windows (no attention given), {token_patch}x{token_patch} patches; {no_peer}"),
        make_row("mixlab SimilarityKernelMixup (sample)", ours(mixlab.SimilarityKernelMixup, mode="sample"),
                 "lam warped by the rows' distance; torch-uncertainty is not installed here"),
    ]


def instance_batch(B: int, H: int, W: int, *, n: int = 6, seed: int = 0, sizes=None) -> tuple[list, list]:
    """``B`` float images ``(3, H, W)`` (or of ``sizes``) with ``n`` instances each: random boxes, each with a
    blob mask inside it, labels, areas and iscrowd, as torchvision's detection references take them."""
    g = torch.Generator().manual_seed(seed)
    sizes = sizes or [(H, W)] * B
    images, targets = [], []
    for h, w in sizes:
        images.append(torch.rand(3, h, w, generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.tensor([w * 0.1, h * 0.1]) + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25])
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([float(w), float(h)]))], 1).floor()
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[k, y0:y1, x0:x1] = (torch.rand(y1 - y0, x1 - x0, generator=g) < 0.8).to(torch.uint8)
            masks[k, (y0 + y1) // 2, (x0 + x1) // 2] = 1
        targets.append({"boxes": boxes, "labels": torch.arange(1, n + 1), "masks": masks,
                        "area": masks.flatten(1).sum(1).float(), "iscrowd": torch.zeros(n, dtype=torch.int64)})
    return images, targets


def detection_rows(B: int, H: int, W: int, *, seed: int) -> list:
    """Rows for detection mixing on torchvision-style lists (images with instance masks): Copy-Paste against a
    port of torchvision's reference ``SimpleCopyPaste`` (the same roll(1) pairing and selection rule), Mosaic
    on one size and letterboxed from two sizes, MixUp, and the floor (cloning every image and target)."""
    from mixlab import detection

    from .ports import tv_simple_copy_paste

    images, targets = instance_batch(B, H, W, seed=seed)
    mixed_sizes = [(H, W) if i % 2 == 0 else (H * 3 // 4, W) for i in range(B)]
    images2, targets2 = instance_batch(B, H, W, seed=seed + 1, sizes=mixed_sizes)

    def gen():
        return torch.Generator().manual_seed(seed)

    def floor():
        return [im.clone() for im in images], [{k: v.clone() for k, v in t.items()} for t in targets]

    def ours(t, imgs=images, tgts=targets):
        return lambda: lambda: t(imgs, tgts)

    def torchvision_port():
        _peer("torchvision.ops")
        return lambda: tv_simple_copy_paste(images, targets)

    side = max(H, W)
    return [
        make_row("copy floor", lambda: floor, "clone every image and target"),
        make_row("mixlab CopyPaste (roll)", ours(detection.CopyPaste(pairing="roll", generator=gen())),
                 "torchvision's pairing and selection rule, blending on"),
        make_row("torchvision SimpleCopyPaste (reference port)", torchvision_port,
                 "references/detection/transforms.py line for line (no package ships it)"),
        make_row("mixlab Mosaic (one size)", ours(detection.Mosaic(generator=gen())), "4 images a canvas"),
        make_row("mixlab Mosaic(size) (two sizes)", ours(detection.Mosaic(size=side, generator=gen()), images2,
                                                         targets2), f"letterboxed onto {2 * side}x{2 * side}"),
        make_row("mixlab MixUp (detection)", ours(detection.MixUp(generator=gen())), "boxes and masks of both kept"),
    ]
