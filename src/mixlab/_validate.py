"""One vocabulary of argument checks for the whole package.

Every check names the argument, says what was expected and what came, and returns the value in
its canonical Python type (``numpy.float32(0.2)`` and a 0-dim tensor become ``0.2``), so the
rest of the code never repeats a type test. The pattern follows torchmetrics'
``_arg_validation``: one place, reused by every function.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "describe", "real", "alpha", "probability", "integer", "smoothing", "num_classes", "choice", "generator",
    "MAX_ALPHA",
]

# The largest Beta concentration accepted. A Beta(a, a) draw (:func:`mixlab.sampling.sample_beta`) is made in
# float32 from Gamma(a + 1) draws; up to 1e6 its spread 1 / (2 sqrt(2a + 1)) >= 3.5e-4 spans thousands of float32
# steps around 0.5 and the draws keep Beta's mean and variance (tests/core/test_library_hostile_inputs.py). Beyond it
# lam is 0.5 to within a standard deviation of 3.5e-4 anyway, the draw is quantised more and more coarsely, and
# above 3.4e38 ``a + 1`` overflows float32: a value that large is a typo (1e39 for 1e-3?), refused naming it.
MAX_ALPHA = 1e6


def describe(value) -> str:
    """A short description of what came: ``tensor of dtype torch.int64 and shape (8, 16)``, ``str 'x'``."""
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = " ".join(repr(value).split())  # one line: a container of tensors reprs over several
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _scalar(value):
    """A real Python number from a number, numpy scalar or 0-dim real CPU tensor, else None."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.device.type != "cpu":
            return None
        return value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        type_name = type(value).__name__
        if type_name == "bool_":  # numpy.bool_ registers as neither, but be explicit
            return None
        return value
    return None


def real(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
         exclusive_max: bool = False, positive: bool = False) -> float:
    """A finite real scalar (Python, numpy or 0-dim tensor) within the given bounds, as a float."""
    v = _scalar(value)
    if v is None:
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    v = float(v)
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if maximum is not None and (v >= maximum if exclusive_max else v > maximum):
        raise ValueError(f"{name} must be {'<' if exclusive_max else '<='} {maximum}, got {v}")
    return v


def alpha(value, name: str = "alpha", *, positive: bool = False) -> float:
    """A concentration parameter: a finite real number in [0, :data:`MAX_ALPHA`] (0 means "no mixing"; with
    ``positive`` it must be > 0, as a Beta draw's)."""
    v = real(value, name, minimum=None if positive else 0.0, positive=positive)
    if v > MAX_ALPHA:
        raise ValueError(f"{name} must be at most {MAX_ALPHA:g} (Beta({name}, {name}) has standard deviation 3.5e-4 "
                         f"there, so lam is 0.5 for any larger value; its float32 draw overflows from 3.4e38), "
                         f"got {v:g}")
    return v


def probability(value, name: str = "p") -> float:
    """A probability in [0, 1]."""
    v = _scalar(value)
    if v is None:
        raise TypeError(f"{name} must be a number in [0, 1], got {describe(value)}")
    v = float(v)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def integer(value, name: str, *, minimum: int | None = None) -> int:
    """An integer (Python, numpy or 0-dim integer tensor; not bool) >= ``minimum``, as an int."""
    v = None
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool:
            v = int(value.item())
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_":
        v = int(value)
    if v is None:
        expected = "an int" if minimum is None else f"an int >= {minimum}"
        raise TypeError(f"{name} must be {expected}, got {describe(value)}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v}")
    return v


def smoothing(value, name: str = "label_smoothing") -> float:
    """A label-smoothing amount in [0, 1)."""
    v = _scalar(value)
    if v is None or not (0.0 <= float(v) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {describe(value)}")
    return float(v)


def num_classes(value, name: str = "num_classes"):
    """None, or a positive number of classes."""
    if value is None:
        return None
    return integer(value, name, minimum=1)


def choice(value, name: str, options):
    """One of ``options`` (compared with ``==``; unhashable values are refused the same way)."""
    if not isinstance(value, (str, int, type(None))) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def generator(value, name: str = "generator"):
    """None or a ``torch.Generator`` on a device that draws random numbers (not ``meta``)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {describe(value)}")
    if value is not None and value.device.type == "meta":
        raise ValueError(f"{name} must be a torch.Generator on a device that draws random numbers (the batch's: cpu, "
                         f"cuda, ...), got a generator on meta")
    return value
