"""Feat-Mix and Hidden-Mix (Chen et al. 2023, "ExcelFormer: A Neural Network Surpassing GBDTs on Tabular
Data"; official code WhatAShot/ExcelFormer, ``lib/aug_utils.py``: ``batch_feat_shuffle`` and
``batch_dim_shuffle``, label weights in ``run_default_config_excel.py``).

- :class:`FeatMix`: each feature (a column of ``(B, F)`` rows, or a token of ``(B, F, d)`` feature
  embeddings) comes whole from the original or the partner; the label weight is the share of
  features kept, weighted by per-feature scores (the official: mutual information normalised to sum 1).
- :class:`HiddenMix`: each embedding dimension of ``(B, F, d)`` tokens comes from one row, the same
  dimensions for every token; the label weight is the drawn rate (the official) or the share kept.

Convention: ``lam`` weights the original row: the exact share of positions it keeps (the inputs');
the labels' weight is ``target.lam`` (the score-weighted share, or Hidden-Mix's drawn rate).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams
from ..regions import Mask
from ..registry import register
from ..sampling import rng

__all__ = ["FeatMix", "HiddenMix", "RatedMask"]


@dataclasses.dataclass(frozen=True, eq=False)
class RatedMask(Mask):
    """A binary :class:`~mixlab.regions.Mask` that also carries the labels' weight of the original, ``(B,)``."""

    rate: Optional[torch.Tensor] = None

    def rows(self, sl):
        return RatedMask(self.values[sl].contiguous(), self.rate[sl].contiguous())

    def to(self, device):
        return RatedMask(self.values.to(device), self.rate.to(device))


def _expanded(take: torch.Tensor, leaf: torch.Tensor, dim: int) -> torch.Tensor:
    """``take`` ``(n, S)`` over dim ``dim`` of ``leaf`` (1: features, -1: embedding dims), broadcast to its shape."""
    B = leaf.shape[0]
    if take.shape[0] != B:
        take = take.expand(B, -1)
    view = [B] + [1] * (leaf.ndim - 1)
    view[dim] = take.shape[1]
    return take.view(view).expand(leaf.shape)


@register("featmix", inputs=("vectors", "tokens"),
          when="Tabular data (columns or per-feature tokens): whole features mixed, labels by feature importance.")
