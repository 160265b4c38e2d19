"""Shared by the registry-driven tests: the options that make every registered method fit small test inputs."""
from __future__ import annotations

import inspect

from mixlab import methods


def small_options(name: str, classes: int) -> dict:
    """Constructor options for 8 x 8 images (or short sequences) and ``classes`` classes, by constructor signature:
    Remix's class counts, GridMix's holes, TokenMix's patch, PuzzleMix's 2 x 2 binary blocks."""
    sig = inspect.signature(methods.get(name).cls).parameters
    extra = {}
    if "class_counts" in sig:
        extra["class_counts"] = [float(c) for c in range(1, classes + 1)]
    if "n_holes" in sig:
        extra["n_holes"] = (1, 2)
    if "patch_size" in sig and "tokens" in methods.get(name).inputs:
        extra["patch_size"] = 4
    if "block_num" in sig:
        extra.update(block_num=(2,), neigh_size=2, n_labels=2)
    return extra
