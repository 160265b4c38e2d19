"""Data: real-dataset readers for the lab, and batch / sample mixing for DataLoaders.

Names are imported lazily so that ``import mixlab.data`` needs only torch.
"""
from __future__ import annotations

import importlib

_LAZY = {
    # batch mixing in DataLoader workers and sample-level mixing in the dataset (mixing.py)
    "MixCollate": "mixing",
    "MixupDataset": "mixing",
    # dataset readers for the lab (datasets.py)
    "DataSplits": "datasets",
    "load_dataset": "datasets",
    "list_datasets": "datasets",
    "DATASETS": "datasets",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mixlab.data' has no attribute {name!r}")
