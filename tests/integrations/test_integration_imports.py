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
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        importlib.import_module(module)


def test_core_imports_without_optional_libraries():
    import mixlab
    from mixlab.data import MixCollate, MixupDataset  # noqa: F401

    assert mixlab.ManifoldMixup.__name__ == "ManifoldMixup"


def test_submodules_resolve_on_attribute_access():
    import mixlab

    assert mixlab.data.MixCollate.__name__ == "MixCollate"
    assert mixlab.distributed.GlobalMixUp.__name__ == "GlobalMixUp"
    assert mixlab.detection.Mosaic.__name__ == "Mosaic"
    pytest.importorskip("lightning")
    assert mixlab.lightning.MixUp.__name__ == "MixUp"  # the README's own line: mixlab.lightning.MixUp(0.4)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mixlab.nope


def test_keras_with_a_missing_backend_names_the_backend_not_keras(tmp_path):
    import importlib.util
    import os
    import subprocess

    pytest.importorskip("keras")
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed: the default backend imports")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    run = subprocess.run([sys.executable, "-c", "import mixlab; mixlab.keras"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert run.returncode != 0
    assert "KERAS_BACKEND='tensorflow'" in run.stderr and "No module named 'tensorflow'" in run.stderr
    assert "KERAS_BACKEND=torch" in run.stderr and "needs Keras 3" not in run.stderr
