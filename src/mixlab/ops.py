"""Pure mixing of tensors and nested batches with given :class:`~mixlab.MixParams` (no RNG).

:func:`mix` is "lerp, or apply the region", leaf by leaf, by the leaf's *role*:

- ``"mix"``: floating, complex and ``uint8`` leaves (inputs). Blended with ``lam``, or combined
  by ``params.region`` where the region covers the leaf's trailing dims.
- ``"paste"``: integer and bool maps that must follow a region exactly (segmentation masks):
  the default for integer / bool leaves whose trailing dims the region covers, for
  ``torchvision.tv_tensors.Mask``, and for any integer or bool leaf laid out like the input's
  positions (``(B, *S)`` or ``(B, 1, *S)`` beside ``(B, C, *S)`` inputs) and any ``uint8`` leaf
  ``(B, *S)``, so a segmentation mask in a dict batch is never blended as an image. Pasting keeps values exact; they cannot be blended, so a
  ``"paste"`` leaf without a binary region covering it is an error that says what to do.
- ``"keep"``: returned as they are: other integer and bool leaves (class labels, ids).

``torchvision.tv_tensors.BoundingBoxes`` are refused (detection boxes need their own rule);
``roles=`` overrides any default, by top-level key or full path.

Convention: ``mixed = lam * x + (1 - lam) * partner[index]`` where ``partner`` is ``x`` itself
unless a second batch is given (two-stream mixing: two shuffled loaders zipped, as in keras.io's
mixup example).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping

import torch

from . import _fast
from . import _validate as V
from ._tree import tree_map_with_path
from .params import MixParams

__all__ = ["mix", "mix_tensor", "ROLES"]

ROLES = ("mix", "paste", "keep")


def _blendable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex() or t.dtype == torch.uint8


def _tv_kind(leaf):
    """``"mask"`` / ``"boxes"`` for torchvision's tv_tensors markers (torchvision never imported here)."""
    tv = sys.modules.get("torchvision.tv_tensors")
    if tv is None:
        return None
    if isinstance(leaf, tv.BoundingBoxes):
        return "boxes"
    if isinstance(leaf, tv.Mask):
        return "mask"
    return None


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


def _role_table(roles) -> dict:
    """``roles`` keyed by full leaf path (``"batch['mask']"``) or by top-level key / position."""
    if roles is None:
        return {}
    if not isinstance(roles, Mapping):
        raise TypeError(f"roles must be a mapping from a key or leaf path to one of {ROLES}, got {V.describe(roles)}")
    table = {}
    for key, role in roles.items():
        V.choice(role, f"roles[{key!r}]", ROLES)
        path = key if isinstance(key, str) and key.startswith("batch") else f"batch[{key!r}]"
        table[path] = role
    return table


def _lookup(table: dict, path: str):
    """The role of the longest table path that is ``path`` or contains it."""
    best = None
    for p in table:
        if path == p or path.startswith(p + "[") or path.startswith(p + "."):
            if best is None or len(p) > len(best):
                best = p
    return best


def _is_map(leaf: torch.Tensor, ref: torch.Tensor | None) -> bool:
    """An integer / bool leaf laid out like the input's positions, ``(B, *S)`` or ``(B, 1, *S)`` beside an input
    ``(B, C, *S)``, or a ``uint8`` leaf ``(B, *S)`` (a segmentation map). Pasted by binary regions, never blended."""
    if ref is None or leaf is ref or ref.ndim < 3 or leaf.is_floating_point() or leaf.is_complex():
        return False
    spatial = tuple(ref.shape[2:])
    if leaf.dtype == torch.uint8:  # uint8 with a channel dim is an image; without one, a map
        return tuple(leaf.shape[1:]) == spatial
    return tuple(leaf.shape[1:]) in (spatial, (1,) + spatial)


def _reference(leaves) -> torch.Tensor | None:
    """The input that sets the positions: the floating leaf with the most dims, else the blendable one."""
    floats = [leaf for _, leaf in leaves if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()]
    pool = floats or [leaf for _, leaf in leaves if isinstance(leaf, torch.Tensor) and _blendable(leaf)]
    return max(pool, key=lambda t: t.ndim) if pool else None


