"""Remix (Chou et al. 2020, "Remix: Rebalanced Mixup"): inputs are mixed with ``lam``, but when one
row's class is ``kappa`` times as frequent as the other's and its share is below ``tau``, the
label goes wholly to the rarer class. Optionally partners are drawn with probability inversely
proportional to their class count (``balanced=True``).

Convention: ``lam`` weights the original row; the target carries the label weights.
"""
from __future__ import annotations

import torch

from .. import _fast
from .. import _validate as V
from ..mixer import Mixer
from ..params import MixParams, sample_params
from ..registry import register
from ..sampling import rng

__all__ = ["Remix", "balanced_partners", "check_class_counts"]


def check_class_counts(counts) -> torch.Tensor:
    """``counts`` as a float64 ``(C,)`` tensor of positive class counts (else one clear error)."""
    t = torch.as_tensor(counts, dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 1 or not bool((t > 0).all()):
        raise ValueError(f"class_counts must be a 1-D sequence of positive counts (one per class), got {counts!r}")
    return t


def balanced_partners(y: torch.Tensor, class_counts, *, generator=None) -> torch.Tensor:
    """Partner rows drawn with probability proportional to ``1 / count[y_j]`` (with replacement).

    Rare classes become partners as often as frequent ones in expectation (class-balanced
    sampling of the second row, as in Remix's and BBN's re-balancing of long-tailed data).
    ``y`` must hold class indices in ``[0, C)`` (an ``ignore_index`` such as -100 is refused).

    Returns:
        int64 ``(B,)`` indices into the batch.
    """
    counts = check_class_counts(class_counts)
    B = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else -1
    _check_labels(y, B, counts, "balanced_partners")
    return _balanced(y, counts, generator)


def _balanced(y: torch.Tensor, counts: torch.Tensor, generator) -> torch.Tensor:
    counts = _fast.to_device(counts, y.device)  # pinned and asynchronous: no sync
    B = y.shape[0]
    if B == 0:
        return torch.zeros(0, dtype=torch.long, device=y.device)
    w = (1.0 / counts[y.long()]).float()  # (B,)
    # B independent draws from one (B,) weight vector: linear in B (no (B, B) matrix), each row's partner
    # distributed as w / w.sum(), as one draw per row of w expanded to (B, B) would be
    return torch.multinomial(w, B, replacement=True, **rng(generator))


def _check_labels(y, B: int, counts: torch.Tensor, name: str) -> None:
    """``y`` holds ``B`` class indices in ``[0, C)`` (the range read on CPU only, where it is free)."""
    if y is None:
        raise ValueError(f"{name} needs the labels (class indices): call it as t(x, y) or t.sample(x, y)")
    if not isinstance(y, torch.Tensor) or y.shape != (B,) or y.is_floating_point() or y.is_complex() \
            or y.dtype == torch.bool:
        shape = "(B,)" if B < 0 else f"({B},) for {B} inputs"
        raise ValueError(f"{name}: y must be class indices of shape {shape}, got {V.describe(y)}")
    if not (_fast.eager_cpu(y) and y.numel()):
        return
    C = counts.numel()
    if int(y.min()) < 0:
        raise ValueError(f"{name}: y holds the label {int(y.min())}, but Remix weighs rows by class_counts and needs "
                         f"class indices in [0, {C}); drop ignored rows (ignore_index) before mixing")
    if int(y.max()) >= C:
        raise ValueError(f"{name}: labels reach {int(y.max())}, but class_counts has {C} classes")


@register("remix-balanced", inputs=("images", "sequences", "volumes", "tokens", "vectors"), needs=("labels",),
          balanced=True,
          when="Long-tailed classes with rare minority rows: partners drawn by class count (mixlab's variant).")
@register("remix", inputs=("images", "sequences", "volumes", "tokens", "vectors"), needs=("labels",),
          when="Long-tailed (imbalanced) classes: the label goes to the minority class; better minority accuracy.")
class Remix(Mixer):
    """Remix (Chou et al. 2020): mix inputs with ``lam``, give the label to the minority class.

    With ``n_i`` and ``n_j`` the class counts of a row and its partner, the label weight of the
    original row is ``0`` when ``n_i / n_j >= kappa`` and ``lam < tau``, ``1`` when
    ``n_i / n_j <= 1 / kappa`` and ``1 - lam < tau``, else ``lam`` (the paper's Eq. 4).

    Labels must be class indices in ``[0, C)``: a row's label weight is read from its class count, so
    rows with an ``ignore_index`` label (-100) cannot be weighted and are refused (one ``ValueError``
    naming ``y``); drop them before mixing. (The range is checked for labels on the CPU; elsewhere
    an out-of-range label fails in the device's index kernel.)

    Args:
        alpha: Beta concentration (the paper uses 1.0).
        class_counts: training examples per class, ``(C,)``.
        kappa, tau: the paper's imbalance ratio and share thresholds (defaults 3.0 and 0.5).
        balanced: draw partners with probability ``1 / count`` instead of by ``pairing`` (``B``
            independent draws from one ``(B,)`` weight vector: time and memory linear in ``B``).
        mode: ``"sample"`` (default) or ``"batch"``.
        Shared options: see :class:`mixlab.Mixer`.

    Returns (when called): ``(mixed_x, MixedTarget)`` whose ``params.lam`` is the label weight;
    ``self.last_input_lam`` holds the inputs' ``lam``.
    """

    default_mode = "sample"

    def __init__(self, alpha=1.0, *, class_counts, kappa=3.0, tau=0.5, balanced=False, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.counts = check_class_counts(class_counts)
        self.kappa = V.real(kappa, "kappa", minimum=1.0)
        self.tau = V.probability(tau, "tau")
        self.balanced = bool(balanced)
        if self.balanced and self.pairing != "permutation":
            raise ValueError("Remix(balanced=True) draws partners by class count; pairing= does not apply")
        self.last_input_lam = None

    def draw_pairs(self, B, y, g, device) -> MixParams:
        _check_labels(y, B, self.counts, type(self).__name__)
        params = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, pairing=self.pairing, generator=g,
                               device=device)
        if self.balanced:
            params = MixParams(params.lam, _balanced(y, self.counts, g))
        return params

    def target_params(self, params: MixParams, y: torch.Tensor) -> MixParams:
        """The labels' parameters: the inputs' ``lam`` rebalanced by the class counts (Eq. 4)."""
        _check_labels(y, params.batch_size, self.counts, type(self).__name__)
        self.last_input_lam = params.lam
        counts = _fast.to_device(self.counts, y.device)  # pinned and asynchronous: no sync
        ratio = counts[y.long()] / counts[y.long()[params.index]]  # n_i / n_j
        lam = params.lam
        lam_y = torch.where((ratio >= self.kappa) & (lam < self.tau), torch.zeros_like(lam), lam)
        lam_y = torch.where((ratio <= 1 / self.kappa) & (1 - lam < self.tau), torch.ones_like(lam), lam_y)
        return MixParams(lam_y, params.index)

    label_params = target_params  # the 0.2 name
