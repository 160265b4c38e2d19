"""Label-side policies: Remix and class-balanced partners (long-tailed data), C-Mixup (regression),
and RegMixup's loss.

- :class:`Remix` (Chou et al. 2020, "Remix: Rebalanced Mixup"): inputs are mixed with ``lam``,
  but when one row's class is ``kappa`` times as frequent as the other's and its share is below
  ``tau``, the label goes wholly to the rarer class. Optionally partners are drawn with
  probability inversely proportional to their class count (``balanced=True``).
- :class:`CMixup` (Yao et al. 2022, "C-Mixup: Improving Generalization in Regression"): partners
  drawn with probability ``exp(-||y_i - y_j||^2 / (2 bandwidth^2))``, so rows mix with rows of
  similar targets.
- :func:`transmix_target` (Chen et al. 2022, "TransMix: Attend to Mix for Vision Transformers"):
  the label weight of a region-mixed batch re-set to the share of the model's class-token
  attention that falls on the original's patches.
- :func:`regmixup_loss` (Pinto et al. 2022, "RegMixup: Mixup as a Regularizer Can Surprisingly
  Improve Accuracy and Out Distribution Robustness"): the clean loss plus ``eta`` times the mixed
  loss, on a batch holding the clean rows and their mixed copies.

Convention: ``lam`` weights the original row; labels are mixed with the returned target's own
weights (``target.lam`` may differ from ``target`` of the inputs under Remix).
"""
from __future__ import annotations

import torch

from . import _validate as V
from .methods.cmixup import CMixup
from .methods.remix import Remix, balanced_partners
from .params import MixParams
from .targets import MixedTarget

__all__ = ["Remix", "CMixup", "balanced_partners", "regmixup_loss", "transmix_target"]


def regmixup_loss(criterion, logits: torch.Tensor, y: torch.Tensor, target: MixedTarget, *, eta: float = 1.0):
    """RegMixup's objective: ``criterion(clean) + eta * mixed loss`` on one concatenated batch.

    Args:
        criterion: the loss (``nn.CrossEntropyLoss()``...).
        logits: the model's output on ``torch.cat([x, mixed_x])``: ``(2B, C)``, clean rows first.
        y: the clean labels ``(B,)``.
        target: the :class:`MixedTarget` of ``mixed_x`` (RegMixup uses a large alpha, e.g. 10 or 20).
        eta: weight of the mixed term (the paper's ``eta``, default 1).

    Example:
        >>> import torch, torch.nn as nn, mixlab
        >>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 2, 1])
        >>> mixed, target = mixlab.MixUp(alpha=10.0, generator=torch.Generator().manual_seed(0))(x, y)
        >>> logits = torch.randn(8, 3)                       # model(torch.cat([x, mixed]))
        >>> mixlab.policies.regmixup_loss(nn.CrossEntropyLoss(), logits, y, target).shape
        torch.Size([])
    """
    eta = V.real(eta, "eta", minimum=0.0)
    if not isinstance(target, MixedTarget):
        raise TypeError(f"target must be the MixedTarget of the mixed rows, got {V.describe(target)}")
    B = target.params.batch_size  # the mixed rows: as many as the clean ones
    if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != B:
        raise ValueError(f"y must hold the {B} clean labels of the batch the target was mixed from (dim 0), "
                         f"got {V.describe(y)}")
    if not isinstance(logits, torch.Tensor) or logits.ndim == 0 or logits.shape[0] != 2 * B:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must hold the clean and the mixed rows, {2 * B} on dim 0 for {B} labels, got {got}")
    return criterion(logits[:B], y) + eta * target.loss(criterion, logits[B:])


def transmix_target(target: MixedTarget, attention: torch.Tensor) -> MixedTarget:
    """TransMix: re-weight a region-mixed target by the model's attention over the patches.

    ``lam = sum_p a_p * kept_p / sum_p a_p``, with ``a`` the class token's attention to the
    ``N`` patches (averaged over heads, from the last block) and ``kept_p`` the share of patch
    ``p`` that is the original's (the region averaged over each patch). The inputs stay as they
    were mixed; only the labels' weights change.

    Args:
        target: the :class:`MixedTarget` of a CutMix / mask-mixed batch (its ``params.region``).
        attention: ``(B, N)`` non-negative attention over the patch grid, row-major over
            ``(H / P, W / P)`` for image regions, or over the ``N`` tokens of a ``(B, N, D)`` region.

    Returns:
        A new :class:`MixedTarget` with the same labels, partners and options, ``lam`` re-weighted.
    """
    import torch.nn.functional as F

    region = target.params.region
    if region is None:
        raise ValueError("transmix_target needs a region-mixed target (CutMix, TokenMix, FMix...), got MixUp's")
    if not isinstance(attention, torch.Tensor) or attention.ndim != 2 or attention.shape[0] != target.params.batch_size:
        raise ValueError(f"attention must be (B, N) with B = {target.params.batch_size}, got {V.describe(attention)}")
    B, N = attention.shape
    partner = region.mask(1 + len(region.shape)).to(torch.float32)  # (B, *shape): the partner's share
    if partner.ndim == 3:  # image region (B, H, W) -> patch grid with N cells
        H, W = partner.shape[1:]
        side = int(round((H * W / N) ** 0.5))
        if side < 1 or H % side or W % side or (H // side) * (W // side) != N:
            raise ValueError(f"attention has {N} patches, which do not tile the {H}x{W} region in square patches")
        partner = F.avg_pool2d(partner[:, None], side)[:, 0].reshape(B, N)
    else:  # token region (B, N, D): a token's share is the same over D
        partner = partner.reshape(B, partner.shape[1], -1).mean(2)
        if partner.shape[1] != N:
            raise ValueError(f"attention has {N} entries, the region covers {partner.shape[1]} tokens")
    a = attention.to(torch.float32).clamp(min=0)
    lam = 1 - (a * partner).sum(1) / a.sum(1).clamp(min=1e-12)
    new = MixedTarget.__new__(MixedTarget)
    new.__dict__.update(target.__dict__)
    new.params = MixParams(lam, target.params.index)
    new.weights = torch.stack([lam, 1 - lam], 1)
    new._position = None  # labels weighted per row now
    if new._stacked is not None:
        new.targets = tuple(new._stacked.unbind(1))
    return new
