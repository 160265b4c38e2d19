"""RecursiveMix (Yang, Li, Li, Yang, Yang 2022, "RecursiveMix: Mixed Learning with History", NeurIPS; official code
implus/RecursiveMix-pytorch, ``recursive_mix`` in ``utils.py`` and the training loop in ``main.py``): paste the previous
*mixed* batch, resized, into a random box of the current one; the labels are weighted recursively, so the label of
the pasted region is the previous batch's mixed label.

Convention: ``lam`` weights the original (current) row: the exact share outside the box.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from .. import _fast
from .. import _validate as V
from ..mixer import Mixer, _OWN
from ..params import MixParams
from ..registry import register
from ..sampling import rng
from ..targets import MixedTarget
from .resizemix import INTERPOLATIONS, ResizedBox

__all__ = ["RecursiveMix", "HistoryBox", "draw_box", "box_from_draws", "FIRST_STEPS"]

FIRST_STEPS = ("self", "skip")


def draw_box(n: int, shape, max_area: float, g, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of the official ``rand_bbox``: ``u ~ U(0, max_area)`` (the box's share of the image before
    clipping) ``(n,)`` and its centre ``(n, 2)``, uniform over the ``(H, W)`` positions (``(cy, cx)``)."""
    u = torch.rand(n, device=device, **rng(g)) * max_area  # (n,)
    sizes = _fast.consts(shape, device=device, dtype=torch.float32)  # no host-to-device copy
    centre = torch.floor(torch.rand(n, 2, device=device, **rng(g)) * sizes).long()
    return u, torch.minimum(centre, sizes.long() - 1)


