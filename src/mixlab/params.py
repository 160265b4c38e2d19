"""``MixParams``: the whole random state of one mixing call, and the functions that draw it.

Convention (everywhere in mixlab): ``lam`` is the weight of the *original* row,
``mixed[i] = lam[i] * x[i] + (1 - lam[i]) * x[index[i]]``, and the target is mixed with the
same weights. Drawing parameters is the only random step; applying them (:func:`mixlab.mix`,
:class:`mixlab.MixedTarget`) is deterministic, so one ``MixParams`` mixes inputs, targets and
any side tensors consistently.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from . import _fast
from . import _validate as V
from .pairing import check_pairing, partner_index
from .regions import Box, Region
from .sampling import rng, sample_beta, sample_dirichlet

__all__ = ["MixParams", "sample_params", "sample_box", "MODES"]

MODES = ("batch", "sample", "pair")


@dataclasses.dataclass(frozen=True, eq=False)
class MixParams:
    """The random state of one mixing call: weights, partners, and an optional region.

    Attributes:
        lam: float32 ``(B,)``: weight of the original row (1 = unmixed). Under a region it is the
            region's exact kept fraction (blended rows of a per-row MixUp-or-CutMix batch keep
            their own draw). For k-way mixing it is ``weights[:, 0]``.
        index: int64 ``(B,)``: partner row of each row (into the batch, or into a partner batch).
            For k-way mixing ``(B, k)`` with ``index[:, 0] == arange(B)``.
        region: optional :class:`mixlab.regions.Region` (a CutMix box, a binary or soft mask):
            leaves whose trailing dims it covers are combined position by position; every other
            floating leaf is blended with ``lam``.
        weights: k-way mixing only: float32 ``(B, k)`` weights, column 0 the original row; rows
            sum to 1. Build k-way parameters with :meth:`from_weights`.
        label_weights: two-way only, optional float ``(B, 2)``: the weights of the original's and the
            partner's labels when they are not ``(lam, 1 - lam)`` and need not sum to 1 (SnapMix's
            class-activation shares). :class:`~mixlab.MixedTarget` weighs the labels with them (its
            ``"mean"`` loss is then the plain mean of the per-row losses, as SnapMix's training loop
            computes it); the inputs are mixed by ``lam`` and ``region`` alone.
    """

    lam: torch.Tensor
    index: torch.Tensor
    region: Optional[Region] = None
    weights: Optional[torch.Tensor] = None
    label_weights: Optional[torch.Tensor] = None

    def __post_init__(self):
        lam, index, w = self.lam, self.index, self.weights
        if not isinstance(lam, torch.Tensor) or not lam.is_floating_point():
            raise TypeError(f"MixParams.lam must be a floating tensor, got {V.describe(lam)}")
        if not isinstance(index, torch.Tensor) or index.dtype != torch.int64:
            raise TypeError(f"MixParams.index must be an int64 tensor, got {V.describe(index)}")
        if lam.ndim != 1:
            raise ValueError(f"MixParams.lam must have shape (B,), got {tuple(lam.shape)}; "
                             "pass k-way weights (B, k) with MixParams.from_weights")
        B = lam.shape[0]
        if w is None:
            if index.shape != (B,):
                raise ValueError(f"MixParams.lam and index must both have shape (B,) (or (B, k) for k-way "
                                 f"weights), got {tuple(lam.shape)} and {tuple(index.shape)}")
        else:
            if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.ndim != 2 \
                    or w.shape != index.shape or w.shape[0] != B:
                raise ValueError(f"MixParams.weights and index must both have shape (B, k) with B = {B}, got "
                                 f"{V.describe(w)} and {tuple(index.shape)}")
            if self.region is not None:
                raise ValueError("MixParams.region is only supported for two-way mixing (no k-way weights)")
        lw = self.label_weights
        if lw is not None and (w is not None or not isinstance(lw, torch.Tensor) or not lw.is_floating_point()
                               or lw.shape != (B, 2)):
            raise ValueError(f"MixParams.label_weights must be a float tensor of shape ({B}, 2) for two-way params "
                             f"(no k-way weights), got {V.describe(lw)}")
        if index.numel() and _fast.eager_cpu(index):  # free on CPU only
            lo = int(index.min())
            if lo < 0:
                raise ValueError(f"MixParams.index must hold partner rows >= 0, got {lo}")
        if self.region is not None:
            if not isinstance(self.region, Region):
                raise TypeError(f"MixParams.region must be a mixlab.regions.Region or None, got "
                                f"{type(self.region).__name__}")
            if self.region.batch_size != B:
                raise ValueError(f"MixParams.region holds {self.region.batch_size} rows, lam holds {B}")

    @classmethod
    def from_weights(cls, weights: torch.Tensor, index: torch.Tensor) -> "MixParams":
        """k-way parameters: ``weights`` ``(B, k)`` (column 0 the original row) and ``index`` ``(B, k)``."""
        if not isinstance(weights, torch.Tensor) or weights.ndim != 2:
            raise ValueError(f"weights must be a (B, k) float tensor, got {V.describe(weights)}")
        return cls(weights[:, 0], index, None, weights)

    @property
    def batch_size(self) -> int:
        return self.lam.shape[0]

    @property
    def k(self) -> int:
        """Number of rows mixed into each output row (2 for ordinary mixup)."""
        return 2 if self.weights is None else self.weights.shape[1]

    @property
    def device(self) -> torch.device:
        return self.lam.device

    def kway(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``(B, k)`` and indices ``(B, k)``; column 0 is the original row (the label weights, when given)."""
        if self.weights is not None:
            return self.weights, self.index
        ar = torch.arange(self.batch_size, device=self.index.device)
        w = torch.stack([self.lam, 1 - self.lam], 1) if self.label_weights is None else self.label_weights
        return w, torch.stack([ar, self.index], 1)

    def rows(self, start: int, stop: int) -> "MixParams":
        """Rows ``start .. stop`` (sharding a global batch across ranks).

        ``index`` keeps pointing into the full batch (pass that batch as ``partner``); for k-way
        parameters column 0 (the row itself) is renumbered to the local ``arange``.
        """
        if not (0 <= start <= stop <= self.batch_size):
            raise ValueError(f"rows [{start}, {stop}) are outside params of batch size {self.batch_size}")
        sl = slice(start, stop)
        index = self.index[sl].contiguous()
        weights = None if self.weights is None else self.weights[sl].contiguous()
        if weights is not None:
            index[:, 0] = torch.arange(stop - start, device=index.device)
        region = None if self.region is None else self.region.rows(sl)
        lw = None if self.label_weights is None else self.label_weights[sl].contiguous()
        return MixParams(self.lam[sl].contiguous(), index, region, weights, lw)

    def to(self, device) -> "MixParams":
        return MixParams(self.lam.to(device), self.index.to(device),
                         None if self.region is None else self.region.to(device),
                         None if self.weights is None else self.weights.to(device),
                         None if self.label_weights is None else self.label_weights.to(device))


