"""SnapMix (Huang, Wang and Tao, AAAI 2021, "SnapMix: Semantically Proportional Mixing for Augmenting
Fine-grained Data"; official code Shaoli-Huang/SnapMix, ``utils/mixmethod.py``: ``snapmix`` and ``get_spm``).

Two independent CutMix boxes: a crop of the partner (``box1``, drawn with ``lam1``) is resized, bilinear
with ``align_corners=True``, into a box of the original (``box``, drawn with ``lam``). The labels are
weighted by the *semantic* share of each box, read from the class activation maps (CAMs) of each
row's own class, normalised to sum 1 (``get_spm``): the original keeps ``1 - CAM_a(box)``, the partner
gets ``CAM_b(box1)``. The two weights need not sum to 1; they travel to the target as
:attr:`MixParams.label_weights <mixlab.MixParams>`.

The CAMs come from the model being trained (``SnapMix(model=net)``) through :func:`cam_parts`, which
finds the feature map before global average pooling and the linear classifier of timm and
torchvision classifiers, or from maps given per call (``t(x, y, saliency=cams)``).

Convention: ``lam`` weights the original row: the exact share of its pixels outside ``box`` (the
inputs'); the labels' weights are the CAM shares (``target.params.label_weights``).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as V
from .._fast import cast_back, memory_format
from ..mixer import Mixer
from ..params import MixParams
from ..regions import Box, box_mask
from ..registry import register
from ..sampling import rng, sample_beta

__all__ = ["SnapMix", "SnapBox", "cam_parts", "class_activation_maps", "official_bbox"]

_PASSIVE = (nn.Dropout, nn.Flatten, nn.Identity)


# ----------------------------------------------------------------------------------------------
# class activation maps

def _linear_head(head) -> Optional[nn.Linear]:
    """``head`` if it is a Linear, or the one Linear of a Sequential of Dropout / Flatten / Identity and it."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        if len(linears) == 1 and all(isinstance(m, (nn.Linear,) + _PASSIVE) for m in head):
            return linears[0]
    return None


def _hooked(model: nn.Module, module: nn.Module, *, take_input: bool):
    """A function ``x -> (B, C, h, w)``: ``model(x)`` run with a hook that keeps ``module``'s input or output."""
    def features(x):
        kept = {}

        def pre(mod, args):
            kept["map"] = args[0]

        def post(mod, args, out):
            kept["map"] = out

        handle = module.register_forward_pre_hook(pre) if take_input else module.register_forward_hook(post)
        try:
            model(x)
        finally:
            handle.remove()
        return kept["map"]
    return features


