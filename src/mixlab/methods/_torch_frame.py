"""FeatMix on ``torch_frame.TensorFrame`` batches (pytorch-frame), imported only when such a batch arrives.

The frame's numerical ``(B, n_num)`` and categorical ``(B, n_cat)`` columns are FeatMix's features, in
that order (numerical first, then categorical, each in ``col_names_dict`` order): one mask is drawn over
all ``n_num + n_cat`` columns exactly as for a ``(B, n_num + n_cat)`` tensor, and each column of a row
comes whole from the original or the partner. Numerical values are taken as FeatMix takes a tensor's;
categorical codes are pasted (never blended: an integer category has no in-between). Other stypes
(text, embeddings, timestamps, multicategorical) are refused rather than left unmixed.
"""
from __future__ import annotations

import torch

from ..mixer import BatchTypeError

__all__ = ["call_frame"]


def call_frame(mixer, frame, y, context):
    """``mixer(frame, y)`` for a TensorFrame: ``(mixed_frame, target)`` with ``y``, else the mixed frame.

    The labels are ``y`` when given, else the frame's ``y`` (``labels_getter="default"``). The frame's own
    ``y``, when it has one, is always replaced by its target (never left unmixed); ``labels_getter=None``
    without ``y`` mixes a frame that has no labels.
    """
    from torch_frame import TensorFrame, stype

    from .excelformer import FeatMix

    if not isinstance(mixer, FeatMix):
        raise BatchTypeError(f"{type(mixer).__name__} does not take a torch_frame.TensorFrame; FeatMix does (whole "
                             "columns from the partner), or mix the frame's feature tensors yourself")
    other = [str(s) for s in frame.feat_dict if s not in (stype.numerical, stype.categorical)]
    if other:
        raise ValueError(f"FeatMix mixes a TensorFrame's numerical and categorical columns; this frame also has "
                         f"{other}: drop them from the frame or mix their tensors yourself")
    if y is not None and not isinstance(y, torch.Tensor):
        raise BatchTypeError(f"y (the labels) must be a torch.Tensor, got {type(y).__name__}")
    if y is None and mixer.labels_getter not in ("default", None):
        raise TypeError("labels_getter works on dict batches; a TensorFrame's labels are its y, or call t(frame, y)")
    labels = y if y is not None else frame.y
    if labels is None and mixer.labels_getter is not None:
        raise ValueError("FeatMix(frame) found no labels: the TensorFrame's y is None; call t(frame, y), or pass "
                         "labels_getter=None to mix a frame that has no labels")

    parts = [(s, frame.feat_dict[s]) for s in (stype.numerical, stype.categorical) if s in frame.feat_dict]
    if not parts:
        raise ValueError("FeatMix: the TensorFrame has no numerical or categorical columns to mix")
    B, device = parts[0][1].shape[0], parts[0][1].device
    widths = [t.shape[1] for _, t in parts]
    # the draws are those of a (B, n_num + n_cat) tensor: only the shape and device matter to FeatMix.draw
    params = mixer.sample(torch.empty(B, sum(widths), device=device), labels, **context)
    index = params.index
    take = params.region.values if params.region is not None else \
        torch.zeros(B, sum(widths), dtype=torch.bool, device=device)
    mixed, start = {}, 0
    for (s, t), w in zip(parts, widths):
        mixed[s] = torch.where(take[:, start:start + w], t[index], t)
        start += w
    feat_dict = {s: mixed.get(s, t) for s, t in frame.feat_dict.items()}
    out = TensorFrame(feat_dict, {s: list(c) for s, c in frame.col_names_dict.items()}, num_rows=B)
    if frame.y is not None:
        out.y = mixer._target(frame.y, params)
    if y is not None:
        return out, mixer._target(y, params)
    return out
