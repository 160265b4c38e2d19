"""SnapMix against a port of the official code (Shaoli-Huang/SnapMix, ``utils/mixmethod.py``: ``get_spm`` and
``snapmix``; ``utils/custom_ops.py``: ``rand_bbox``; ``networks/resnet_ft.py``: the ResNet wrapper whose
``forward`` returns ``(logits, feature map, _)``), with the same draws: equal images, equal label weights, equal
loss, on a torchvision resnet18(weights=None) and a timm resnet18 when timm is installed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mixlab
from mixlab.methods.snapmix import SnapBox, SnapMix, cam_parts, class_activation_maps, official_bbox

torchvision = pytest.importorskip("torchvision")


# ---------------------------------------------------------------------------------------------- the port
def rand_bbox(size, lam, cx, cy):
    """``utils/custom_ops.rand_bbox`` with its ``np.random.randint`` centre given."""
    W, H = size[2], size[3]
    cut_rat = np.sqrt(1. - lam)
    cut_w, cut_h = int(W * cut_rat), int(H * cut_rat)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


class OfficialResNet(nn.Module):
    """``networks/resnet_ft.ResNet`` (no midlevel) around a torchvision ResNet, sharing its weights."""

    def __init__(self, base):
        super().__init__()
        self.conv3 = nn.Sequential(*list(base.children())[:-4])
        self.conv4 = list(base.children())[-4]
        self.conv5 = list(base.children())[-3]
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = base.fc

    def forward(self, x):
        x = self.conv3(x)
        x = self.conv5(self.conv4(x))
        logits = self.classifier(self.avg_pool(x).view(x.size(0), -1))
        return logits, x.detach(), None


class OfficialTimm(nn.Module):
    """The same interface over a timm CNN: ``forward_features`` is the map, ``get_classifier()`` the head."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.classifier = base.get_classifier()

    def forward(self, x):
        fms = self.base.forward_features(x)
        return self.base.forward_head(fms), fms.detach(), None


class DataParallelLike:
    def __init__(self, module):
        self.module = module

    def __call__(self, x):
        return self.module(x)


def get_spm(input, target, cropsize, model):
    """``get_spm`` (``conf.cropsize`` given; its unused ``clslogit``, a softmax without ``dim``, left out)."""
    imgsize = (cropsize, cropsize)
    bs = input.size(0)
    with torch.no_grad():
        output, fms, _ = model(input)
        clsw = model.module.classifier
        weight = clsw.weight.data
        bias = clsw.bias.data
        weight = weight.view(weight.size(0), weight.size(1), 1, 1)
        fms = F.relu(fms)
        out = F.conv2d(fms, weight, bias=bias)
        outmaps = []
        for i in range(bs):
            outmaps.append(out[i, target[i]])
        outmaps = torch.stack(outmaps)
        outmaps = outmaps.view(outmaps.size(0), 1, outmaps.size(1), outmaps.size(2))
        outmaps = F.interpolate(outmaps, imgsize, mode='bilinear', align_corners=False)
        outmaps = outmaps.squeeze()
        for i in range(bs):
            outmaps[i] -= outmaps[i].min()
            outmaps[i] /= outmaps[i].sum()
    return outmaps


def snapmix(input, target, wfmaps, rand_index, box, box1):
    """``snapmix`` with ``prob`` 1 and its draws given: ``rand_index`` and the two ``rand_bbox`` results."""
    lam_a = torch.ones(input.size(0))
    lam_b = 1 - lam_a
    wfmaps_b = wfmaps[rand_index, :, :]
    target_b = target[rand_index]
    same_label = target == target_b
    bbx1, bby1, bbx2, bby2 = box
    bbx1_1, bby1_1, bbx2_1, bby2_1 = box1
    area = (bby2 - bby1) * (bbx2 - bbx1)
    area1 = (bby2_1 - bby1_1) * (bbx2_1 - bbx1_1)
    if area1 > 0 and area > 0:
        ncont = input[rand_index, :, bbx1_1:bbx2_1, bby1_1:bby2_1].clone()
        ncont = F.interpolate(ncont, size=(bbx2 - bbx1, bby2 - bby1), mode='bilinear', align_corners=True)
        input[:, :, bbx1:bbx2, bby1:bby2] = ncont
        lam_a = 1 - wfmaps[:, bbx1:bbx2, bby1:bby2].sum(2).sum(1) / (wfmaps.sum(2).sum(1) + 1e-8)
        lam_b = wfmaps_b[:, bbx1_1:bbx2_1, bby1_1:bby2_1].sum(2).sum(1) / (wfmaps_b.sum(2).sum(1) + 1e-8)
        tmp = lam_a.clone()
        lam_a[same_label] += lam_b[same_label]
        lam_b[same_label] += tmp[same_label]
        lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (input.size()[-1] * input.size()[-2]))
        lam_a[torch.isnan(lam_a)] = lam
        lam_b[torch.isnan(lam_b)] = 1 - lam
    return input, target, target_b, lam_a, lam_b


