"""A torchvision Mask R-CNN trains on Copy-Paste and Mosaic batches with instance masks (lists of
images of different sizes), with every mask inside its box and covering its instance's pixels."""
from __future__ import annotations

import pytest
import torch

from mixlab import detection
from test_detection import _check_instances, _footprint, _instance_batch

SIZES = [(64, 48), (48, 64), (64, 64), (56, 64)]


def test_mask_rcnn_trains_on_copy_paste_and_mosaic(gen, one_thread):
    tvd = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    model = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                      min_size=128, max_size=128).train()
    handle = detection.weight_box_losses(model)  # box weights work on Mask R-CNN too (here all 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.005)
    images, targets = _instance_batch(gen, n=3, sizes=SIZES)
    steps = [detection.CopyPaste(generator=gen), detection.Mosaic(size=64, fill=-1.0, generator=gen),
             detection.CopyPaste(select="all", blending=False, generator=gen)]
    for transform in steps:
        mixed, out = transform(images, targets)
        assert _check_instances(mixed, out, targets) > 0  # masks inside boxes, covering their instance's pixels
        for image, t in zip(mixed, out):
            for box, mask in zip(t["boxes"], t["masks"]):
                assert mask.any() and not (mask.bool() & ~_footprint(box, *image.shape[-2:])).any()
        batch = [{"boxes": t["boxes"], "labels": t["labels"] % 2 + 1, "masks": t["masks"], "weights": t["weights"]}
                 for t in out]
        losses = model([(m.clamp(min=0) / 64) for m in mixed], batch)
        assert "loss_mask" in losses
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    handle.remove()
