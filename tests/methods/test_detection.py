"""Detection mixing: boxes follow the pixels (MixUp keeps both, CutMix clips, Mosaic moves), and a
torchvision detector trains on the result."""
from __future__ import annotations

import math

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
    with pytest.raises(ValueError, match="CutMix needs images of one size"):  # MixUp and Mosaic(size=) take them
        detection.CutMix()([torch.rand(3, 8, 8), torch.rand(3, 9, 8)], targets[:2])


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


# --- per-box keys: instance masks, area, iscrowd follow their boxes ---------------------------------

def _instance_batch(gen, B=5, H=40, W=48, n=4, masks=True, sizes=None):
    """Images whose pixels say where they come from (channel 0 the image, 1 the row, 2 the column).

    Image ``i`` holds ``n`` instances labelled ``10 * i + k``, each with a random mask inside its
    box's pixel footprint (see :func:`_footprint`), ``area`` its pixel count (the box's area without
    masks), ``iscrowd`` ``k % 2`` and a per-image ``image_id``. With ``sizes`` (a list of ``(H, W)``),
    image ``i`` has size ``sizes[i]`` and the images come as a list.
    """
    listed = sizes is not None
    sizes = sizes if listed else [(H, W)] * B
    images, targets = [], []
    for i, (H, W) in enumerate(sizes):
        rows = torch.arange(H, dtype=torch.float32).view(H, 1).expand(H, W)
        cols = torch.arange(W, dtype=torch.float32).view(1, W).expand(H, W)
        images.append(torch.stack([torch.full((H, W), float(i)), rows, cols]))
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([W - 6.0, H - 6.0])
        wh = 3 + torch.rand(n, 2, generator=gen) * 14
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([float(W), float(H)]))], 1)
        m = torch.zeros(n, H, W, dtype=torch.uint8)
        for k in range(n):
            fp = _footprint(boxes[k], H, W)
            m[k] = (fp & (torch.rand(H, W, generator=gen) < 0.6)).to(torch.uint8)
            ys, xs = torch.nonzero(fp, as_tuple=True)
            m[k, ys[len(ys) // 2], xs[len(xs) // 2]] = 1
        t = {"boxes": boxes, "labels": 10 * i + torch.arange(n), "iscrowd": torch.arange(n) % 2,
             "image_id": torch.tensor([i])}
        if masks:
            t["masks"] = m
            t["area"] = m.flatten(1).sum(1).float()
        else:
            t["area"] = detection.box_area(boxes)
        targets.append(t)
    return (images if listed else torch.stack(images)), targets


def _footprint(box, H, W):
    """The box rounding rule: pixel (r, c) is inside ``xyxy`` box iff it overlaps it,
    ``floor(x0) <= c < ceil(x1)`` and ``floor(y0) <= r < ceil(y1)``."""
    x0, y0, x1, y1 = box.tolist()
    r = torch.arange(H).view(H, 1)
    c = torch.arange(W).view(1, W)
    return (c >= math.floor(x0)) & (c < math.ceil(x1)) & (r >= math.floor(y0)) & (r < math.ceil(y1))


def _check_instances(mixed, out, targets):
    """Every mask lies inside its box and covers exactly its instance's visible pixels; area matches.

    ``mixed`` is a ``(B, 3, H, W)`` tensor or a list of ``(3, H_i, W_i)`` images made by
    :func:`_instance_batch` (pixels that come from no image must not hold a valid image number).
    """
    checked = 0
    for i, t in enumerate(out):
        H, W = mixed[i].shape[-2:]
        n = t["boxes"].shape[0]
        assert t["masks"].shape == (n, H, W) and t["area"].shape == t["iscrowd"].shape == (n,)
        src, sy, sx = (mixed[i][c].round().long() for c in range(3))
        for box, label, mask, area, crowd in zip(t["boxes"], t["labels"], t["masks"], t["area"], t["iscrowd"]):
            j, k = divmod(int(label), 10)
            fp = _footprint(box, H, W)
            m = mask.bool()
            assert not (m & ~fp).any(), f"image {i}, instance {int(label)}: mask pixels outside its box"
            Hj, Wj = targets[j]["masks"].shape[-2:]
            inside = (src == j) & (sy >= 0) & (sy < Hj) & (sx >= 0) & (sx < Wj)
            source = targets[j]["masks"][k].bool()[sy.clamp(0, Hj - 1), sx.clamp(0, Wj - 1)]
            visible = inside & source & fp
            assert torch.equal(m, visible), f"image {i}, instance {int(label)}: mask is not its visible pixels"
            assert float(area) == float(m.sum())
            assert int(crowd) == k % 2
            checked += 1
    return checked


def _pasted_rect(image, i):
    """The rectangle (y0, y1, x0, x1) of pixels that did not come from image ``i``, or None."""
    ys, xs = torch.nonzero(image[0] != i, as_tuple=True)
    if ys.numel() == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_cutmix_pastes_the_partners_instance_masks_and_hides_the_originals(mode, gen):
    images, targets = _instance_batch(gen)
    cut = detection.CutMix(alpha=1.0, min_visible=0.3, mode=mode, generator=gen)
    checked = 0
    for _ in range(6):
        mixed, out = cut(images, targets)
        checked += _check_instances(mixed, out, targets)
        for i, t in enumerate(out):
            assert torch.equal(t["image_id"], torch.tensor([i]))
    assert checked > 40


def test_mosaic_moves_instance_masks_with_their_pixels(gen):
    images, targets = _instance_batch(gen, B=6)
    mosaic = detection.Mosaic(min_visible=0.3, generator=gen)
    checked = 0
    for _ in range(4):
        mixed, out = mosaic(images, targets)
        checked += _check_instances(mixed, out, targets)
        for i, t in enumerate(out):
            assert torch.equal(t["image_id"], torch.tensor([i]))
    assert checked > 40


def test_area_without_masks_is_the_visible_box_area(gen):
    images, targets = _instance_batch(gen, masks=False)
    mixed, out = detection.Mosaic(generator=gen)(images, targets)
    for t in out:  # boxes clipped to their tile: the visible area is the clipped box's
        torch.testing.assert_close(t["area"], detection.box_area(t["boxes"]))
    mixed, out = detection.CutMix(generator=gen)(images, targets)
    for i, t in enumerate(out):
        rect = _pasted_rect(mixed[i], i)
        area = detection.box_area(t["boxes"])
        if rect is not None:  # the original's boxes lose the part the paste covers
            y0, y1, x0, x1 = rect
            own = t["labels"] // 10 == i
            area[own] -= detection.box_area(detection.clip_boxes(t["boxes"][own], x0, y0, x1, y1))
        torch.testing.assert_close(t["area"], area)


def test_mixup_concatenates_masks_area_iscrowd_unchanged(gen):
    images, targets = _instance_batch(gen)
    mixed, out = detection.MixUp(generator=gen)(images, targets)
    for i, t in enumerate(out):
        j = int(t["labels"][-1]) // 10
        for key in ("masks", "area", "iscrowd", "labels"):
            want = targets[i][key] if j == i else torch.cat([targets[i][key], targets[j][key]])
            assert torch.equal(t[key], want), key
        assert torch.equal(t["image_id"], torch.tensor([i]))


@pytest.mark.parametrize("transform", [detection.CutMix, detection.Mosaic])
def test_unknown_per_box_keys_are_refused_not_carried_stale(transform, gen):
    images, targets = _instance_batch(gen, n=3)
    for t in targets:
        t["keypoints"] = torch.rand(3, 17, 3)
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\].*one row per box"):
        transform(generator=gen)(images, targets)
    mixed, out = detection.MixUp(generator=gen)(images, targets)  # nothing moves: carried unchanged
    assert all(t["keypoints"].shape[0] == t["boxes"].shape[0] for t in out)


def test_masks_of_the_wrong_size_are_refused(gen):
    images, targets = _instance_batch(gen, n=3)
    targets[2]["masks"] = targets[2]["masks"][:, :20]
    with pytest.raises(ValueError, match=r"targets\[2\]\['masks'\] must be \(3, 40, 48\)"):
        detection.Mosaic(generator=gen)(images, targets)


# --- box weights in torchvision's detectors -------------------------------------------------------

def test_weighted_fastrcnn_loss_scales_each_proposal(gen):
    roi = pytest.importorskip("torchvision.models.detection.roi_heads")
    F = torch.nn.functional
    C, sizes = 5, (25, 15)
    logits = torch.randn(sum(sizes), C, generator=gen)
    regression = torch.randn(sum(sizes), 4 * C, generator=gen)
    labels = [torch.randint(0, C, (n,), generator=gen) for n in sizes]
    targets = [torch.randn(n, 4, generator=gen) for n in sizes]
    ones = [torch.ones(n) for n in sizes]
    got = detection.weighted_fastrcnn_loss(logits, regression, labels, targets, ones)
    torch.testing.assert_close(got, roi.fastrcnn_loss(logits, regression, labels, targets))  # weight 1: torchvision's
    weights = [torch.rand(n, generator=gen) * (torch.rand(n, generator=gen) > 0.3) for n in sizes]
    lab, tgt, w = torch.cat(labels), torch.cat(targets), torch.cat(weights)
    cls = box = 0.0
    for p in range(lab.numel()):  # each proposal's torchvision term, times its weight, over all N proposals
        cls += w[p] * F.cross_entropy(logits[p:p + 1], lab[p:p + 1])
        if lab[p] > 0:
            pred = regression[p].view(C, 4)[lab[p]]
            box += w[p] * F.smooth_l1_loss(pred, tgt[p], beta=1 / 9, reduction="sum")
    got = detection.weighted_fastrcnn_loss(logits, regression, labels, targets, weights)
    torch.testing.assert_close(got, (cls / lab.numel(), box / lab.numel()))


def _detector(tvd):
    torch.manual_seed(0)
    return tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5,
                                                     min_size=64, max_size=64).train()


