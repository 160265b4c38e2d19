"""torchvision's own input-structure tests for its MixUp/CutMix, run against torchvision (control) and mixlab.

Source: pytorch/vision, test/test_transforms_v2.py, class ``TestCutMixMixUp`` and the module-level
``test_labels_getter_default_heuristic`` after it, at commit 20610ed3f8d79c8d1b414ffd6f317951b43dabfb
(the version this port was made from; the class uses no helper of ``common_utils`` other than
``set_rng_seed`` in the autouse seed fixture and ``needs_cuda``, reproduced below).
torchvision is Copyright (c) Soumith Chintala 2016, All rights reserved, and is distributed under
the BSD 3-Clause License; the test cases below are derived from it under that license.

The cases, inputs and assertions are torchvision's, in the same order; the code is a port (the
test bodies take an implementation, ``impl``) rather than a verbatim copy. Every test runs
(a) with torchvision's own ``v2.MixUp`` / ``v2.CutMix``: the control, which must pass on the
installed torchvision, and (b) with ``mixlab.MixUp`` / ``mixlab.CutMix`` built by ``_mixlab``:
``soft=True`` and ``pairing="roll"`` (torchvision's pairing), torchvision's argument names
(``alpha``, ``num_classes``, ``labels_getter``) passed through unchanged.

Changes from the upstream assertions, each with its reason:

1. Error messages: upstream matches torchvision's message texts; here each implementation has its
   own pattern (``MESSAGES``), and both must raise the same error class as upstream (ValueError)
   with a message that names the argument or input at fault. mixlab's texts:
   - a PIL image: "x must be a tensor ..." (``BatchTypeError``, a TypeError and a ValueError);
   - a lone ``tv_tensors.Mask`` / ``BoundingBoxes`` (upstream: "does not support ... masks"):
     "found no labels in the batch (Mask of shape ...)"; mixlab does take masks inside a batch
     (pasted with the CutMix box), so what is wrong with a lone one is that it has no labels;
   - a dict without labels, and images alone: "found no labels in the batch (...)";
   - labels that are not a tensor: "y (the labels) must be a torch.Tensor";
   - labels of shape (2, 3), inputs of 6 dims, labels of batch size B + 1: "y has batch size ...".
     mixlab mixes any tensor modality, so a 6-dim input is not refused for its rank: what is
     inconsistent is the batch size of the labels.
2. ``cutmix_mixup(imgs)`` and the (2, 3) labels: upstream at that commit expects "labels tensor
   should be of shape"; the installed torchvision (0.29) says "labels should be index based" and
   "When passing 2D labels" for them, so the control uses those texts.
3. ``Compose([cutmix_mixup, cutmix_mixup])``: upstream at that commit expects an error (the second
   call got 2-D labels). torchvision 0.29 accepts probability labels of shape (B, num_classes), so
   the composition runs; the test asserts what both implementations now do: (B, C) rows that sum
   to 1, each mixing at most 3 classes (a row, its partner and the partner's partner).
4. ``test_labels_getter_default_heuristic``: upstream calls torchvision's private
   ``_find_labels_default_heuristic`` on ``(None, sample, "whatever_again")`` and on the dict.
   mixlab has no such public function, so the same keys, sample types and precedence rule are
   checked through the transform call: dicts carry an image batch beside the labels, and the
   tuple/list form is the detection-style pair ``(images, {key: labels, "another_key": ...})``
   (a 2-item pair with images in place of ``None``: mixlab never mixes labels without inputs).
5. ``test_cpu_vs_gpu`` needs CUDA (skipped on this machine, as upstream does). Upstream passes CPU
   tensors, so its check returns early; here the inputs are moved to CUDA and only the output's
   shapes and device are compared (mixlab draws on the device, so its numbers differ from a CPU
   draw by design).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

import mixlab

transforms = pytest.importorskip("torchvision.transforms.v2")
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


@pytest.fixture(autouse=True)
def fix_rng_seed():
    # common_utils.set_rng_seed(0)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    yield


def _mixlab(cls):
    def make(*, alpha=1.0, num_classes=None, labels_getter="default"):
        return cls(alpha=alpha, num_classes=num_classes, labels_getter=labels_getter, soft=True, pairing="roll")

    make.__name__ = f"mixlab.{cls.__name__}"
    return make


IMPLS = {
    "torchvision": {"CutMix": transforms.CutMix, "MixUp": transforms.MixUp},
    "mixlab": {"CutMix": _mixlab(mixlab.CutMix), "MixUp": _mixlab(mixlab.MixUp)},
}

MESSAGES = {
    "torchvision": {
        "pil": "does not support PIL images, ",
        "mask": "does not support PIL images, ",
        "boxes": "does not support PIL images, ",
        "no_labels": "Could not infer where the labels are",
        "imgs_alone": "labels should be index based",
        "labels_not_tensor": "When using the default labels_getter",
        "labels_2x3": "When passing 2D labels",
        "dims": "Expected a batched input with 4 dims",
        "batch_size": "does not match the batch size of the labels",
    },
    "mixlab": {
        "pil": r"x must be a tensor or a nested batch of tensors, got Image",
        "mask": r"found no labels in the batch \(Mask of shape \(12, 12\)\)",
        "boxes": r"found no labels in the batch \(BoundingBoxes of shape \(2, 4\)\)",
        "no_labels": r"found no labels in the batch \(a dict\).*labels_getter",
        "imgs_alone": r"found no labels in the batch \(Tensor of shape \(9, 3, 12, 12\)\)",
        "labels_not_tensor": r"y \(the labels\) must be a torch.Tensor",
        "labels_2x3": r"y has batch size 2, but the params were drawn for batch size 9",
        "dims": r"y has batch size 9, but the params were drawn for batch size 1",
        "batch_size": r"y has batch size 10, but the params were drawn for batch size 9",
    },
}

CASES = [(impl, name) for impl in IMPLS for name in ("CutMix", "MixUp")]


@pytest.fixture(params=CASES, ids=[f"{impl}-{name}" for impl, name in CASES])
def impl_T(request):
    impl, name = request.param
    return impl, IMPLS[impl][name]


class TestCutMixMixUp:
    class DummyDataset:
        def __init__(self, size, num_classes):
            self.size = size
            self.num_classes = num_classes
            assert size < num_classes

        def __getitem__(self, idx):
            img = torch.rand(3, 100, 100)
            label = idx  # all labels in a batch are unique, which makes the checks simple
            return img, label

        def __len__(self):
            return self.size

    def test_supported_input_structure(self, impl_T):
        _, T = impl_T
        batch_size = 32
        num_classes = 100

        dataset = self.DummyDataset(size=batch_size, num_classes=num_classes)
        cutmix_mixup = T(num_classes=num_classes)
        dl = DataLoader(dataset, batch_size=batch_size)

        # input sanity checks
        img, target = next(iter(dl))
        input_img_size = img.shape[-3:]
        assert isinstance(img, torch.Tensor) and isinstance(target, torch.Tensor)
        assert target.shape == (batch_size,)

        def check_output(img, target):
            assert img.shape == (batch_size, *input_img_size)
            assert target.shape == (batch_size, num_classes)
            torch.testing.assert_close(target.sum(axis=-1), torch.ones(batch_size))
            num_non_zero_labels = (target != 0).sum(axis=-1)
            assert (num_non_zero_labels == 2).all()

        # after the DataLoader, unpacked
        img, target = next(iter(dl))
        assert target.shape == (batch_size,)
        img, target = cutmix_mixup(img, target)
        check_output(img, target)

        # after the DataLoader, packed (default_collate gives a list)
        packed_from_dl = next(iter(dl))
        assert isinstance(packed_from_dl, list)
        img, target = cutmix_mixup(packed_from_dl)
        check_output(img, target)

        # as the collate function, after default_collate, in both call forms
        def collate_fn_1(batch):
            return cutmix_mixup(default_collate(batch))

        def collate_fn_2(batch):
            return cutmix_mixup(*default_collate(batch))

        for collate_fn in (collate_fn_1, collate_fn_2):
            dl = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn)
            img, target = next(iter(dl))
            check_output(img, target)

    @needs_cuda
    def test_cpu_vs_gpu(self, impl_T):
        _, T = impl_T
        num_classes = 10
        batch_size = 3
        H, W = 12, 12

        imgs = torch.rand(batch_size, 3, H, W)
        labels = torch.randint(0, num_classes, (batch_size,))
        cutmix_mixup = T(alpha=0.5, num_classes=num_classes)
        out_cpu = cutmix_mixup(imgs, labels)
        out_cuda = cutmix_mixup(imgs.cuda(), labels.cuda())
        for a, b in zip(out_cpu, out_cuda):
            assert a.shape == b.shape and b.device.type == "cuda"

    def test_error(self, impl_T):
        impl, T = impl_T
        msg = MESSAGES[impl]
        num_classes = 10
        batch_size = 9

        imgs = torch.rand(batch_size, 3, 12, 12)
        cutmix_mixup = T(alpha=0.5, num_classes=num_classes)

        for kind, input_with_bad_type in (
            ("pil", F.to_pil_image(imgs[0])),
            ("mask", tv_tensors.Mask(torch.rand(12, 12))),
            ("boxes", tv_tensors.BoundingBoxes(torch.rand(2, 4), format="XYXY", canvas_size=12)),
        ):
            with pytest.raises(ValueError, match=msg[kind]):
                cutmix_mixup(input_with_bad_type)

        with pytest.raises(ValueError, match=msg["no_labels"]):
            cutmix_mixup({"img": imgs, "Nothing_else": 3})

        with pytest.raises(ValueError, match=msg["imgs_alone"]):
            # torchvision's heuristic takes the images for the labels; either way it must fail loudly
            cutmix_mixup(imgs)

        with pytest.raises(ValueError, match=msg["labels_not_tensor"]):
            cutmix_mixup(imgs, "not_a_tensor")

        with pytest.raises(ValueError, match=msg["labels_2x3"]):
            cutmix_mixup(imgs, torch.randint(0, 2, size=(2, 3)))

        with pytest.raises(ValueError, match=msg["dims"]):
            cutmix_mixup(imgs[None, None], torch.randint(0, num_classes, size=(batch_size,)))

        with pytest.raises(ValueError, match=msg["batch_size"]):
            cutmix_mixup(imgs, torch.randint(0, num_classes, size=(batch_size + 1,)))

        # upstream (at the commit above) expected an error here; torchvision 0.29 takes the (B, C)
        # probabilities the first call returns, and so does mixlab: see change 3 in the header
        labels = torch.randint(0, num_classes, size=(batch_size,))
        out_imgs, out_labels = transforms.Compose([cutmix_mixup, cutmix_mixup])(imgs, labels)
        assert out_imgs.shape == imgs.shape and out_labels.shape == (batch_size, num_classes)
        torch.testing.assert_close(out_labels.sum(-1), torch.ones(batch_size))
        assert ((out_labels != 0).sum(-1) <= 3).all()


@pytest.mark.parametrize("key", ("labels", "LABELS", "LaBeL", "SOME_WEIRD_KEY_THAT_HAS_LABeL_IN_IT"))
@pytest.mark.parametrize("sample_type", (tuple, list, dict))
def test_labels_getter_default_heuristic(key, sample_type, impl_T):
    _, T = impl_T
    num_classes = 10
    labels = torch.arange(10)
    imgs = torch.rand(10, 3, 12, 12)
    t = T(num_classes=num_classes)
    if sample_type is dict:
        out = t({"img": imgs, key: labels, "another_key": "whatever"})
        found, rest = out[key], out
    else:
        out = t(sample_type((imgs, {key: labels, "another_key": "whatever"})))
        assert type(out) is sample_type and out[0].shape == imgs.shape
        found, rest = out[1][key], out[1]
    assert found.shape == (10, num_classes) and rest["another_key"] == "whatever"
    torch.testing.assert_close(found.sum(-1), torch.ones(10))

    if key.lower() != "labels":
        # a "labels" key (any case) takes precedence over other keys that would otherwise match
        out = t({"img": imgs, key: "something_else", "labels": labels})
        assert out[key] == "something_else" and out["labels"].shape == (10, num_classes)
