"""Fixtures shared by the method tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

OFFICIAL_PUZZLEMIX = Path(__file__).resolve().parents[2] / "benchmarks" / "puzzlemix_official.py"


@pytest.fixture(scope="session")
def official():
    """benchmarks/puzzlemix_official.py as a module: its port of the official PuzzleMix (snu-mllab/PuzzleMix
    ``mixup.py``), the one port the tests and the timing share."""
    spec = importlib.util.spec_from_file_location("puzzlemix_official", OFFICIAL_PUZZLEMIX)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