def official_loss(output, target_a, target_b, lam_a, lam_b):
    """``trainer/comm_train.py``: ``CrossEntropyLoss(reduction='none')``, then the batch mean."""
    criterion = nn.CrossEntropyLoss(reduction="none")
    return torch.mean(criterion(output, target_a) * lam_a + criterion(output, target_b) * lam_b)


# ---------------------------------------------------------------------------------------------- helpers
S = 64  # image side: resnet18's layer4 map is 2 x 2


def resnet(seed=0, classes=5):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=classes).eval()


def timm_resnet(seed=0, classes=5):
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, num_classes=classes).eval()


def batch(seed, B=6, classes=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, S, S, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 3, 4, 0][:B]) % classes  # repeated labels: the same-label rule is exercised
    return x, y


def boxes_of(region, i=0):
    (b0, b1), (b2, b3) = region.box[i].tolist()
    (s0, s1), (s2, s3) = region.source[i].tolist()
    return (b0, b2, b1, b3), (s0, s2, s1, s3)  # rand_bbox's (bbx1, bby1, bbx2, bby2)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("maker, wrap", [(resnet, OfficialResNet), (timm_resnet, OfficialTimm)], ids=["tv", "timm"])
def test_cams_equal_the_official_get_spm(maker, wrap):
    net = maker()
    x, y = batch(0)
    ours = class_activation_maps(cam_parts(net), x, y)
    theirs = get_spm(x.clone(), y, S, DataParallelLike(wrap(net)))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours.sum((1, 2)), torch.ones(len(y)))


def test_boxes_equal_the_official_rand_bbox():
    g = torch.Generator().manual_seed(0)
    lam = torch.rand(500, generator=g)
    lam[:5] = torch.tensor([0.0, 1.0, 0.5, 1e-7, 1 - 1e-7])
    centre = torch.randint(0, 20, (500, 2), generator=g)
    ours = official_bbox(lam, centre, (20, 12)).clamp(max=20)
    for i in range(500):
        cx, cy = int(centre[i, 0]), min(int(centre[i, 1]), 11)
        bx = official_bbox(lam[i:i + 1], torch.tensor([[cx, cy]]), (20, 12))[0]
        x1, y1, x2, y2 = rand_bbox((1, 3, 20, 12), float(lam[i]), cx, cy)
        assert bx.tolist() == [[x1, max(x1, x2)], [y1, max(y1, y2)]], (i, float(lam[i]), cx, cy)
    assert ours.shape == (500, 2, 2)


