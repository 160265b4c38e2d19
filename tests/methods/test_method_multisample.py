"""Multi-sample (k-way) mixing's guard: MixUp warns (once, one line) when it mixes with flat Dirichlet weights over the whole batch,
which zeta-mixup (Abhishek et al. 2022, Table 1) reports at 94.69% CIFAR-100 error; zeta-mixup itself is tested in
test_method_zetamixup.py."""
from __future__ import annotations

import warnings

import pytest
import torch

import mixlab


def _call(mixer, B):
    return mixer(torch.rand(B, 3, 4, 4), torch.arange(B) % 3)


@pytest.mark.parametrize("k, alpha", [(8, 1.0), (16, 2.0)])
def test_whole_batch_flat_dirichlet_warns_once_in_one_line_citing_zeta_mixup(k, alpha):
    mixer = mixlab.MixUp(alpha, k=k, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning) as record:
        _call(mixer, 8)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "94.69%" in message and "ZetaMixup" in message and f"k={k}" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _call(mixer, 8)  # once per mixer: no second warning


@pytest.mark.parametrize("k, alpha, B", [(2, 1.0, 2), (4, 1.0, 8), (8, 0.2, 8), (3, 1.0, 2)])
def test_other_k_way_mixing_does_not_warn(k, alpha, B):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _call(mixlab.MixUp(alpha, k=k, generator=torch.Generator().manual_seed(0)), B)
