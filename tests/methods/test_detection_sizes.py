"""Detection batches of images of different sizes (torchvision's lists): Mosaic on a 2x canvas from
letterboxed images (ultralytics, mmdetection) with their box filter, MixUp padded to the larger image;
and "close mosaic" (mixing off for the last epochs) through the library's schedules."""
from __future__ import annotations

import pytest
import torch

from mixlab import detection
from mixlab.transforms import apply_schedule
from test_detection import _check_instances, _footprint, _instance_batch

SIZES = [(64, 48), (48, 64), (64, 64), (40, 64), (64, 56)]  # long side 64: letterboxed into 64 x 64 at scale 1


def _ultralytics_windows(xc, yc, s, sizes):
    """ultralytics' ``Mosaic._mosaic4`` placement (canvas 2s): (canvas window, image window) per tile."""
    out = []
    for i, (h, w) in enumerate(sizes):
        if i == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        out.append(((y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b)))
    return out


def _ultralytics_candidates(box1, box2, wh_thr=2, ar_thr=100, area_thr=0.1, eps=1e-16):
    """ultralytics' ``box_candidates`` (boxes (n, 4) before and after)."""
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    ar = torch.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def test_mosaic_of_different_sizes_on_a_2x_canvas_places_tiles_as_ultralytics(gen):
    images, targets = _instance_batch(gen, n=4, sizes=SIZES)
    mosaic = detection.Mosaic(size=64, fill=-1.0, min_visible=0.1, min_side=2.0, max_aspect=100.0, generator=gen)
    params = mosaic.sample(images, targets)
    mixed, out = mosaic(images, targets, params=params)
    assert [tuple(m.shape) for m in mixed] == [(3, 128, 128)] * 5
    for i in range(5):
        parts = params.parts[:, i].tolist()
        yc, xc = params.centre[i].tolist()
        assert 32 <= yc <= 96 and 32 <= xc <= 96  # uniform in [s / 2, 3 s / 2], as ultralytics
        want = torch.full((3, 128, 128), -1.0)
        boxes = []
        for j, ((y1a, y2a, x1a, x2a), (y1b, y2b, x1b, x2b)) in zip(
                parts, _ultralytics_windows(xc, yc, 64, [SIZES[j] for j in parts])):
            want[:, y1a:y2a, x1a:x2a] = images[j][:, y1b:y2b, x1b:x2b]
            b = targets[j]["boxes"] + torch.tensor([x1a - x1b, y1a - y1b] * 2)
            clipped = torch.cat([b[:, :2].clamp(min=0), b[:, 2:].clamp(max=128)], 1)
            clipped = torch.cat([clipped[:, :2].clamp(max=128), clipped[:, 2:].clamp(min=0)], 1)
            clipped[:, 0::2] = clipped[:, 0::2].clamp(x1a, x2a)  # clipped to the tile (ultralytics: the canvas)
            clipped[:, 1::2] = clipped[:, 1::2].clamp(y1a, y2a)
            keep = _ultralytics_candidates(b, clipped)
            boxes.append(clipped[keep])
        assert torch.equal(mixed[i], want)
        torch.testing.assert_close(out[i]["boxes"], torch.cat(boxes))
    assert _check_instances(mixed, out, targets) > 20


def test_mosaic_letterboxes_each_image_into_the_tile_size(gen):
    sizes = [(32, 24), (24, 32), (32, 32), (16, 32)]  # scale 2 into 64 x 64
    images, targets = _instance_batch(gen, n=3, sizes=sizes)
    mosaic = detection.Mosaic(size=64, fill=-1.0, centre=(0.5, 0.5), generator=gen)
    params = mosaic.sample(images, targets)
    mixed, out = mosaic(images, targets, params=params)
    for i in range(4):
        tl = int(params.parts[0, i])  # the top-left tile ends at the centre (64, 64)
        h, w = (2 * v for v in sizes[tl])
        big = torch.nn.functional.interpolate(images[tl][None], size=(h, w), mode="bilinear", antialias=True)[0]
        torch.testing.assert_close(mixed[i][:, 64 - h:64, 64 - w:64], big)
        ob = out[i]["boxes"]  # the top-left tile's boxes (the same image may fill another tile too)
        own = (out[i]["labels"] // 10 == tl) & (ob[:, 2] <= 64) & (ob[:, 3] <= 64)
        # boxes scaled by 2 and shifted by the tile's origin; masks nearest-resized with them
        b = targets[tl]["boxes"] * 2 + torch.tensor([64 - w, 64 - h] * 2)
        for box, label, mask in zip(out[i]["boxes"][own], out[i]["labels"][own], out[i]["masks"][own]):
            k = int(label) % 10
            torch.testing.assert_close(box, b[k].clamp(max=64.0))
            src = targets[tl]["masks"][k].repeat_interleave(2, 0).repeat_interleave(2, 1)
            want = torch.zeros(128, 128, dtype=mask.dtype)
            want[64 - h:64, 64 - w:64] = src
            want &= _footprint(box, 128, 128).to(mask.dtype)
            assert torch.equal(mask, want)


def test_mosaic_box_filter_drops_thin_and_elongated_boxes():
    images = [torch.zeros(3, 64, 64) for _ in range(4)]
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0],    # kept
                          [10.0, 10.0, 11.5, 35.0],    # 1.5 px wide: below min_side (aspect 16.7)
                          [0.0, 20.0, 64.0, 21.0]])    # 1 px high, aspect 64
    targets = [{"boxes": boxes.clone(), "labels": torch.arange(3)} for _ in range(4)]
    g = torch.Generator().manual_seed(0)
    mixed, out = detection.Mosaic(size=64, centre=(0.5, 0.5), min_side=0.0, max_aspect=1000.0, generator=g)(
        images, targets)
    assert {int(v) for v in out[0]["labels"]} == {0, 1, 2}
    mixed, out = detection.Mosaic(size=64, centre=(0.5, 0.5), min_side=2.0, max_aspect=1000.0, generator=g)(
        images, targets)
    assert {int(v) for v in out[0]["labels"]} == {0}
    mixed, out = detection.Mosaic(size=64, centre=(0.5, 0.5), min_side=0.0, max_aspect=20.0, generator=g)(
        images, targets)
    assert {int(v) for v in out[0]["labels"]} == {0, 1}


