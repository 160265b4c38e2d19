"""AutoMix (Liu et al., ECCV 2022, "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers",
arXiv:2103.13027): a learned Mix Block, trained beside the classifier, that makes a per-pixel mixing mask.

Written from OpenMixup (Westlake-AI/openmixup): ``openmixup/models/heads/pmix_block.py`` (``PixelMixBlock``,
``mask_loss``), ``openmixup/models/classifiers/automix.py`` (``AutoMixup``: ``pixel_mixup``, ``forward_k``,
``momentum_update``) and ``openmixup/core/hooks/momentum_hook.py`` (``CosineScheduleHook``).

One training step (what :meth:`AutoMix.__call__` does, as ``AutoMixup.forward_train``):

1. draw ``lam_mb, lam_bb ~ Beta(alpha, alpha)`` and two random permutations ``index_mb``, ``index_bb``;
2. the momentum (EMA) copy of the classifier computes the feature map of ``x`` at ``feature_layer``;
3. the Mix Block turns it into a mask for ``(lam_mb, index_mb)`` (with gradient: the block's own training) and
   one for ``(lam_bb, index_bb)`` (detached: the classifier's batch);
4. the block's loss: the mixed-label cross-entropy of the *momentum* copy on the ``mb`` mixed batch (gradient
   reaches the block through the mask; the copy's parameters are frozen) plus ``mask_loss *`` the block's
   mask loss;
5. the classifier's batch is the ``bb`` mixed batch, with its :class:`~mixlab.MixedTarget`.

The loop then adds the two losses, steps its optimiser (over the classifier's and the block's parameters) and
calls :meth:`AutoMix.step`, which applies the EMA (OpenMixup's ``after_train_iter``) and moves the momentum to
the next step's value (``before_train_iter``)::

    automix = AutoMix(net, "layer2", PixelMixBlock(128), total_steps=epochs * len(loader))
    opt = torch.optim.SGD([{"params": net.parameters()},
                           {"params": automix.mix_block.parameters(), "lr": 0.05}], lr=0.1, momentum=0.9)
    for x, y in loader:
        out = automix(x, y)
        loss = out.target.loss(F.cross_entropy, net(out.inputs)) + out.mix_block_loss
        opt.zero_grad(); loss.backward(); opt.step()
        automix.step()

Why this is not a registered :class:`~mixlab.Mixer`: a Mixer is built from options alone (the lab, the
conformance matrix and every integration build it that way), draws its region from the batch and a generator,
runs in DataLoader workers, compiles, and mixes uint8 and integer maps. AutoMix's mask needs the model being
trained (its momentum copy's feature map) and a block whose parameters the training loop optimises with a loss
this object returns; in a worker or a collate it would run a stale copy of both and its loss could not reach the
optimiser. A wrapper whose ``draw`` returned the block's mask as a ``Mask`` region would check nothing beyond
the soft ``Mask`` region the matrix already covers (SmoothMix); so the classifier's batch here is mixed by
:func:`mixlab.mix` under a :class:`~mixlab.regions.Mask` region, the same path, and ``lam`` is that region's.

Convention: ``lam`` weights the original row. The block's mask has two channels as OpenMixup's: channel 0 the
original's share per pixel, channel 1 the partner's; ``mixed = m0 * x + m1 * x[index]``. The classifier's target
``lam`` is the mean of channel 0 per row (the share actually kept), where OpenMixup weights the labels with the
sampled ``lam_bb`` (which the mask loss keeps within ``mask_loss_margin`` of the batch's mean mask).

OpenMixup defaults followed (its AutoMix configs, e.g. ``configs/classification/cifar100/automix/basic/
r18_l2_a2_near_L1_01_mlr5e_2.py``; the ImageNet ones set ``lam_concat=True``): ``alpha=2.0``, ``momentum=0.999``
cosine-scheduled to ``end_momentum=0.999999`` over ``adjust_scope=(0.1, 1.0)`` of training with a constant warm-up,
``mask_loss=0.1``, ``lam_margin=0.08``, the block's ``reduction=2``, ``use_scale=True``, nearest upsampling,
``mask_loss_mode="L1"``, ``mask_loss_margin=0.1``, normal(0, 0.01) initialisation with zero biases; the EMA covers
parameters only (buffers such as BatchNorm statistics of the copy come from its own forwards, in the classifier's
train/eval mode, as OpenMixup's ``backbone_k`` runs inside the model).

Left out (OpenMixup options outside AutoMix's default path): SAMix's eta-balanced mixup loss (``ClsMixupHead``'s
``eta_weight``) and its non-linear value neck (``value_neck_cfg``), ``lam_mul_k`` (a random rescale of lam),
norm/activation after q and k (``att_norm_cfg``, ``att_act_cfg``), a list of upsampling modes drawn at random and
``mask_up_override``, ``mask_adjust`` (default 0), ``switch_off``, the pre-Mix-Block heads (``pre_one_loss``,
``pre_mix_loss``), ``head_one_mix``, a separately pre-trained ``backbone_k`` (``momentum >= 1``), the cosine decay of
the ``mask_loss`` weight (``CustomCosineAnnealingHook``, in some configs), the FP16 overflow handling, and the
separate one-hot head: OpenMixup trains a second head (``head_one_q``, weight 1) on the clean batch; add
``F.cross_entropy(net(x), y)`` in the loop for it. Here the classifier is one module whose copy is the momentum
encoder (OpenMixup's ``backbone_k`` plus ``head_mix_k``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .ops import mix
from .pairing import partner_index
from .params import MixParams
from .regions import Mask
from .sampling import sample_beta
from .targets import MixedTarget

__all__ = ["PixelMixBlock", "AutoMix", "AutoMixOutput", "momentum_at", "MASK_LOSS_MODES", "UPSAMPLING"]

MASK_LOSS_MODES = ("L1", "Sparsity", "L1+Variance", "L2+Variance")
UPSAMPLING = ("nearest", "bilinear", "bicubic")


class PixelMixBlock(nn.Module):
    """OpenMixup's pixel-wise Mix Block: a per-pixel mixing mask from the feature maps of two samples.

    With ``x_a = feat`` and ``x_b = feat[index]`` (``(B, C, h, w)``, lam optionally embedded), the value
    ``v = conv1x1(x_b)`` ``(B, h*w, 1)``, the query ``q = conv1x1(x_a)`` and key ``k = conv1x1(x_b)`` (the same
    convolution unless ``x_qk_concat``) give ``P = softmax(q k^T / sqrt(C'))`` ``(B, h*w, h*w)`` and the partner's
    mask logits ``P v``, upsampled to the image and passed through a sigmoid.

    Args:
        in_channels: channels ``C`` of the feature map.
        reduction: ``C' = max(C // reduction, 1)`` channels of q and k (OpenMixup: 2).
        use_scale: divide ``q k^T`` by ``sqrt(C')`` (OpenMixup: True).
        upsampling: ``"nearest"`` (OpenMixup's AutoMix configs), ``"bilinear"`` (its constructor's default) or
            ``"bicubic"``: how the mask logits reach the image size.
        lam_concat: lam as an extra channel of q, k and v (``lam`` for the original, ``1 - lam`` for the
            partner; AutoMix's ImageNet configs).
        lam_concat_v: lam as an extra channel of v only (``1 - lam``).
        lam_mul: if > 0, scale the features by lam: ``x_a * lam``, ``x_b * (1 - lam)``, or with ``lam_residual``
            ``x_a * (1 + lam * lam_mul)``, ``x_b * (1 + (1 - lam) * lam_mul)`` (SAMix's lam embedding).
        x_qk_concat: q and k (separate convolutions) both read ``cat(x_a, x_b)`` (SAMix).
        x_v_concat: v reads ``cat(x_a, x_b)`` (SAMix).
        mask_loss_mode: ``"L1"`` (AutoMix), ``"Sparsity"``, ``"L1+Variance"``, ``"L2+Variance"``.
        mask_loss_margin: the loss is zero while the kept share is within this of lam (AutoMix configs: 0.1).
        init_std: standard deviation of the normal initialisation of the convolutions (biases 0; OpenMixup 0.01).

    Shapes: :meth:`forward` returns ``(B, 2, H, W)``: channel 0 the original's share per pixel, channel 1 the
    partner's (``mixed = m0 * x + m1 * x[index]``), as OpenMixup's ``mask``.
    """

    def __init__(self, in_channels: int, *, reduction: int = 2, use_scale: bool = True, upsampling: str = "nearest",
                 lam_concat: bool = False, lam_concat_v: bool = False, lam_mul: float = 0.0,
                 lam_residual: bool = False, x_qk_concat: bool = False, x_v_concat: bool = False,
                 mask_loss_mode: str = "L1", mask_loss_margin: float = 0.1, init_std: float = 0.01):
        super().__init__()
        self.in_channels = V.integer(in_channels, "in_channels", minimum=1)
        self.reduction = V.integer(reduction, "reduction", minimum=1)
        self.inter_channels = max(self.in_channels // self.reduction, 1)
        self.use_scale = bool(use_scale)
        self.upsampling = V.choice(upsampling, "upsampling", UPSAMPLING)
        self.lam_concat, self.lam_concat_v = bool(lam_concat), bool(lam_concat_v)
        self.lam_mul = V.real(lam_mul, "lam_mul", minimum=0.0, maximum=1.0)
        self.lam_residual = bool(lam_residual)
        self.x_qk_concat, self.x_v_concat = bool(x_qk_concat), bool(x_v_concat)
        self.mask_loss_mode = V.choice(mask_loss_mode, "mask_loss_mode", MASK_LOSS_MODES)
        self.mask_loss_margin = V.real(mask_loss_margin, "mask_loss_margin", minimum=0.0)
        clash = [(self.lam_concat and self.lam_concat_v, "lam_concat and lam_concat_v (lam goes in q, k, v or v)"),
                 (self.lam_concat and self.lam_mul > 0, "lam_concat and lam_mul (both embed lam in q, k, v)"),
                 (self.lam_concat and (self.x_qk_concat or self.x_v_concat), "lam_concat and x_qk/x_v_concat"),
                 (self.lam_concat_v and self.x_v_concat, "lam_concat_v and x_v_concat (both set v's input)")]
        for bad, what in clash:
            if bad:
                raise ValueError(f"PixelMixBlock: choose one of {what}, as OpenMixup requires")
        C = self.in_channels
        qk_in = 2 * C if self.x_qk_concat else C + int(self.lam_concat)
        v_in = 2 * C if self.x_v_concat else C + int(self.lam_concat or self.lam_concat_v)
        self.value = nn.Conv2d(v_in, 1, 1)
        self.query = nn.Conv2d(qk_in, self.inter_channels, 1)
        self.key = nn.Conv2d(qk_in, self.inter_channels, 1) if self.x_qk_concat else None
        std = V.real(init_std, "init_std", minimum=0.0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)

    def forward(self, feat: torch.Tensor, lam, index: torch.Tensor, size, *, mode: Optional[str] = None
                ) -> torch.Tensor:
        """The mask ``(B, 2, *size)`` mixing each row with ``index``'s rows at original share ``lam``.

        Args:
            feat: feature map ``(B, C, h, w)`` of the batch.
            lam: the original's share for the whole batch (a float or 0-dim tensor), as OpenMixup's scalar lam.
            index: int64 ``(B,)`` partner rows.
            size: ``(H, W)`` of the images (OpenMixup's ``scale_factor`` times ``(h, w)``).
            mode: upsampling mode for this call (default: the block's ``upsampling``).
        """
        if feat.ndim != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f"PixelMixBlock({self.in_channels}) needs a feature map (B, {self.in_channels}, h, w), "
                             f"got shape {tuple(feat.shape)}: give the block the channels of the feature layer")
        n, _, h, w = feat.shape
        lam = float(lam)
        x_a, x_b = feat, feat[index]
        if self.lam_mul > 0:
            if self.lam_residual:
                x_a, x_b = x_a * (1 + lam * self.lam_mul), x_b * (1 + (1 - lam) * self.lam_mul)
            else:
                x_a, x_b = x_a * lam, x_b * (1 - lam)
        lam_block = feat.new_full((n, 1, h, w), lam)
        if self.lam_concat:
            x_a, x_b = torch.cat([x_a, lam_block], 1), torch.cat([x_b, 1 - lam_block], 1)
        v = torch.cat([x_a, x_b], 1) if self.x_v_concat else x_b
        if self.lam_concat_v:
            v = torch.cat([x_b, 1 - lam_block], 1)
        v = self.value(v).view(n, 1, -1).permute(0, 2, 1)  # (B, hw, 1): the partner's value
        if self.x_qk_concat:
            x_a = x_b = torch.cat([x_a, x_b], 1)
        q = self.query(x_a).view(n, self.inter_channels, -1).permute(0, 2, 1)  # (B, hw, C')
        k = (self.key or self.query)(x_b).view(n, self.inter_channels, -1)  # (B, C', hw)
        pair = torch.matmul(q.float(), k.float())  # (B, hw, hw), float32 as OpenMixup forces
        if self.use_scale:
            pair = pair / q.shape[-1] ** 0.5
        pair = pair.softmax(dim=-1)
        logits = torch.matmul(pair, v.float()).view(n, 1, h, w)  # the partner's mask logits
        logits = F.interpolate(logits, size=tuple(size), mode=mode or self.upsampling)
        partner = torch.sigmoid(logits)
        return torch.cat([1 - partner, partner], 1)  # (B, 2, H, W)

    def mask_loss(self, mask: torch.Tensor, lam) -> torch.Tensor:
        """OpenMixup's ``PixelMixBlock.mask_loss`` on a ``(B, 2, H, W)`` (or partner-only ``(B, 1, H, W)``) mask.

        ``L1``: ``max(|1 - mean(m1) - lam| - margin, 0)``, the batch's mean partner share ``mean(m1)``; the
        ``+Variance`` modes subtract twice the mask's variance; ``Sparsity`` is ``max(mean(m1 (1 - m1)) - margin, 0)``.
        """
        if mask.ndim != 4:
            raise ValueError(f"mask_loss takes a (B, 2, H, W) mask, got shape {tuple(mask.shape)}")
        n, k, h, w = mask.shape
        m = mask[:, 1:2] if k > 1 else mask  # the partner's share
        lam = float(lam)
        mean = m.sum() / (n * h * w)
        margin = self.mask_loss_margin
        if self.mask_loss_mode == "Sparsity":
            return torch.clamp((m * (m - 1)).abs().sum() / (n * h * w) - margin, min=0.0)
        if self.mask_loss_mode == "L2+Variance":
            fit = torch.clamp((1 - mean - lam) ** 2 - margin ** 2, min=0.0)
        else:
            fit = torch.clamp((1 - mean - lam).abs() - margin, min=0.0)
        if self.mask_loss_mode == "L1":
            return fit
        return fit - 2 * torch.clamp(((m - mean) ** 2).sum() / (n * h * w), min=0.0)


def momentum_at(step: int, total_steps: Optional[int], *, base: float = 0.999, end: float = 0.999999,
                adjust_scope=(0.1, 1.0), warmup: str = "constant") -> float:
    """The EMA momentum at ``step`` (0-based) by OpenMixup's ``CosineScheduleHook``.

    From ``min_iter = int(total_steps * adjust_scope[0])`` to ``max_iter = int(total_steps * adjust_scope[1])``:
    ``end - (end - base) * (cos(pi * step / max_iter) + 1) / 2``; before it ``base`` (``warmup="constant"``, the
    AutoMix configs) or a line from ``end`` to ``base`` (``"linear"``); after it, ``end``. ``total_steps=None``: a
    constant ``base`` (OpenMixup without the hook).
    """
    if total_steps is None:
        return float(base)
    lo, hi = adjust_scope
    max_iter = int(total_steps * hi) if hi < 1 else total_steps
    min_iter = int(total_steps * lo) if lo > 0 else 0
    if step > max_iter:
        step = max_iter  # the hook stops adjusting: the last value stays
    if step >= min_iter:
        return end - (end - base) * (math.cos(math.pi * step / float(max_iter)) + 1) / 2
    return float(base) if warmup == "constant" else end - (end - base) * ((min_iter - step) / min_iter)


@dataclasses.dataclass
class AutoMixOutput:
    """One AutoMix step.

    Attributes:
        inputs: the classifier's mixed batch ``(B, C, H, W)`` (no gradient to the block).
        target: its :class:`~mixlab.MixedTarget` (``lam`` per row = ``mask.mean``).
        params: the :class:`~mixlab.MixParams` it was mixed with (``index``; ``region`` a soft ``Mask``, or none
            when ``lam_margin`` fell back to mixup).
        mask: ``(B, 1, H, W)`` the original's share per pixel in ``inputs``.
        mix_block_loss: the block's loss (momentum copy's mixed cross-entropy + ``mask_loss`` weight x mask loss);
            add it to the classifier's loss, or back-propagate it alone.
        mask_loss: the weighted mask-loss term of ``mix_block_loss`` (detached, for logging).
        lam: the two draws ``(lam_mb, lam_bb)``.
    """

    inputs: torch.Tensor
    target: MixedTarget
    params: MixParams
    mask: torch.Tensor
    mix_block_loss: torch.Tensor
    mask_loss: torch.Tensor
    lam: tuple


class AutoMix:
    """The AutoMix training driver: momentum encoder, Mix Block, mixed batch and the block's loss per step.

    Args:
        model: the classifier being trained (images -> logits). It is not modified; a frozen deep copy is the
            momentum encoder (``momentum_encoder``), moved towards it by :meth:`step`.
        feature_layer: the submodule (or its dotted name) whose output ``(B, C, h, w)`` feeds the block
            (OpenMixup's ``mask_layer=2``: the output of a ResNet's third stage).
        mix_block: a :class:`PixelMixBlock` with ``in_channels = C``; the loop optimises its parameters.
        alpha: ``lam ~ Beta(alpha, alpha)`` (OpenMixup: 2.0).
        momentum, end_momentum, total_steps, adjust_scope, warmup: the EMA schedule (:func:`momentum_at`);
            without ``total_steps`` the momentum stays ``momentum``.
        mask_loss: weight of the block's mask loss (OpenMixup: 0.1).
        lam_margin: when ``lam_bb`` or ``1 - lam_bb`` is at most this, the classifier's batch is plain mixup
            with ``lam_bb`` (OpenMixup: 0.08).
        criterion: the classification loss ``criterion(logits, labels)`` of the block's mixed loss
            (default ``F.cross_entropy``, OpenMixup's).
        generator: random generator for the lam draws and permutations (on the batch's device).
        num_classes, label_smoothing: passed to the returned target.

    Convention: ``lam`` weights the original row (``mixed = m * x + (1 - m) * x[index]``, ``lam = mean(m)``).
    """

    def __init__(self, model: nn.Module, feature_layer, mix_block: PixelMixBlock, *, alpha: float = 2.0,
                 momentum: float = 0.999, end_momentum: float = 0.999999, total_steps: Optional[int] = None,
                 adjust_scope=(0.1, 1.0), warmup: str = "constant", mask_loss: float = 0.1, lam_margin: float = 0.08,
                 criterion: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
                 num_classes=None, label_smoothing: float = 0.0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {V.describe(model)}")
        if not isinstance(mix_block, PixelMixBlock):
            raise TypeError(f"mix_block must be a mixlab.automix.PixelMixBlock, got {V.describe(mix_block)}")
        self.model = model
        self.momentum_encoder = copy.deepcopy(model).requires_grad_(False)
        self.feature_layer = feature_layer
        self._feature_module = _submodule(self.momentum_encoder, model, feature_layer)
        self.mix_block = mix_block
        self.alpha = V.alpha(alpha, positive=True)
        self.base_momentum = V.real(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.end_momentum = V.real(end_momentum, "end_momentum", minimum=self.base_momentum, maximum=1.0)
        self.total_steps = None if total_steps is None else V.integer(total_steps, "total_steps", minimum=1)
        lo, hi = (V.real(s, "adjust_scope", minimum=0.0, maximum=1.0) for s in adjust_scope)
        if lo > hi:
            raise ValueError(f"adjust_scope must be (start, stop) with start <= stop, got {adjust_scope!r}")
        self.adjust_scope = (lo, hi)
        self.warmup = V.choice(warmup, "warmup", ("constant", "linear"))
        self.mask_loss = V.real(mask_loss, "mask_loss", minimum=0.0)
        self.lam_margin = V.real(lam_margin, "lam_margin", minimum=0.0, maximum=0.5)
        self.criterion = F.cross_entropy if criterion is None else criterion
        self.generator = V.generator(generator)
        self.num_classes = V.num_classes(num_classes)
        self.label_smoothing = V.smoothing(label_smoothing)
        self.steps = 0

    # -- momentum --------------------------------------------------------------------------------
    @property
    def momentum(self) -> float:
        """The EMA momentum of the current step (a pure function of :attr:`steps`)."""
        return momentum_at(self.steps, self.total_steps, base=self.base_momentum, end=self.end_momentum,
                           adjust_scope=self.adjust_scope, warmup=self.warmup)

    @torch.no_grad()
    def update_momentum(self) -> None:
        """OpenMixup's ``momentum_update``: ``k = k * m + q * (1 - m)`` for every parameter (buffers untouched)."""
        m = self.momentum
        for pk, pq in zip(self.momentum_encoder.parameters(), self.model.parameters()):
            pk.copy_(pk * m + pq.detach() * (1. - m))

    def step(self) -> None:
        """End of a training step: :meth:`update_momentum`, then advance the schedule by one step."""
        self.update_momentum()
        self.steps += 1

    # -- one step --------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        kept = {}
        handle = self._feature_module.register_forward_hook(lambda mod, args, out: kept.__setitem__("map", out))
        enc = self.momentum_encoder.train(self.model.training)
        try:
            with torch.no_grad():
                enc(x)
        finally:
            handle.remove()
        feat = kept.get("map")
        if not isinstance(feat, torch.Tensor) or feat.ndim != 4:
            raise ValueError(f"feature_layer {self.feature_layer!r} must output a (B, C, h, w) feature map, got "
                             f"{V.describe(feat)}")
        return feat

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> AutoMixOutput:
        """Mix a batch ``x`` ``(B, C, H, W)`` (floating) with labels ``y``; see the module docstring."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"AutoMix mixes floating images (B, C, H, W), got {V.describe(x)}")
        B, dev, size = x.shape[0], x.device, tuple(x.shape[-2:])
        lam_mb, lam_bb = sample_beta(2, self.alpha, generator=self.generator, device=dev).tolist()  # 0: mb, 1: bb
        index_mb = partner_index(B, "permutation", generator=self.generator, device=dev)
        index_bb = partner_index(B, "permutation", generator=self.generator, device=dev)
        x = x.detach()
        feat = self._features(x)

        # the block's training: the momentum copy's mixed loss on the mb mask, plus the mask loss
        mask_mb = self.mix_block(feat, lam_mb, index_mb, size)  # (B, 2, H, W)
        mixed_mb = (x * mask_mb[:, :1] + x[index_mb] * mask_mb[:, 1:]).to(x.dtype)
        logits_k = self.momentum_encoder(mixed_mb)
        cls_k = MixedTarget(y, MixParams(torch.full((B,), lam_mb, device=dev), index_mb)).loss(self.criterion,
                                                                                              logits_k)
        mask_loss = self.mask_loss * self.mix_block.mask_loss(mask_mb, lam_mb) if self.mask_loss > 0 else \
            cls_k.new_zeros(())
        block_loss = cls_k + mask_loss

        # the classifier's batch: the bb mask, detached (mixup when lam_bb is within lam_margin of 0 or 1)
        if self.lam_margin >= lam_bb or self.lam_margin >= 1 - lam_bb:
            params = MixParams(torch.full((B,), lam_bb, device=dev), index_bb)
            keep = torch.full((B, 1) + size, lam_bb, device=dev)
        else:
            with torch.no_grad():
                partner = self.mix_block(feat, lam_bb, index_bb, size)[:, 1]  # (B, H, W)
            region = Mask(partner)
            params = MixParams(region.lam, index_bb, region)
            keep = (1 - partner).unsqueeze(1)
        target = MixedTarget(y, params, num_classes=self.num_classes, label_smoothing=self.label_smoothing)
        return AutoMixOutput(mix(x, params), target, params, keep, block_loss, mask_loss.detach(), (lam_mb, lam_bb))

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"momentum_encoder", "mix_block", "steps"[, "generator"]}``: what a resumed run needs besides the
        classifier and the optimiser (the momentum is a function of ``steps``)."""
        state = {"momentum_encoder": self.momentum_encoder.state_dict(), "mix_block": self.mix_block.state_dict(),
                 "steps": self.steps}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (the generator's state when both have one)."""
        if not isinstance(state, dict) or not {"momentum_encoder", "mix_block", "steps"} <= set(state):
            raise ValueError("AutoMix.load_state_dict takes what state_dict() returned: a dict with 'momentum_encoder',"
                             " 'mix_block' and 'steps' (and 'generator' when the driver has one)")
        self.momentum_encoder.load_state_dict(state["momentum_encoder"])
        self.mix_block.load_state_dict(state["mix_block"])
        self.steps = V.integer(state["steps"], "steps", minimum=0)
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    def __repr__(self):
        return (f"AutoMix(feature_layer={self.feature_layer!r}, alpha={self.alpha}, momentum={self.momentum}, "
                f"steps={self.steps}, mask_loss={self.mask_loss}, lam_margin={self.lam_margin})")


def _submodule(copy_: nn.Module, model: nn.Module, layer) -> nn.Module:
    """The momentum copy's module that ``layer`` (a name, or a submodule of ``model``) names."""
    if isinstance(layer, nn.Module):
        name = next((n for n, m in model.named_modules() if m is layer), None)
        if name is None:
            raise ValueError(f"feature_layer: {type(layer).__name__} module is not a submodule of the model")
        layer = name
    if not isinstance(layer, str):
        raise TypeError(f"feature_layer must be a submodule or its dotted name, got {V.describe(layer)}")
    try:
        return copy_.get_submodule(layer)
    except AttributeError as e:
        raise ValueError(f"feature_layer: model has no submodule named {layer!r}") from e
