"""Every mixing method, one module each, and the registry that lists them.

``mixlab.methods.available()`` lists the registered names and ``mixlab.methods.get(name)`` returns
what the registry knows of one (:class:`~mixlab.registry.MethodInfo`). Importing this package
imports every module in it, so a new method is one new file here (a :class:`~mixlab.Mixer`
subclass under ``@register``), its test and a docs line: the lab's ``--mix`` choices, previews,
the gallery, the docs' methods table and the conformance tests pick it up from the registry.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import MethodInfo, available, get, register

_ORDER = ("mixup", "cutmix", "mixup_or_cutmix", "fmix", "saliencymix", "gridmix", "resizemix", "smoothmix",
          "tokenmix", "remix", "puzzlemix", "cmixup")  # the order of the lab's and the docs' lists; then the rest
_modules = list(_ORDER) + sorted(m.name for m in pkgutil.iter_modules(__path__)
                                 if m.name not in _ORDER and not m.name.startswith("_"))
for _name in _modules:
    importlib.import_module(f".{_name}", __name__)

from .cmixup import CMixup  # noqa: E402
from .cutmix import CutMix  # noqa: E402
from .fmix import FMix, SelectMask, binarise, fourier_noise  # noqa: E402
from .gridmix import GridMix  # noqa: E402
from .mixup import MixUp  # noqa: E402
from .mixup_or_cutmix import MixUpOrCutMix  # noqa: E402
from .puzzlemix import PuzzleMix  # noqa: E402
from .remix import Remix  # noqa: E402
from .resizemix import ResizedBox, ResizeMix  # noqa: E402
from .saliencymix import SaliencyMix, spectral_saliency  # noqa: E402
from .smoothmix import SmoothMix  # noqa: E402
from .tokenmix import TokenMix  # noqa: E402

__all__ = ["available", "get", "register", "MethodInfo", "MixUp", "CutMix", "MixUpOrCutMix", "FMix", "SaliencyMix",
           "GridMix", "ResizeMix", "SmoothMix", "TokenMix", "Remix", "PuzzleMix", "CMixup", "ResizedBox", "SelectMask",
           "fourier_noise", "binarise", "spectral_saliency"]
