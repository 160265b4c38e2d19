"""Partner indices: which row each row of a batch is mixed with.

Convention: ``index[i]`` is the partner of row ``i``, so the partner batch is ``x[index]``.

- ``"permutation"``: a uniform random permutation (the paper's ``randperm``, fastai).
- ``"flip"``: ``index[i] = B - 1 - i`` (timm); rows pair up symmetrically.
- ``"roll"``: ``index[i] = (i - 1) mod B``, i.e. ``x.roll(1, 0)`` (torchvision v2).

A row can be its own partner (a permutation's fixed point, the middle row of an odd batch
under ``flip``, and the only row of a batch of one); it is then unchanged by mixing.
``"global"`` pairing across ranks lives in :mod:`mixlab.distributed`.
"""
from __future__ import annotations

import torch

from . import _validate as V
from .sampling import rng

__all__ = ["PAIRINGS", "partner_index"]

PAIRINGS = ("permutation", "flip", "roll")


def check_pairing(pairing) -> str:
    return V.choice(pairing, "pairing", PAIRINGS)


def partner_index(
    batch_size: int,
    pairing: str = "permutation",
    *,
    shift: int = 1,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Partner index for each row of a batch.

    Args:
        batch_size: B, the number of rows.
        pairing: ``"permutation"``, ``"flip"`` or ``"roll"``.
        shift: for ``"roll"``, how far the batch is rolled (k-way mixing uses 1, 2, ...).
        generator: random generator for ``"permutation"``.
        device: device of the returned index.

    Returns:
        int64 tensor of shape ``(B,)``.
    """
    check_pairing(pairing)
    if pairing == "permutation":
        return torch.randperm(batch_size, device=device, **rng(generator))
    ar = torch.arange(batch_size, device=device)
    if pairing == "flip":
        return ar.flip(0)
    return (ar - shift) % max(batch_size, 1)