def cam_parts(model: nn.Module, *, features=None, classifier=None):
    """The feature map before pooling and the linear classifier of ``model``, for class activation maps.

    Found, in this order:

    - ``features`` (a submodule or its dotted name: its output is the map, kept by a forward hook)
      and ``classifier`` (an ``nn.Linear`` or its name), when given;
    - timm models: ``model.forward_features(x)`` and ``model.get_classifier()``;
    - torchvision classifiers: the input of ``model.avgpool`` (ResNet, ResNeXt, Wide ResNet, RegNet,
      Inception, GoogLeNet, EfficientNet, MobileNet) or the output of ``model.features`` (DenseNet),
      and ``model.fc`` or the Linear of ``model.classifier`` (a Linear, or Dropout and a Linear).

    A CAM is exact for a head that is global average pooling followed by one Linear; heads with a
    norm or an MLP after the pooling (ConvNeXt, VGG, MobileNetV3) are refused: pass ``features`` and
    ``classifier`` to choose the layers yourself.

    Returns:
        ``(features, linear)``: a function ``x -> (B, C, h, w)`` and the ``nn.Linear`` over ``C``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module classifier, got {V.describe(model)}")
    if isinstance(classifier, str):
        classifier = model.get_submodule(classifier)
    if isinstance(features, str):
        features = model.get_submodule(features)
    if features is not None or classifier is not None:
        if not isinstance(features, nn.Module) or not isinstance(classifier, nn.Linear):
            raise ValueError("cam_parts: pass both features= (a submodule whose output is the (B, C, h, w) map) and "
                             "classifier= (the nn.Linear over its C channels)")
        return _hooked(model, features, take_input=False), classifier
    if callable(getattr(model, "forward_features", None)) and callable(getattr(model, "get_classifier", None)):
        linear = _linear_head(model.get_classifier())
        pool = getattr(getattr(model, "global_pool", None), "pool_type", "avg")
        if linear is not None and pool == "avg":
            return model.forward_features, linear
        raise ValueError(f"cam_parts: the timm model {type(model).__name__} has no average-pooled linear head "
                         f"(classifier {type(model.get_classifier()).__name__}, pool {pool!r}); pass features= and "
                         f"classifier=")
    head = getattr(model, "fc", None)
    linear = _linear_head(head) if head is not None else _linear_head(getattr(model, "classifier", None))
    if linear is not None and isinstance(getattr(model, "avgpool", None), nn.Module):
        return _hooked(model, model.avgpool, take_input=True), linear
    if linear is not None and isinstance(getattr(model, "features", None), nn.Module):  # DenseNet
        return _hooked(model, model.features, take_input=False), linear
    raise ValueError(f"cam_parts: cannot find the feature map and linear classifier of {type(model).__name__} "
                     "(timm models, and torchvision's with avgpool + fc / classifier, are found); pass features= and "
                     "classifier=")


def normalise_cams(cams: torch.Tensor) -> torch.Tensor:
    """Each map minus its minimum, divided by its sum (``get_spm``); a constant map becomes NaN, as there."""
    cams = cams - cams.amin(dim=(1, 2), keepdim=True)
    return cams / cams.sum(dim=(1, 2), keepdim=True)


def class_activation_maps(parts, x: torch.Tensor, y: torch.Tensor, *, eval_mode: bool = False,
                          model: Optional[nn.Module] = None) -> torch.Tensor:
    """Normalised CAMs of each row's own class, at the input's size, as the official ``get_spm``.

    ``relu(features(x))`` convolved with the classifier's row of class ``y`` (plus its bias),
    upsampled bilinearly (``align_corners=False``) to ``(H, W)``, minus its minimum, divided by its sum.
    No gradient; float32.

    Args:
        parts: ``(features, linear)`` from :func:`cam_parts`.
        x: ``(B, C, H, W)`` images; y: ``(B,)`` class indices.
        eval_mode: run the model in eval mode (its mode is restored); the official runs it as it is
            (in train mode during training, so batch-norm statistics see the batch).
        model: the model whose mode ``eval_mode`` switches.

    Returns:
        ``(B, H, W)`` maps summing to 1 (NaN for a row whose map is constant).
    """
    features, linear = parts
    was_training = model.training if model is not None else None
    if eval_mode and model is not None:
        model.eval()
    try:
        with torch.no_grad():
            fms = features(x)
            if not isinstance(fms, torch.Tensor) or fms.ndim != 4:
                raise ValueError(f"SnapMix: the feature map must be (B, C, h, w), got {V.describe(fms)} (a vision "
                                 f"transformer's tokens have no CAM here)")
            fms = F.relu(fms.float())
            w = linear.weight.float()[y]  # (B, C)
            cam = torch.einsum("bchw,bc->bhw", fms, w)
            if linear.bias is not None:
                cam = cam + linear.bias.float()[y][:, None, None]
            cam = F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    finally:
        if eval_mode and model is not None:
            model.train(was_training)
    return normalise_cams(cam)


# ----------------------------------------------------------------------------------------------
# boxes and the region

def official_bbox(lam: torch.Tensor, centre: torch.Tensor, shape) -> torch.Tensor:
    """The official ``rand_bbox`` for given draws: side ``int(S * sqrt(1 - lam))``, ends
    ``centre -+ side // 2`` clipped to ``[0, S]``, per dim.

    Args:
        lam: ``(n,)``; centre: int64 ``(n, 2)``; shape: ``(H, W)``.

    Returns:
        int64 ``(n, 2, 2)``: ``[lo, hi)`` per dim (possibly empty).
    """
    sizes = torch.tensor(tuple(shape), device=lam.device)
    cut = torch.floor(torch.sqrt(1 - lam.double())[:, None] * sizes).long()  # (n, 2)
    lo = (centre - cut // 2).clamp(0, None)
    lo = torch.minimum(lo, sizes)
    hi = torch.minimum((centre + cut // 2).clamp(0, None), sizes)
    return torch.stack([lo, torch.maximum(lo, hi)], dim=2)


def _nearest(rows: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize over the last two dims by index selection (values stay exact)."""
    for d, (S, b) in enumerate(zip(rows.shape[-2:], size)):
        src = torch.floor(torch.arange(b, dtype=torch.float32, device=rows.device) * (S / b)).long().clamp(max=S - 1)
        rows = rows.index_select(rows.ndim - 2 + d, src)
    return rows


