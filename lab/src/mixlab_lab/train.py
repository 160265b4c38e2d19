"""The lab's ONE training loop: ``mix=None`` is the plain (ERM) baseline, otherwise a mixlab mixer.

Batches are cut from uint8 tensors held in memory: index, convert to float, normalise with
the dataset's mean/std, augment as tensor ops. All randomness comes from explicit generators
(data order, augmentation, mixing) plus torch's global generator for dropout; every one of
them is saved in the per-epoch checkpoint, so a resumed run ends bit-for-bit where an
uninterrupted one does (on CPU).

Convention: ``lam`` is the weight of the ORIGINAL row (``mixed = lam * x + (1 - lam) * x[index]``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import math
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import mixlab
from mixlab.transforms import apply_schedule
from mixlab.distributed import get_info
from mixlab.losses import soft_bce_with_logits

from . import distributed as dist
from . import metrics as M
from .config import LabConfig, LabError
from .store import (CheckpointError, config_sha256, data_fingerprint, gen_state, load_latest_checkpoint,
                    save_checkpoint, set_gen_state)

__all__ = ["LabData", "prepare_data", "epoch_batches", "make_batch", "build_mixer", "train_arm", "weights_sha256",
           "TrainingDiverged", "predict"]


class TrainingDiverged(LabError):
    """An arm's training loss, or its model's test outputs, stopped being finite (NaN or infinite).

    The arm stops before that epoch is checkpointed or reported; the message names the seed,
    the arm and the epoch (``mixlab`` prints it and exits with status 2).
    """


@dataclasses.dataclass
class LabData:
    """One seed's data on the training device. Images stay uint8 ``(N, C, H, W)``; tabular float32 ``(N, F)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor          # broadcastable to a float batch
    std: torch.Tensor
    kind: str
    num_classes: int
    classes: list
    y_clean: Optional[torch.Tensor] = None
    noisy_mask: Optional[torch.Tensor] = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


def prepare_data(splits, cfg: LabConfig, device) -> LabData:
    """Move a :class:`mixlab_lab.data.DataSplits` to ``device`` with normalisation constants."""
    device = torch.device(device)
    x_train = torch.as_tensor(splits.x_train)
    if splits.kind == "image":
        C = x_train.shape[1]
        if cfg.normalize == "unit" or splits.mean is None:
            mean, std = torch.zeros(C), torch.ones(C)
        else:
            mean, std = torch.tensor(splits.mean, dtype=torch.float32), torch.tensor(splits.std, dtype=torch.float32)
            if float(mean.max()) > 1.0:  # given in pixel units: bring to [0, 1]
                mean, std = mean / 255.0, std / 255.0
        mean, std = mean.view(1, C, 1, 1), std.view(1, C, 1, 1)
    else:  # tabular rows arrive standardised with the training statistics
        x_train = x_train.float()
        mean, std = torch.zeros(1, x_train.shape[1]), torch.ones(1, x_train.shape[1])
    as_dev = lambda t: None if t is None else torch.as_tensor(t).to(device)  # noqa: E731
    return LabData(
        x_train=x_train.to(device), y_train=as_dev(splits.y_train).long(),
        x_test=as_dev(splits.x_test if splits.kind == "image" else splits.x_test.float()), y_test=as_dev(splits.y_test).long(),
        mean=mean.to(device), std=std.to(device), kind=splits.kind, num_classes=int(splits.num_classes),
        classes=list(splits.classes),
        y_clean=None if splits.y_train_clean is None else as_dev(splits.y_train_clean).long(),
        noisy_mask=None if splits.noisy_mask is None else as_dev(splits.noisy_mask).bool(),
    )


