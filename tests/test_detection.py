"""Detection mixing: boxes follow the pixels (MixUp keeps both, CutMix clips, Mosaic moves), and a
torchvision detector trains on the result."""
from __future__ import annotations

import pytest
import torch

from mixlab import detection


def _batch(gen, B=4, H=32, W=40):
    """Image i is filled with the value i; each box of image i is labelled i."""
    images = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, H, W).clone()
    targets = []
    for i in range(B):
        n = 3
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([W - 8, H - 8])
        wh = 4 + torch.rand(n, 2, generator=gen) * 8
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([W, H]))], 1)
        targets.append({"boxes": boxes, "labels": torch.full((n,), i, dtype=torch.int64)})
    return images, targets


def _source_of_box_pixels(image, box):
    x0, y0, x1, y1 = box.round().long().tolist()
    return image[0, y0:y1, x0:x1]


def test_mixup_keeps_both_images_boxes_weighted(gen):
    images, targets = _batch(gen)
    mixed, out = detection.MixUp(alpha=1.5, generator=gen)(images, targets)
    for i, t in enumerate(out):
        own = (t["labels"] == i)
        assert int(own.sum()) == 3
        lam = t["weights"][own][0]
        torch.testing.assert_close(t["weights"][own], lam.expand(3))
        if (~own).any():
            j = int(t["labels"][~own][0])
            torch.testing.assert_close(t["weights"][~own], (1 - lam).expand(3))
            torch.testing.assert_close(t["boxes"][~own], targets[j]["boxes"])
            torch.testing.assert_close(mixed[i], lam * images[i] + (1 - lam) * images[j])


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_cutmix_clips_partner_boxes_to_the_pasted_region(mode, gen):
    images, targets = _batch(gen, B=6)
    cut = detection.CutMix(alpha=1.0, min_visible=0.3, mode=mode, generator=gen)
    for _ in range(5):
        mixed, out = cut(images, targets)
        for i, t in enumerate(out):
            for box, label in zip(t["boxes"], t["labels"]):
                pix = _source_of_box_pixels(mixed[i], box)
                if pix.numel() == 0:
                    continue
                share = (pix == float(label)).float().mean().item()
                # a partner box lies inside the pasted region: all its pixels are the partner's
                if int(label) != i:
                    assert share > 0.95
                else:  # an original box keeps at least min_visible of its pixels (rounding aside)
                    assert share >= 0.3 - 0.15


def test_mosaic_moves_boxes_with_their_pixels(gen):
    images, targets = _batch(gen, B=5, H=48, W=48)
    mixed, out = detection.Mosaic(min_visible=0.3, generator=gen)(images, targets)
    assert mixed.shape == images.shape
    seen = set()
    for i, t in enumerate(out):
        assert t["boxes"].shape[0] == t["labels"].shape[0] == t["weights"].shape[0]
        for box, label in zip(t["boxes"], t["labels"]):
            pix = _source_of_box_pixels(mixed[i], box)
            if pix.numel():
                assert (pix == float(label)).float().mean() > 0.9  # a box shows its own image
                seen.add(int(label))
        assert len(torch.unique(mixed[i, 0])) >= 2  # several images share the canvas
    assert len(seen) >= 3


def test_errors_name_the_problem(gen):
    images, targets = _batch(gen)
    with pytest.raises(ValueError, match=r"targets must be a list of 4 dicts"):
        detection.MixUp()(images, targets[:3])
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\] must be an \(N, 4\) tensor"):
        detection.CutMix()(images, [targets[0], {"boxes": torch.zeros(3), "labels": torch.zeros(3)}] + targets[2:])
    with pytest.raises(ValueError, match="one size"):
        detection.MixUp()([torch.rand(3, 8, 8), torch.rand(3, 9, 8)], targets[:2])


def test_a_torchvision_detector_trains_on_mixed_batches(gen, one_thread):
    tvd = pytest.importorskip("torchvision.models.detection")
    tv = pytest.importorskip("torchvision.tv_tensors")
    torch.manual_seed(0)
    model = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5,
                                                      min_size=64, max_size=64)
    model.train()
    images, targets = _batch(gen, B=4, H=64, W=64)
    images = images / 4
    for t in targets:
        t["boxes"] = tv.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(64, 64))
        t["labels"] = t["labels"] + 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for transform in (detection.MixUp(generator=gen), detection.CutMix(generator=gen), detection.Mosaic(generator=gen)):
        mixed, out = transform(list(images), targets)
        assert all(isinstance(t["boxes"], tv.BoundingBoxes) for t in out)
        losses = model(mixed, [{"boxes": t["boxes"], "labels": t["labels"]} for t in out])
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