def _bilinear(rows: torch.Tensor, size) -> torch.Tensor:
    """The official resize: ``F.interpolate(bilinear, align_corners=True)`` over the last two dims, float32 or wider."""
    n, lead = rows.shape[0], tuple(rows.shape[1:-2])
    flat = rows.reshape(n, -1, *rows.shape[-2:])  # (n, C, h, w)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=True)
    return out.reshape((n,) + lead + tuple(size))


@dataclasses.dataclass(frozen=True, eq=False)
class SnapBox(Box):
    """SnapMix's region: inside ``box`` (over the last two dims), the partner's ``source`` crop resized to it.

    Attributes (beside :class:`~mixlab.regions.Box`'s ``box`` and ``shape``):
        source: int64 ``(B, 2, 2)``: the crop of the partner, ``[lo, hi)`` per dim.
        label_weights: float32 ``(B, 2)``: the labels' CAM weights (original, partner).

    Float leaves are resized as the official code does (bilinear, ``align_corners=True``, computed in
    float32 for lower precisions and rounded back); integer leaves by nearest neighbour, so label maps
    follow exactly. Boxes are read on the host (one small copy per call).
    """

    source: Optional[torch.Tensor] = None
    label_weights: Optional[torch.Tensor] = None

    def _groups(self):
        """``[(rows, box, source)]`` of rows sharing both boxes (one group in ``"batch"`` mode)."""
        groups: dict = {}
        for i, (b, s) in enumerate(zip(self.box.tolist(), self.source.tolist())):
            if min(hi - lo for lo, hi in b) > 0 and min(hi - lo for lo, hi in s) > 0:
                groups.setdefault((tuple(map(tuple, b)), tuple(map(tuple, s))), []).append(i)
        return [(rows, b, s) for (b, s), rows in groups.items()]

    def _paste(self, out, src, index):
        groups = self._groups()
        patches = []
        for rows, b, s in groups:  # every patch first: in place, later rows may read written ones
            whole = len(rows) == out.shape[0]
            r = slice(None) if whole else torch.tensor(rows, device=out.device)
            partners = index if whole else index.index_select(0, r)
            crop = src.index_select(0, partners)[..., s[0][0]:s[0][1], s[1][0]:s[1][1]]
            size = (b[0][1] - b[0][0], b[1][1] - b[1][0])
            if out.is_floating_point() or (out.dtype == torch.uint8 and out.ndim == 4):  # images
                patch = _bilinear(crop, size)
                patch = patch if patch.dtype == out.dtype else cast_back(patch, out)
            else:  # label maps, ids: exact values
                patch = _nearest(crop, size)
            patches.append((r, b, patch))
        for r, b, patch in patches:
            out[r, ..., b[0][0]:b[0][1], b[1][0]:b[1][1]] = patch.to(out.dtype)
        return out

    def partner(self, src, index):
        return self._paste(src.index_select(0, index), src, index)

    def apply(self, x, src, lam, index, *, fast=True, inplace=False):
        out = x if inplace else x.clone(memory_format=memory_format(x))
        return self._paste(out, src, index)

    @property
    def pasteable(self) -> bool:
        return True  # integer leaves are resized by nearest neighbour

    def rows(self, sl):
        return SnapBox(self.box[sl].contiguous(), self.shape, source=self.source[sl].contiguous(),
                       label_weights=self.label_weights[sl].contiguous())

    def to(self, device):
        return SnapBox(self.box.to(device), self.shape, source=self.source.to(device),
                       label_weights=self.label_weights.to(device))