def epoch_batches(n: int, batch_size: int, epoch: int, generator: torch.Generator, *, rank: int = 0,
                  world_size: int = 1) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation from ``generator`` cut into ``batch_size`` pieces.

    A trailing batch of one row is dropped (BatchNorm cannot train on it). ``epoch`` is part of
    the signature so a distributed caller can shard by (epoch, rank); the order itself depends
    only on the generator's state, which checkpoints save. Under torchrun every rank draws the
    same permutation (the shuffle generator is seeded alike) and keeps its
    ``DistributedSampler``-style share (:func:`mixlab_lab.distributed.shard`); ``batch_size`` is
    then per rank.
    """
    del epoch  # the generator's state already advances once per epoch
    perm = torch.randperm(n, generator=generator)
    if world_size > 1:
        perm = dist.shard(perm, rank, world_size)
    return [b for b in perm.split(batch_size) if b.numel() > 1]


def augment_mode(cfg: LabConfig, data: LabData) -> str:
    """``auto``: crop (pad 4) + flip for 3-channel images of >= 32 px (CIFAR-like), nothing otherwise; the others
    (``crop-flip``, ``flip``, ``translate-flip``) as given, for images; asked for on other data, refused (it would
    otherwise be dropped without a word)."""
    if data.kind != "image":
        if cfg.augment not in ("auto", "none"):
            raise ValueError(f"--augment {cfg.augment} applies to images; the dataset {cfg.dataset!r} has "
                             f"{data.kind} rows: use --augment none (or auto)")
        return "none"
    if cfg.augment == "auto":
        c, h, _ = data.input_shape
        return "crop-flip" if c == 3 and h >= 32 else "none"
    return cfg.augment


def _crop_flip(x: torch.Tensor, crop: bool, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The reference form of the crop (zero padding of ``pad`` on the normalised batch) and flip; :func:`make_batch`
    computes the same values by one gather from the uint8 rows (:func:`_crop_flip_index`)."""
    B, C, H, W = x.shape
    dev = x.device
    if crop:
        padded = F.pad(x, (pad, pad, pad, pad))                                  # (B, C, H+2p, W+2p)
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=dev)
        rows = (oy[:, None] + torch.arange(H, device=dev))[:, None, :, None]     # (B, 1, H, 1)
        cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, None, :]     # (B, 1, 1, W)
        x = padded[torch.arange(B, device=dev)[:, None, None, None], torch.arange(C, device=dev)[None, :, None, None],
                   rows, cols]                                                   # (B, C, H, W)
    flip = torch.rand(B, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _crop_flip_index(B: int, H: int, W: int, crop: bool, generator: torch.Generator, device,
                     pad: int = 4) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The source pixel of every output pixel of :func:`_crop_flip` (same draws, same order): flat indices
    ``(B, H * W)`` into an ``H x W`` plane (clamped), and where the output is padding (``(B, 1, H, W)`` bool, or
    ``None`` without a crop). Pixels are only moved, so gathering them from the uint8 rows and normalising after
    gives bit-for-bit the values of normalising, padding with 0 and cropping."""
    i = torch.arange(H, device=device)
    j = torch.arange(W, device=device)
    if crop:
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=device) - pad
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=device) - pad
    else:
        oy = ox = torch.zeros(B, dtype=torch.long, device=device)
    flip = torch.rand(B, generator=generator, device=device) < 0.5
    rows = oy[:, None, None] + i[None, :, None]                                  # (B, H, 1)
    jj = torch.where(flip[:, None], (W - 1 - j)[None, :], j[None, :])           # (B, W): mirrored columns
    cols = ox[:, None, None] + jj[:, None, :]                                    # (B, 1, W)
    pad_mask = None
    if crop:
        pad_mask = ((rows < 0) | (rows >= H) | (cols < 0) | (cols >= W))[:, None]  # (B, 1, H, W)
    flat = rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)                        # (B, H, W)
    return flat.reshape(B, H * W), pad_mask


TRANSLATE = 2  # --augment translate-flip: airbench's largest shift, in pixels (reflect padding)


def _reflect(pos: torch.Tensor, size: int) -> torch.Tensor:
    """Positions ``-size + 1 .. 2 * size - 2`` mirrored into ``0 .. size - 1`` as ``F.pad(mode="reflect")`` does (the
    edge pixel is not repeated)."""
    pos = torch.where(pos < 0, -pos, pos)
    return torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)


def _translate_flip_index(idx: torch.Tensor, H: int, W: int, generator: torch.Generator, device, epoch: int,
                          flip_bits: Optional[torch.Tensor]) -> torch.Tensor:
    """``--augment translate-flip``: the source pixel (flat index into an ``H x W`` plane, ``(B, H * W)``) of every
    output pixel of airbench's augmentation of the training rows ``idx`` in ``epoch`` (counting from 0).

    airbench (``CifarLoader`` with ``flip`` and ``translate=2``, ``altflip``): each image is flipped once per run
    at random (``flip_bits[idx]``: drawn from the seed; ``None``: none), reflect-padded by 2 pixels and cropped
    back at a random offset (``batch_crop``: one draw ``randint(-2, 3, (B, 2))`` of (row, column) shifts from
    ``generator``), and every image is flipped on odd epochs. Pixels are only moved, so gathering them from the
    uint8 rows and normalising after gives bit-for-bit the values of doing it on the normalised batch
    (tests/lab/test_lab_fast_preset.py checks it against airbench's code)."""
    B = idx.numel()
    pad = max(0, min(TRANSLATE, H - 1, W - 1))  # reflect padding needs pad < side
    shifts = torch.randint(-pad, pad + 1, (B, 2), generator=generator, device=device)
    i = torch.arange(H, device=device)
    j = torch.arange(W, device=device)
    if epoch % 2 == 1:  # the whole batch flipped, after the crop
        j = W - 1 - j
    rows = _reflect(shifts[:, :1] + i[None, :], H)                                # (B, H)
    cols = _reflect(shifts[:, 1:] + j[None, :], W)                                # (B, W)
    if flip_bits is not None:  # the run's random flip of each image, before padding
        pre = flip_bits.to(device)[idx.to(device)]
        cols = torch.where(pre[:, None], W - 1 - cols, cols)
    return (rows[:, :, None] * W + cols[:, None, :]).reshape(B, H * W)


def alternating_flips(cfg: LabConfig, data: LabData, seed: int) -> Optional[torch.Tensor]:
    """``--augment translate-flip``: which training rows the run flips in its even epochs (bool ``(N,)``, drawn from
    ``seed`` alone: the same for every arm and rank, and after a resume); ``None`` for the other augmentations."""
    if augment_mode(cfg, data) != "translate-flip":
        return None
    n = data.y_train.numel()
    return torch.rand(n, generator=torch.Generator().manual_seed(seed + 4_000_037)) < 0.5


def make_batch(data: LabData, idx: torch.Tensor, *, train: bool, augment: str = "none",
               generator: Optional[torch.Generator] = None, split: str = "train", epoch: int = 0,
               flip_bits: Optional[torch.Tensor] = None):
    """Float, normalised batch ``(B, ...)`` and labels ``(B,)`` for row indices ``idx``.

    Images stay uint8 in memory: a training batch's crop and flip pick its pixels from the uint8 rows (one
    gather), then the batch is converted and normalised once; the values are those of :func:`_crop_flip` on the
    normalised batch. ``epoch`` and ``flip_bits`` (:func:`alternating_flips`) serve ``augment="translate-flip"``
    (:func:`_translate_flip_index`)."""
    x_all, y_all = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    idx = idx.to(x_all.device)
    if data.kind != "image":
        return (x_all[idx].float() - data.mean) / data.std, y_all[idx]                # (B, F)
    pad_mask = None
    if train and augment != "none" and x_all.dim() == 4:
        B, (C, H, W) = idx.numel(), x_all.shape[1:]
        if augment == "translate-flip":
            flat = _translate_flip_index(idx, H, W, generator, x_all.device, epoch, flip_bits)
        else:
            flat, pad_mask = _crop_flip_index(B, H, W, augment == "crop-flip", generator, x_all.device)
        x = torch.gather(x_all[idx].reshape(B, C, H * W), 2, flat[:, None, :].expand(B, C, H * W))
        x = x.view(B, C, H, W)
    else:
        x = x_all[idx]
    x = (x.float() / 255.0 - data.mean) / data.std                                # (B, C, H, W)
    if pad_mask is not None:
        x.masked_fill_(pad_mask, 0.0)  # the crop's zero padding, in normalised units
    return x, y_all[idx]


# ---------------------------------------------------------------------------------------------
# Forwards (issue 21 section 2): channels-last batches, bfloat16 autocast, torch.compile with a fallback.
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def compiler_missing() -> Optional[str]:
    """Why inductor (``torch.compile``'s CPU backend) cannot build kernels here, or ``None``: it needs a C++ compiler."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 (any failure to find one means: do not compile)
        return f"no C++ compiler for torch.compile's inductor backend ({' '.join(str(e).split())[:160]})"
    return None


def _channels_last(cfg: LabConfig, x: torch.Tensor) -> bool:
    return bool(cfg.channels_last) and x.dim() == 4


class _Forward:
    """One forward of the lab: ``module(x)`` with the batch channels-last (``--channels-last``), under bfloat16
    autocast (``--autocast bf16``), through ``torch.compile`` when ``compiled`` (``--compile``).

    A compiled call that raises (compilation failed: no C++ compiler, an op inductor refuses...) is undone (the
    module's buffers and frozen weights, which a partly run forward may have changed, are put back) and the eager
    module runs, for that call and every later one; ``failed`` holds the reason, which the checkpoint keeps so a
    resumed run stays eager too (the same computation as the uninterrupted run). Compiled kernels compute the same
    function in another order: they need not match the eager forward in the last bits, but the same machine gives
    the same kernels, so a resumed run matches an uninterrupted one.
    """

    def __init__(self, module: torch.nn.Module, cfg: LabConfig, compiled: bool, what: str,
                 failed: Optional[str] = None, on_fail: Optional[Callable[[str], None]] = None):
        self.module, self.cfg, self.what, self.on_fail = module, cfg, what, on_fail
        self.failed = failed
        self.compiled = None
        if compiled and failed is None:
            self.compiled = torch.compile(module, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _channels_last(self.cfg, x):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast == "bf16"):
            if self.compiled is not None and self.failed is None:
                saved = _mutable_state(self.module)
                try:
                    return self.compiled(x)
                except Exception as e:  # noqa: BLE001 (compilation failed: eager from now on, said in a note)
                    _put_back(self.module, saved)
                    self.failed = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                    if self.on_fail is not None:
                        self.on_fail(f"--compile: the {self.what} forward could not be compiled; it runs eager "
                                     f"({self.failed})")
            return self.module(x)


def _mutable_state(module: torch.nn.Module) -> list:
    """Copies of what a training forward may change in place: buffers (BatchNorm statistics) and frozen weights."""
    if not module.training:
        return []
    return [(t, t.detach().clone()) for t in list(module.buffers()) + [q for q in module.parameters()
                                                                          if not q.requires_grad]]


def _put_back(module: torch.nn.Module, saved: list) -> None:
    with torch.no_grad():
        for t, copy in saved:
            t.copy_(copy)


_EVAL_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def eval_forward(model: torch.nn.Module, cfg: LabConfig, *, failed: Optional[str] = None,
                 on_fail: Optional[Callable[[str], None]] = None) -> _Forward:
    """The eval-mode forward of ``model`` under ``cfg`` (compiled with ``--compile eval|all``): one per model and
    configuration, so :func:`evaluate` and :func:`predict` share it (and its compiled graph, and its fallback)."""
    key = (bool(cfg.channels_last), cfg.autocast, cfg.compile)
    fwd = _EVAL_FORWARDS.get(model)
    if fwd is None or fwd[0] != key or failed is not None:
        compiled = cfg.compile in ("eval", "all") and compiler_missing() is None
        fwd = (key, _Forward(model, cfg, compiled, "eval", failed=failed, on_fail=on_fail))
        _EVAL_FORWARDS[model] = fwd
    return fwd[1]


def build_mixer(cfg: LabConfig, mix: str, num_classes: int, generator: torch.Generator, *,
                alpha: Optional[float] = None, class_counts=None, input_shape=None, model=None, norm=None,
                inplace: bool = False):
    """The registered method ``mix`` (``None`` for the baseline), configured from ``cfg``, drawing from ``generator``.

    Every method is built through the registry (:func:`mixlab.methods.get`) with the shared options
    (``mode``, ``p``, pairing by flip in pair mode, ``num_classes``, ``label_smoothing``) and ``alpha`` when it
    takes one; the options below are passed to the methods whose constructor has them, so a new method
    needs no edit here:

    - ``keep_dominant``, ``cutmix_alpha``, ``switch_prob``: from ``cfg``;
    - ``class_counts`` (Remix): the training rows per class (ones when unknown);
    - ``patch_size`` (token methods): the patch giving the grid nearest 8 x 8 tokens for ``input_shape``
      ``(C, H, W)`` (4 x 4 pixel patches on 32 px images);
    - ``n_holes`` (GridMix): 2 to 4 holes, valid from 8-pixel images up;
    - ``block_num``, ``neigh_size`` (PuzzleMix): the official sides 2, 4, 8, 16 that divide the image,
      with 4-pixel neighbourhoods where they fit; ``model`` gives its input-gradient saliency (one extra
      forward and backward per batch; without it, e.g. for a preview, the image's own gradient magnitude
      stands in) and ``norm`` ``(mean, std)`` the normalisation it undoes for its smoothness term.

    ``alpha`` overrides ``cfg.alpha`` (the arm's value when ``compare`` lists several). ``inplace``: the mixer
    overwrites the batch it is given (the lab's training batches, which nothing else holds; the same values as
    out of place).
    """
    if mix == "none":
        return None
    info = mixlab.methods.get(mix)
    kind = {3: "images", 1: "vectors"}.get(len(input_shape)) if input_shape is not None else None
    if kind is not None and kind not in info.inputs:
        raise ValueError(f"--mix {mix} mixes {', '.join(info.inputs)}, not {kind} (this dataset's inputs "
                         f"{tuple(input_shape)}); choose a method that lists {kind} in mixlab.methods.get(name).inputs")
    if alpha is None:
        if isinstance(cfg.alpha, list):
            raise ValueError(f"--alpha lists {cfg.alpha}: build_mixer needs the arm's own alpha")
        alpha = cfg.alpha
    options = dict(alpha=float(alpha), mode=cfg.mode, p=cfg.p, generator=generator, num_classes=num_classes,
                   label_smoothing=cfg.label_smoothing)
    if inplace:
        options["inplace"] = True
    if cfg.mode == "pair":
        options["pairing"] = "flip"  # pair mode pairs by flip
    sig = inspect.signature(info.cls).parameters
    for name in ("keep_dominant", "cutmix_alpha", "switch_prob"):
        if name in sig and name not in info.options:
            options[name] = getattr(cfg, name)
    h, w = input_shape[-2:] if input_shape is not None and len(input_shape) == 3 else (32, 32)
    if "class_counts" in sig:
        options["class_counts"] = torch.ones(num_classes) if class_counts is None else class_counts
    if "patch_size" in sig and "tokens" in info.inputs:
        sizes = [q for q in range(1, math.gcd(h, w) + 1) if h % q == 0 and w % q == 0]
        options["patch_size"] = min(sizes, key=lambda q: (abs(h // q - 8), q))  # the grid nearest 8 tokens a side
    if "n_holes" in sig:
        options["n_holes"] = (2, 4)
    if "block_num" in sig:
        options.update(_puzzle_options(h, w, model, norm))
    if "classifier" in sig and "model" in sig:  # SnapMix: class activation maps of the model being trained
        options["model"] = model if model is not None else _StandInCAM(
            input_shape[0] if input_shape is not None and len(input_shape) == 3 else 3, num_classes)
        if model is not None:
            from mixlab.methods.snapmix import cam_parts

            try:
                cam_parts(model)
            except (TypeError, ValueError) as e:
                raise ValueError(f"--mix {mix} needs class activation maps: a model whose head is global average "
                                 f"pooling then one Linear (resnet18, preact-resnet18); {e}") from None
    return info.build(**options)


class _StandInCAM(torch.nn.Module):
    """A fixed small CNN in torchvision's layout (a feature map, ``avgpool``, ``fc``) whose class activation maps
    stand in for a trained model's where there is none (previews, the options check before training)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(in_channels, 8, 3, padding=1)
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.avgpool(torch.relu(self.conv(x.float()))).flatten(1))


def _puzzle_options(h: int, w: int, model, norm) -> dict:
    sides = tuple(b for b in (2, 4, 8, 16) if h % b == 0 and w % b == 0 and min(h // b, w // b) >= 2) or (2,)
    neigh = max(q for q in (1, 2, 4) if all((h // b) % q == 0 and (w // b) % q == 0 for b in sides))
    mean, std = norm if norm is not None else (None, None)
    return dict(block_num=sides, neigh_size=neigh, model=model if model is not None else _ImageGradient(),
                criterion=None if model is not None else _ImageGradient.score,
                mean=None if mean is None else mean.flatten(), std=None if std is None else std.flatten())


class _ImageGradient(torch.nn.Module):
    """A stand-in saliency model (previews, checks): a score whose input gradient is the image's
    own spatial gradient, so PuzzleMix's saliency falls on edges and texture."""

    def forward(self, x):
        return (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(1) + (x[..., 1:] - x[..., :-1]).pow(2).flatten(1).sum(1)

    @staticmethod
    def score(out, y):  # the criterion: the score alone (the labels play no part)
        return out.sum()


def _loss(cfg: LabConfig, logits, y, target, num_classes):
    """Cross-entropy (mixed through ``MixedTarget.loss``) or BCE on soft one-hot rows (article 000)."""
    if cfg.loss == "bce":
        soft = F.one_hot(y, num_classes).float() if target is None else target.soft(num_classes)
        return soft_bce_with_logits(logits, soft)
    if target is None:
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    return target.loss(F.cross_entropy, logits)  # the mixer carries cfg.label_smoothing


def _lr_factor(schedule: str, total: int, plan: Optional[dict] = None):
    """The lr multiplier of step ``step`` of ``total``. ``plan`` (``--budget-mode checkpoints``, steps):
    ``{"warmup": w, "decay_from": d}``: linear warm-up from 0.04 over ``w`` steps (``w`` 0: none), 1 until step
    ``d``, then a cosine to 0 at ``total``; up to ``d`` it does not depend on ``total``."""
    if plan is not None:
        warm, start = plan["warmup"], plan["decay_from"]

        def planned(step: int) -> float:
            if step < warm:
                return 0.04 + 0.96 * step / warm
            if step < start:
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min((step - start) / max(total - start, 1), 1.0)))
        return planned

    def factor(step: int) -> float:
        t = min(step / max(total, 1), 1.0)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "onecycle":  # linear warm-up from lr/25 over 25% of the steps, then cosine to ~0
            w = 0.25
            return 0.04 + 0.96 * t / w if t < w else 0.5 * (1 + math.cos(math.pi * (t - w) / (1 - w)))
        return 1.0
    return factor


_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)


def param_groups(cfg: LabConfig, model: torch.nn.Module):
    """The optimiser's parameters: ``model.parameters()`` (one group, as before) unless ``--bn-lr-scale`` or
    ``--no-decay-bias-bn`` ask for groups.

    Then, in this order (empty ones left out): the other weights (``lr``, ``weight_decay``; group 0, whose lr the
    records show); the parameters of normalisation layers (BatchNorm, LayerNorm, GroupNorm and subclasses, e.g.
    ``airbench-cpu``'s BatchNorm bias): ``lr * bn_lr_scale`` and ``weight_decay / bn_lr_scale`` (so their decay per
    step ``lr * wd`` is the other weights', as airbench's ``bias_scaler`` groups), or no decay with
    ``--no-decay-bias-bn``; the other biases and 1-d parameters: ``lr``, and no decay with ``--no-decay-bias-bn``.
    """
    if cfg.bn_lr_scale == 1 and cfg.decay_bias_bn:
        return model.parameters()
    norm = {id(q) for m in model.modules() if isinstance(m, _NORMS) for q in m.parameters(recurse=False)}
    groups = {"other": [], "norm": [], "bias": []}
    for name, q in model.named_parameters():
        kind = "norm" if id(q) in norm else "bias" if (q.ndim <= 1 or name.endswith("bias")) else "other"
        groups[kind].append(q)
    scale, wd = float(cfg.bn_lr_scale), cfg.weight_decay
    options = {"other": dict(lr=cfg.lr, weight_decay=wd),
               "norm": dict(lr=cfg.lr * scale, weight_decay=wd / scale if cfg.decay_bias_bn else 0.0),
               "bias": dict(lr=cfg.lr, weight_decay=wd if cfg.decay_bias_bn else 0.0)}
    return [dict(params=groups[k], name=k, **options[k]) for k in groups if groups[k]]


def _optimizer(cfg: LabConfig, model, steps: int, plan: Optional[dict] = None):
    params = param_groups(cfg, model)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.schedule, steps, plan))


class WeightAverage:
    """``--ema DECAY``: a moving average of a model's weights, updated after the optimiser steps (issue 21).

    ``mode="average"``: after step ``t`` (counting from 1) every averaged entry moves as
    ``avg.lerp_(w, 1 - d)`` with ``d = min(decay, (1 + t) / (10 + t))`` (TensorFlow's warm-up, so the
    initial weights do not linger); training itself is untouched. ``mode="lookahead"``: airbench's
    ``LookaheadState`` (github.com/KellerJordan/cifar10-airbench): every 5 steps ``d = decay ** 5 *
    (t / total) ** 3`` (small early, ``decay ** 5`` at the end: airbench94 uses 0.95), the same lerp, and
    then the weights are reset to the average. One difference: the run's last step (``t == total``) makes an
    update too, where airbench ends on the average of its last multiple of 5 and drops the steps after it.

    Averaged: trainable parameters and floating-point buffers (BatchNorm running statistics, as airbench
    and timm's ModelEma do); copied at each update: frozen parameters (``airbench-cpu``'s whitening filters,
    which may be set after the average starts) and integer buffers. :meth:`copy_to` puts the average into a
    model (the lab evaluates it, and ends the arm with it); :meth:`state_dict` / :meth:`load_state_dict` carry
    it through checkpoints, so a resumed run is bit-identical to an uninterrupted one.
    """

    LOOKAHEAD_EVERY = 5

    def __init__(self, model: torch.nn.Module, decay: float, mode: str = "average", total_steps: int = 1):
        self.decay, self.mode, self.total = float(decay), mode, max(int(total_steps), 1)
        self.step = 0
        params = dict(model.named_parameters())
        state = model.state_dict()
        self.state = {k: v.detach().clone() for k, v in state.items()}
        self.averaged = frozenset(k for k, v in state.items() if v.is_floating_point()
                                  and (k not in params or params[k].requires_grad))

    def decay_at(self, step: int) -> Optional[float]:
        """The decay of the update after step ``step``, or ``None`` when that step makes no update (lookahead)."""
        if self.mode == "lookahead":
            if step % self.LOOKAHEAD_EVERY and step != self.total:
                return None
            return self.decay ** self.LOOKAHEAD_EVERY * min(step / self.total, 1.0) ** 3
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """After an optimiser step: move the average toward ``model``'s weights (and reset them to it, lookahead)."""
        self.step += 1
        d = self.decay_at(self.step)
        if d is None:
            return
        current = model.state_dict()
        for k, avg in self.state.items():
            if k in self.averaged:
                avg.lerp_(current[k], 1.0 - d)
                if self.mode == "lookahead":
                    current[k].copy_(avg)
            else:
                avg.copy_(current[k])

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the average into ``model`` (in place: memory formats kept)."""
        for k, t in model.state_dict().items():
            t.copy_(self.state[k])

    def sync(self) -> None:
        """Under torchrun: rank 0's average on every rank (BatchNorm statistics differ between ranks in an epoch)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            for t in self.state.values():
                torch.distributed.broadcast(t, src=0)

    def state_dict(self) -> dict:
        return {"state": {k: v.clone() for k, v in self.state.items()}, "step": self.step, "mode": self.mode,
                "decay": self.decay}

    @torch.no_grad()
    def load_state_dict(self, saved: dict) -> None:
        if set(saved["state"]) != set(self.state):
            raise ValueError("the saved average holds other entries than the model")
        for k, t in self.state.items():
            t.copy_(saved["state"][k])
        self.step = int(saved["step"])


@contextlib.contextmanager
def averaged_weights(model: torch.nn.Module, average: Optional[WeightAverage]):
    """``--ema``: ``model`` holds ``average``'s weights inside the block, its own again after (bit for bit)."""
    if average is None:
        yield model
        return
    with torch.no_grad():
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        average.copy_to(model)
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, t in model.state_dict().items():
                t.copy_(saved[k])


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names and bytes): equal hashes mean identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def eval_subset_rows(cfg: LabConfig, data: LabData) -> Optional[torch.Tensor]:
    """The fixed test rows ``--eval-subset`` scores before the last epoch (sorted; the same for every epoch and
    seed: a permutation seeded with 0), or ``None`` when every epoch is scored on the whole test set."""
    n_test = data.y_test.numel()
    if cfg.eval_subset is None or cfg.eval_subset >= n_test:
        return None
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:cfg.eval_subset].sort().values


@torch.no_grad()
def evaluate(model, cfg: LabConfig, data: LabData, rows: Optional[torch.Tensor] = None) -> dict:
    """Test accuracy, NLL, ECE (and, with label noise, clean-label train accuracy and memorisation).

    ``rows``: score these test rows only (``--eval-subset``; default every test row). ``"rows"`` in the result:
    the images this process scored (the speed record's count)."""
    model.eval()
    forward = eval_forward(model, cfg)
    total = None
    info = get_info()
    rows = torch.arange(data.y_test.numel()) if rows is None else rows
    n_test = rows.numel()
    split_eval = info.distributed and n_test >= info.world_size  # each rank a share; sums reduced
    rows = rows[info.rank::info.world_size] if split_eval else rows
    scored = rows.numel()
    for idx in rows.split(cfg.eval_batch_size):
        x, y = make_batch(data, idx, train=False, split="test")
        total = M.add_stats(total, M.batch_stats(M.probabilities(forward(x), cfg.loss), y))
    out = M.finalize(dist.all_reduce_sum(total) if split_eval else total)
    if data.noisy_mask is not None and data.y_clean is not None and cfg.label_noise > 0:
        mem = None
        for idx in torch.arange(data.y_train.numel()).split(cfg.eval_batch_size):
            x, y = make_batch(data, idx, train=False)
            i = idx.to(y.device)
            probs = M.probabilities(forward(x), cfg.loss)
            mem = M.add_stats(mem, M.memorisation(probs, y, data.y_clean[i], data.noisy_mask[i]))
            scored += idx.numel()
        out.update(M.finalize_memorisation(mem))
    out["rows"] = scored
    return out


@torch.no_grad()
def predict(model, cfg: LabConfig, data: LabData) -> dict:
    """Per test image: the predicted class, its probability (confidence) and the true class's probability.

    Int64 / float32 CPU tensors ``(N,)`` under ``"pred"``, ``"conf"``, ``"p_true"``, with the labels
    ``"y"``: what paired tests between arms (McNemar, bootstraps of NLL and ECE) need.
    """
    model.eval()
    forward = eval_forward(model, cfg)  # the forward evaluate() used: the same numbers as the metrics
    preds, confs, p_true = [], [], []
    for idx in torch.arange(data.y_test.numel()).split(cfg.eval_batch_size):
        x, y = make_batch(data, idx, train=False, split="test")
        probs = M.probabilities(forward(x), cfg.loss).float()
        conf, pred = probs.max(1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
        p_true.append(probs.gather(1, y[:, None]).squeeze(1).cpu())
    return {"pred": torch.cat(preds), "conf": torch.cat(confs), "p_true": torch.cat(p_true),
            "y": data.y_test.cpu().clone()}


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # lazy: only when drawing bars

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _rng_states(gens: dict) -> dict:
    states = {k: gen_state(g) for k, g in gens.items()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(gens: dict, states: dict) -> None:
    for k, g in gens.items():
        set_gen_state(g, states[k])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _no_step_message(cfg: LabConfig, n: int, n_local: int, world_size: int) -> str:
    """Why an epoch would take no optimiser step (every batch a lone row, and lone rows are dropped)."""
    if cfg.batch_size < 2:
        return (f"--batch-size {cfg.batch_size}: an epoch would take no optimiser step (a batch of one row is "
                f"dropped: BatchNorm cannot train on it); use --batch-size 2 or more")
    per = f", {n_local} per process of {world_size}" if world_size > 1 else ""
    return (f"--train-size / --classes: the training set has {n} row(s){per}, so an epoch would take no optimiser "
            f"step (a batch of one row is dropped); keep at least 2 training rows per process")


_CKPT_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "init_sha256", "done", "config_sha256",
              "data_sha256")


def train_arm(cfg: LabConfig, data: LabData, model: torch.nn.Module, *, seed: int, arm: str, mix: str,
              ckpt_path: Path, main_process: bool = True, alpha: Optional[float] = None,
              on_epoch: Optional[Callable[[list], None]] = None, fingerprint: Optional[dict] = None,
              notes: Optional[list] = None, epochs: Optional[int] = None, lr_plan: Optional[dict] = None,
              branch_points: Optional[dict] = None) -> tuple[list[dict], str]:
    """Train one arm from the model's current (initial) weights; resume from ``ckpt_path`` if it exists.

    ``alpha`` is the arm's own (``compare`` may list several; default ``cfg.alpha``). Both arms
    of a seed use the same data order (the shuffle generator is seeded by ``seed``
    alone) and the same dropout stream start.

    Checkpoints (see docs/RELIABILITY.md): ``ckpt_path`` holds the last epoch, its ``.prev.pt``
    sibling the one before; each records the configuration hash, the data ``fingerprint``
    (:func:`mixlab_lab.store.data_fingerprint`, computed when not given), the initial weights'
    hash and a SHA-256 of its bytes, all checked before it is adopted. A damaged latest file
    falls back to the previous one. A resume with another thread count or device is allowed
    but noted in ``notes`` (bit-exactness is then not promised). On return ``model`` holds the
    arm's final weights (with ``--ema``, the average's), also when the arm had already finished.
    ``on_epoch(history)`` is called after each evaluated epoch (every epoch unless ``--eval-every``).

    Budgets (:mod:`mixlab_lab.budget`): ``epochs`` (default ``cfg.epochs``) is this run's budget, its
    schedule spanning exactly that many epochs; ``lr_plan`` (epochs: ``{"warmup", "decay_from"}``) replaces
    ``cfg.schedule`` by constant-then-decay; ``branch_points`` ``{epoch: path}`` also saves the checkpoint
    of that epoch to ``path`` (the shared run's copies that shorter budgets decay from).

    Returns:
        ``(history, init_sha256)``: one dict of floats per epoch, and the hash of the weights the
        arm started from (before ``--init-batch``'s data-based initialisation).
    """
    epochs = cfg.epochs if epochs is None else int(epochs)
    # The seed's initial weights, hashed before --init-batch's data-based initialisation: that one is a reduction
    # over thousands of rows whose last bits depend on the thread count, and a resume may run on another count
    # (the checkpoint restores the initialised weights themselves, so nothing is recomputed for a resumed arm).
    init_hash = weights_sha256(model)
    run = _setup_arm(cfg, data, model, seed=seed, mix=mix, alpha=alpha, epochs=epochs, lr_plan=lr_plan)
    history, start = [], 0
    notes = [] if notes is None else notes
    ckpt_path = Path(ckpt_path)
    expect = {"config_sha256": config_sha256(cfg.to_dict()),
              "data_sha256": data_fingerprint(data) if fingerprint is None else fingerprint,
              "init_sha256": init_hash, "world_size": run.info.world_size}
    here = {"threads": torch.get_num_threads(), "device": str(run.device), "compile": compile_mode(cfg)}
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if main_process else None  # noqa: E731
    ck, latest_good = load_latest_checkpoint(ckpt_path, required=_CKPT_KEYS, expect=expect, log=say)
    if ck is not None:
        history, start = ck["history"], ck["epoch"]
        _carry_notes(ck, notes, here, f"seed {seed} {arm}", epochs, say)
        if any((ck.get("compile_failed") or {}).values()):  # stay eager where the uninterrupted run fell back
            set_forwards(run, ck["compile_failed"])
        if ck["done"] or start >= epochs:
            model.load_state_dict(ck["model"])
            if run.ema is not None:  # the arm ends with the averaged weights
                _restore_average(run, ck, ckpt_path)
                run.ema.copy_to(model)
            return history, init_hash
        _restore(run, ck, ckpt_path)
        if run.info.distributed and callable(getattr(run.mixer, "state_dict", None)):
            note = (f"seed {seed} {arm}: resumed after epoch {start} under torchrun: the mixer's own history "
                    f"({type(run.mixer).__name__}) restarts empty; the result need not be bit-identical")
            notes.append(note)
            if say is not None:
                say(f"mixlab: note: {note}")
    bars = main_process and not cfg.quiet and sys.stderr.isatty()
    for epoch in range(start, epochs):
        record, rng, extra = _run_epoch(run, epoch, seed=seed, arm=arm, bars=bars)
        history.append(record)
        while run.compile_notes:  # a forward that could not be compiled (or no compiler): said once, kept
            note = f"seed {seed} {arm}: {run.compile_notes.pop(0)}"
            if note not in notes:
                notes.append(note)
                if say is not None:
                    say(f"mixlab: note: {note}")
        if main_process:
            state = {
                "model": model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                "rng": rng, "epoch": epoch + 1, "history": history, "init_sha256": init_hash,
                "done": epoch + 1 == epochs, "seed": seed, "arm": arm, **extra,
                "config_sha256": expect["config_sha256"], "data_sha256": expect["data_sha256"],
                "weights_sha256": weights_sha256(model), "notes": list(notes), **here,
                "mixer": _mixer_state(run), "compile_failed": _compile_failed(run),
            }
            if run.ema is not None:
                state["ema"] = run.ema.state_dict()
            save_checkpoint(ckpt_path, state, keep_previous=latest_good)  # never rotate a damaged latest into .prev
            latest_good = True
            if branch_points and epoch + 1 in branch_points:
                save_checkpoint(branch_points[epoch + 1], state)
            if on_epoch is not None and "test_acc" in record:  # --eval-every: called after the evaluated epochs
                on_epoch(history)
    if run.ema is not None:  # the arm ends with the averaged weights (predictions, weights_sha256)
        run.ema.copy_to(model)
    return history, init_hash


@dataclasses.dataclass
class _ArmRun:
    """What one arm's epochs share: the data, the model (and its DDP wrapper), optimiser, streams, mixer."""

    cfg: LabConfig
    data: LabData
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper under torchrun
    device: torch.device
    info: object  # mixlab.distributed.DistInfo
    opt: torch.optim.Optimizer
    sched: object
    gens: dict
    mixer: object
    aug: object
    n: int
    n_local: int
    epochs: int  # this run's budget: its schedule spans exactly these epochs
    forward: object = None  # _Forward: the training forward (channels-last, autocast, compiled)
    eval_rows: Optional[torch.Tensor] = None  # --eval-subset's rows (epochs before the last), None: every row
    compile_notes: list = dataclasses.field(default_factory=list)  # compile fallbacks, for the run's notes
    ema: Optional[WeightAverage] = None  # --ema: the average the evaluations use
    flip_bits: Optional[torch.Tensor] = None  # --augment translate-flip: the run's per-image flips
    init_time_s: float = 0.0  # --init-batch: seconds of the data-based initialisation (added to epoch 1's training)


def _setup_arm(cfg: LabConfig, data: LabData, model: torch.nn.Module, *, seed: int, mix: str, alpha,
               epochs: Optional[int] = None, lr_plan: Optional[dict] = None) -> _ArmRun:
    """Device, DDP wrapper, optimiser and schedule, the arm's random streams and its mixer, in a fixed order."""
    device = torch.device(cfg.device)
    model.to(device)
    if cfg.channels_last and data.kind == "image":  # conv weights channels-last; values unchanged
        model.to(memory_format=torch.channels_last)
    info = get_info()  # under torchrun: shard the data, per-rank streams, DDP gradients
    net = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        gpu = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=gpu)
    n = data.y_train.numel()
    n_local = math.ceil(n / info.world_size)
    steps_per_epoch = len([b for b in torch.arange(n_local).split(cfg.batch_size) if b.numel() > 1])
    if steps_per_epoch == 0:  # every batch would be a lone row, and lone rows are dropped
        raise ValueError(_no_step_message(cfg, n, n_local, info.world_size))
    epochs = cfg.epochs if epochs is None else epochs
    plan = None if lr_plan is None else {"warmup": round(lr_plan["warmup"] * steps_per_epoch),
                                         "decay_from": lr_plan["decay_from"] * steps_per_epoch}
    opt, sched = (_optimizer(cfg, model, steps_per_epoch * epochs) if plan is None
                  else _optimizer(cfg, model, steps_per_epoch * epochs, plan))
    # The shuffle is shared by all ranks; augmentation, mixing and dropout draw per rank
    # (rank 0 keeps the single-process seeds, see mixlab_lab.distributed.rank_seed).
    gens = {"shuffle": torch.Generator().manual_seed(seed),
            "augment": dist.rank_generator(seed + 1_000_003, info.rank, device),
            "mix": dist.rank_generator(seed + 2_000_003, info.rank, device)}
    torch.manual_seed(dist.rank_seed(seed + 3_000_017, info.rank))  # dropout etc.: same start for both arms
    init_time = init_from_data(cfg, data, model, seed) if cfg.init_batch is not None else 0.0
    mixer = build_mixer(cfg, mix, data.num_classes, gens["mix"], alpha=alpha, input_shape=data.input_shape,
                        class_counts=torch.bincount(data.y_train.cpu(), minlength=data.num_classes),
                        model=model, norm=(data.mean, data.std) if data.kind == "image" else None, inplace=True)
    run = _ArmRun(cfg, data, model, net, device, info, opt, sched, gens, mixer, augment_mode(cfg, data), n, n_local,
                  epochs)
    run.eval_rows = eval_subset_rows(cfg, data)
    run.init_time_s = init_time
    run.flip_bits = alternating_flips(cfg, data, seed)
    if cfg.ema is not None:  # after the data-based initialisation: the average starts from the weights training does
        run.ema = WeightAverage(model, cfg.ema, cfg.ema_mode, steps_per_epoch * epochs)
    set_forwards(run)
    return run


def init_from_data(cfg: LabConfig, data: LabData, model: torch.nn.Module, seed: int) -> float:
    """``--init-batch N``: the model's data-dependent initialisation (its method ``init_from_data(x)``, e.g.
    ``airbench-cpu``'s whitening filters) on N training images chosen by ``seed`` (the same for every arm and rank),
    un-augmented and unmixed, in float32; returns the seconds it took. A model without the method is refused."""
    fn = getattr(model, "init_from_data", None)
    if not callable(fn):
        raise ValueError(f"--init-batch: model --model {cfg.model} has no data-based initialisation (a method "
                         f"init_from_data(x)); the airbench-cpu models have one. Leave --init-batch out")
    t0 = time.perf_counter()
    n = data.y_train.numel()
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 5_000_011))[:cfg.init_batch].sort().values
    was_training = model.training
    with torch.no_grad():
        x, _ = make_batch(data, rows, train=False)
        fn(x.float())
    model.train(was_training)
    return time.perf_counter() - t0


