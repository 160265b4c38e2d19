"""Copy-Paste (Ghiasi et al. 2021) against a faithful port of torchvision's reference ``_copy_paste``
(references/detection/transforms.py, SimpleCopyPaste), and its bookkeeping of occluded instances."""
from __future__ import annotations

import pytest
import torch

from mixlab import detection
from test_detection import _check_instances, _footprint, _instance_batch

tvF = pytest.importorskip("torchvision.transforms.functional")
tvops = pytest.importorskip("torchvision.ops")
tv_copy_paste = pytest.importorskip("mixlab_lab.bench.ports").tv_copy_paste


def _tv_copy_paste(image, target, paste_image, paste_target, random_selection, blending=True,
                   resize_interpolation=tvF.InterpolationMode.BILINEAR):
    """torchvision's ``_copy_paste`` line for line (the port lives in mixlab_lab.bench.ports: the bench times it)."""
    return tv_copy_paste(image, target, paste_image, paste_target, random_selection, blending=blending,
                         resize_interpolation=resize_interpolation)


def _blobs(gen, B=4, H=48, W=56, n=5, sizes=None):
    """Images with rectangle-and-noise instance masks whose boxes are their masks' tight boxes.

    Boxes follow mixlab's pixel rule (``x1`` one past the last column), so torchvision's
    ``masks_to_boxes`` (``x1`` the last column) gives them minus ``(0, 0, 1, 1)``.
    """
    sizes = sizes or [(H, W)] * B
    images, targets = [], []
    for i, (h, w) in enumerate(sizes):
        images.append(torch.rand(3, h, w, generator=gen))
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for k in range(n):
            y0, x0 = int(torch.randint(0, h - 8, (), generator=gen)), int(torch.randint(0, w - 8, (), generator=gen))
            dy, dx = (int(v) for v in torch.randint(4, 18, (2,), generator=gen))
            masks[k, y0:y0 + dy, x0:x0 + dx] = (torch.rand(min(dy, h - y0), min(dx, w - x0), generator=gen) < 0.85)
            masks[k, y0, x0] = 1
        boxes = tvops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        targets.append({"boxes": boxes, "masks": masks, "labels": 10 * i + torch.arange(n),
                        "area": masks.flatten(1).sum(1).float(), "iscrowd": torch.arange(n) % 2})
    return images, targets


def _assert_matches_torchvision(got_image, got, want_image, want, n_original):
    """Equal images, masks, labels, area, iscrowd; boxes equal up to the pixel rule.

    torchvision recomputes every original box with ``masks_to_boxes`` (last pixel inclusive) and
    drops boxes one pixel wide or high as degenerate; mixlab keeps those instances (a one-pixel-wide
    instance is not degenerate under its rule) and recomputes only occluded boxes.
    """
    torch.testing.assert_close(got_image, want_image, rtol=0, atol=0)
    m = got["masks"].bool()
    rows, cols = m.any(2), m.any(1)
    one_wide = (cols.sum(1) == 1) | (rows.sum(1) == 1)
    keep = ~(one_wide & (torch.arange(len(m)) < n_original))  # torchvision's degenerate rule on originals
    for key in ("masks", "labels", "area", "iscrowd"):
        assert torch.equal(got[key][keep], want[key]), key
    boxes = got["boxes"][keep].clone()
    original = torch.arange(len(m))[keep] < n_original
    boxes[original] -= torch.tensor([0.0, 0.0, 1.0, 1.0])  # mixlab's x1 is one past the last pixel
    torch.testing.assert_close(boxes, want["boxes"], rtol=0, atol=0)
    return int((~keep).sum())