def _leaf_role(leaf: torch.Tensor, path: str, table: dict, params: MixParams, used: set, ref=None) -> str:
    key = _lookup(table, path)
    kind = _tv_kind(leaf)
    if key is not None:
        used.add(key)
        role = table[key]
    elif kind == "boxes":
        raise TypeError(
            f"batch leaf {path} is a tv_tensors.BoundingBoxes: detection boxes are not lerped or pasted "
            f"by this transform; mix detection batches with mixlab.detection (MixUp, CutMix, Mosaic), or pass "
            f"roles={{{path!r}: 'keep'}} to leave them as they are")
    elif kind == "mask" or _is_map(leaf, ref):
        role = "paste"
    elif _blendable(leaf):
        role = "mix"
    elif params.region is not None and params.region.covers(leaf) and params.weights is None:
        role = "paste"
    else:
        role = "keep"
    if role == "mix" and not _blendable(leaf):
        raise TypeError(f"roles: batch leaf {path} has dtype {leaf.dtype}, which cannot be blended; "
                        "use 'paste' (follow a region exactly) or 'keep'")
    if role == "paste":
        _check_pasteable(leaf, path, params)
    return role


def _check_pasteable(leaf: torch.Tensor, path: str, params: MixParams) -> None:
    region = params.region
    what = f"batch leaf {path} ({V.describe(leaf)}) is a map to paste (an integer mask, a tv_tensors.Mask " \
           "or roles='paste')"
    fix = ("pass it as the target instead (MixedTarget(mask, params) weighs its two sources per row or per "
           f"position), or mix with a region method such as CutMix, which pastes it; if it is an image, say so with "
           f"roles={{{path!r}: 'mix'}}, or roles={{{path!r}: 'keep'}} to leave it as it is")
    if region is None:
        raise ValueError(f"{what}, but these params blend whole rows (MixUp): class ids have no convex "
                         f"combination; {fix}")
    if not region.covers(leaf):
        raise ValueError(f"{what}, but its trailing dims {tuple(leaf.shape[1:])} are not the region's "
                         f"{tuple(region.shape)}; resize it to the input's size, or pass it as the target")
    if not region.pasteable:
        raise ValueError(f"{what}, but the region blends some rows or positions ({type(region).__name__} with "
                         f"blended rows or soft weights), which integer values cannot follow; {fix}")


def _check_index(params: MixParams, n: int, what: str) -> None:
    """Partner indices must lie in ``[0, n)``: checked on CPU (free), on the device elsewhere (no sync)."""
    idx = params.index
    if idx.numel() == 0 or torch.compiler.is_compiling():
        return
    if _fast.eager_cpu(idx):  # (compiling returned above)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0:
            raise IndexError(f"params.index holds a negative partner row ({lo}); partner rows must lie in [0, {n}) "
                             f"({what} holds {n} rows)")
        if hi >= n:
            raise IndexError(f"params.index holds partner rows in [{lo}, {hi}], but {what} holds {n} rows; "
                             f"pass a partner batch of at least {hi + 1} rows, or params drawn for this batch")
    else:
        torch._assert_async(((idx >= 0) & (idx < n)).all(), f"params.index must lie in [0, {n}) ({what})")


def mix_tensor(x: torch.Tensor, params: MixParams, *, partner: torch.Tensor | None = None,
               inplace: bool = False) -> torch.Tensor:
    """Mix one tensor along dim 0: the region where it covers ``x``, else a lerp. See :func:`mix`."""
    src = x if partner is None else partner
    fast = not (torch.is_grad_enabled() and (x.requires_grad or src.requires_grad))  # out= kernels: no autograd
    region = params.region
    if params.weights is not None:
        out = _mix_kway(x, src, params)
    elif region is not None and region.covers(x):
        out = region.apply(x, src, params.lam, params.index, fast=fast, inplace=inplace and fast)
    elif inplace and fast:
        return _fast.lerp(x, src, params.lam, params.index, out=x)  # in place without a full-size temporary
    else:
        out = _fast.lerp(x, src, params.lam, params.index, fast=fast)
    if inplace and out is not x:
        return x.copy_(out)
    return out


def _mix_kway(x: torch.Tensor, src: torch.Tensor, params: MixParams) -> torch.Tensor:
    w, idx = params.weights, params.index  # (B, k), (B, k)
    acc_dtype = torch.float32 if x.dtype in (torch.uint8, torch.float16, torch.bfloat16) else x.dtype
    out = _fast._view_b(w[:, 0].to(acc_dtype), x.ndim) * x.to(acc_dtype)
    for j in range(1, w.shape[1]):
        out = out + _fast._view_b(w[:, j].to(acc_dtype), x.ndim) * src[idx[:, j]].to(acc_dtype)
    return _fast.cast_back(out, x)


