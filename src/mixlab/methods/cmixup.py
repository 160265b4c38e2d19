"""C-Mixup (Yao et al. 2022, "C-Mixup: Improving Generalization in Regression"; official code
huaxiuyao/C-Mixup): mixup for regression, partners drawn with probability
``exp(-||y_i - y_j||^2 / (2 bandwidth^2))`` so rows mix with rows of similar targets.

Convention: ``lam`` weights the original row; inputs and targets are mixed with it.
"""
from __future__ import annotations

import warnings

import torch

from .. import _fast
from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams, sample_params
from ..registry import register
from ..sampling import rng

__all__ = ["CMixup"]


@register("cmixup", inputs=("images", "sequences", "volumes", "tokens", "vectors"), needs=("targets",),
          task="regression",
          when="Regression (real-valued targets), where plain mixup can hurt: partners with similar targets.")
class CMixup(Mixer):
    """C-Mixup (Yao et al. 2022): mixup for regression with partners of similar targets.

    Row ``i``'s partner is drawn with probability ``exp(-||y_i - y_j||^2 / (2 bandwidth^2))``
    over the batch (the paper samples from the training set with the same kernel; within the
    batch is its mini-batch form), then inputs and targets are mixed with ``lam ~ Beta(alpha,
    alpha)``.

    Args:
        alpha: Beta concentration (the paper uses 2.0 in most tasks).
        bandwidth: the kernel's width in target units (the paper's sigma), or ``"auto"`` (default):
            the batch's median distance between targets, so the kernel scales with the targets
            (targets around 1e5 and around 1e-3 pair alike). A fixed bandwidth far below the
            targets' spread pairs most rows with themselves: that is warned about, naming the fix.
        mode: ``"sample"`` (default) or ``"batch"``.
        Shared options: see :class:`mixlab.Mixer` (no ``pairing``: the kernel draws the partners;
        no class-label options: the targets are real values).
    """

    default_mode = "sample"
    unsupported = ("pairing", "num_classes", "label_smoothing", "soft")

    def __init__(self, alpha=2.0, *, bandwidth="auto", **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.bandwidth = bandwidth if bandwidth == "auto" else V.real(bandwidth, "bandwidth", positive=True)

    def partners(self, y: torch.Tensor, generator=None) -> torch.Tensor:
        """Partner rows drawn from the label-distance kernel (a row may draw itself)."""
        B = y.shape[0]
        if B == 0:
            return torch.zeros(0, dtype=torch.long, device=y.device)
        flat = y.reshape(B, -1).to(torch.float64)
        d2 = torch.cdist(flat, flat).pow(2)  # (B, B)
        if self.bandwidth == "auto":
            # the lower median of the B * (B - 1) distances between distinct rows (the diagonal's B zeros sort first)
            k = B + (B * B - B - 1) // 2 if B > 1 else 0
            h2 = d2.flatten().sort().values[k].clamp(min=torch.finfo(torch.float64).tiny)
        else:
            h2 = torch.tensor(float(self.bandwidth) ** 2, dtype=torch.float64, device=y.device)
            self._warn_narrow(d2, h2)
        probs = torch.softmax(-d2 / (2 * h2), dim=1)  # rows sum to 1: the kernel normalised per row
        return torch.multinomial(probs.float(), 1, **rng(generator))[:, 0]

    @staticmethod
    def _warn_narrow(d2, h2) -> None:
        B = d2.shape[0]
        if B < 2 or not _fast.eager_cpu(d2):  # the check reads values: free on CPU only
            return
        nearest = (d2 + torch.diag(torch.full((B,), float("inf"), dtype=d2.dtype))).min(dim=1).values
        if float(nearest.median()) > 2 * 9 * float(h2):  # a typical row's closest other row has weight < e^-9
            warnings.warn(f"CMixup: bandwidth={float(h2) ** 0.5:g} is far below the distance between targets "
                          f"(median nearest-neighbour distance {float(nearest.median()) ** 0.5:g}), so most rows "
                          "are paired with themselves and not mixed; pass bandwidth='auto' or a bandwidth in the "
                          "targets' units", stacklevel=4)

    def draw_pairs(self, B, y, g, device) -> MixParams:
        if y is None:
            raise ValueError("CMixup draws partners from the regression targets: call it as t(x, y) or t.sample(x, y)")
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(f"CMixup is for regression targets (float), got {V.describe(y)}; use MixUp for classes")
        if y.ndim == 0 or y.shape[0] != B:
            raise ValueError(f"CMixup: y must hold one target per input row, {B} on dim 0, got shape {tuple(y.shape)}")
        base = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, generator=g, device=device)
        return MixParams(base.lam, self.partners(y, g))
