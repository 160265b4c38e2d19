"""Pure mixing of tensors and nested batches with given :class:`~mixlab.MixParams` (no RNG).

Convention: ``mixed = lam * x + (1 - lam) * partner[index]`` where ``partner`` is ``x`` itself
unless a second batch is given (the two-stream form of the Keras article).
"""
from __future__ import annotations

import torch

from . import _fast
from ._tree import tree_map_with_path
from .params import MixParams

__all__ = ["mix", "mix_tensor", "box_mask"]


def _is_mixable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex() or t.dtype == torch.uint8


def _check_leaf(leaf, path: str, batch_size: int) -> None:
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(f"batch leaf {path} must be a torch.Tensor, got {type(leaf).__name__}")
    if leaf.ndim == 0:
        raise ValueError(f"batch leaf {path} is a 0-dim tensor; mixing needs a leading batch dimension")
    if leaf.shape[0] != batch_size:
        raise ValueError(
            f"batch leaf {path} has batch size {leaf.shape[0]}, but the params were drawn for "
            f"batch size {batch_size}"
        )


def box_mask(params: MixParams, ndim: int) -> torch.Tensor:
    """Boolean mask of the pasted region, broadcastable to a ``ndim``-d leaf: ``(B, 1.., *S)``."""
    box, shape = params.box, params.box_shape
    B, D = box.shape[0], len(shape)
    mask = None
    for d, size in enumerate(shape):
        ar = torch.arange(size, device=box.device)
        m = (ar >= box[:, d, 0:1]) & (ar < box[:, d, 1:2])  # (B, S_d)
        view = [B] + [1] * (ndim - 1)
        view[ndim - D + d] = size
        m = m.view(view)
        mask = m if mask is None else mask & m
    return mask


def mix_tensor(
    x: torch.Tensor, params: MixParams, *, partner: torch.Tensor | None = None, inplace: bool = False
) -> torch.Tensor:
    """Mix one tensor along dim 0. See :func:`mix`; ``x`` must be a mixable tensor."""
    src = x if partner is None else partner
    if torch.is_grad_enabled() and (x.requires_grad or src.requires_grad):
        # Autograd: the out= kernels are not differentiable; one traced expression is.
        out = _differentiable(x, src, params)
        return x.copy_(out) if inplace else out
    if params.lam.ndim == 2:
        out = _mix_kway(x, src, params)
    elif params.box is not None and _has_box_dims(x, params.box_shape):
        out = _paste(x, src, params, inplace=inplace)
        if out is x:
            return x
    elif partner is None and inplace:
        return _fast.lerp_perm_inplace(x, params.lam, params.index)
    else:
        return _fast.lerp_gather(x, src, params.lam, params.index, out=x if inplace else None)
    if inplace:
        return x.copy_(out)
    return out


def _has_box_dims(x: torch.Tensor, box_shape) -> bool:
    D = len(box_shape)
    return x.ndim >= D + 1 and tuple(x.shape[-D:]) == tuple(box_shape)


def _differentiable(x: torch.Tensor, src: torch.Tensor, params: MixParams) -> torch.Tensor:
    """The same numbers as the fast forms, built from differentiable ops only."""
    if params.lam.ndim == 2:
        return _mix_kway(x, src, params)
    if params.box is not None and _has_box_dims(x, params.box_shape):
        return _paste(x, src, params, differentiable=True)
    return _fast._fused_math(x, src, params.lam, params.index)


def _paste(x: torch.Tensor, src: torch.Tensor, params: MixParams, *, inplace: bool = False,
           differentiable: bool = False) -> torch.Tensor:
    if x.device.type == "cpu" and not torch.compiler.is_compiling() and x.shape[0] > 0 and not differentiable:
        # CPU eager: slice copies of the boxes, no full-size mask or gather (box values are on the host).
        out = _fast.paste_boxes_cpu(x, src, params.lam, params.index, params.box, params.linear, inplace=inplace)
        if out is not None:
            return out
    xp = src[params.index]  # (B, ...)
    mask = box_mask(params, x.ndim)  # (B, 1.., *S)
    if params.linear is None:
        out = torch.where(mask, xp, x)
    else:
        blend = torch.where(params.linear, params.lam, torch.ones_like(params.lam))
        base = (_fast._fused_math if differentiable else _fast.lerp_gather)(x, src, blend, params.index)
        out = torch.where(mask, xp, base)
    return out.contiguous(memory_format=_fast.memory_format(x))


def _mix_kway(x: torch.Tensor, src: torch.Tensor, params: MixParams) -> torch.Tensor:
    w, idx = params.lam, params.index  # (B, k), (B, k)
    acc_dtype = torch.float32 if x.dtype in (torch.uint8, torch.float16, torch.bfloat16) else x.dtype
    out = _fast._view_b(w[:, 0].to(acc_dtype), x.ndim) * x.to(acc_dtype)
    for j in range(1, w.shape[1]):
        out = out + _fast._view_b(w[:, j].to(acc_dtype), x.ndim) * src[idx[:, j]].to(acc_dtype)
    return _fast.cast_back(out, x)


def mix(batch, params: MixParams, *, partner=None, inplace: bool = False):
    """Mix a tensor, or every mixable leaf of a nested batch, with the given parameters.

    Args:
        batch: a tensor with the batch on dim 0, or a nested ``dict`` / ``list`` / ``tuple`` /
            namedtuple of them. Floating (and complex) leaves are mixed; ``uint8`` leaves
            (images) are mixed in float32 and rounded back; other integer and bool leaves
            (labels, indices, masks) are returned as they are.
        params: from :func:`mixlab.sample_params` or a transform. With a CutMix box, leaves
            whose last ``D`` dims equal ``params.box_shape`` get the box pasted; other floating
            leaves are blended linearly with the (area-corrected) ``lam``.
        partner: optional second batch of the same structure (two-stream mixing): the partner
            row ``i`` is ``partner[index[i]]`` instead of ``batch[index[i]]``.
        inplace: write the result into the caller's tensors (mixable leaves only).

    Returns:
        The batch's structure with mixed leaves; each keeps its shape, dtype, device and
        memory format (channels_last included).

    Convention: ``mixed[i] = lam[i] * batch[i] + (1 - lam[i]) * batch[index[i]]``.

    Example:
        >>> import torch, mixlab
        >>> x = torch.rand(4, 3, 8, 8)
        >>> p = mixlab.sample_params(4, alpha=0.4, generator=torch.Generator().manual_seed(0))
        >>> mixlab.mix({"image": x, "id": torch.arange(4)}, p)["image"].shape
        torch.Size([4, 3, 8, 8])
    """
    if not isinstance(params, MixParams):
        raise TypeError(f"params must be a MixParams, got {type(params).__name__}")
    B = params.batch_size
    partners = {}
    if partner is not None:
        tree_map_with_path(lambda leaf, path: partners.__setitem__(path, leaf), partner)

    def fn(leaf, path):
        _check_leaf(leaf, path, B)
        if not _is_mixable(leaf):
            return leaf
        other = None
        if partner is not None:
            if path not in partners:
                raise ValueError(f"partner has no leaf at {path}; it must have the structure of batch")
            other = partners[path]
            if not isinstance(other, torch.Tensor) or other.shape[1:] != leaf.shape[1:]:
                raise ValueError(f"partner leaf {path} must be a tensor of shape (*, {tuple(leaf.shape[1:])})")
        return mix_tensor(leaf, params, partner=other, inplace=inplace)

    return tree_map_with_path(fn, batch)
