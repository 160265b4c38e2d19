"""torchvision v2's MixUp / CutMix ergonomics: soft (B, C) targets, batches given alone, both collate forms,
and torchvision's numbers for a fixed lam and its roll(1) pairing."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

import mixlab
from mixlab import MixParams

T = pytest.importorskip("torchvision.transforms.v2")


class _Fixed:
    def __init__(self, lam):
        self.lam = lam

    def sample(self, *args, **kwargs):
        return torch.tensor([self.lam])


@pytest.mark.parametrize("lam", [0.3, 0.75])
def test_mixup_equals_torchvision_for_a_fixed_lam(lam, gen):
    B, C = 6, 5
    imgs, labels = torch.rand(B, 3, 8, 8, generator=gen), torch.randint(0, C, (B,), generator=gen)
    tv = T.MixUp(alpha=1.0, num_classes=C)
    tv._dist = _Fixed(lam)
    tv_imgs, tv_labels = tv(imgs, labels)
    params = MixParams(torch.full((B,), lam), mixlab.partner_index(B, "roll"))
    torch.testing.assert_close(mixlab.mix(imgs, params), tv_imgs)
    torch.testing.assert_close(mixlab.MixedTarget(labels, params).soft(C), tv_labels)


@pytest.mark.parametrize("make", [
    lambda C: mixlab.MixUp(alpha=1.0, pairing="roll", soft=True, num_classes=C),
    lambda C: mixlab.CutMix(alpha=1.0, pairing="roll", soft=True, num_classes=C),
    lambda C: mixlab.FMix(pairing="roll", soft=True, num_classes=C),
])
def test_input_structures_as_torchvision_takes_them(make, gen):
    B, C = 4, 3
    imgs, labels = torch.rand(B, 3, 8, 8, generator=gen), torch.randint(0, C, (B,), generator=gen)
    t = make(C)
    # unpacked and packed
    out_imgs, out_labels = t(imgs, labels)
    assert out_imgs.shape == imgs.shape and out_labels.shape == (B, C)
    packed = t((imgs, labels))
    assert isinstance(packed, tuple) and packed[0].shape == imgs.shape and packed[1].shape == (B, C)
    packed_list = t([imgs, labels])
    assert isinstance(packed_list, list) and packed_list[1].shape == (B, C)
    # a dict batch finds its labels by torchvision's default rule ("labels" / "label", any case)
    out = t({"img": imgs, "Label": labels, "meta": torch.arange(B)})
    assert out["Label"].shape == (B, C) and out["img"].shape == imgs.shape and torch.equal(out["meta"], torch.arange(B))
    torch.testing.assert_close(out["Label"].sum(1), torch.ones(B))
    # labels_getter
    t2 = make(C)
    t2.labels_getter = lambda batch: batch["target"]
    assert t2({"img": imgs, "target": labels})["target"].shape == (B, C)
    # the soft target goes straight into nn.CrossEntropyLoss
    assert torch.isfinite(nn.CrossEntropyLoss()(torch.randn(B, C), out_labels))


def test_both_collate_forms(gen):
    C = 4
    ds = [(torch.rand(3, 8, 8, generator=gen), int(i % C)) for i in range(16)]
    mixup = mixlab.MixUp(alpha=1.0, pairing="roll", soft=True, num_classes=C)
    # 1. after the loader
    for imgs, labels in DataLoader(ds, batch_size=8):
        imgs, labels = mixup(imgs, labels)
        assert labels.shape == (8, C)
    # 2. inside the collate function
    for imgs, labels in DataLoader(ds, batch_size=8, collate_fn=lambda batch: mixup(*default_collate(batch))):
        assert imgs.shape == (8, 3, 8, 8) and labels.shape == (8, C)
    # 3. mixlab.data.MixCollate-style: a packed collate
    for imgs, labels in DataLoader(ds, batch_size=8, collate_fn=lambda batch: mixup(default_collate(batch))):
        assert labels.shape == (8, C)


def test_error_cases(gen):
    imgs = torch.rand(4, 3, 8, 8, generator=gen)
    with pytest.raises(ValueError, match="num_classes is required"):
        mixlab.MixUp(soft=True)(imgs, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="batch size"):
        mixlab.MixUp(soft=True, num_classes=3)(imgs, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        mixlab.MixUp(soft=True, num_classes=3)(imgs, torch.tensor([0, 1, 2, 5]))
    # as torchvision: a pair's second item is the labels (float rows are probabilities) ...
    pair = mixlab.MixUp(soft=True)((imgs, torch.softmax(torch.rand(4, 7), 1)))
    assert isinstance(pair, tuple) and pair[1].shape == (4, 7)
    torch.testing.assert_close(pair[1].sum(1), torch.ones(4))
    # ... a batch with no labels is an error, not inputs mixed while the labels stay unmixed ...
    with pytest.raises(ValueError, match=r"found no labels in the batch \(Tensor of shape \(4, 3, 8, 8\)\)"):
        mixlab.MixUp()(imgs)
    with pytest.raises(ValueError, match="labels_getter=None"):
        mixlab.CutMix()({"image": imgs, "id": torch.arange(4)})
    # ... unless labels_getter=None says there are none: then the mixed batch alone comes back
    two = mixlab.MixUp(labels_getter=None)((imgs, torch.rand(4, 7)))
    assert isinstance(two, tuple) and two[1].shape == (4, 7)
    assert mixlab.MixUp(labels_getter=None)(imgs).shape == imgs.shape
    # a PIL image or labels that are not a tensor: TypeError (mixlab) and ValueError (torchvision) at once
    with pytest.raises(TypeError, match=r"y \(the labels\) must be a torch.Tensor"):
        mixlab.MixUp(num_classes=3)(imgs, [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"y \(the labels\) must be a torch.Tensor"):
        mixlab.MixUp(num_classes=3)(imgs, [0, 1, 2, 0])


def test_enabled_and_unknown_options(gen):
    x, y = torch.rand(4, 3, 8, 8, generator=gen), torch.tensor([0, 1, 2, 0])
    t = mixlab.CutMix(num_classes=3, soft=True, generator=gen)
    t.enabled = False  # stop mixing (timm's mixup_enabled = False)
    out, soft = t(x, y)
    assert torch.equal(out, x) and torch.equal(soft, F.one_hot(y, 3).float())
    t.enabled = True
    out, soft = t(x, y)
    assert not torch.equal(out, x)
    with pytest.raises(AttributeError, match="CutMix has no option 'mixup_enabled'"):
        t.mixup_enabled = False
    with pytest.raises(AttributeError, match="has no option 'alpah'"):
        mixlab.MixUp().alpah = 0.2
