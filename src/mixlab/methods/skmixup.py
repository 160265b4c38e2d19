"""Similarity Kernel Mixup (Bouniot, Mozharovskyi, d'Alche-Buc 2023, "Tailoring Mixup to Data for Calibration",
arXiv:2311.01434; official code qbouniot/sim_kernel_mixup, shipped by torch-uncertainty as ``WarpingMixup``,
ENSTA-U2IS-AI/torch-uncertainty ``src/torch_uncertainty/transforms/mixup.py``): ``lam ~ Beta(alpha, alpha)`` is
warped per pair by the Beta CDF ``I_lam(w, w)``, whose parameter ``w`` grows with the distance between the two
rows, so similar rows are mixed strongly (``lam`` pulled towards 1/2) and distant rows barely (``lam`` pushed to
0 or 1): less manifold intrusion, better calibration.

Convention: ``lam`` weights the original row (the warped value); inputs and labels are mixed with it.
"""
from __future__ import annotations

import math

import torch

from .. import _validate as V
from ..mixer import Mixer
from ..regions import Box
from ..registry import register

__all__ = ["SimilarityKernelMixup", "symmetric_beta_cdf", "similarity_kernel"]

KERNELS = ("paper", "torch-uncertainty")
_EPS = 1e-12  # both official codes: 1 / (tau + 1e-12), then Beta(w + 1e-12, w + 1e-12)
_LN_SQRT_PI = 0.5 * math.log(math.pi)
_STEPS = 20  # continued-fraction steps: 1e-10 of scipy for every w in (1e-12, 1e12] (tests)


def _ln_beta_half(a: torch.Tensor) -> torch.Tensor:
    """``ln B(a, 1/2)``; for large ``a`` the difference ``lgamma(a + 1/2) - lgamma(a)`` by its asymptotic series
    (lgamma's own difference loses ``|lgamma(a)| * 2^-53``: 1e-5 at ``a = 1e10``)."""
    big = a > 100
    ab = torch.where(big, a, torch.full_like(a, 200.0))
    r = 1 / ab
    series = 0.5 * torch.log(ab) - r / 8 + r ** 3 / 192 + r ** 5 / 640
    return _LN_SQRT_PI - torch.where(big, series, torch.lgamma(a + 0.5) - torch.lgamma(a))


