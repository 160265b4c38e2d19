"""MixStyle (Zhou, Yang, Qiao, Xiang 2021, "Domain Generalization with MixStyle", ICLR; official code
KaiyangZhou/mixstyle-release, ``MixStyle`` in ``reid/models/mixstyle.py``, the same as Dassl's
``dassl/modeling/ops/mixstyle.py``): mix the per-instance channel statistics of hidden features.

Between two layers, each row's feature map is normalised by its own channel mean and standard deviation
(both detached, as instance normalisation without affine terms) and re-styled with a convex combination of
its statistics and its partner's::

    mu, sig = mean(x), sqrt(var(x) + eps)          # per row and channel, over the positions; detached
    out = (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]

with ``lam ~ Beta(alpha, alpha)`` per row (official defaults alpha 0.1, p 0.5, eps 1e-6). Only in training
mode; labels are untouched (the content is the row's own; only its "style" moves).

Why this is not a registered :class:`~mixlab.Mixer`: a mixer mixes a batch *before* the model and returns a
target whose ``lam`` is the share of the original the mixed input keeps (the conformance matrix reads it
back from the pixels). MixStyle runs *inside* the model, every forward pass in training mode, changes no
label, and keeps no "share" of the original (the normalised content is all the row's own): so it is an
``nn.Module`` to place in a network (:class:`MixStyle`) or to hook after named layers of an existing one
(:func:`add_mixstyle`, like :class:`mixlab.ManifoldMixup`'s hooks), not a batch transform.

Pairing (``mix``): ``"random"`` (a random permutation of the batch) or ``"crossdomain"`` (the official: the
batch is taken as two domains stacked in halves; the reversed order is split into its two halves, each
shuffled, so every row's partner is in the other half). For an odd batch the first half has the extra row
(the official code fails on an odd batch).

Convention: ``lam`` weights the row's own statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from . import _validate as V
from .manifold import _resolve_layer
from .sampling import rng, sample_beta

__all__ = ["MixStyle", "MixStyleDraw", "mixstyle", "add_mixstyle", "MixStyleHooks", "MIX_METHODS"]

MIX_METHODS = ("random", "crossdomain")


def mixstyle(x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mix the per-row channel statistics of ``x`` with those of rows ``perm`` (no randomness).

    Args:
        x: ``(B, C, *S)`` features (``S`` at least one dim); the statistics are over ``S``.
        lam: ``(B,)`` weight of each row's own statistics.
        perm: int64 ``(B,)`` the partner rows.
        eps: added to the (unbiased) variance before the square root, as the official code.

    Returns:
        ``(B, C, *S)``: ``(x - mu) / sig * sig_mix + mu_mix`` with ``mu``, ``sig`` detached.
    """
    if x.ndim < 3:
        raise ValueError(f"MixStyle mixes the statistics of (B, C, *positions) features over the positions; "
                         f"got shape {tuple(x.shape)} (channels but no positions)")
    dims = tuple(range(2, x.ndim))
    mu = x.mean(dim=dims, keepdim=True)  # (B, C, 1, ...)
    var = x.var(dim=dims, keepdim=True)
    sig = (var + eps).sqrt()
    mu, sig = mu.detach(), sig.detach()
    x_normed = (x - mu) / sig
    lmda = lam.to(device=x.device, dtype=x.dtype).view((-1,) + (1,) * (x.ndim - 1))
    perm = perm.to(x.device)
    mu_mix = mu * lmda + mu[perm] * (1 - lmda)
    sig_mix = sig * lmda + sig[perm] * (1 - lmda)
    return x_normed * sig_mix + mu_mix


@dataclasses.dataclass(frozen=True)
class MixStyleDraw:
    """The random state of one MixStyle call: the coin (mix when ``coin < p``), ``lam`` ``(B,)``, the
    partner rows ``perm`` ``(B,)`` and the permutations drawn to make it (one for ``"random"``, the two
    halves' for ``"crossdomain"``, in the official order)."""

    coin: float
    lam: torch.Tensor
    perm: torch.Tensor
    perms: tuple


