"""RecursiveMix against a port of the official training step (implus/RecursiveMix-pytorch: ``recursive_mix`` in
``utils.py`` and the ``args.aug == 'recursive_mix'`` branch of ``train`` in ``main.py``): the same draws give the same
images and the same recursively weighted soft targets, step after step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mixlab
from mixlab.mixer import label_params
from mixlab.methods.recursivemix import RecursiveMix, box_from_draws, draw_box

C = 5


def official_recursive_mix(x, old_x, y, old_y, alpha, interpolate_mode, u, cx, cy):
    """``utils.recursive_mix`` line for line; its ``rand_bbox`` draws given: ``u`` for ``random.uniform(0, alpha)``,
    ``cx`` / ``cy`` for ``np.random.randint(W)`` / ``np.random.randint(H)``."""
    def rand_bbox(size, alpha):
        H = size[2]
        W = size[3]
        cut_rat = np.sqrt(u)
        cut_w = int(W * cut_rat)
        cut_h = int(H * cut_rat)
        bbx1 = np.clip(cx - cut_w // 2, 0, W)
        bby1 = np.clip(cy - cut_h // 2, 0, H)
        bbx2 = np.clip(cx + cut_w // 2, 0, W)
        bby2 = np.clip(cy + cut_h // 2, 0, H)
        return bbx1, bby1, bbx2, bby2

    bbx1, bby1, bbx2, bby2 = rand_bbox(x.size(), alpha)
    size = (bby2 - bby1, bbx2 - bbx1)
    bs = x.size(0)
    if size != (0, 0):
        align_corners = None if interpolate_mode == "nearest" else True
        x[:, :, bby1:bby2, bbx1:bbx2] = F.interpolate(old_x[:bs], size=size, mode=interpolate_mode,
                                                      align_corners=align_corners)
    lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (x.size()[-1] * x.size()[-2]))
    y = lam * y + (1 - lam) * old_y[:bs]
    return x, y, lam


def smooth_one_hot(target, num_classes, smoothing=0.0):
    """The official ``utils.smooth_one_hot`` (off-target classes get ``smoothing / (C - 1)``)."""
    true_dist = target.new_zeros(size=(len(target), num_classes)).float()
    true_dist.fill_(smoothing / (num_classes - 1))
    true_dist.scatter_(1, target.data.unsqueeze(1), 1.0 - smoothing)
    return true_dist


def official_steps(batches, alpha, mode, smoothing, draws):
    """The official training loop's mixing, one ``(inputs, targets_onehot)`` per step."""
    old_inputs, out = None, []
    for (inputs, targets), (u, cx, cy) in zip(batches, draws):
        inputs = inputs.clone()
        targets_onehot = smooth_one_hot(targets, C, smoothing)
        if old_inputs is not None:
            inputs, targets_onehot, lam = official_recursive_mix(inputs, old_inputs, targets_onehot, old_targets,
                                                                 alpha, mode, u, cx, cy)
        out.append((inputs, targets_onehot))
        old_inputs = inputs.clone().detach()
        old_targets = targets_onehot.clone().detach()
    return out


def batches(sizes, hw=(16, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, *hw, generator=g), torch.randint(0, C, (b,), generator=g)) for b in sizes]


