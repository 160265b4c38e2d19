"""Ports of reference code that no installable package ships, for ``mixlab bench`` (and the tests that compare
mixlab with them): torchvision's detection reference ``SimpleCopyPaste`` (references/detection/transforms.py,
not part of the torchvision package)."""
from __future__ import annotations

import torch

__all__ = ["tv_copy_paste", "tv_simple_copy_paste"]


def tv_copy_paste(image, target, paste_image, paste_target, random_selection, blending=True, resize_interpolation=None):
    """torchvision's ``_copy_paste`` line for line, with its random selection passed in.

    (torchvision draws ``random_selection = torch.randint(0, n, (n,)).unique()`` from the global RNG.)
    """
    import torchvision.ops as tvops
    import torchvision.transforms.functional as tvF

    if resize_interpolation is None:
        resize_interpolation = tvF.InterpolationMode.BILINEAR
    num_masks = len(paste_target["masks"])
    if num_masks < 1:
        return image, target
    paste_masks = paste_target["masks"][random_selection]
    paste_boxes = paste_target["boxes"][random_selection]
    paste_labels = paste_target["labels"][random_selection]
    masks = target["masks"]
    size1 = image.shape[-2:]
    size2 = paste_image.shape[-2:]
    if size1 != size2:
        paste_image = tvF.resize(paste_image, size1, interpolation=resize_interpolation)
        paste_masks = tvF.resize(paste_masks, size1, interpolation=tvF.InterpolationMode.NEAREST)
        ratios = torch.tensor((size1[1] / size2[1], size1[0] / size2[0]), device=paste_boxes.device)
        paste_boxes = paste_boxes.view(-1, 2, 2).mul(ratios).view(paste_boxes.shape)
    paste_alpha_mask = paste_masks.sum(dim=0) > 0
    if blending:
        paste_alpha_mask = tvF.gaussian_blur(paste_alpha_mask.unsqueeze(0), kernel_size=(5, 5), sigma=[2.0])
    image = (image * (~paste_alpha_mask)) + (paste_image * paste_alpha_mask)
    masks = masks * (~paste_alpha_mask)
    non_all_zero_masks = masks.sum((-1, -2)) > 0
    masks = masks[non_all_zero_masks]
    out_target = {k: v for k, v in target.items()}
    out_target["masks"] = torch.cat([masks, paste_masks])
    boxes = tvops.masks_to_boxes(masks)
    out_target["boxes"] = torch.cat([boxes, paste_boxes])
    labels = target["labels"][non_all_zero_masks]
    out_target["labels"] = torch.cat([labels, paste_labels])
    if "area" in target:
        out_target["area"] = out_target["masks"].sum((-1, -2)).to(torch.float32)
    if "iscrowd" in target and "iscrowd" in paste_target:
        if len(target["iscrowd"]) == len(non_all_zero_masks):
            iscrowd = target["iscrowd"][non_all_zero_masks]
            paste_iscrowd = paste_target["iscrowd"][random_selection]
            out_target["iscrowd"] = torch.cat([iscrowd, paste_iscrowd])
    boxes = out_target["boxes"]
    degenerate_boxes = boxes[:, 2:] <= boxes[:, :2]
    if degenerate_boxes.any():
        valid_targets = ~degenerate_boxes.any(dim=1)
        out_target["boxes"] = boxes[valid_targets]
        out_target["masks"] = out_target["masks"][valid_targets]
        out_target["labels"] = out_target["labels"][valid_targets]
        if "area" in out_target:
            out_target["area"] = out_target["area"][valid_targets]
        if "iscrowd" in out_target and len(out_target["iscrowd"]) == len(valid_targets):
            out_target["iscrowd"] = out_target["iscrowd"][valid_targets]
    return image, out_target


def tv_simple_copy_paste(images, targets, *, blending=True):
    """torchvision's ``SimpleCopyPaste.forward`` on a list of images: image ``i`` receives image ``i - 1``'s
    instances (``roll(1)``), each selection drawn from the global RNG as torchvision does."""
    images_rolled = images[-1:] + images[:-1]
    targets_rolled = targets[-1:] + targets[:-1]
    out_images, out_targets = [], []
    for image, target, paste_image, paste_target in zip(images, targets, images_rolled, targets_rolled):
        n = len(paste_target["masks"])
        selection = torch.randint(0, n, (n,), device=image.device).unique()
        im, t = tv_copy_paste(image, target, paste_image, paste_target, selection, blending=blending)
        out_images.append(im)
        out_targets.append(t)
    return out_images, out_targets