def _beta_fraction(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The continued fraction of the incomplete beta function (modified Lentz, a fixed number of steps)."""
    tiny = 1e-300

    def nz(t):
        return torch.where(t.abs() < tiny, torch.full_like(t, tiny), t)

    c = torch.ones_like(x)
    d = 1 / nz(1 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, _STEPS + 1):
        for coef in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                     -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 / nz(1 + coef * d)
            c = nz(1 + coef / c)
            h = h * d * c
    return h


def symmetric_beta_cdf(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The regularised incomplete beta ``I_x(a, a)``: the CDF of ``Beta(a, a)`` at ``x``, in float64, on any device.

    torch has no incomplete beta function. For ``x <= 1/2``, ``I_x(a, a) = I_z(a, 1/2) / 2`` with
    ``z = 4x(1 - x)``; with the second parameter 1/2 the continued fraction converges in a few steps for every
    ``a`` (``1 - I_{1-z}(1/2, a)`` above its switch point), so 20 steps match ``scipy.stats.beta.cdf`` to 1e-10
    for ``a`` up to 1e8; beyond, near ``x = 1/2``, this follows the normal limit of ``Beta(a, a)`` (to 1e-9 at
    ``a = 1e12``) where scipy loses digits (0.4812 for 0.49999452 at ``a = 1e13``, ``x = 1/2 - 1.5e-12``). No host read: traceable by ``torch.compile``.

    Args:
        x: values in [0, 1] (any float dtype).
        a: the shape parameter (both), positive; broadcast against ``x``.
    """
    x, a = torch.broadcast_tensors(x.to(torch.float64), a.to(torch.float64))
    xs = torch.minimum(x, 1 - x)  # (...,) in [0, 1/2]
    w = (1 - 2 * xs) ** 2  # 1 - z, exact near x = 1/2
    z = 4 * xs * (1 - xs)
    ln_z = torch.where(w < 0.5, torch.log1p(-w), torch.log(z))
    front = torch.exp(a * ln_z + torch.log1p(-2 * xs) - _ln_beta_half(a))  # z^a (1 - z)^(1/2) / B(a, 1/2)
    half = torch.full_like(a, 0.5)
    # the switch point of the continued fraction, moved up for large a: there z = 1 - w has lost digits (1e-4 of
    # w at a = 1e12), while the fraction in w converges in a few steps up to w (a + 2.5) = 10
    lower = w * (a + 2.5) > torch.where(a < 1e4, 1.5, 10.0)
    safe_z = torch.where(lower, z, torch.full_like(z, 0.25))  # the branch not taken stays finite
    safe_w = torch.where(lower, torch.full_like(w, 0.25), w)
    v = torch.where(lower, front * _beta_fraction(safe_z, a, half) / a,
                    1 - 2 * front * _beta_fraction(safe_w, half, a)) / 2
    v = torch.where(xs <= 0, torch.zeros_like(v), torch.where(w <= 0, torch.full_like(v, 0.5), v))
    return torch.where(x <= 0.5, v, 1 - v)


def similarity_kernel(dist: torch.Tensor, *, tau_max: float = 1.0, tau_std: float = 0.5,
                      kernel: str = "paper") -> torch.Tensor:
    """The kernel ``tau`` of each pair from its squared distance ``dist`` ``(B,)`` (float64).

    ``"paper"`` (the paper's Eq. and qbouniot/sim_kernel_mixup): ``tau_max * exp(-(d / mean(d) - 1) /
    (2 tau_std^2))``, the batch-normalised, centred Gaussian kernel: a pair at the batch's mean distance gets
    ``tau_max``. ``"torch-uncertainty"`` (its ``sim_gauss_kernel``): ``tau_max * exp(-(d - 1) / (mean(d) * 2
    tau_std^2))`` on the raw distances, which equals the paper's only when ``mean(d) = 1`` (for distances much
    larger than 1 it is the paper's kernel times about ``exp(-1 / (2 tau_std^2))``: milder mixing throughout).
    A batch whose pairs are all at distance 0 (nothing moves) gets the paper's kernel at ``d / mean(d) = 0``.
    """
    mean = dist.mean()
    scale = 2 * tau_std * tau_std
    if kernel == "paper":
        rel = torch.where(mean > 0, dist / torch.where(mean > 0, mean, torch.ones_like(mean)), torch.zeros_like(dist))
        return tau_max * torch.exp(-(rel - 1) / scale)
    return tau_max * torch.exp(-(dist - 1) / (mean * scale))


@register("skmixup", inputs=("images", "sequences", "volumes", "tokens", "vectors"),
          when="Calibration: similar pairs mixed more, distant ones less (the paper: lower ECE than MixUp, accuracy kept).")
class SimilarityKernelMixup(Mixer):
    """Similarity Kernel Mixup (Bouniot et al. 2023): MixUp whose ``lam`` is warped by how similar the two rows are.

    Per pair ``(i, index[i])``: ``d`` the squared L2 distance between the rows (of the inputs, or of
    ``features=`` given at call time: the paper's default is the model's embeddings, computed without gradient),
    ``tau`` the :func:`similarity_kernel` of ``d``, and the mixed row takes ``lam' = I_lam(w, w)``, the CDF of
    ``Beta(w, w)`` at the drawn ``lam``, with ``w = 1 / (tau + 1e-12) + 1e-12`` (both official codes' epsilons).
    Similar pairs (large ``tau``, ``w < 1``) move ``lam'`` towards 1/2; distant pairs (``w >> 1``) towards 0 or 1.
    Labels are mixed with ``lam'``. Tested equal to torch-uncertainty's ``WarpingMixup`` and to the paper's
    ``KernelMixup(warping="beta_cdf")`` on the same draws (tests/methods/test_method_skmixup.py).

    Args:
        alpha: Beta concentration of the drawn ``lam`` (torch-uncertainty's default 1.0).
        tau_max: the kernel's amplitude (strength of the interpolation), default 1.0.
        tau_std: the kernel's width (extent of the mixing), default 0.5.
        kernel: ``"paper"`` (default) or ``"torch-uncertainty"`` (see :func:`similarity_kernel`; they differ).
        mode: ``"sample"`` (default; torch-uncertainty's ``"elem"``) or ``"batch"`` (one ``lam`` drawn, warped
            per pair, as both official codes do).
        Shared options: see :class:`mixlab.Mixer`.

    Call: ``t(x, y)``, or ``t(x, y, features=emb)`` with ``emb`` ``(B, ...)`` (e.g. ``model.features(x)`` under
    ``torch.no_grad()``) to measure similarity in an embedding space, as the paper does.

    Example::

        >>> t = SimilarityKernelMixup(1.0, num_classes=10)
        >>> mixed, target = t(torch.rand(8, 3, 32, 32), torch.arange(8))
        >>> mixed.shape, target.soft().shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    default_mode = "sample"

    def __init__(self, alpha=1.0, *, tau_max=1.0, tau_std=0.5, kernel="paper", **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.tau_max = V.real(tau_max, "tau_max", positive=True)
        self.tau_std = V.real(tau_std, "tau_std", positive=True)
        self.kernel = V.choice(kernel, "kernel", KERNELS)

    def warp(self, lam: torch.Tensor, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``lam`` ``(B,)`` warped by the kernel of the pairs ``(i, index[i])`` of ``features`` ``(B, ...)``."""
        f = features.flatten(1).to(torch.float64) if features.ndim > 1 else features[:, None].to(torch.float64)
        dist = (f - f.index_select(0, index)).pow(2).sum(1)  # (B,)
        tau = similarity_kernel(dist, tau_max=self.tau_max, tau_std=self.tau_std, kernel=self.kernel)
        w = 1 / (tau + _EPS) + _EPS
        return symmetric_beta_cdf(lam, w).to(torch.float32)

    def draw(self, leaf, lam, index, g, *, y=None, features=None):
        B = leaf.shape[0]
        if features is None:
            features = leaf
        elif not isinstance(features, torch.Tensor) or features.ndim == 0 or features.shape[0] != B:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else V.describe(features)
            raise ValueError(f"SimilarityKernelMixup: features must hold one row per input row, {B} on dim 0, "
                             f"got {got}")
        kept = self.warp(lam, features.to(leaf.device), index)
        # a blend with a per-row lam: every row is a "linear" (MixUp) row of an empty box, so lam is the region's
        shape = (leaf.shape[-1],)
        box = torch.zeros(B, 1, 2, dtype=torch.int64, device=leaf.device)
        return Box(box, shape, linear=torch.ones(B, dtype=torch.bool, device=leaf.device), linear_lam=kept)