def replayed_draws(seed, n_steps, hw, max_area):
    """The box draws a seeded RecursiveMix makes, one per call, as the official's (u, cx, cy)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_steps):
        u, centre = draw_box(1, hw, max_area, g, "cpu")
        out.append((float(u[0]), int(centre[0, 1]), int(centre[0, 0])))
    return out


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_equals_the_official_training_steps_on_the_same_draws(interpolation, smoothing):
    sizes, hw, seed = (6, 6, 6, 4, 3), (16, 12), 3  # the last batches smaller, as an epoch's last
    data = batches(sizes, hw)
    eps = smoothing * C / (C - 1)  # the official's smoothing, in torch's convention (1 - eps) * onehot + eps / C
    mixer = RecursiveMix(max_area=0.5, interpolation=interpolation, first_step="skip", num_classes=C,
                         label_smoothing=eps, generator=torch.Generator().manual_seed(seed))
    ours = [mixer(x.clone(), y) for x, y in data]
    theirs = official_steps(data, 0.5, interpolation, smoothing, replayed_draws(seed, len(sizes), hw, 0.5))
    pasted = 0
    for (mx, target), (ox, oy), (x, _) in zip(ours, theirs, data):
        if interpolation == "nearest":
            assert torch.equal(mx, ox)
        else:
            torch.testing.assert_close(mx, ox, rtol=0, atol=1e-6)
        torch.testing.assert_close(target.soft(), oy, rtol=0, atol=1e-6)
        torch.testing.assert_close(target.soft().sum(1), torch.ones(len(x)))
        pasted += not torch.equal(mx, x)
    assert pasted >= 3  # the draws pasted something on most steps
    assert torch.equal(ours[0][0], data[0][0]) and bool((ours[0][1].lam == 1).all())  # step 1: no history


def test_the_pasted_region_carries_the_previous_mixed_batch_and_its_label():
    (x1, y1), (x2, y2), (x3, y3) = batches((4, 4, 4), hw=(8, 8))
    mixer = RecursiveMix(max_area=0.9, mode="sample", num_classes=C, generator=torch.Generator().manual_seed(1))
    m1, t1 = mixer(x1, y1)
    m2, t2 = mixer(x2, y2)
    m3, t3 = mixer(x3, y3)
    for prev_soft, t, y in ((t1.soft(), t2, y2), (t2.soft(), t3, y3)):
        lam = t.params.lam[:, None]
        torch.testing.assert_close(t.soft(), lam * F.one_hot(y, C).float() + (1 - lam) * prev_soft)
        torch.testing.assert_close(t.soft().sum(1), torch.ones(4))
    # the box of step 3 holds step 2's mixed images, resized (nearest neighbour), everything else is x3
    box = t3.params.region.box
    for i in range(4):
        (h0, h1), (w0, w1) = box[i].tolist()
        assert torch.equal(m3[i, :, :h0], x3[i, :, :h0]) and torch.equal(m3[i, :, h1:], x3[i, :, h1:])
        if h1 > h0 and w1 > w0:
            want = F.interpolate(m2[i:i + 1], size=(h1 - h0, w1 - w0), mode="nearest")[0]
            assert torch.equal(m3[i, :, h0:h1, w0:w1], want)
    assert float((t3.soft() > 0).sum(1).float().mean()) > 1  # labels of several batches


def test_first_step_without_history():
    x, y = batches((5,), hw=(8, 8))[0]
    mixed, target = RecursiveMix(max_area=0.9, first_step="skip", num_classes=C,
                                 generator=torch.Generator().manual_seed(0))(x.clone(), y)
    assert torch.equal(mixed, x) and bool((target.params.lam == 1).all())  # the official: nothing to paste
    mixer = RecursiveMix(max_area=0.9, num_classes=C, generator=torch.Generator().manual_seed(0))
    mixed, target = mixer(x.clone(), y)  # default: the batch is its own history (a resized copy of itself)
    assert not torch.equal(mixed, x) and bool((target.params.lam < 1).all())
    torch.testing.assert_close(target.soft(), F.one_hot(y, C).float())  # labels unchanged
    (h0, h1), (w0, w1) = target.params.region.box[0].tolist()
    want = F.interpolate(x, size=(h1 - h0, w1 - w0), mode="nearest")
    assert torch.equal(mixed[:, :, h0:h1, w0:w1], want)
    fresh = RecursiveMix(num_classes=C)
    params = fresh.sample(x, y)
    assert label_params(fresh, params, y) is params  # integrations' label rule: right while every row is its own


def test_a_larger_batch_than_the_history_mixes_its_extra_rows_with_themselves():
    (x1, y1), (x2, y2) = batches((3, 5), hw=(8, 8))
    for first, extra_lam_one in (("self", False), ("skip", True)):
        mixer = RecursiveMix(max_area=0.9, num_classes=C, first_step=first, generator=torch.Generator().manual_seed(2))
        mixer(x1, y1)
        _, t = mixer(x2, y2)
        assert bool((t.params.lam[3:] == 1).all()) == extra_lam_one
        torch.testing.assert_close(t.soft()[3:], F.one_hot(y2[3:], C).float())
        torch.testing.assert_close(t.soft().sum(1), torch.ones(5))


def test_state_dict_resumes_and_reset_forgets():
    data = batches((4, 4, 4, 4), hw=(8, 8))
    g = torch.Generator().manual_seed(5)
    mixer = RecursiveMix(num_classes=C, generator=g)
    for x, y in data[:2]:
        mixer(x, y)
    state, gstate = mixer.state_dict(), g.get_state()
    rest = [mixer(x, y) for x, y in data[2:]]
    g2 = torch.Generator()
    g2.set_state(gstate)
    resumed = RecursiveMix(num_classes=C, generator=g2)
    resumed.load_state_dict(state)
    for (x, y), (mx, t) in zip(data[2:], rest):
        rx, rt = resumed(x, y)
        assert torch.equal(rx, mx)
        torch.testing.assert_close(rt.soft(), t.soft())
    resumed.reset()
    assert resumed.state_dict() == {"inputs": None, "soft_labels": None}
    with pytest.raises(ValueError, match="state_dict"):
        resumed.load_state_dict({"inputs": torch.zeros(2, 3, 8, 8)})


def test_integrations_that_rebuild_the_target_from_y_are_refused_once_history_counts():
    (x1, y1), (x2, y2) = batches((4, 4), hw=(8, 8))
    mixer = RecursiveMix(num_classes=C, generator=torch.Generator().manual_seed(0))
    mixer(x1, y1)
    params = mixer.sample(x2, y2)
    with pytest.raises(RuntimeError, match="mixer.target"):
        label_params(mixer, params, y2)
    assert mixer.target(y2, params).soft().shape == (4, C)
    stale = params
    mixer.sample(x2, y2)
    with pytest.raises(ValueError, match="latest"):
        mixer.target(y2, stale)


class _Batches(torch.utils.data.Dataset):
    """8 batches of 4 rows; every row of batch b has label b, so a soft target shows which batches it holds."""

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return torch.full((3, 8, 8), float(i)), i // 4


def test_in_dataloader_workers_each_worker_keeps_its_own_history():
    from mixlab.data import MixCollate

    mixer = RecursiveMix(max_area=0.9, num_classes=8, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(_Batches(), batch_size=4, num_workers=2, collate_fn=MixCollate(mixer),
                                         generator=torch.Generator().manual_seed(0))
    seen = 0
    for b, (_, target) in enumerate(loader):  # worker b % 2 made batch b
        classes = set(torch.nonzero(target.soft().sum(0)).flatten().tolist())
        assert b in classes and classes <= set(range(b % 2, b + 1, 2)), (b, classes)
        seen += len(classes) > 1
    assert seen >= 3
    assert mixer.state_dict()["inputs"] is None  # the workers' histories are their own, not the main process's


def test_inputs_and_labels_are_checked():
    x, y = batches((4,), hw=(8, 8))[0]
    with pytest.raises(ValueError, match="num_classes"):
        RecursiveMix()(x, y)
    with pytest.raises(ValueError, match="labels"):
        RecursiveMix(num_classes=C, labels_getter=None)(x)
    with pytest.raises(ValueError, match="max_area"):
        RecursiveMix(max_area=1.5)
    with pytest.raises(TypeError, match="has no option 'pairing'"):
        RecursiveMix(pairing="flip")
    mixer = RecursiveMix(num_classes=C)
    mixer(x, y)
    with pytest.raises(ValueError, match="reset"):
        mixer(torch.rand(4, 3, 6, 6), y)
    soft = F.one_hot(y, C).float()  # float rows work without num_classes
    _, t = RecursiveMix()(x, soft)
    torch.testing.assert_close(t.soft(), soft)
    assert mixlab.RecursiveMix is RecursiveMix and "recursivemix" in mixlab.methods.available()


def test_box_law_matches_the_official_rand_bbox():
    g = torch.Generator().manual_seed(0)
    u, centre = draw_box(4000, (16, 12), 0.5, g, "cpu")
    assert float(u.max()) < 0.5 and float(u.min()) >= 0
    box = box_from_draws(u, centre, (16, 12))
    for i in range(0, 4000, 97):
        r = np.sqrt(float(u[i]))
        ch, cw = int(16 * r), int(12 * r)
        cy, cx = int(centre[i, 0]), int(centre[i, 1])
        want = [[np.clip(cy - ch // 2, 0, 16), np.clip(cy + ch // 2, 0, 16)],
                [np.clip(cx - cw // 2, 0, 12), np.clip(cx + cw // 2, 0, 12)]]
        assert box[i].tolist() == want


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_the_general_path_equals_the_cpu_fast_path(interpolation):
    """Off the CPU, under autograd or compile, the region pastes through ``partner`` (grid_sample for bilinear, with
    the official's align_corners=True): the same images as the CPU path's F.interpolate into each box."""
    data = batches((4, 4, 4), hw=(9, 11))
    mixer = RecursiveMix(max_area=0.9, mode="sample", interpolation=interpolation, num_classes=C,
                         generator=torch.Generator().manual_seed(4))
    for x, y in data:
        params = mixer.sample(x, y)
        fast = params.region.apply(x, x, params.lam, params.index, fast=True)
        slow = params.region.apply(x, x, params.lam, params.index, fast=False)
        torch.testing.assert_close(slow, fast, rtol=0, atol=1e-5)
