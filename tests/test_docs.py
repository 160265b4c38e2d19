"""The documentation site builds in strict mode (a broken API reference or link fails CI)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_strict_build(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "core" / "index.html").read_text()
    assert "sample_params" in api and "MixParams" in api  # the reference is rendered from the docstrings
    assert (tmp_path / "site" / "img" / "methods.png").exists()