@pytest.mark.parametrize("blending", [True, False])
def test_copy_paste_equals_torchvisions_reference(blending, gen):
    images, targets = _blobs(gen, B=6)
    for i in range(6):
        j = (i - 1) % 6  # torchvision pastes the previous image (its batch rolled by one)
        n = targets[j]["masks"].shape[0]
        selection = torch.randint(0, n, (n,), generator=gen).unique()
        want_image, want = _tv_copy_paste(images[i], targets[i], images[j], targets[j], selection, blending)
        got_image, got = detection.copy_paste(images[i], targets[i], images[j], targets[j], selection,
                                              blending=blending)
        kept = int((got["labels"] // 10 == i).sum())
        _assert_matches_torchvision(got_image, got, want_image, want, kept)
        assert len(got["labels"]) - kept == len(selection)


def test_copy_paste_transform_equals_torchvision_with_its_draws(gen):
    """The transform with ``pairing="roll"`` and ``select="random"`` is SimpleCopyPaste with the same draws."""
    images, targets = _blobs(gen, B=4)
    cp = detection.CopyPaste(pairing="roll", select="random", generator=torch.Generator().manual_seed(3))
    params = cp.sample(images, targets)
    assert params.index.tolist() == [3, 0, 1, 2]
    out_images, out = cp(images, targets, params=params)
    for i, j in enumerate(params.index.tolist()):
        sel = params.selected[i]
        assert sel.unique().tolist() == sel.tolist() and len(sel) >= 1
        want_image, want = _tv_copy_paste(images[i], targets[i], images[j], targets[j], sel)
        _assert_matches_torchvision(out_images[i], out[i], want_image, want, int((out[i]["labels"] // 10 == i).sum()))


def test_copy_paste_of_different_sizes_resizes_the_partner_as_torchvision_does(gen):
    sizes = [(48, 56), (24, 28), (48, 40), (24, 20)]  # partners at exactly half or twice the size
    images, targets = _blobs(gen, sizes=sizes, n=4)
    for i, j in [(0, 1), (2, 3)]:
        sel = torch.arange(4)
        want_image, want = _tv_copy_paste(images[i], targets[i], images[j], targets[j], sel)
        got_image, got = detection.copy_paste(images[i], targets[i], images[j], targets[j], sel)
        _assert_matches_torchvision(got_image, got, want_image, want, int((got["labels"] // 10 == i).sum()))
        assert got_image.shape == images[i].shape


def test_copy_paste_updates_occluded_instances_and_drops_covered_ones(gen):
    images, targets = _instance_batch(gen, B=6, n=5)
    cp = detection.CopyPaste(select="all", blending=False, generator=gen)
    checked = dropped = moved = 0
    for _ in range(4):
        mixed, out = cp(images, targets)
        checked += _check_instances(mixed, out, targets)
        for i, t in enumerate(out):
            own = t["labels"] // 10 == i
            for box, label, mask in zip(t["boxes"][own], t["labels"][own], t["masks"][own]):
                before = targets[i]["boxes"][int(label) % 10]
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert mask.any()
                if not torch.equal(mask, targets[i]["masks"][int(label) % 10]):
                    # occluded: the box is the remaining pixels' box, never larger than the annotated one
                    tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=box.dtype)
                    torch.testing.assert_close(box, torch.cat([tight[:2].maximum(before[:2]),
                                                                tight[2:].minimum(before[2:])]))
                    moved += int(not torch.equal(box, before))
                else:
                    assert torch.equal(box, before)
            dropped += 5 - int(own.sum())
    assert checked > 60 and moved > 0


def test_a_fully_covered_instance_is_dropped_with_its_values():
    image, paste = torch.zeros(3, 16, 16), torch.ones(3, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 8:12, 8:14] = 1
    target = {"boxes": torch.tensor([[2.0, 2, 6, 6], [8, 8, 14, 12]]), "labels": torch.tensor([1, 2]), "masks": masks,
              "area": torch.tensor([16.0, 24.0]), "iscrowd": torch.tensor([0, 1])}
    pm = torch.zeros(1, 16, 16, dtype=torch.uint8)
    pm[0, 1:7, 1:12] = 1  # covers instance 0 and the left half of instance 1
    paste_target = {"boxes": torch.tensor([[1.0, 1, 12, 7]]), "labels": torch.tensor([3]), "masks": pm,
                    "area": torch.tensor([66.0]), "iscrowd": torch.tensor([0])}
    out_image, out = detection.copy_paste(image, target, paste, paste_target, torch.tensor([0]), blending=False)
    assert out["labels"].tolist() == [2, 3] and out["iscrowd"].tolist() == [1, 0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[8.0, 8, 14, 12], [1, 1, 12, 7]]))
    torch.testing.assert_close(out["area"], torch.tensor([24.0, 66.0]))
    out_image, out = detection.copy_paste(image, target, paste, paste_target, torch.tensor([0]), blending=True)
    # dilated by two pixels, the paste reaches rows 0-8 and columns 0-13: instance 1 keeps rows 9-11
    assert out["labels"].tolist() == [2, 3]
    torch.testing.assert_close(out["boxes"][0], torch.tensor([8.0, 9, 14, 12]))
    torch.testing.assert_close(out["area"], torch.tensor([18.0, 66.0]))


def test_min_pixels_drops_nearly_covered_instances(gen):
    images, targets = _instance_batch(gen, B=6, n=5)
    for min_pixels in (1, 12):
        g = torch.Generator().manual_seed(5)
        mixed, out = detection.CopyPaste(select="all", min_pixels=min_pixels, generator=g)(images, targets)
        for t in out:
            assert (t["masks"].flatten(1).sum(1) >= min_pixels).all()
        if min_pixels == 1:
            few = sum(int((t["masks"].flatten(1).sum(1) < 12).sum()) for t in out)
            assert few > 0  # the larger threshold had something to drop


def test_blending_is_torchvisions_dilation_of_the_pasted_region(gen):
    images, targets = _blobs(gen, B=2, n=1)
    sel = torch.tensor([0])
    hard, _ = detection.copy_paste(images[0], targets[0], images[1], targets[1], sel, blending=False)
    soft, out = detection.copy_paste(images[0], targets[0], images[1], targets[1], sel, blending=True)
    alpha = targets[1]["masks"][0].bool()
    ring = torch.nn.functional.max_pool2d(alpha[None].float(), 5, 1, 2)[0].bool() & ~alpha
    assert ring.any()
    assert torch.equal(soft[:, ring], images[1][:, ring]) and torch.equal(hard[:, ring], images[0][:, ring])
    assert not (out["masks"][0].bool() & ring).any()  # the original's mask loses the ring too


def test_copy_paste_moves_weights_and_refuses_unknown_per_box_keys(gen):
    images, targets = _instance_batch(gen, B=3, n=3)
    for i, t in enumerate(targets):
        t["weights"] = torch.full((3,), float(i + 1))
    mixed, out = detection.CopyPaste(select="all", generator=gen)(images, targets)
    for t in out:
        torch.testing.assert_close(t["weights"], (t["labels"] // 10 + 1).float())
    for t in targets:
        t["keypoints"] = torch.rand(3, 17, 3)
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\].*CopyPaste"):
        detection.CopyPaste(generator=gen)(images, targets)


def test_copy_paste_errors_name_the_argument(gen):
    images, targets = _instance_batch(gen, B=3, n=3, masks=False)
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'masks'.*CopyPaste pastes instances by their masks"):
        detection.CopyPaste(generator=gen)(images, targets)
    with pytest.raises(ValueError, match=r"select must be one of .*'random'.*'all'.*got 'some'"):
        detection.CopyPaste(select="some")
    with pytest.raises(ValueError, match=r"min_pixels must be an int >= 1, got 0"):
        detection.CopyPaste(min_pixels=0)
    images, targets = _instance_batch(gen, B=3, n=3)
    with pytest.raises(ValueError, match=r"selected must be a 1-D tensor of instance indices in \[0, 3\), got"):
        detection.copy_paste(images[0], targets[0], images[1], targets[1], torch.tensor([0, 5]))


def test_copy_paste_of_an_image_with_itself_or_without_instances_is_unchanged(gen):
    images, targets = _instance_batch(gen, B=1, n=3)
    mixed, out = detection.CopyPaste(generator=gen)(images, targets)  # a batch of one pairs with itself
    assert torch.equal(mixed, images) and torch.equal(out[0]["masks"], targets[0]["masks"])
    images, targets = _instance_batch(gen, B=2, n=3)
    empty = {k: (v[:0] if k not in ("image_id",) else v) for k, v in targets[1].items()}
    got_image, got = detection.copy_paste(images[0], targets[0], images[1], empty, torch.zeros(0, dtype=torch.long))
    assert torch.equal(got_image, images[0]) and torch.equal(got["boxes"], targets[0]["boxes"])


def test_every_pasted_mask_stays_inside_its_box_on_lists_of_sizes(gen):
    sizes = [(40, 48), (32, 56), (48, 36), (40, 48)]
    images, targets = _instance_batch(gen, n=4, sizes=sizes)
    mixed, out = detection.CopyPaste(generator=gen)(images, targets)
    assert [tuple(m.shape[-2:]) for m in mixed] == sizes
    for image, t in zip(mixed, out):
        H, W = image.shape[-2:]
        for box, mask in zip(t["boxes"], t["masks"]):
            assert mask.any() and not (mask.bool() & ~_footprint(box, H, W)).any()


def test_dilation_equals_the_max_pool_it_replaces():
    from mixlab.detection_copypaste import _dilate

    g = torch.Generator().manual_seed(0)
    for H, W in ((37, 53), (5, 5), (1, 9), (64, 64)):
        a = torch.rand(H, W, generator=g) < 0.05
        want = torch.nn.functional.max_pool2d(a[None, None].float(), 5, 1, 2)[0, 0] > 0
        assert torch.equal(_dilate(a, 2), want)