def compile_mode(cfg: LabConfig) -> str:
    """The ``--compile`` mode this process can run: ``"off"`` where inductor has no C++ compiler."""
    return "off" if cfg.compile == "off" or compiler_missing() is not None else cfg.compile


def set_forwards(run: _ArmRun, failed: Optional[dict] = None) -> None:
    """The arm's training and eval forwards; ``failed`` (a checkpoint's ``compile_failed``): the forwards whose
    compilation failed before, which stay eager on resume as they did in the uninterrupted run."""
    failed = failed or {}
    mode = compile_mode(run.cfg)
    if run.cfg.compile != "off" and mode == "off":
        run.compile_notes.append(f"--compile {run.cfg.compile}: not compiled, {compiler_missing()}; eager forwards")
    # under torchrun the training forward stays eager (DDP's hooks; not measured here)
    train_compiled = mode in ("train", "all") and not run.info.distributed
    run.forward = _Forward(run.net, run.cfg, train_compiled, "training", failed=failed.get("train"),
                           on_fail=run.compile_notes.append)
    eval_forward(run.model, run.cfg, failed=failed.get("eval"), on_fail=run.compile_notes.append)


def _compile_failed(run: _ArmRun) -> dict:
    return {"train": run.forward.failed, "eval": eval_forward(run.model, run.cfg).failed}