def snap_label_weights(cams, index, y, box, source, lam_area) -> torch.Tensor:
    """The official label weights: ``1 - CAM_a(box)`` and ``CAM_b(source)``, swapped in where the labels agree,
    the area shares where a map is NaN. ``cams`` ``(B, H, W)`` normalised; returns float32 ``(B, 2)``."""
    shape = tuple(cams.shape[-2:])
    total = cams.sum(dim=(1, 2))  # (B,)
    in_box = (cams * box_mask(box, shape, 3)).sum(dim=(1, 2))
    cams_b = cams.index_select(0, index)
    in_src = (cams_b * box_mask(source, shape, 3)).sum(dim=(1, 2))
    lam_a = 1 - in_box / (total + 1e-8)
    lam_b = in_src / (total.index_select(0, index) + 1e-8)
    same = y == y.index_select(0, index)
    lam_a, lam_b = torch.where(same, lam_a + lam_b, lam_a), torch.where(same, lam_b + lam_a, lam_b)
    lam_a = torch.where(torch.isnan(lam_a), lam_area.to(lam_a.dtype), lam_a)
    lam_b = torch.where(torch.isnan(lam_b), 1 - lam_area.to(lam_b.dtype), lam_b)
    return torch.stack([lam_a, lam_b], dim=1).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# the method

@register("snapmix", inputs=("images",), needs=("labels", "saliency"),
          when="Fine-grained classification (birds, cars): labels by CAM share, not area; needs a CAM-capable model.")