def _detection_batch(gen, B=2, S=64):
    images = torch.rand(B, 3, S, S, generator=gen)
    targets = []
    for _ in range(B):
        xy = torch.rand(3, 2, generator=gen) * (S - 24)
        boxes = torch.cat([xy, xy + 8 + torch.rand(3, 2, generator=gen) * 14], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(1, 5, (3,), generator=gen)})
    return list(images), targets


def _losses(model, images, targets, weights=None):
    torch.manual_seed(0)  # the same proposal sampling in every call
    if weights is not None:
        targets = [dict(t, weights=w) for t, w in zip(targets, weights)]
    return model(images, targets)


def test_weight_box_losses_weights_the_box_head_per_matched_box(gen, one_thread):
    tvd = pytest.importorskip("torchvision.models.detection")
    F = torch.nn.functional
    model = _detector(tvd)
    images, targets = _detection_batch(gen)
    stock = _losses(model, images, targets)
    handle = detection.weight_box_losses(model)
    ones = [torch.ones(3), torch.ones(3)]
    torch.testing.assert_close(_losses(model, images, targets, ones), stock)  # weight 1: torchvision's losses
    torch.testing.assert_close(_losses(model, images, targets), stock)        # no weights: the same

    heads, seen = model.roi_heads, {}
    inner = heads.select_training_samples
    def spy(proposals, targets):  # noqa: E306 - the proposals' labels and matched boxes, as sampled
        out = inner(proposals, targets)
        seen.update(matched=out[1], labels=out[2], regression=out[3])
        return out
    heads.select_training_samples = spy
    hook = heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(out=o))
    weights = [torch.tensor([0.0, 1.0, 1.0]), torch.ones(3)]
    got = _losses(model, images, targets, weights)
    hook.remove()
    heads.select_training_samples = inner
    labels, logits, regression = torch.cat(seen["labels"]), *seen["out"]
    N = labels.numel()
    # the proposals matched to box 0 of image 0 (its gt box is one of them) contribute nothing
    dropped = torch.cat([(seen["labels"][0] > 0) & (seen["matched"][0] == 0),
                         torch.zeros_like(seen["labels"][1], dtype=torch.bool)])
    assert int(dropped.sum()) >= 1
    cls = F.cross_entropy(logits, labels, reduction="none")[~dropped].sum() / N
    pos = (labels > 0) & ~dropped
    box = F.smooth_l1_loss(regression.view(N, -1, 4)[pos, labels[pos]], torch.cat(seen["regression"])[pos],
                           beta=1 / 9, reduction="sum") / N
    torch.testing.assert_close(got["loss_classifier"], cls)
    torch.testing.assert_close(got["loss_box_reg"], box)
    assert got["loss_classifier"].detach() < stock["loss_classifier"].detach()
    for key in ("loss_objectness", "loss_rpn_box_reg"):  # the RPN is not weighted
        torch.testing.assert_close(got[key], stock[key])

    zero = _losses(model, images, targets, [torch.zeros(3), torch.zeros(3)])
    assert zero["loss_box_reg"].detach() == 0.0  # no box left to regress to
    handle.remove()
    torch.testing.assert_close(_losses(model, images, targets, weights), stock)  # removed: torchvision's again