def _carry_notes(ck: dict, notes: list, here: dict, who: str, epochs: int, say) -> None:
    """Keep the checkpoint's notes, and note a resume on another thread count or device (no bit-exactness then)."""
    for note in ck.get("notes", []):
        if note not in notes:
            notes.append(note)
    start = ck["epoch"]
    for key, now in here.items():
        if key in ck and ck[key] != now and not (ck["done"] or start >= epochs):
            note = (f"{who}: resumed after epoch {start} with {key} {now!r} instead of {ck[key]!r}; "
                    f"the result need not be bit-identical to an uninterrupted run")
            notes.append(note)
            if say is not None:
                say(f"mixlab: note: {note}")


def _restore(run: _ArmRun, ck: dict, ckpt_path: Path) -> None:
    """Weights, optimiser, schedule and this rank's random streams from an adopted checkpoint."""
    rng_key = "rng_ranks" if run.info.distributed else "rng"
    if rng_key not in ck:
        raise CheckpointError(ckpt_path, f"lacks the entry {rng_key!r} (not a complete mixlab checkpoint)")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    if run.ema is not None:
        _restore_average(run, ck, ckpt_path)
    _restore_rng(run.gens, ck["rng_ranks"][run.info.rank] if run.info.distributed else ck["rng"])
    state = ck.get("mixer")
    if state is not None and callable(getattr(run.mixer, "load_state_dict", None)):
        try:
            run.mixer.load_state_dict(state)
        except (TypeError, ValueError) as e:
            raise CheckpointError(ckpt_path, f"holds a mixer state its mixer refuses: {e}") from None