class MixStyle(nn.Module):
    """MixStyle (Zhou et al. 2021): mix per-instance channel statistics of features, in training mode.

    Place it after a block of a network (the paper: after ResNet's ``layer1`` and ``layer2``), or hook it
    after named layers of an existing model with :func:`add_mixstyle`. Eval mode, ``p = 0`` and
    ``active = False`` return the input itself.

    Args:
        p: probability that a forward pass mixes (one coin per call, as the official; default 0.5).
        alpha: ``lam ~ Beta(alpha, alpha)`` per row (default 0.1, the official's).
        eps: added to the variance (default 1e-6).
        mix: ``"random"`` or ``"crossdomain"`` (see the module docstring).
        generator: random generator for the coin, ``lam`` and the permutations (on the features' device, or
            a CPU generator); default: torch's global generator.

    Reference: Zhou et al., "Domain Generalization with MixStyle", ICLR 2021, Eq. (4)-(6); code
    KaiyangZhou/mixstyle-release. Convention: ``lam`` weights the row's own statistics.

    Example:
        >>> import torch, mixlab.mixstyle as M
        >>> ms = M.MixStyle(p=1.0, generator=torch.Generator().manual_seed(0)).train()
        >>> ms(torch.randn(4, 8, 5, 5)).shape
        torch.Size([4, 8, 5, 5])
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, mix: str = "random", *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.p = V.probability(p)
        self.alpha = V.alpha(alpha, "alpha", positive=True)
        self.eps = V.real(eps, "eps", minimum=0.0)
        self.mix = V.choice(mix, "mix", MIX_METHODS)
        self.generator = V.generator(generator)
        self.active = True  # the official's set_activation_status

    def _rand_device(self, device):
        return self.generator.device if self.generator is not None else device

    def sample(self, B: int, device) -> MixStyleDraw:
        """Draw the coin, ``lam`` and the partners for a batch of ``B`` rows (the only random step)."""
        g = self.generator
        where = self._rand_device(device)
        coin = float(torch.rand((), device=where, **rng(g)))
        lam = sample_beta(B, self.alpha, generator=g, device=where)  # (B,)
        if self.mix == "random":
            perms = (torch.randperm(B, device=where, **rng(g)),)
            perm = perms[0]
        else:
            rev = torch.arange(B - 1, -1, -1, device=where)
            first, second = rev.chunk(2) if B > 1 else (rev, rev[:0])
            perms = (torch.randperm(first.numel(), device=where, **rng(g)),
                     torch.randperm(second.numel(), device=where, **rng(g)))
            perm = torch.cat([first[perms[0]], second[perms[1]]])
        return MixStyleDraw(coin, lam.to(device), perm.to(device), perms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.active or self.p == 0:
            return x
        if x.ndim < 3:
            mixstyle(x, torch.ones(0), torch.zeros(0, dtype=torch.long))  # raises, naming the shape
        draw = self.sample(x.shape[0], x.device)
        if not draw.coin < self.p:
            return x
        return mixstyle(x, draw.lam, draw.perm, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, eps={self.eps}, mix={self.mix!r}"


class MixStyleHooks:
    """The forward hooks :func:`add_mixstyle` placed: ``modules`` maps each layer name to its
    :class:`MixStyle`; :meth:`remove` (or leaving a ``with`` block) takes them off."""

    def __init__(self, modules: dict, handles: list):
        self.modules = modules
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def add_mixstyle(model: nn.Module, layers: Sequence, *, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6,
                 mix: str = "random", generator: torch.Generator | None = None) -> MixStyleHooks:
    """Apply MixStyle to the outputs of ``layers`` of ``model`` through forward hooks (the model is not edited).

    Each hooked layer gets its own :class:`MixStyle` (own coin and ``lam`` per call, as separate modules in
    the official networks), active only while that layer is in training mode, so ``model.train()`` /
    ``model.eval()`` switch it. The hooks stay until :meth:`MixStyleHooks.remove`; the model's
    ``state_dict`` is unchanged (MixStyle has no parameters).

    Args:
        model: the network.
        layers: submodules or their dotted names (``["layer1", "layer2"]``, the paper's ResNet placement);
            each output must be a tensor ``(B, C, *S)``.
        p, alpha, eps, mix, generator: as :class:`MixStyle` (one generator shared by the hooks).

    Returns:
        :class:`MixStyleHooks`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty list of modules or names, got {layers!r}")
    resolved = []
    for layer in layers:
        if layer == "input":
            raise ValueError("layers: MixStyle mixes hidden features; name a layer, not 'input'")
        resolved.append(_resolve_layer(model, layer))
    names = {id(m): n for n, m in model.named_modules()}
    modules, handles = {}, []
    for layer in resolved:
        ms = MixStyle(p=p, alpha=alpha, eps=eps, mix=mix, generator=generator)
        modules[names.get(id(layer), type(layer).__name__)] = ms

        def hook(module, inputs, output, ms=ms):
            if not module.training:
                return None
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"MixStyle hooks a layer whose output is a (B, C, *S) tensor; "
                                f"{type(module).__name__} returned {type(output).__name__}")
            ms.train(True)
            return ms(output)
        handles.append(layer.register_forward_hook(hook))
    return MixStyleHooks(modules, handles)