def check_mode(mode, modes=MODES) -> str:
    return V.choice(mode, "mode", modes)


def _coin(n: int, p: float, generator, device) -> torch.Tensor:
    return torch.rand(n, device=device, **rng(generator)) < p


def sample_params(
    batch_size: int,
    *,
    alpha: float,
    mode: str = "batch",
    keep_dominant: bool = False,
    p: float = 1.0,
    pairing: str = "permutation",
    k: int = 2,
    generator: torch.Generator | None = None,
    device=None,
) -> MixParams:
    """Draw the parameters of one mixup call.

    Args:
        batch_size: B.
        alpha: Beta(alpha, alpha) concentration (Dirichlet for ``k > 2``); 0 means no mixing.
        mode: ``"batch"``: one lambda for the whole batch (the paper); ``"sample"``: one per
            row (fastai); ``"pair"``: one per flip pair, shared by both rows of the pair (timm's
            pair mode; needs ``pairing="flip"``, which must be passed: nothing is switched for you).
        keep_dominant: fastai's ``lam = max(lam, 1 - lam)``, so the original row dominates
            and two rows mixed with each other do not become duplicates. For k-way, the
            original row gets the largest weight.
        p: probability that a row is mixed at all; unmixed rows get ``lam = 1``. Applied once:
            in ``"batch"`` mode one coin decides for the whole batch, otherwise one per row (per
            pair in ``"pair"`` mode).
        pairing: ``"permutation"``, ``"flip"`` or ``"roll"`` (see :mod:`mixlab.pairing`).
        k: number of rows mixed into each output (``k > 2``: Dirichlet weights; partners from
            ``k - 1`` independent permutations, or rolls by 1..k-1).
        generator: random generator on ``device``.
        device: where the parameters live (the batch's device).

    Returns:
        MixParams with ``lam`` float32 ``(B,)`` and int64 ``index`` ``(B,)``; for ``k > 2``
        also ``weights`` ``(B, k)`` and ``index`` ``(B, k)``.

    Convention: ``lam`` weights the original row. No value is read back to the host.
    """
    batch_size = V.integer(batch_size, "batch_size", minimum=0)
    alpha = V.alpha(alpha)
    p = V.probability(p)
    mode = check_mode(mode)
    check_pairing(pairing)
    k = V.integer(k, "k", minimum=2)
    keep_dominant = bool(keep_dominant)
    if mode == "pair" and pairing != "flip":
        raise ValueError(f"mode='pair' pairs rows by flip; pass pairing='flip', got pairing={pairing!r}")
    if k > 2 and pairing == "flip":
        raise ValueError("pairing='flip' has only one partner per row; use 'permutation' or 'roll' with k > 2")
    if k > 2 and mode == "pair":
        raise ValueError("mode='pair' is for two-way mixing; use mode='batch' or 'sample' with k > 2")
    B = batch_size
    if k > 2:
        return _sample_kway(B, alpha, mode, keep_dominant, p, pairing, k, generator, device)
    if alpha == 0 or B <= 1 or p == 0:
        # No mixing: every row is its own partner with weight 1.
        return MixParams(torch.ones(B, device=device), torch.arange(B, device=device))
    n = 1 if mode == "batch" else B
    lam = sample_beta(n, alpha, generator=generator, device=device)  # (n,)
    if keep_dominant:
        lam = torch.maximum(lam, 1 - lam)
    if p < 1:
        lam = torch.where(_coin(n, p, generator, device), lam, torch.ones_like(lam))
    if mode == "batch":
        lam = lam.expand(B).contiguous()
    elif mode == "pair":
        ar = torch.arange(B, device=lam.device)
        lam = lam[torch.minimum(ar, B - 1 - ar)]  # both rows of a pair share the first row's draw
    index = partner_index(B, pairing, generator=generator, device=device)
    return MixParams(lam, index)


