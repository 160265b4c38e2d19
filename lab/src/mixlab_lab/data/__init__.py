"""The lab's dataset readers (IDX, CIFAR pickles with a restricted unpickler, image folders and tarballs,
scikit-learn sets, CSV), with caps on what a file may make the lab read.

Names are imported lazily. Mixing inside ``DataLoader``s (``MixCollate``, ``MixupDataset``) is the library's:
:mod:`mixlab.data`.
"""
from __future__ import annotations

import importlib

_LAZY = {"DataSplits": "datasets", "load_dataset": "datasets", "list_datasets": "datasets", "DATASETS": "datasets"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mixlab_lab.data' has no attribute {name!r}")
