"""MixUp (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"; official code
facebookresearch/mixup-cifar10): ``x = lam * x + (1 - lam) * x[index]``, ``lam ~ Beta(alpha, alpha)``.

Convention: ``lam`` weights the original row (the paper's ``mixup_data``).
"""
from __future__ import annotations

import warnings

from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams, sample_params
from ..registry import register

__all__ = ["MixUp"]


@register("mixup", inputs=("images", "sequences", "volumes", "tokens", "vectors"),
          when="Any input kind, the safe default: better error, calibration and label-noise robustness than ERM.")
class MixUp(Mixer):
    """Mixup (Zhang et al. 2018): blend each row with its partner, ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta concentration; 0 disables mixing. Default 1.0 (the paper's CIFAR setting,
            timm, torchvision); fastai's MixUp uses 0.4, keras.io's mixup example 0.2.
        keep_dominant: fastai's ``lam = max(lam, 1 - lam)``.
        k: rows per mix; ``k > 2`` draws Dirichlet(alpha) weights. Flat (``alpha >= 1``) weights over the
            whole batch (``k >= B``) warn once: zeta-mixup (Abhishek et al. 2022) reports 94.69% CIFAR-100
            error for them (every row an average of the batch); :class:`mixlab.ZetaMixup` mixes many rows with
            the original dominant.
        mode: ``"batch"`` (one lambda per batch, the paper), ``"sample"`` (one per row, fastai)
            or ``"pair"`` (one per flip pair, timm; needs ``pairing="flip"``).
        Shared options: see :class:`mixlab.Mixer`.

    Example:
        >>> import torch, mixlab
        >>> mixup = mixlab.MixUp(alpha=0.4, mode="sample", generator=torch.Generator().manual_seed(0))
        >>> x, target = mixup(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> x.shape, target.soft(num_classes=10).shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    modes = ("batch", "sample", "pair")

    def __init__(self, alpha=1.0, *, keep_dominant=False, k=2, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.keep_dominant = bool(keep_dominant)
        self.k = V.integer(k, "k", minimum=2)
        sample_params(0, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing, k=self.k)  # validate

    def draw_pairs(self, B, y, g, device) -> MixParams:
        if 2 < B <= self.k and self.alpha >= 1 and not getattr(self, "_warned_whole_batch", False):
            self._warned_whole_batch = True  # once per mixer (per worker in a DataLoader)
            warnings.warn(f"MixUp(k={self.k}, alpha={self.alpha}) on a batch of {B} rows mixes every row with the "
                          "whole batch under flat Dirichlet weights, for which zeta-mixup (Abhishek et al. 2022) "
                          "reports 94.69% CIFAR-100 error: use mixlab.ZetaMixup, a k well below the batch size, or "
                          "alpha < 1", UserWarning, stacklevel=2)
        return sample_params(B, alpha=self.alpha, mode=self.mode, keep_dominant=self.keep_dominant, p=self.p,
                             pairing=self.pairing, k=self.k, generator=g, device=device)
