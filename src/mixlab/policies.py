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
from .ops import mix
from .params import MixParams, sample_params
from .sampling import rng
from .targets import MixedTarget
from .transforms import _batch_info, _Mixer

__all__ = ["Remix", "CMixup", "balanced_partners", "regmixup_loss", "transmix_target"]


def _counts(class_counts) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 1 or not bool((counts > 0).all()):
        raise ValueError(f"class_counts must be a 1-D sequence of positive counts (one per class), got {class_counts!r}")
    return counts


def balanced_partners(y: torch.Tensor, class_counts, *, generator=None) -> torch.Tensor:
    """Partner rows drawn with probability proportional to ``1 / count[y_j]`` (with replacement).

    Rare classes become partners as often as frequent ones in expectation (class-balanced
    sampling of the second row, as in Remix's and BBN's re-balancing of long-tailed data).

    Returns:
        int64 ``(B,)`` indices into the batch.
    """
    counts = _counts(class_counts).to(y.device)
    B = y.shape[0]
    if B == 0:
        return torch.zeros(0, dtype=torch.long, device=y.device)
    w = (1.0 / counts[y.long()]).float()  # (B,)
    return torch.multinomial(w.expand(B, B), 1, replacement=True, **rng(generator))[:, 0]


class Remix(_Mixer):
    """Remix (Chou et al. 2020): mix inputs with ``lam``, give the label to the minority class.

    With ``n_i`` and ``n_j`` the class counts of a row and its partner, the label weight of the
    original row is ``0`` when ``n_i / n_j >= kappa`` and ``lam < tau``, ``1`` when
    ``n_i / n_j <= 1 / kappa`` and ``1 - lam < tau``, else ``lam`` (the paper's Eq. 4).

    Args:
        alpha: Beta concentration (the paper uses 1.0).
        class_counts: training examples per class, ``(C,)``.
        kappa, tau: the paper's imbalance ratio and share thresholds (defaults 3.0 and 0.5).
        balanced: draw partners with probability ``1 / count`` instead of a permutation.
        mode, p: as :class:`mixlab.MixUp`.

    Returns (when called): ``(mixed_x, MixedTarget)`` whose ``lam`` is the label weight;
    ``target.params`` mixes the labels, ``self.last_input_lam`` holds the inputs' ``lam``.
    """

    def __init__(self, alpha=1.0, *, class_counts, kappa=3.0, tau=0.5, balanced=False, mode="sample", p=1.0,
                 generator=None, num_classes=None, label_smoothing=0.0, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=num_classes, label_smoothing=label_smoothing,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.counts = _counts(class_counts)
        self.kappa = V.real(kappa, "kappa", minimum=1.0)
        self.tau = V.probability(tau, "tau")
        self.balanced = bool(balanced)
        self.mode = V.choice(mode, "mode", ("batch", "sample"))
        self.p = V.probability(p)
        self.last_input_lam = None

    def sample(self, x, y=None) -> MixParams:
        """The inputs' parameters (partners balanced when asked, which needs ``y``)."""
        B, device, _ = _batch_info(x)
        g = self._gen
        params = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, generator=g, device=device)
        if self.balanced:
            if y is None:
                raise ValueError("Remix(balanced=True).sample needs the labels: call sample(x, y)")
            params = MixParams(params.lam, balanced_partners(y, self.counts, generator=g))
        return params

    def label_params(self, params: MixParams, y: torch.Tensor) -> MixParams:
        """The labels' parameters: the inputs' ``lam`` rebalanced by the class counts (Eq. 4)."""
        counts = self.counts.to(y.device)
        if y.device.type == "cpu" and y.numel() and int(y.max()) >= counts.numel():
            raise ValueError(f"labels reach {int(y.max())}, but class_counts has {counts.numel()} classes")
        ratio = counts[y.long()] / counts[y.long()[params.index]]  # n_i / n_j
        lam = params.lam
        lam_y = torch.where((ratio >= self.kappa) & (lam < self.tau), torch.zeros_like(lam), lam)
        lam_y = torch.where((ratio <= 1 / self.kappa) & (1 - lam < self.tau), torch.ones_like(lam), lam_y)
        return MixParams(lam_y, params.index)

    def __call__(self, x, y=None):
        if y is None:
            raise ValueError("Remix needs the labels: call it as remix(x, y)")
        params = self.sample(x, y)
        mixed = mix(x, params, inplace=self.inplace, roles=self.roles)
        self.last_input_lam = params.lam
        target = MixedTarget(y, self.label_params(params, y), num_classes=self.num_classes,
                             label_smoothing=self.label_smoothing)
        return mixed, target

    def __repr__(self):
        return f"Remix(alpha={self.alpha}, kappa={self.kappa}, tau={self.tau}, balanced={self.balanced})"