@pytest.mark.parametrize("maker, wrap", [(resnet, OfficialResNet), (timm_resnet, OfficialTimm)], ids=["tv", "timm"])
@pytest.mark.parametrize("seed", range(4))
def test_snapmix_equals_the_official_with_the_same_draws(maker, wrap, seed):
    net = maker(seed)
    x, y = batch(seed)
    t = SnapMix(model=net, generator=torch.Generator().manual_seed(seed))
    mixed, target = t(x, y)
    params = target.params
    region = params.region
    assert isinstance(region, SnapBox)
    box, box1 = boxes_of(region)
    wfmaps = get_spm(x.clone(), y, S, DataParallelLike(wrap(net)))
    ref, ya, yb, lam_a, lam_b = snapmix(x.clone(), y, wfmaps, params.index, box, box1)
    assert torch.equal(mixed, ref)  # the same pixels, bit for bit
    torch.testing.assert_close(params.label_weights, torch.stack([lam_a, lam_b], 1), rtol=1e-4, atol=1e-5)
    assert torch.equal(target.y_a, ya) and torch.equal(target.y_b, yb)
    torch.testing.assert_close(target.lam, params.label_weights[:, 0])
    logits = torch.randn(len(y), 5, generator=torch.Generator().manual_seed(seed))
    expected = official_loss(logits, ya, yb, lam_a, lam_b)
    for criterion in (nn.CrossEntropyLoss(), F.cross_entropy):
        torch.testing.assert_close(target.loss(criterion, logits), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(F.cross_entropy(logits, target.soft(5)), expected, rtol=1e-4, atol=1e-6)
    # the inputs' lam is the share of pixels kept
    torch.testing.assert_close(params.lam, region.lam)


def test_same_label_rows_get_the_sum_and_constant_maps_fall_back_to_the_area():
    x, y = batch(1)
    y = torch.tensor([2, 2, 2, 1, 1, 0])
    cams = torch.rand(6, S, S, generator=torch.Generator().manual_seed(3))
    cams[3] = 0.5  # constant: NaN after normalising, as the official
    t = SnapMix(alpha=1.0, generator=torch.Generator().manual_seed(4))
    mixed, target = t(x, y, saliency=cams)
    params = target.params
    box, box1 = boxes_of(params.region)
    wfmaps = cams - cams.amin((1, 2), keepdim=True)
    wfmaps = wfmaps / wfmaps.sum((1, 2), keepdim=True)
    ref, _, _, lam_a, lam_b = snapmix(x.clone(), y, wfmaps, params.index, box, box1)
    assert torch.equal(mixed, ref)
    torch.testing.assert_close(params.label_weights, torch.stack([lam_a, lam_b], 1), rtol=1e-4, atol=1e-5)
    assert not torch.isnan(params.label_weights).any()


@pytest.mark.parametrize("seed", range(3))
def test_sample_mode_is_the_official_rule_row_by_row(seed):
    x, y = batch(seed)
    cams = torch.rand(6, S, S, generator=torch.Generator().manual_seed(seed))
    t = SnapMix(alpha=1.0, mode="sample", generator=torch.Generator().manual_seed(seed))
    mixed, target = t(x, y, saliency=cams)
    params = target.params
    wf = cams / cams.sum((1, 2), keepdim=True)
    wf = wf - wf.amin((1, 2), keepdim=True)
    wf = wf / wf.sum((1, 2), keepdim=True)
    assert len({tuple(b.flatten().tolist()) for b in params.region.box}) > 1  # boxes differ per row
    for i in range(6):
        box, box1 = boxes_of(params.region, i)
        j = params.index[i:i + 1]
        # the official on the pair (row i, its partner j): row i of the result
        pair = torch.cat([x[i:i + 1], x[j]])
        ref, _, _, la, lb = snapmix(pair.clone(), torch.cat([y[i:i + 1], y[j]]), torch.cat([wf[i:i + 1], wf[j]]),
                                    torch.tensor([1, 1]), box, box1)
        assert torch.equal(mixed[i], ref[0]), i
        torch.testing.assert_close(params.label_weights[i], torch.stack([la[0], lb[0]]), rtol=1e-4, atol=1e-5)


def test_an_empty_box_leaves_the_row_and_p_zero_leaves_the_batch():
    x, y = batch(0)
    cams = torch.rand(6, S, S)
    for t in (SnapMix(p=0.0), SnapMix(alpha=1e-3, generator=torch.Generator().manual_seed(0))):
        mixed, target = t(x, y, saliency=cams)
        if target.params.region.box.flatten(1).any():
            continue  # alpha=1e-3 drew lam near 0 or 1: a box may be full; the p=0 case is the check
        assert torch.equal(mixed, x)
        assert torch.equal(target.params.label_weights, torch.tensor([[1.0, 0.0]]).expand(6, 2))


def test_integer_maps_follow_by_nearest_and_uint8_images_round():
    x, y = batch(2)
    img = (x * 255).round().to(torch.uint8)
    seg = torch.arange(S * S).view(1, S, S).repeat(6, 1, 1) + 10000 * torch.arange(6).view(6, 1, 1)
    t = SnapMix(alpha=1.0, generator=torch.Generator().manual_seed(0))
    out = t({"image": img, "seg": seg, "labels": y}, saliency=torch.rand(6, S, S))
    params = out["labels"].params
    box = params.region.box[0]
    inside = out["seg"][:, box[0, 0]:box[0, 1], box[1, 0]:box[1, 1]]
    assert torch.equal(inside // 10000, params.index.view(6, 1, 1).expand_as(inside))  # partner's values, exact
    assert out["image"].dtype == torch.uint8


def test_the_cam_adapter_finds_the_parts_of_common_classifiers_and_refuses_others():
    for make in (torchvision.models.resnet18, torchvision.models.densenet121, torchvision.models.mobilenet_v2):
        net = make(weights=None, num_classes=4).eval()
        features, linear = cam_parts(net)
        fms = features(torch.rand(2, 3, 32, 32))
        assert fms.ndim == 4 and fms.shape[1] == linear.in_features
    with pytest.raises(ValueError, match="features= and classifier="):
        cam_parts(torchvision.models.vgg11(weights=None))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    features, linear = cam_parts(net, features="1", classifier="4")
    assert features(torch.rand(2, 3, 8, 8)).shape == (2, 4, 6, 6) and linear is net[4]


def test_model_mode_is_kept_or_switched_and_restored():
    net = resnet().train()
    x, y = batch(0)
    running = net.bn1.running_mean.clone()
    SnapMix(model=net, eval_mode=True, generator=torch.Generator().manual_seed(0))(x, y)
    assert net.training and torch.equal(net.bn1.running_mean, running)  # eval: no statistics updated
    SnapMix(model=net, generator=torch.Generator().manual_seed(0))(x, y)
    assert net.training and not torch.equal(net.bn1.running_mean, running)  # the official: train mode


def test_refusals_name_the_fix():
    x, y = batch(0)
    with pytest.raises(ValueError, match="SnapMix\\(model=net\\), or t\\(x, y, saliency=cams\\)"):
        SnapMix()(x, y)
    with pytest.raises(ValueError, match="class indices y"):
        SnapMix()(x, F.one_hot(y, 5).float(), saliency=torch.rand(6, S, S))
    with pytest.raises(ValueError, match="saliency \\(the CAMs\\) must be"):
        SnapMix()(x, y, saliency=torch.rand(6, S, S - 1))


def test_reachable_and_registered():
    assert mixlab.SnapMix is SnapMix
    info = mixlab.methods.get("snapmix")
    assert info.cls is SnapMix and info.alpha and "saliency" in info.needs
