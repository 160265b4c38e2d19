"""A torchvision Mask R-CNN trains on Copy-Paste and Mosaic batches with instance masks (lists of
images of different sizes), with every mask inside its box and covering its instance's pixels."""
from __future__ import annotations

import pytest
import torch

from mixlab import detection
from test_detection import _check_instances, _footprint, _instance_batch

SIZES = [(64, 48), (48, 64)]


def test_mask_rcnn_trains_on_copy_paste_and_mosaic(gen, one_thread):
    tvd = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    model = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                      min_size=128, max_size=128, rpn_pre_nms_top_n_train=200,
                                      rpn_post_nms_top_n_train=100, box_batch_size_per_image=64).train()
    handle = detection.weight_box_losses(model)  # box weights work on Mask R-CNN too (here all 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.005)
    lists = _instance_batch(gen, n=3, sizes=SIZES)  # letterboxed at scale 1 by Mosaic(size=64)
    same = _instance_batch(gen, n=3, sizes=[(64, 56)] * 2)
    steps = [(detection.CopyPaste(pairing="flip", generator=gen), same, True),
             (detection.Mosaic(size=64, fill=-1.0, generator=gen), lists, True),
             # partners of another size are resized: masks checked inside their boxes only
             (detection.CopyPaste(select="all", blending=False, pairing="flip", generator=gen), lists, False)]
    for transform, (images, targets), exact in steps:
        mixed, out = transform(images, targets)
        if exact:  # masks inside boxes, covering exactly their instance's pixels (read from the pixels' origin)
            assert _check_instances(mixed, out, targets) > 0
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