class CMixup(_Mixer):
    """C-Mixup (Yao et al. 2022): mixup for regression with partners of similar targets.

    Row ``i``'s partner is drawn with probability ``exp(-||y_i - y_j||^2 / (2 bandwidth^2))``
    over the batch (the paper samples from the training set with the same kernel; within the
    batch is its mini-batch form), then inputs and targets are mixed with ``lam ~ Beta(alpha,
    alpha)``.

    Args:
        alpha: Beta concentration (the paper uses 2.0 in most tasks).
        bandwidth: the Gaussian kernel's width on the targets (the paper's sigma).
        mode, p: as :class:`mixlab.MixUp`.
    """

    def __init__(self, alpha=2.0, *, bandwidth=1.0, mode="sample", p=1.0, generator=None, inplace=False, roles=None,
                 soft=False, labels_getter="default"):
        super().__init__(generator=generator, num_classes=None, label_smoothing=0.0,
                         inplace=inplace, roles=roles, soft=soft, labels_getter=labels_getter)
        self.alpha = V.alpha(alpha)
        self.bandwidth = V.real(bandwidth, "bandwidth", positive=True)
        self.mode = V.choice(mode, "mode", ("batch", "sample"))
        self.p = V.probability(p)

    def partners(self, y: torch.Tensor, generator=None) -> torch.Tensor:
        """Partner rows drawn from the label-distance kernel (a row may draw itself)."""
        B = y.shape[0]
        if B == 0:
            return torch.zeros(0, dtype=torch.long, device=y.device)
        flat = y.reshape(B, -1).float()
        d2 = torch.cdist(flat, flat).pow(2)  # (B, B)
        logits = -d2 / (2 * self.bandwidth ** 2)
        probs = torch.softmax(logits, dim=1)  # rows sum to 1: the kernel normalised per row
        return torch.multinomial(probs, 1, **rng(generator))[:, 0]

    def sample(self, x, y=None) -> MixParams:
        if y is None:
            raise ValueError("CMixup draws partners from the targets: call sample(x, y)")
        B, device, _ = _batch_info(x)
        g = self._gen
        base = sample_params(B, alpha=self.alpha, mode=self.mode, p=self.p, generator=g, device=device)
        return MixParams(base.lam, self.partners(y, g))

    def __call__(self, x, y=None):
        if y is None:
            raise ValueError("CMixup needs the regression targets: call it as cmixup(x, y)")
        if not y.is_floating_point():
            raise TypeError(f"CMixup is for regression targets (float), got dtype {y.dtype}; use MixUp for classes")
        params = self.sample(x, y)
        return mix(x, params, inplace=self.inplace, roles=self.roles), MixedTarget(y, params)

    def __repr__(self):
        return f"CMixup(alpha={self.alpha}, bandwidth={self.bandwidth}, mode={self.mode!r})"


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
    B = y.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.ndim == 0 or logits.shape[0] != 2 * B:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must hold the clean and the mixed rows, {2 * B} on dim 0, got {got}")
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