def test_mosaic_without_size_refuses_different_sizes_naming_the_option(gen):
    images, targets = _instance_batch(gen, n=2, sizes=SIZES[:3])
    with pytest.raises(ValueError, match=r"images have different sizes .*Mosaic\(size=S\)"):
        detection.Mosaic(generator=gen)(images, targets)
    with pytest.raises(ValueError, match=r"size must be an int >= 1, got 0"):
        detection.Mosaic(size=0)
    with pytest.raises(ValueError, match=r"CutMix needs images of one size, got sizes .*MixUp.*Mosaic\(size="):
        detection.CutMix(generator=gen)(images, targets)


def test_mixup_of_different_sizes_pads_to_the_larger(gen):
    images, targets = _instance_batch(gen, n=3, sizes=SIZES)
    mixup = detection.MixUp(fill=-1.0, generator=gen)
    params = mixup.sample(images, targets)
    mixed, out = mixup(images, targets, params=params)
    for i, j in enumerate(params.index.tolist()):
        lam = float(params.lam[i])
        H, W = (max(a, b) for a, b in zip(SIZES[i], SIZES[j]))
        if j == i:
            assert torch.equal(mixed[i], images[i])
            continue
        a, b = torch.full((3, H, W), -1.0), torch.full((3, H, W), -1.0)
        a[:, :SIZES[i][0], :SIZES[i][1]] = images[i]
        b[:, :SIZES[j][0], :SIZES[j][1]] = images[j]
        torch.testing.assert_close(mixed[i], lam * a + (1 - lam) * b)
        t = out[i]
        assert t["masks"].shape[-2:] == (H, W)
        for key in ("boxes", "labels", "area", "iscrowd"):
            assert torch.equal(t[key], torch.cat([targets[i][key], targets[j][key]])), key
        n = targets[i]["masks"].shape[0]
        assert torch.equal(t["masks"][:n, :SIZES[i][0], :SIZES[i][1]], targets[i]["masks"])
        assert torch.equal(t["masks"][n:, :SIZES[j][0], :SIZES[j][1]], targets[j]["masks"])
        assert int(t["masks"].sum()) == int(targets[i]["masks"].sum() + targets[j]["masks"].sum())
        torch.testing.assert_close(t["weights"], torch.cat([torch.full((n,), lam), torch.full((3,), 1 - lam)]))


def test_uint8_images_of_different_sizes(gen):
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in SIZES]
    _, targets = _instance_batch(gen, n=2, sizes=SIZES)
    mixed, out = detection.MixUp(generator=gen)(images, targets)
    assert all(m.dtype == torch.uint8 for m in mixed)
    mixed, out = detection.Mosaic(size=32, generator=gen)(images, targets)  # scale 1/2 into 32 x 32
    assert all(m.dtype == torch.uint8 and m.shape == (3, 64, 64) for m in mixed)


@pytest.mark.parametrize("make", [lambda g: detection.Mosaic(size=64, generator=g),
                                  lambda g: detection.Mosaic(generator=g), lambda g: detection.MixUp(generator=g),
                                  lambda g: detection.CutMix(generator=g), lambda g: detection.CopyPaste(generator=g)],
                         ids=["Mosaic-size", "Mosaic", "MixUp", "CutMix", "CopyPaste"])
def test_close_mosaic_switches_mixing_off_for_the_last_epochs(make, gen):
    images, targets = _instance_batch(gen, B=4, n=3)
    transform = make(gen)
    for epoch in range(5):
        apply_schedule(transform, epoch, stop_epoch=3)  # the schedule every integration uses
        mixed, out = transform(images, targets)
        same = all(torch.equal(a, b) for a, b in zip(mixed, images)) and all(
            torch.equal(t["boxes"], s["boxes"]) and torch.equal(t["masks"], s["masks"]) for t, s in zip(out, targets))
        assert same == (epoch >= 3), epoch
        assert all(torch.equal(t["weights"], torch.ones(3)) for t in out) or epoch < 3


def test_close_mosaic_through_mixcollate_in_workers(gen):
    from mixlab.data import MixCollate
    images, targets = _instance_batch(gen, B=8, n=2, sizes=[SIZES[i % 5] for i in range(8)])
    dataset = list(zip(images, targets))
    collate = MixCollate(detection.Mosaic(size=64, generator=torch.Generator().manual_seed(0)),
                         base_collate=lambda batch: tuple(zip(*batch)), stop_epoch=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=0)
    for epoch in range(2):
        collate.set_epoch(epoch)
        for mixed, out in loader:
            if epoch == 0:
                assert all(tuple(m.shape[-2:]) == (128, 128) for m in mixed)
            else:
                assert [tuple(m.shape[-2:]) for m in mixed] in ([SIZES[i % 5] for i in range(4)],
                                                                 [SIZES[i % 5] for i in range(4, 8)])
