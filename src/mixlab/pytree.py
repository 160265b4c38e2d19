"""A tiny pytree map over dict / list / tuple / namedtuple, with readable leaf paths (public: the lab and
integrations walk nested batches with it)."""
from __future__ import annotations

from typing import Any, Callable


def _is_namedtuple(obj) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def tree_map_with_path(fn: Callable[[Any, str], Any], tree, path: str = "batch"):
    """Apply ``fn(leaf, path)`` to every leaf, rebuilding the containers.

    Containers: ``dict`` (and subclasses built from a dict), ``list``, ``tuple``, namedtuple.
    Everything else is a leaf. Paths read like ``batch['image'][0]``.
    """
    if isinstance(tree, dict):
        items = {k: tree_map_with_path(fn, v, f"{path}[{k!r}]") for k, v in tree.items()}
        return items if type(tree) is dict else type(tree)(items)
    if _is_namedtuple(tree):
        return type(tree)(*(tree_map_with_path(fn, v, f"{path}.{f}") for f, v in zip(tree._fields, tree)))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map_with_path(fn, v, f"{path}[{i}]") for i, v in enumerate(tree))
    return fn(tree, path)


def first_leaf(tree):
    """The first leaf in the traversal order of :func:`tree_map_with_path`, or None."""
    if isinstance(tree, dict):
        for v in tree.values():
            leaf = first_leaf(v)
            if leaf is not None:
                return leaf
        return None
    if isinstance(tree, (list, tuple)):
        for v in tree:
            leaf = first_leaf(v)
            if leaf is not None:
                return leaf
        return None
    return tree