def _sample_kway(B, alpha, mode, keep_dominant, p, pairing, k, generator, device) -> MixParams:
    ar = torch.arange(B, device=device)
    if alpha == 0 or B <= 1 or p == 0:
        w = torch.zeros(B, k, device=device)
        w[:, 0] = 1
        return MixParams.from_weights(w, ar[:, None].expand(B, k).contiguous())
    n = 1 if mode == "batch" else B
    w = sample_dirichlet(n, k, alpha, generator=generator, device=device)  # (n, k)
    if keep_dominant:
        w = torch.sort(w, dim=1, descending=True).values
    if p < 1:
        unmixed = torch.zeros_like(w)
        unmixed[:, 0] = 1
        w = torch.where(_coin(n, p, generator, device)[:, None], w, unmixed)
    w = w.expand(B, k).contiguous()
    cols = [ar] + [partner_index(B, pairing, shift=j, generator=generator, device=device) for j in range(1, k)]
    return MixParams.from_weights(w, torch.stack(cols, 1))


def sample_box(lam: torch.Tensor, shape, *, generator: torch.Generator | None = None) -> tuple[Box, torch.Tensor]:
    """Draw one CutMix box per row for the given ``lam``; return it and the exact kept fraction.

    The box's side in each of the ``D`` dimensions is ``floor(S_d * (1 - lam) ** (1 / D))``
    (the CutMix paper's ``sqrt(1 - lam)`` for images); its centre is uniform over every position
    ``0 .. S_d - 1`` (borders included); the box is clipped to the tensor, and the returned
    ``lam`` is ``1 - box_volume / prod(S)`` exactly (``Box.lam``).

    Args:
        lam: float ``(B,)`` requested weights of the original rows.
        shape: the ``D`` sizes of the mixed dimensions: ``(T,)``, ``(H, W)`` or ``(D, H, W)``.
        generator: random generator on ``lam``'s device.

    Returns:
        A :class:`mixlab.regions.Box` (``box`` int64 ``(B, D, 2)``, ``[lo, hi)`` per dimension)
        and the corrected ``lam`` ``(B,)``.
    """
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    B, D = lam.shape[0], len(shape)
    sizes = _fast.consts(shape, device=lam.device, dtype=torch.float32)  # (D,), no host-to-device copy
    ratio = (1 - lam.float()).clamp(0, 1) ** (1.0 / D)  # (B,)
    cut = torch.floor(ratio[:, None] * sizes).long()  # (B, D)
    centre = torch.floor(torch.rand(B, D, device=lam.device, **rng(generator)) * sizes).long()
    centre = torch.minimum(centre, sizes.long() - 1)
    lo = (centre - cut // 2).clamp(min=0)
    hi = torch.minimum(centre - cut // 2 + cut, sizes.long()).clamp(min=0)
    lo = torch.minimum(lo, hi)
    box = Box(torch.stack([lo, hi], dim=2), shape)  # (B, D, 2)
    return box, box.lam
