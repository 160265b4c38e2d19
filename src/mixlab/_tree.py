"""The pytree helpers live in :mod:`mixlab.pytree` (public); this private name keeps internal imports short."""
from .pytree import first_leaf, tree_map_with_path

__all__ = ["tree_map_with_path", "first_leaf"]
