"""Each integration module fails with an ImportError that names its extra when its library is absent."""
from __future__ import annotations

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize("module, blocked, extra", [
    ("mixlab.fastai", "fastai", "mixlab[fastai]"),
    ("mixlab.keras", "keras", "mixlab[keras]"),
    ("mixlab.lightning", "lightning", "mixlab[lightning]"),
])
def test_missing_library_names_the_extra(monkeypatch, module, blocked, extra):
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install {extra}")):
        importlib.import_module(module)


def test_core_imports_without_optional_libraries():
    import mixlab
    from mixlab.data import MixCollate, MixupDataset  # noqa: F401

    assert mixlab.ManifoldMixup.__name__ == "ManifoldMixup"