class SnapMix(Mixer):
    """SnapMix (Huang et al. 2021): a resized partner crop pasted into a box, labels by CAM share.

    ``lam, lam1 ~ Beta(alpha, alpha)`` draw two boxes with the official ``rand_bbox``
    (:func:`official_bbox`): the partner's crop ``box1`` (from ``lam1``) is resized (bilinear,
    ``align_corners=True``) into the original's ``box`` (from ``lam``); when either box is empty the row
    is left unmixed. The label weights are ``1 - CAM_a(box)`` for the original and ``CAM_b(box1)`` for
    the partner, with ``CAM`` each row's normalised class activation map of its own class
    (:func:`class_activation_maps`); when both rows have the same label each gets the sum of the two,
    and a constant map (NaN) falls back to the area shares ``lam`` and ``1 - lam`` (all as the
    official ``snapmix``). The weights need not sum to 1: the target's ``.soft()`` rows sum to
    ``lam_a + lam_b``, and ``.loss(...)`` with ``"mean"`` is the plain batch mean of
    ``lam_a * ce(y_a) + lam_b * ce(y_b)``, the official training loss.

    Args:
        alpha: Beta concentration of both boxes (default 5.0, the paper's ``beta``).
        model: the classifier being trained; its CAMs are computed on each call (one forward, no
            gradient). Instead, pass maps per call: ``t(x, y, saliency=cams)``, ``(B, H, W)``.
        features, classifier: the layers :func:`cam_parts` should use (default: found for timm and
            torchvision classifiers).
        eval_mode: compute the CAMs in eval mode (default False: the model's current mode, as the
            official code, which runs it in train mode, so batch-norm statistics see the batch).
        mode: ``"batch"`` (default: one pair of boxes for the batch, the official) or ``"sample"``.
        Shared options: see :class:`mixlab.Mixer` (images ``(B, C, H, W)``; class-index labels).
    """

    def __init__(self, alpha=5.0, *, model=None, features=None, classifier=None, eval_mode=False, **common):
        super().__init__(**common)
        self.alpha = V.alpha(alpha)
        self.model = model
        self.features = features
        self.classifier = classifier
        self.eval_mode = bool(eval_mode)
        self._parts = None if model is None else cam_parts(model, features=features, classifier=classifier)

    def cams(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The normalised CAMs ``(B, H, W)`` of ``self.model`` for images ``x`` and labels ``y``."""
        if self._parts is None:
            raise ValueError("SnapMix needs class activation maps: SnapMix(model=net), or t(x, y, saliency=cams)")
        return class_activation_maps(self._parts, x, y, eval_mode=self.eval_mode, model=self.model)

    def draw(self, leaf, lam, index, g, *, y=None, saliency=None):
        B, device = leaf.shape[0], leaf.device
        if leaf.ndim != 4:
            raise ValueError(f"SnapMix needs images shaped (B, C, H, W), got shape {tuple(leaf.shape)}")
        if not isinstance(y, torch.Tensor) or y.shape != (B,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"SnapMix weighs the labels by each row's class activation map: call t(x, y) with class "
                             f"indices y of shape ({B},), got {V.describe(y)}")
        shape = tuple(leaf.shape[-2:])
        if saliency is None:
            if torch.utils.data.get_worker_info() is not None and self.model is not None:
                raise RuntimeError("SnapMix(model=...) cannot run in a DataLoader worker (the worker's model is a "
                                   "stale copy); mix in the training loop, or pass t(x, y, saliency=cams)")
            cams = self.cams(leaf, y) if B else torch.zeros(0, *shape, device=device)
        else:
            if not isinstance(saliency, torch.Tensor) or not saliency.is_floating_point() \
                    or tuple(saliency.shape) != (B,) + shape:
                raise ValueError(f"saliency (the CAMs) must be a float tensor of shape {(B,) + shape}, got "
                                 f"{V.describe(saliency)}")
            cams = normalise_cams(saliency.detach().float())
        n = self.distinct(B)
        lam1 = sample_beta(n, self.alpha, generator=g, device=device) if self.alpha > 0 else torch.ones(n, device=device)
        sizes = torch.tensor(shape, device=device)
        centres = torch.minimum(torch.floor(torch.rand(n, 2, 2, device=device, **rng(g)) * sizes).long(), sizes - 1)
        box = official_bbox(lam[:n], centres[:, 0], shape)
        source = official_bbox(lam1, centres[:, 1], shape)
        area = (box[..., 1] - box[..., 0]).prod(1)
        area1 = (source[..., 1] - source[..., 0]).prod(1)
        mixed = (area > 0) & (area1 > 0) & (lam[:n] < 1)  # the official skips the mix when a box is empty
        box = torch.where(mixed[:, None, None], box, torch.zeros_like(box))
        source = torch.where(mixed[:, None, None], source, torch.zeros_like(source))
        if n != B:
            box, source, mixed = box.expand(B, -1, -1), source.expand(B, -1, -1), mixed.expand(B)
        region = SnapBox(box.contiguous(), shape, source=source.contiguous(),
                         label_weights=torch.zeros(B, 2, device=device))
        weights = snap_label_weights(cams, index, y, region.box, region.source, region.lam)
        unmixed = torch.tensor([1.0, 0.0], device=device).expand(B, 2)
        weights = torch.where(mixed[:, None], weights, unmixed)
        return dataclasses.replace(region, label_weights=weights.contiguous())

    def target_params(self, params: MixParams, y: torch.Tensor) -> MixParams:
        """The labels' parameters: the CAM weights ``(lam_a, lam_b)`` drawn with the boxes."""
        region = params.region
        if not isinstance(region, SnapBox):
            return params  # disabled, or params not drawn by SnapMix: the inputs' own
        return MixParams(params.lam, params.index, region, label_weights=region.label_weights)
