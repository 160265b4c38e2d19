"""mixlab: correct, fast mixup-family data augmentation for PyTorch.

Convention everywhere: ``lam`` is the weight of the original row,
``mixed = lam * x + (1 - lam) * x[index]``.
"""
from . import losses, regions
from .pytree import tree_map_with_path
from .ops import mix
from .pairing import partner_index
from .params import MixParams, sample_box, sample_params
from .sampling import sample_beta, sample_dirichlet
from .targets import MixedTarget
from .mixer import Mixer
from . import methods
from .methods import (CMixup, CutMix, FMix, GridMix, MixUp, MixUpOrCutMix, PuzzleMix, Remix, ResizeMix,
                      SaliencyMix, SmoothMix, TokenMix)
from .transforms import RandomChoice, mix_pair
from . import policies  # noqa: E402  (label-side policies: regmixup_loss, transmix_target)

__version__ = "0.3.0.dev0"


# Submodules with optional dependencies, imported on first attribute access (``mixlab.lightning``).
_SUBMODULES = frozenset({"automix", "rankmixup", "fastai", "lightning", "keras", "data", "distributed", "detection", "manifold", "timm",
                         "transformers"})


def __getattr__(name):
    # Hidden-layer mixing lives in its own module (forward hooks); imported on first use.
    if name == "ManifoldMixup":
        from .manifold import ManifoldMixup

        return ManifoldMixup
    if name in ("AutoMix", "PixelMixBlock"):  # a learned mixer driven by the training loop (not a registered Mixer)
        from . import automix

        return getattr(automix, name)
    if name == "MixStyle":  # feature-statistics mixing inside the model (not a registered Mixer)
        from .mixstyle import MixStyle

        return MixStyle
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)  # its ImportError names the extra and the cause
    registered = {info.cls.__name__: info.cls for info in map(methods.get, methods.available())}
    if name in registered:  # every registered method is mixlab.<Class>, with no edit here
        return registered[name]
    raise AttributeError(f"module 'mixlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {methods.get(n).cls.__name__ for n in methods.available()})


__all__ = [
    "Mixer", "methods", "tree_map_with_path", "Remix", "CMixup", "MixParams", "sample_params", "sample_box", "sample_beta", "sample_dirichlet", "partner_index",
    "mix", "mix_pair", "MixedTarget", "MixUp", "CutMix", "MixUpOrCutMix", "RandomChoice", "FMix", "GridMix", "ResizeMix", "SaliencyMix", "SmoothMix", "TokenMix", "PuzzleMix", "ManifoldMixup", "MixStyle", "AutoMix", "PixelMixBlock", "losses", "regions", "policies",
]
