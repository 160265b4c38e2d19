"""Mixing inside PyTorch data loading: :class:`MixCollate` (batches mixed in ``DataLoader`` workers) and
:class:`MixupDataset` (sample-level mixing in ``__getitem__``), with their epoch schedules.

The dataset readers of the lab are in the lab's distribution (``mixlab_lab.data``).
"""
from .mixing import Linear, MixCollate, MixupDataset, SharedEpoch

__all__ = ["MixCollate", "MixupDataset", "SharedEpoch", "Linear"]