def test_a_detector_trains_on_mixup_with_box_weights(gen, one_thread):
    tvd = pytest.importorskip("torchvision.models.detection")
    model = _detector(tvd)
    detection.weight_box_losses(model)
    images, targets = _detection_batch(gen, B=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mixed, out = detection.MixUp(generator=gen)(images, targets)
    assert any(((t["weights"] > 0) & (t["weights"] < 1)).any() for t in out)
    before = [p.detach().clone() for p in model.roi_heads.parameters()]
    losses = model(mixed, out)  # the weights travel in the targets
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.roi_heads.parameters()))


def test_weight_box_losses_names_what_it_needs():
    with pytest.raises(TypeError, match=r"model must be a torchvision two-stage detector .*roi_heads.*got Linear"):
        detection.weight_box_losses(torch.nn.Linear(2, 2))


def test_ultralytics_style_mixup_keeps_lam_near_half(gen):
    """The documented alternative without weights: ``MixUp(alpha=32)``, lam ~ Beta(32, 32)."""
    images, targets = _batch(gen, B=64)
    mixed, out = detection.MixUp(alpha=32.0, generator=gen)(images, targets)
    lam = torch.stack([t["weights"][0] for i, t in enumerate(out) if int(t["labels"][-1]) != i])
    assert lam.min() > 0.3 and lam.max() < 0.7
