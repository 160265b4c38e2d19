"""PuzzleMix lives in :mod:`mixlab.methods.puzzlemix`; this name is the same module (0.2 imports keep working)."""
import sys

from .methods import puzzlemix as _impl

sys.modules[__name__] = _impl
