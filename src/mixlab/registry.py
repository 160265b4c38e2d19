"""The method registry: one decorator, one list that the lab, previews, docs and tests read.

``@register("gridmix", inputs=("images",))`` on a :class:`~mixlab.Mixer` subclass records what
the lab and the docs need to know about a method; :func:`available` lists the names and
:func:`get` returns a :class:`MethodInfo`. A name may also register a variant of a class with
fixed options (``register("remix-balanced", balanced=True)(Remix)``).

Kinds of input (``inputs``):

- ``"images"``: ``(B, C, H, W)``;
- ``"sequences"``: ``(B, C, T)`` (audio, time series);
- ``"volumes"``: ``(B, C, D, H, W)``;
- ``"tokens"``: ``(B, N, D)`` token embeddings;
- ``"vectors"``: ``(B, F)`` (tabular rows, features).

``needs`` names what a call needs besides the inputs: ``"labels"`` (class labels, for the method's
own rule), ``"targets"`` (float regression targets), ``"saliency"`` (a saliency map, or a model
to compute it).

``when`` is one line on when to use the method, from its paper's findings: the docs' methods table
shows it, and ``tests/methods/test_registry_docs.py`` requires it of every entry.
"""
from __future__ import annotations

import dataclasses
import inspect

__all__ = ["MethodInfo", "register", "available", "get", "INPUT_KINDS", "NEEDS"]

INPUT_KINDS = ("images", "sequences", "volumes", "tokens", "vectors")
NEEDS = ("labels", "targets", "saliency")
_REGISTRY: dict = {}


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method.

    Attributes:
        name: the method's name (``mixlab compare --mix NAME``).
        cls: the :class:`~mixlab.Mixer` subclass.
        options: fixed options of this entry (a variant such as ``remix-balanced``).
        alpha: whether the method draws ``lam ~ Beta(alpha, alpha)`` (it takes ``alpha``).
        inputs: kinds of input it mixes (see the module docstring).
        needs: what a call needs besides the inputs (see the module docstring).
        task: ``"classification"`` or ``"regression"``.
        summary: the first line of the class docstring.
        when: one line on when to use it, from the paper's findings (``register(..., when=...)``).
    """

    name: str
    cls: type
    options: dict
    alpha: bool
    inputs: tuple
    needs: tuple
    task: str
    summary: str
    when: str = ""

    @property
    def modes(self) -> tuple:
        return self.cls.modes

    def build(self, **kwargs):
        """The mixer with this entry's fixed options and ``kwargs`` (an alpha is dropped if it takes none)."""
        kwargs = {**kwargs, **self.options}
        alpha = kwargs.pop("alpha", None)
        if not self.alpha or alpha is None:
            return self.cls(**kwargs)
        if "alpha" in inspect.signature(self.cls).parameters:
            return self.cls(alpha=alpha, **kwargs)
        return self.cls(alpha, **kwargs)  # its first argument is its alpha (MixUpOrCutMix's mixup_alpha)


def register(name: str, *, inputs=("images",), needs=(), task="classification", alpha=None, when="", **options):
    """Class decorator: record a :class:`~mixlab.Mixer` subclass under ``name``.

    Args:
        name: lower-case name, unique.
        inputs: the kinds of input it mixes (:data:`INPUT_KINDS`).
        needs: what a call needs besides the inputs (:data:`NEEDS`).
        task: ``"classification"`` or ``"regression"``.
        alpha: whether it takes ``alpha`` (default: read from its constructor's signature).
        when: one line on when to use it, from the paper's findings (the docs' methods table).
        **options: fixed constructor options of this entry (a variant).
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"method name must be a non-empty lower-case string, got {name!r}")
    bad = [k for k in inputs if k not in INPUT_KINDS] + [k for k in needs if k not in NEEDS]
    if bad or not inputs:
        raise ValueError(f"register({name!r}): inputs must be among {INPUT_KINDS} and needs among {NEEDS}, got {bad}")
    if not isinstance(when, str):
        raise ValueError(f"register({name!r}): when must be a line of text, got {when!r}")
    if task not in ("classification", "regression"):
        raise ValueError(f"register({name!r}): task must be 'classification' or 'regression', got {task!r}")

    def decorate(cls):
        from .mixer import Mixer

        if not (isinstance(cls, type) and issubclass(cls, Mixer)):
            raise TypeError(f"register({name!r}) decorates a mixlab.Mixer subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method name {name!r} is taken by {_REGISTRY[name].cls.__name__}")
        takes = "alpha" in inspect.signature(cls).parameters if alpha is None else bool(alpha)
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(name, cls, dict(options), takes, tuple(inputs), tuple(needs), task,
                                     doc[0] if doc else "", " ".join(when.split()))
        return cls
    return decorate


def available(*, inputs: str | None = None, task: str | None = None) -> list:
    """The registered method names, in registration order (optionally those mixing ``inputs`` / for ``task``)."""
    from . import methods  # noqa: F401  (importing the package registers every method)

    return [n for n, m in _REGISTRY.items()
            if (inputs is None or inputs in m.inputs) and (task is None or m.task == task)]


def get(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    names = available()
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixing method {name!r}; known methods: {', '.join(names)}")
    return _REGISTRY[name]
