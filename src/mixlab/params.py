"""``MixParams``: the whole random state of one mixing call, and the functions that draw it.

Convention (everywhere in mixlab): ``lam`` is the weight of the *original* row,
``mixed[i] = lam[i] * x[i] + (1 - lam[i]) * x[index[i]]``, and the target is mixed with the
same weights. Drawing parameters is the only random step; applying them (:func:`mixlab.mix`,
:class:`mixlab.MixedTarget`) is deterministic, so one ``MixParams`` mixes inputs, targets and
any side tensors consistently.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from .pairing import check_pairing, partner_index
from .sampling import check_alpha, check_probability, sample_beta, sample_dirichlet

__all__ = ["MixParams", "sample_params", "sample_box", "MODES"]

MODES = ("batch", "sample", "elem", "pair")


@dataclasses.dataclass(frozen=True)
class MixParams:
    """The random state of one mixing call.

    Attributes:
        lam: float32 ``(B,)``: weight of the original row (1 = unmixed). For k-way mixing,
            ``(B, k)`` weights whose column 0 weights the original row; rows sum to 1.
        index: int64 ``(B,)``: partner row of each row. For k-way, ``(B, k)`` with
            ``index[:, 0] == arange(B)``.
        box: optional int64 ``(B, D, 2)``: CutMix region ``[lo, hi)`` in each of the last
            ``D`` dimensions; inside it the partner is pasted, outside the original is kept,
            and ``lam == 1 - box_volume / prod(box_shape)`` exactly.
        box_shape: the ``D`` spatial sizes the boxes were drawn for (static Python ints).
        linear: optional bool ``(B,)``: with a box, rows marked True are blended linearly with
            ``lam`` instead of pasted (the MixUp rows of a MixUp-or-CutMix batch; their boxes
            are empty).
    """

    lam: torch.Tensor
    index: torch.Tensor
    box: Optional[torch.Tensor] = None
    box_shape: Optional[tuple] = None
    linear: Optional[torch.Tensor] = None

    def __post_init__(self):
        lam, index = self.lam, self.index
        if not isinstance(lam, torch.Tensor) or not lam.is_floating_point():
            raise TypeError(f"MixParams.lam must be a floating tensor, got {_describe(lam)}")
        if not isinstance(index, torch.Tensor) or index.dtype != torch.int64:
            raise TypeError(f"MixParams.index must be an int64 tensor, got {_describe(index)}")
        if lam.ndim not in (1, 2) or lam.shape != index.shape:
            raise ValueError(
                f"MixParams.lam and index must both have shape (B,) or (B, k), got "
                f"{tuple(lam.shape)} and {tuple(index.shape)}"
            )
        if self.box is not None:
            if lam.ndim != 1:
                raise ValueError("MixParams.box is only supported for two-way mixing (lam of shape (B,))")
            if self.box_shape is None or self.box.shape != (lam.shape[0], len(self.box_shape), 2):
                raise ValueError(
                    f"MixParams.box must have shape (B, D, 2) with D = len(box_shape), got "
                    f"{tuple(self.box.shape)} and box_shape={self.box_shape}"
                )

    @property
    def batch_size(self) -> int:
        return self.lam.shape[0]

    @property
    def k(self) -> int:
        """Number of rows mixed into each output row (2 for ordinary mixup)."""
        return 2 if self.lam.ndim == 1 else self.lam.shape[1]

    @property
    def device(self) -> torch.device:
        return self.lam.device

    def kway(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``(B, k)`` and indices ``(B, k)``; column 0 is the original row."""
        if self.lam.ndim == 2:
            return self.lam, self.index
        ar = torch.arange(self.batch_size, device=self.index.device)
        return torch.stack([self.lam, 1 - self.lam], 1), torch.stack([ar, self.index], 1)

    def to(self, device) -> "MixParams":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return MixParams(move(self.lam), move(self.index), move(self.box), self.box_shape, move(self.linear))


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"tensor of dtype {v.dtype} and shape {tuple(v.shape)}"
    return f"{type(v).__name__}"


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    return batch_size


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return "sample" if mode == "elem" else mode


def _coin(n: int, p: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


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
        mode: ``"batch"``: one lambda for the whole batch (the paper); ``"sample"`` (alias
            ``"elem"``): one per row (fastai); ``"pair"``: one per flip pair, shared by both
            rows of the pair (timm's pair mode; needs ``pairing="flip"``).
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
        MixParams with ``lam`` float32 ``(B,)`` (``(B, k)`` for k > 2) and int64 ``index``.

    Convention: ``lam`` weights the original row. No value is read back to the host.
    """
    batch_size = check_batch_size(batch_size)
    alpha = check_alpha(alpha)
    p = check_probability(p)
    mode = check_mode(mode)
    check_pairing(pairing)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
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
        return MixParams(w, ar[:, None].expand(B, k).contiguous())
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
    return MixParams(w, torch.stack(cols, 1))


def sample_box(
    lam: torch.Tensor, box_shape, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one CutMix box per row for the given ``lam`` and correct ``lam`` to the exact area.

    The box's side in each of the ``D`` dimensions is ``floor(S_d * (1 - lam) ** (1 / D))``;
    its centre is uniform over every position ``0 .. S_d - 1`` (borders included); the box is
    clipped to the tensor, and the returned ``lam`` is ``1 - box_volume / prod(S)`` exactly.

    Args:
        lam: float ``(B,)`` requested weights of the original rows.
        box_shape: the ``D`` sizes of the mixed dimensions: ``(T,)``, ``(H, W)`` or ``(D, H, W)``.
        generator: random generator on ``lam``'s device.

    Returns:
        ``box`` int64 ``(B, D, 2)`` holding ``[lo, hi)`` per dimension, and the corrected ``lam``.
    """
    box_shape = tuple(box_shape)
    if not box_shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in box_shape):
        raise ValueError(f"box_shape must be a non-empty tuple of positive ints, got {box_shape!r}")
    B, D = lam.shape[0], len(box_shape)
    sizes = torch.tensor(box_shape, device=lam.device, dtype=torch.float32)  # (D,)
    ratio = (1 - lam.float()).clamp(0, 1) ** (1.0 / D)  # (B,)
    cut = torch.floor(ratio[:, None] * sizes).long()  # (B, D)
    centre = torch.floor(torch.rand(B, D, generator=generator, device=lam.device) * sizes).long()
    centre = torch.minimum(centre, sizes.long() - 1)
    lo = (centre - cut // 2).clamp(min=0)
    hi = torch.minimum(centre - cut // 2 + cut, sizes.long()).clamp(min=0)
    lo = torch.minimum(lo, hi)
    box = torch.stack([lo, hi], dim=2)  # (B, D, 2)
    volume = (hi - lo).prod(dim=1).to(torch.float64)
    lam_exact = (1 - volume / math.prod(box_shape)).to(torch.float32)
    return box, lam_exact