def _no_mixable_leaf(leaves) -> TypeError:
    if not leaves:
        return TypeError("mix: the batch holds no tensors (an empty container); pass a tensor or a nested batch of them")
    shown = ", ".join(f"{path} is {V.describe(leaf)}" for path, leaf in leaves[:4])
    return TypeError(
        f"mix: the batch has no leaf that can be mixed ({shown}): integer leaves such as token ids and "
        "labels are left as they are, and mixing the labels alone would train on a wrong signal. Pass float "
        "inputs (images as float or uint8), or mix the embeddings of token ids with "
        "mixlab.ManifoldMixup(model, layers=['<embedding layer>'])")


def _wrap_like(out: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """Keep a tv_tensors marker (Image, Mask, ...) on the mixed leaf."""
    if type(leaf) is torch.Tensor or type(out) is type(leaf) or "torchvision.tv_tensors" not in sys.modules:
        return out
    return sys.modules["torchvision.tv_tensors"].wrap(out, like=leaf)


def mix(batch, params: MixParams, *, partner=None, inplace: bool = False, roles=None):
    """Mix a tensor, or every mixable leaf of a nested batch, with the given parameters.

    Args:
        batch: a tensor with the batch on dim 0, or a nested ``dict`` / ``list`` / ``tuple`` /
            namedtuple of them. Each leaf is mixed by its role (see the module docstring):
            floating and complex leaves are blended (``uint8`` images in float32, rounded
            back); under a region, leaves whose trailing dims it covers are combined position by
            position, integer maps included (pasted exactly); other integer and bool leaves
            (labels, ids) are returned as they are.
        params: from :func:`mixlab.sample_params` or a transform's ``.sample(x)``.
        partner: optional second batch of the same structure (two-stream mixing, or the batch
            gathered from every rank): row ``i``'s partner is ``partner[index[i]]``.
        inplace: write the result into the caller's tensors (mixed leaves only).
        roles: optional ``{key or path: "mix" | "paste" | "keep"}`` overriding the defaults,
            e.g. ``{"mask": "paste"}`` or ``{"batch['aux']['ids']": "keep"}``.

    Returns:
        The batch's structure with mixed leaves; each keeps its shape, dtype, device and
        memory format (channels_last included).

    Raises:
        TypeError: when no leaf can be mixed (an int64 batch of token ids): the labels would be
            mixed while the inputs were not.

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
    table, used, plan, leaves = _role_table(roles), set(), {}, []

    def collect(leaf, path):
        _check_leaf(leaf, path, B)
        leaves.append((path, leaf))
        return leaf

    tree_map_with_path(collect, batch)
    ref = _reference(leaves)
    for path, leaf in leaves:
        plan[path] = _leaf_role(leaf, path, table, params, used, ref)
    unknown = sorted(set(table) - used)
    if unknown:
        raise ValueError(f"roles names {unknown}, which match no leaf of the batch; its leaves are "
                         f"{[path for path, _ in leaves]}")
    if not any(role != "keep" for role in plan.values()):
        raise _no_mixable_leaf(leaves)
    partners = {}
    if partner is not None:
        tree_map_with_path(lambda leaf, path: partners.__setitem__(path, leaf), partner)
    first = next(p for p, r in plan.items() if r != "keep")
    n = partners[first].shape[0] if isinstance(partners.get(first), torch.Tensor) and partners[first].ndim else B
    _check_index(params, n, "the partner batch" if partner is not None else "the batch")

    def fn(leaf, path):
        if plan[path] == "keep":
            return leaf
        other = None
        if partner is not None:
            if path not in partners:
                raise ValueError(f"partner has no leaf at {path}; it must have the structure of batch")
            other = partners[path]
            if not isinstance(other, torch.Tensor) or other.shape[1:] != leaf.shape[1:] or other.ndim == 0:
                raise ValueError(f"partner leaf {path} must be a tensor of shape (*, {tuple(leaf.shape[1:])})")
            if other.shape[0] != n:
                raise ValueError(f"partner leaf {path} has {other.shape[0]} rows, other partner leaves {n}")
        return _wrap_like(mix_tensor(leaf, params, partner=other, inplace=inplace), leaf)

    return tree_map_with_path(fn, batch)
