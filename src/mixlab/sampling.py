"""Lambda samplers: Beta(alpha, alpha) per batch or per sample, keep-dominant, Dirichlet k-way.

Every sampler draws on the requested device with the given ``generator`` and never reads a
value back to the host, so it is safe on an accelerator's hot path.

Numerics: a Beta(a, a) draw is computed as ``sigmoid(log G1 - log G2)`` with
``G ~ Gamma(a)``, and ``log G`` as ``log Gamma(a + 1) + log(U) / a`` (Marsaglia and Tsang's
boost for shapes below one). The naive ratio ``G1 / (G1 + G2)`` underflows to ``0 / 0`` for
small ``alpha`` in float32 (for alpha = 0.05 about one draw in ten thousand is NaN); the
log form is finite for every ``alpha > 0``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["sample_beta", "sample_dirichlet", "check_alpha", "check_probability"]


def check_alpha(alpha, name: str = "alpha") -> float:
    """Validate a concentration parameter: a finite real number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{name} must be a real number >= 0, got {type(alpha).__name__} {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {alpha}")
    return alpha


def check_probability(p, name: str = "p") -> float:
    """Validate a probability in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(p).__name__} {p!r}")
    p = float(p)
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


def _log_gamma(shape: tuple[int, ...], alpha: float, generator, device) -> torch.Tensor:
    """log of Gamma(alpha, 1) draws, float32, finite for every alpha > 0."""
    conc = torch.full(shape, alpha + 1.0, dtype=torch.float32, device=device)
    g = torch._standard_gamma(conc, generator=generator)  # Gamma(alpha + 1), shape >= 1: no underflow
    # U in (0, 1]: 1 - rand keeps log(U) finite.
    u = 1.0 - torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return torch.log(g) + torch.log(u) / alpha


def sample_beta(
    n: int,
    alpha: float,
    *,
    beta: float | None = None,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Draw ``n`` values from Beta(alpha, beta) (``beta`` defaults to ``alpha``).

    Args:
        n: number of draws.
        alpha: first concentration, > 0.
        beta: second concentration, > 0; defaults to ``alpha``.
        generator: the random generator to draw from (on ``device``).
        device: where the draws are made and returned.

    Returns:
        float32 tensor of shape ``(n,)`` with values in [0, 1].
    """
    alpha = check_alpha(alpha)
    beta = alpha if beta is None else check_alpha(beta, "beta")
    if alpha == 0 or beta == 0:
        raise ValueError(f"sample_beta needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    la = _log_gamma((n,), alpha, generator, device)
    lb = _log_gamma((n,), beta, generator, device)
    return torch.sigmoid(la - lb)  # (n,) = Ga / (Ga + Gb)


def sample_dirichlet(
    n: int, k: int, alpha: float, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Draw ``n`` weight vectors from a symmetric Dirichlet(alpha) over ``k`` components.

    Returns:
        float32 tensor of shape ``(n, k)``; rows are >= 0 and sum to 1.
    """
    alpha = check_alpha(alpha)
    if alpha == 0:
        raise ValueError("sample_dirichlet needs alpha > 0, got 0")
    lg = _log_gamma((n, k), alpha, generator, device)  # (n, k)
    return torch.softmax(lg, dim=1)