def box_from_draws(u: torch.Tensor, centre: torch.Tensor, shape) -> torch.Tensor:
    """The official box: sides ``int(S * sqrt(u))``, ends ``centre -+ side // 2`` clipped to the image.

    Returns:
        int64 ``(n, 2, 2)``: ``[lo, hi)`` over ``(H, W)``.
    """
    sizes = _fast.consts(shape, device=u.device, dtype=torch.float64)
    cut = torch.floor(sizes[None, :] * torch.sqrt(u.to(torch.float64))[:, None]).long()  # (n, 2), float64 as numpy
    limit = sizes.long()[None, :]
    lo = torch.minimum((centre - cut // 2).clamp(min=0), limit)
    hi = torch.minimum((centre + cut // 2).clamp(min=0), limit)
    return torch.stack([lo, hi], dim=2)


@dataclasses.dataclass(frozen=True, eq=False)
class HistoryBox(ResizedBox):
    """A box into which the *history* (the previous mixed batch), resized, is pasted: row ``i`` receives
    ``history[index[i]]``. The partner batch handed to :meth:`apply` is ignored: the content comes from the
    history, which has the input's trailing shape. Bilinear resizing is the official's
    (``F.interpolate(mode="bilinear", align_corners=True)``); integer leaves use nearest neighbour.
    Integer maps are not pasted (``pasteable`` is False): no history of them is kept."""

    history: Optional[torch.Tensor] = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.history, torch.Tensor):
            raise TypeError(f"HistoryBox.history must be the previous batch (a tensor), got {V.describe(self.history)}")

    @property
    def pasteable(self) -> bool:
        return False

    def _check(self, x):
        if tuple(x.shape[1:]) != tuple(self.history.shape[1:]):
            raise ValueError(f"RecursiveMix keeps the history of its input alone (rows of shape "
                             f"{tuple(self.history.shape[1:])}); a batch leaf of shape {tuple(x.shape)} lies under its "
                             "box with no history: pass it with roles={key: 'keep'} or as the target")

    def partner(self, src, index):
        self._check(src)
        return super().partner(self.history.to(src.device), index)

    def _bilinear(self, xp):  # align_corners=True, as the official F.interpolate call
        B, _, H, W = xp.shape
        lo = self.box[..., 0].to(torch.float32)
        size = (self.box[..., 1] - self.box[..., 0]).to(torch.float32)
        coords = []
        for d, S in enumerate((H, W)):
            o = torch.arange(S, device=xp.device, dtype=torch.float32)[None] - lo[:, d:d + 1]  # (B, S)
            den = (size[:, d:d + 1] - 1).clamp(min=1)
            coords.append(torch.where(size[:, d:d + 1] > 1, 2 * o / den - 1, torch.full_like(o, -1.0)))
        ys, xs = coords
        grid = torch.stack([xs[:, None, :].expand(B, H, W), ys[:, :, None].expand(B, H, W)], dim=-1)
        return F.grid_sample(xp, grid.to(xp.dtype), mode="bilinear", padding_mode="border", align_corners=True)

    def _resized(self, rows, sizes):
        if self.interpolation == "bilinear" and rows.is_floating_point() and rows.ndim == 4:
            return F.interpolate(rows, size=tuple(sizes), mode="bilinear", align_corners=True)
        return super()._resized(rows, sizes)

    def rows(self, sl):
        return HistoryBox(self.box[sl].contiguous(), self.shape, interpolation=self.interpolation,
                          history=self.history)  # index keeps pointing into the whole history

    def to(self, device):
        return HistoryBox(self.box.to(device), self.shape, interpolation=self.interpolation,
                          history=self.history.to(device))

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        self._check(x)
        region = self
        if self.interpolation == "bilinear" and not x.is_floating_point():
            region = dataclasses.replace(self, interpolation="nearest")  # integer images: values stay exact
        history = self.history.to(device=x.device)
        return ResizedBox.apply(region, x, history, lam, index, fast=fast, inplace=inplace)


@register("recursivemix", inputs=("images",), needs=("labels",),
          when="Long image-classification runs: the previous batch as history; above CutMix on CIFAR and ImageNet.")
class RecursiveMix(Mixer):
    """RecursiveMix (Yang et al. 2022): paste the previous mixed batch, resized, into a box; labels weighted recursively.

    Step ``t`` pastes row ``i`` of the previous step's *mixed* batch, resized to the box, into row ``i`` of the
    current batch, and its target is ``lam * onehot(y_t) + (1 - lam) * target_{t-1}``: the pasted region carries
    the previous mixed label, so the target holds every earlier batch with geometrically decaying weight (rows
    sum to 1). The box is the official ``rand_bbox``: share ``u ~ U(0, max_area)`` before clipping, sides
    ``int(S * sqrt(u))``, centre uniform, clipped to the image; ``lam = 1 - box area / (H * W)`` exactly.

    State: the previous mixed batch and its soft labels (unsmoothed; ``label_smoothing`` is applied to the
    target, which equals the official's recursion of smoothed rows). A batch with more rows than the history
    mixes its extra rows as on a first step; a batch of another image size is refused (call :meth:`reset`).
    ``enabled=False`` leaves the history as it is.

    - First step (no history): ``first_step="self"`` (default) takes the batch as its own history (a resized
      copy of each image pasted into its box; labels unchanged), so every call mixes as the method contract
      expects; ``"skip"`` is the official: the first step is not mixed.
    - Epochs: the official restarts the history at every epoch (``old_inputs = None``); call :meth:`reset` at
      the start of an epoch for that, or keep one history across epochs (the default).
    - DataLoader workers (``MixCollate`` or the transform in a ``collate_fn``): each worker process holds its own
      copy of the mixer, so it pastes the previous batch *it* produced; the main process's state does not see
      the workers' batches, and workers that are restarted (every epoch unless ``persistent_workers=True``)
      start again from the main process's state (empty, unless the mixer was used there).
    - Resume: :meth:`state_dict` / :meth:`load_state_dict` carry the history (with the generator's state the
      draws repeat exactly). Histories held by DataLoader workers are not in the main process's state: after a
      resume each worker starts with a first step.
    - The target: the labels of earlier batches are not among ``y``, so the target is built by
      :meth:`target` (what ``mixer(x, y)``, ``MixCollate``, Lightning's and Keras's integrations call). An
      integration that rebuilds the target from ``y`` and :meth:`target_params` (fastai's ``MixCallback``,
      ``mixup_for_trainer``, ``GlobalMixer``) raises ``RuntimeError`` as soon as a history batch contributes.
    - Only the input leaf has a history; integer maps under the box are refused (``roles=``).

    Not ported: the official's ROI-aligned consistency loss (``loss_roi``: a KL term between the pasted region's
    pooled features and the previous step's predictions) needs the model's features and a model change; the
    labels here are the paper's recursive targets alone.

    Args:
        max_area: upper end of ``u``, the box's share before clipping (official ``--aug_alpha``, default 0.5).
        interpolation: ``"nearest"`` (official default, exact for any dtype) or ``"bilinear"`` (the official's
            ``align_corners=True``; integer images use nearest).
        first_step: ``"self"`` or ``"skip"`` (see above).
        mode: ``"batch"`` (one box for the batch, the official) or ``"sample"`` (one per row).
        Shared options: see :class:`mixlab.Mixer` (no ``pairing``: row ``i`` always takes history row ``i``;
            ``num_classes`` is needed with integer class labels, since the history is soft rows).

    Reference: Yang et al., "RecursiveMix: Mixed Learning with History", NeurIPS 2022; code
    implus/RecursiveMix-pytorch. Convention: ``lam`` weights the current row.
    """

    modes = ("batch", "sample")
    unsupported = ("pairing",)

    def __init__(self, *, max_area=0.5, interpolation="nearest", first_step="self", **common):
        super().__init__(**common)
        self.max_area = V.real(max_area, "max_area", minimum=0.0, maximum=1.0)
        self.interpolation = V.choice(interpolation, "interpolation", INTERPOLATIONS)
        self.first_step = V.choice(first_step, "first_step", FIRST_STEPS)
        self._state = {"inputs": None, "soft_labels": None, "pending": None}

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The history: ``{"inputs": previous mixed batch or None, "soft_labels": its (B, C) soft rows or None}``."""
        return {"inputs": self._state["inputs"], "soft_labels": self._state["soft_labels"]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        ok = isinstance(state, dict) and set(state) == {"inputs", "soft_labels"}
        x, y = (state.get("inputs"), state.get("soft_labels")) if ok else (None, None)
        ok = ok and ((x is None and y is None) or (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                                                   and x.ndim == 4 and y.ndim == 2 and x.shape[0] == y.shape[0]))
        if not ok:
            raise ValueError("RecursiveMix.load_state_dict takes what state_dict() returned: {'inputs': (B, C, H, W) "
                             "tensor or None, 'soft_labels': (B, classes) tensor or None}")
        self._state.update(inputs=x, soft_labels=y, pending=None)

    def reset(self) -> None:
        """Forget the history: the next call is a first step (the official does this at every epoch)."""
        self._state.update(inputs=None, soft_labels=None, pending=None)

    # -- hooks ----------------------------------------------------------------------------------
    def draw_pairs(self, B, y, g, device) -> MixParams:
        n = self.distinct(B)
        if self.p < 1:
            active = torch.rand(n, device=device, **rng(g)) < self.p
        else:
            active = torch.ones(n, dtype=torch.bool, device=device)
        lam = torch.where(active, 0.0, 1.0).to(torch.float32)
        return MixParams(lam.expand(B).contiguous() if n != B else lam, torch.arange(B, device=device))

    def _soft(self, y, B, device) -> torch.Tensor:
        if y is None:
            raise ValueError("RecursiveMix needs the labels with every batch: its target mixes them with the previous "
                             "batch's (call t(x, y), or give a batch with its labels)")
        if isinstance(y, torch.Tensor) and y.dtype.is_floating_point and y.ndim == 2:
            return y.to(device=device, dtype=torch.float32)
        if isinstance(y, torch.Tensor) and not y.dtype.is_floating_point and y.dtype != torch.bool and y.ndim == 1:
            if self.num_classes is None:
                raise ValueError("RecursiveMix keeps the previous batch's soft labels (B, C): pass num_classes= "
                                 "with integer class labels")
            return F.one_hot(y.to(device).long(), self.num_classes).to(torch.float32)
        raise ValueError(f"RecursiveMix takes class labels (B,) or soft label rows (B, C), got {V.describe(y)}")

    def _history(self, leaf, soft):
        B = leaf.shape[0]
        hx, hy = self._state["inputs"], self._state["soft_labels"]
        none = torch.zeros(B, dtype=torch.bool, device=leaf.device)
        if hx is None:
            return leaf.clone(), soft, none, True
        if tuple(hx.shape[1:]) != tuple(leaf.shape[1:]) or hy.shape[1:] != soft.shape[1:]:
            raise ValueError(f"RecursiveMix: this batch's rows {tuple(leaf.shape[1:])} with {soft.shape[1]} classes "
                             f"differ from the history's {tuple(hx.shape[1:])} with {hy.shape[1]}; call reset() when "
                             "the input size or the classes change")
        hx, hy = hx.to(device=leaf.device, dtype=leaf.dtype), hy.to(soft.device)
        n = hx.shape[0]
        if n >= B:
            return hx[:B], hy[:B], ~none, B == 0
        has = torch.arange(B, device=leaf.device) < n
        return torch.cat([hx, leaf[n:]]), torch.cat([hy, soft[n:]]), has, n == 0

    def draw(self, leaf, lam, index, g, *, y=None):
        if leaf.ndim != 4:
            raise ValueError(f"RecursiveMix pastes into images (B, C, H, W), got shape {tuple(leaf.shape)}")
        B, device, shape = leaf.shape[0], leaf.device, tuple(leaf.shape[-2:])
        soft = self._soft(y, B, device)  # (B, C)
        n = self.distinct(B)
        u, centre = draw_box(n, shape, self.max_area, g, device)  # one draw per call, with or without history
        box = box_from_draws(u, centre, shape)  # (n, 2, 2)
        box = box.expand(B, -1, -1).contiguous() if n != B else box
        hist_x, hist_y, has, own = self._history(leaf, soft)
        use = lam < 1 if self.first_step == "self" else (lam < 1) & has
        box = torch.where(use[:, None, None], box, torch.zeros_like(box))  # (B, 2, 2): rows left alone get no box
        region = HistoryBox(box, shape, interpolation=self.interpolation, history=hist_x)
        kept = region.lam  # (B,)
        with torch.no_grad():  # the batch the model will see, kept as the next step's history
            mixed = region.apply(leaf, leaf, kept, torch.arange(B, device=device))
        mixed = leaf.clone() if mixed is leaf else mixed.detach()
        w = kept[:, None]
        self._state.update(inputs=mixed, soft_labels=w * soft + (1 - w) * hist_y, pending=(region, soft, hist_y, own))
        return region

    def target(self, y, params: MixParams, *, partner=None, num_classes=_OWN, label_smoothing=_OWN) -> MixedTarget:
        """The recursive target of the latest call: ``lam * y + (1 - lam) * previous target`` (see the class).
        ``num_classes`` / ``label_smoothing`` override the mixer's own (as :meth:`Mixer.target`)."""
        region = params.region
        if not isinstance(region, HistoryBox):  # enabled=False: nothing mixed, nothing from the history
            return super().target(y, params, partner=partner, num_classes=num_classes,
                                  label_smoothing=label_smoothing)
        pending = self._state["pending"]
        if pending is None or pending[0] is not region:
            raise ValueError("RecursiveMix.target takes the params of the mixer's latest call (sample or mixer(x, y)); "
                             "its label history has moved on since these params were drawn")
        if partner is not None:
            raise TypeError("RecursiveMix's partner labels are the previous batch's, which it keeps: no partner=")
        _, soft, hist_y, _ = pending
        own = MixParams(params.lam, torch.arange(params.batch_size, device=params.lam.device), region)
        return MixedTarget(soft, own, partner=hist_y, num_classes=self.num_classes if num_classes is _OWN else num_classes,
                           label_smoothing=self.label_smoothing if label_smoothing is _OWN else label_smoothing)

    def target_params(self, params: MixParams, y) -> MixParams:
        pending = self._state["pending"]
        if isinstance(params.region, HistoryBox) and not (pending is not None and pending[0] is params.region
                                                          and pending[3]):
            raise RuntimeError("RecursiveMix's target mixes in the previous batches' labels, which y does not hold: "
                               "build it with mixer.target(y, params) (what mixer(x, y), MixCollate, Lightning and "
                               "Keras do); an integration that rebuilds it from y alone cannot carry the history")
        return params  # no history yet: the pasted copy is the row itself, its label y
