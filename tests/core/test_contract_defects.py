"""Silent wrong results of 0.2 found by the contract issue, each pinned by a test that failed before its fix."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mixlab
from mixlab.policies import CMixup, Remix, regmixup_loss


@pytest.mark.parametrize("make", [lambda: mixlab.MixUp(1.0), lambda: mixlab.SmoothMix()])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_maps_in_a_dict_are_never_blended_under_a_blend(make, dtype):
    # 0.2: a uint8 mask in a dict batch was blended as an image (ids like 23 and 38 appeared)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    m = torch.randint(0, 40, (4, 8, 8), generator=torch.Generator().manual_seed(1)).to(dtype)
    with pytest.raises(ValueError, match=r"roles=\{\"batch\['mask'\]\": 'mix'\}"):
        make()({"image": x, "mask": m, "labels": torch.arange(4)})


def test_integer_maps_in_a_dict_follow_cutmix_exactly():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    m = torch.randint(0, 40, (4, 8, 8), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    out = mixlab.CutMix(1.0, generator=torch.Generator().manual_seed(2))({"image": x, "mask": m, "labels": torch.arange(4)})
    params = out["labels"].params
    expected = torch.where(params.region.mask(3), m[params.index], m)
    assert torch.equal(out["mask"], expected)


@pytest.mark.parametrize("make", [lambda: Remix(1.0, class_counts=[5, 1, 1, 1]),
                                  lambda: CMixup(2.0, bandwidth=1.0)])
def test_label_policies_obey_enabled(make):
    # 0.2: Remix and CMixup overrode __call__ and mixed with enabled=False (the lab's --mix-stop-epoch kept mixing)
    t = make()
    t.enabled = False
    x = torch.rand(6, 3)
    y = torch.tensor([0, 1, 2, 3, 0, 1]) if isinstance(t, Remix) else torch.linspace(0, 1, 6)[:, None]
    mixed, target = t(x, y)
    assert torch.equal(mixed, x) and torch.equal(target.params.lam, torch.ones(6))


def test_cmixup_default_pairs_rows_whatever_the_targets_scale():
    # 0.2: bandwidth=1.0 in target units; targets around 1e5 paired 62 of 64 rows with themselves
    g = torch.Generator().manual_seed(0)
    y = 1e5 + 1e4 * torch.randn(64, 1, generator=g)
    index = CMixup(2.0, generator=g).sample(torch.rand(64, 3), y).index
    assert (index == torch.arange(64)).sum() < 16


def test_cmixup_narrow_fixed_bandwidth_warns_naming_the_fix():
    y = 1e5 + 1e4 * torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="bandwidth='auto'"):
        CMixup(2.0, bandwidth=1.0).sample(torch.rand(64, 3), y)


def test_shape_errors_blame_the_argument_at_fault():
    # 0.2: CMixup with 10 targets for 64 inputs spoke of MixParams.lam; regmixup_loss with short y blamed the logits
    with pytest.raises(ValueError, match=r"CMixup: y must hold one target per input row, 64 on dim 0"):
        CMixup(2.0)(torch.rand(64, 3), torch.rand(10, 1))
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 2, 1])
    _, target = mixlab.MixUp(1.0)(x, y)
    with pytest.raises(ValueError, match=r"y must hold the 4 clean labels"):
        regmixup_loss(nn.CrossEntropyLoss(), torch.randn(8, 3), y[:3], target)
