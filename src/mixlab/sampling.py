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

import torch

from . import _validate as V

__all__ = ["sample_beta", "sample_dirichlet", "rng", "mix_seed"]

_MASK64 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps), stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & _MASK64


def rng(generator) -> dict:
    """Keyword arguments for a torch random function: ``{"generator": g}``, or none for None.

    ``torch.compile`` cannot trace ``torch.rand(n, generator=None)`` when ``n`` is symbolic (a
    batch size that changed between calls); leaving the keyword out traces.
    """
    return {} if generator is None else {"generator": generator}


def _log_gamma_parts(shape: tuple[int, ...], alpha: float, generator, device):
    """``log Gamma(alpha + 1)`` draws and ``log U`` draws; ``log Gamma(alpha) = first + second / alpha``."""
    conc = torch.full(shape, alpha + 1.0, dtype=torch.float32, device=device)
    g = torch._standard_gamma(conc, **rng(generator))  # Gamma(alpha + 1), shape >= 1: no underflow
    # U in (0, 1]: 1 - rand keeps log(U) finite.
    u = 1.0 - torch.rand(shape, device=device, dtype=torch.float32, **rng(generator))
    return torch.log(g), torch.log(u)


def _over_alpha(du: torch.Tensor, alpha: float) -> torch.Tensor:
    """``du / alpha`` for a difference of log-uniforms, finite-or-infinite but never NaN.

    As ``alpha -> 0`` the quotient tends to +-inf (the Beta becomes a fair coin on {0, 1}); a
    zero difference stays 0 instead of the ``0 / 0`` an underflowed ``alpha`` would give.
    """
    return torch.where(du == 0, torch.zeros_like(du), du / alpha)


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
        alpha: first concentration, in (0, 1e6] (any real scalar: Python, numpy or a 0-dim tensor; the
            bound is :data:`mixlab._validate.MAX_ALPHA`: up to it the float32 draw keeps Beta's mean and
            spread, beyond it ``alpha + 1`` eventually overflows float32).
        beta: second concentration, in (0, 1e6]; defaults to ``alpha``.
        generator: the random generator to draw from (on ``device``).
        device: where the draws are made and returned.

    Returns:
        float32 tensor of shape ``(n,)`` with values in [0, 1]; never NaN. For a concentration
        so small that ``U ** (1 / alpha)`` underflows, draws are exactly 0 or 1 (the limit of
        Beta(a, a) as ``a -> 0`` is a fair coin on {0, 1}).
    """
    alpha = V.alpha(alpha, "alpha", positive=True)
    beta = alpha if beta is None else V.alpha(beta, "beta", positive=True)
    ga, ua = _log_gamma_parts((n,), alpha, generator, device)
    gb, ub = _log_gamma_parts((n,), beta, generator, device)
    if alpha == beta:
        d = (ga - gb) + _over_alpha(ua - ub, alpha)
    else:  # log Ga - log Gb, each term finite or -inf; -inf - -inf cannot happen unless both underflow
        la, lb = ga + ua / alpha, gb + ub / beta
        d = torch.where((la == lb), torch.zeros_like(la), la - lb)
    return torch.sigmoid(d)  # (n,) = Ga / (Ga + Gb)


def sample_dirichlet(
    n: int, k: int, alpha: float, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Draw ``n`` weight vectors from a symmetric Dirichlet(alpha) over ``k`` components.

    Returns:
        float32 tensor of shape ``(n, k)``; rows are >= 0, sum to 1 and are never NaN (for a
        vanishing ``alpha`` a row tends to a one-hot vector at a uniformly random component).
    """
    alpha = V.alpha(alpha, "alpha", positive=True)
    k = V.integer(k, "k", minimum=1)
    lg, lu = _log_gamma_parts((n, k), alpha, generator, device)  # (n, k) each
    du = lu - lu.max(dim=1, keepdim=True).values  # <= 0; the largest is exactly 0
    return torch.softmax(lg + _over_alpha(du, alpha), dim=1)