class FeatMix(Mixer):
    """Feat-Mix (ExcelFormer, Chen et al. 2023): whole features from the partner, labels by feature score.

    Per row, ``rate ~ Beta(alpha, alpha)`` and each feature is taken from the partner when a uniform
    draw is at most ``rate`` (the official ``feat_masks = rand > rate`` marks the features kept);
    here ``lam = 1 - rate``, so the original keeps each feature with probability ``lam``. Features are
    dim 1: columns of ``(B, F)`` rows or tokens of ``(B, F, d)`` embeddings (the official mixes the
    tokenizer's output, which for ExcelFormer's per-feature tokenizer is the same as mixing the columns).
    The label weight of the original is ``sum_f s_f * kept_f`` with ``s`` the normalised
    ``feature_weights`` (the official: mutual information with the target), else the share kept.

    A ``torch_frame.TensorFrame`` batch (pytorch-frame; imported only when one arrives) is mixed as the
    ``(B, n_num + n_cat)`` tensor of its numerical then categorical columns would be, with the same draws
    and label weights: numerical values and categorical codes are taken whole from one of the two rows
    (codes pasted, never blended). ``t(frame, y)`` returns ``(frame, target)``; ``t(frame)`` uses the
    frame's ``y``. A frame's own ``y`` is replaced by its target; other stypes are refused.

    Args:
        alpha: Beta concentration (default 0.5, the official default ``beta``).
        feature_weights: ``(F,)`` non-negative scores (normalised here to sum 1), or None (uniform).
        mode: ``"sample"`` (default, the official: a rate and a mask per row) or ``"batch"`` (one of each).
        Shared options: see :class:`mixlab.Mixer`.
    """

    default_mode = "sample"

    def __init__(self, alpha=0.5, *, feature_weights=None, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        if feature_weights is not None:
            w = torch.as_tensor(feature_weights, dtype=torch.float32)
            if w.ndim != 1 or w.numel() == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) \
                    or float(w.sum()) <= 0:
                raise ValueError(f"feature_weights must be a 1-D sequence of non-negative scores with a positive sum "
                                 f"(one per feature), got {feature_weights!r}")
            feature_weights = w / w.sum()
        self.feature_weights = feature_weights

    def draw(self, leaf, lam, index, g, *, y=None):
        if leaf.ndim < 2:
            raise ValueError(f"FeatMix needs rows of features (B, F) or tokens (B, F, d), got shape {tuple(leaf.shape)}")
        F_ = leaf.shape[1]
        if self.feature_weights is not None and self.feature_weights.numel() != F_:
            raise ValueError(f"FeatMix: feature_weights holds {self.feature_weights.numel()} scores, the inputs have "
                             f"{F_} features (dim 1)")
        n = self.distinct(leaf.shape[0])
        u = torch.rand(n, F_, device=leaf.device, **rng(g))
        take = (u <= (1 - lam[:n])[:, None]) & (lam[:n] < 1)[:, None]  # (n, F): the partner's features
        return Mask(_expanded(take, leaf, 1))

    def target_params(self, params: MixParams, y) -> MixParams:
        """The labels' weight of the original: the score-weighted share of the features it keeps."""
        region = params.region
        if self.feature_weights is None or not isinstance(region, Mask):
            return params
        take = region.values.flatten(2)[..., 0] if region.values.ndim > 2 else region.values  # (B, F)
        kept = (~take).to(torch.float32)
        lam = (kept * self.feature_weights.to(kept.device)).sum(1)
        return MixParams(lam, params.index)


@register("hiddenmix", inputs=("tokens",),
          when="Tabular transformers: embedding dimensions mixed; with Feat-Mix it lets ExcelFormer beat GBDTs.")
class HiddenMix(Mixer):
    """Hidden-Mix (ExcelFormer, Chen et al. 2023): embedding dimensions from the partner, for every token.

    Per row, ``rate ~ Beta(alpha, alpha)`` and each of the ``d`` embedding dimensions (the last dim of
    ``(B, F, d)`` tokens) stays the original's when a uniform draw is below ``rate`` (the official
    ``dim_masks = rand < rate``), the same dimensions for every token; ``lam = rate``. The official
    label weight is the drawn ``rate`` (``label="rate"``, default); ``label="kept"`` uses the exact
    share of dimensions kept, as every other mixlab method.

    Args:
        alpha: Beta concentration (default 0.5, the official default ``beta``).
        label: ``"rate"`` (the official) or ``"kept"``.
        mode: ``"sample"`` (default, the official) or ``"batch"``.
        Shared options: see :class:`mixlab.Mixer`.
    """

    default_mode = "sample"

    def __init__(self, alpha=0.5, *, label="rate", **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.label = V.choice(label, "label", ("rate", "kept"))

    def draw(self, leaf, lam, index, g, *, y=None):
        if leaf.ndim < 3:
            raise ValueError(f"HiddenMix needs token embeddings (B, F, d), got shape {tuple(leaf.shape)}")
        n = self.distinct(leaf.shape[0])
        u = torch.rand(n, leaf.shape[-1], device=leaf.device, **rng(g))
        take = (u >= lam[:n, None]) & (lam[:n] < 1)[:, None]  # (n, d): the partner's dimensions
        return RatedMask(_expanded(take, leaf, -1), lam.contiguous())

    def target_params(self, params: MixParams, y) -> MixParams:
        """The labels' weight of the original: the drawn rate (``label="rate"``) or the share kept."""
        region = params.region
        if self.label == "kept" or not isinstance(region, RatedMask):
            return params
        return MixParams(region.rate.to(torch.float32), params.index)