def _restore_average(run: _ArmRun, ck: dict, ckpt_path: Path) -> None:
    """``--ema``: the average from an adopted checkpoint."""
    if not isinstance(ck.get("ema"), dict):
        raise CheckpointError(ckpt_path, "lacks the entry 'ema' (the weight average of an --ema run)")
    try:
        run.ema.load_state_dict(ck["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(ckpt_path, f"holds a weight average the model refuses: {e}") from None


def _mixer_state(run: _ArmRun):
    """The mixer's own state where it keeps one across steps (RecursiveMix's history), for a bit-for-bit resume.

    Single-process runs only: under torchrun each rank's mixer keeps its own history, which this rank-0 checkpoint
    does not hold, so a resumed distributed run restarts the history (said in a note at resume)."""
    fn = getattr(run.mixer, "state_dict", None)
    if not callable(fn) or run.info.distributed:
        return None
    return fn()


def _train_steps(run: _ArmRun, epoch: int, label: str, bars: bool, clock: Optional[dict] = None) -> float:
    """One epoch's optimiser steps; the mean training loss over every rank's rows (``clock["rows"]``: their count).

    ``clock`` (a dict) gets ``"mix_s"``: this rank's seconds in the mixer calls (for PuzzleMix with its
    saliency's forward and backward), timed on the host, synchronised on CUDA."""
    cfg, data = run.cfg, run.data
    run.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    batches = epoch_batches(run.n, cfg.batch_size, epoch, run.gens["shuffle"], rank=run.info.rank,
                            world_size=run.info.world_size)
    if run.mixer is not None:  # a pure function of the epoch: a resumed run switches off at the same epoch
        apply_schedule(run.mixer, epoch, stop_epoch=cfg.mix_stop_epoch)
    for idx in _progress(batches, label, bars):
        x, y = make_batch(data, idx, train=True, augment=run.aug, generator=run.gens["augment"], epoch=epoch,
                          flip_bits=run.flip_bits)
        target = None
        if run.mixer is not None:
            t_mix = _synced(run.device)
            x, target = run.mixer(x, y)
            if clock is not None:
                clock["mix_s"] = clock.get("mix_s", 0.0) + _synced(run.device) - t_mix
        loss = _loss(cfg, run.forward(x).float(), y, target, data.num_classes)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        if run.ema is not None:
            run.ema.update(run.model)
        loss_sum += loss.detach().double() * idx.numel()
        seen += idx.numel()
    if run.info.distributed:  # one BatchNorm state on every rank; the loss summed over all ranks' rows
        dist.sync_buffers(run.model)
        if run.ema is not None:
            run.ema.sync()
        loss_sum, seen = (t.item() for t in dist.all_reduce_sum((loss_sum, torch.tensor(seen))))
    if seen == 0:  # no optimiser step: never report a loss of 0.0 for an epoch that did not train
        raise ValueError(_no_step_message(cfg, run.n, run.n_local, run.info.world_size))
    if clock is not None:
        clock["rows"] = int(seen)
    return float(loss_sum) / seen  # the same on every rank: all stop together


def _synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _run_epoch(run: _ArmRun, epoch: int, *, seed: int, arm: str, bars: bool) -> tuple[dict, dict, dict]:
    """Train and evaluate one epoch; returns its record, the streams' states and the checkpoint's DDP entries.

    With ``--eval-every K`` an epoch that is neither a multiple of K nor the last is not evaluated: its record has
    no test metrics, and ``test_rows`` 0. With ``--ema`` the evaluation scores the averaged weights."""
    cfg, data = run.cfg, run.data
    t0 = time.perf_counter()
    clock: dict = {}
    train_loss = _train_steps(run, epoch, f"seed {seed} {arm} {epoch + 1}/{run.epochs}", bars, clock)
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training diverged at seed {seed}, arm {arm}, epoch {epoch + 1} "
                               f"(loss {train_loss}); lower --lr")
    if epoch == 0 and cfg.init_batch is not None:  # the data-based initialisation is part of the training time
        t0 -= run.init_time_s
    train_time = time.perf_counter() - t0
    last = epoch + 1 == run.epochs
    # speed (issue 21): images per second of training (every rank's rows) and of scoring (this process's);
    # *_per_s, like *time_s, differ between runs of the same computation
    record = {"seed": seed, "arm": arm, "epoch": epoch + 1, "train_loss": train_loss,
              "lr": run.opt.param_groups[0]["lr"], "train_time_s": train_time,
              "train_images_per_s": clock["rows"] / train_time if train_time > 0 else None}
    if not (last or (epoch + 1) % cfg.eval_every == 0):  # --eval-every: no test metrics, test_rows 0
        record.update(epoch_time_s=time.perf_counter() - t0, test_rows=0)
        return _finish_record(run, epoch, record, train_time, clock)
    rows = None if last else run.eval_rows  # the last epoch (the run's result) on the whole test set
    t_eval = time.perf_counter()
    with averaged_weights(run.model, run.ema):
        ev = evaluate(run.model, cfg, data, rows)
    eval_time = time.perf_counter() - t_eval
    if ev["nonfinite"]:  # the last steps made the weights non-finite; reduced over ranks like the rest
        raise TrainingDiverged(f"training diverged at seed {seed}, arm {arm}, epoch {epoch + 1} (non-finite "
                               f"outputs on {ev['nonfinite']} of {data.y_test.numel()} test rows); lower --lr")
    record.update(test_acc=ev["acc"], test_nll=ev["nll"], test_ece=ev["ece"],
                  epoch_time_s=time.perf_counter() - t0, ece_bins=ev["bins"], eval_time_s=eval_time,
                  eval_images_per_s=ev["rows"] / eval_time if eval_time > 0 else None)
    if rows is not None:
        record["test_rows"] = int(rows.numel())  # --eval-subset: scored on these many test images
    for k in ("train_clean_acc", "noisy_memorised"):
        if k in ev:
            record[k] = ev[k]
    return _finish_record(run, epoch, record, train_time, clock)


def _finish_record(run: _ArmRun, epoch: int, record: dict, train_time: float,
                   clock: dict) -> tuple[dict, dict, dict]:
    if epoch == 0 and run.cfg.init_batch is not None:
        record["init_time_s"] = run.init_time_s  # included in train_time_s
    if "mix_s" in clock:  # mixer calls (saliency included), their share of the steps; *time_s: a timing
        record["mix_time_s"] = clock["mix_s"]
        record["mix_share_of_train_time_s"] = clock["mix_s"] / train_time if train_time > 0 else None
    rng = _rng_states(run.gens)
    extra = {}
    if run.info.distributed:  # every rank's streams go into rank 0's checkpoint; weights must agree
        extra = {"world_size": run.info.world_size, "rng_ranks": dist.all_gather_object(rng)}
        record["weights_sha256_ranks"] = dist.all_gather_object(weights_sha256(run.model))
        if len(set(record["weights_sha256_ranks"])) != 1:
            raise RuntimeError(f"ranks hold different weights after epoch {epoch + 1}: "
                               f"{record['weights_sha256_ranks']}")
    return record, rng, extra
