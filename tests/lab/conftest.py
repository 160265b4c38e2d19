"""The lab's run tests share two runs of ``_runs.RUN_ARGS``, each computed once per session: an uninterrupted one
and one stopped by Ctrl-C. Tests copy them (``shutil.copytree``) before changing anything."""
from __future__ import annotations

import pytest
from _runs import RUN_ARGS, interrupted_run, result

from mixlab_lab.cli import main


@pytest.fixture(scope="session")
def shared_reference(tmp_path_factory):
    """An uninterrupted ``mixlab compare`` run (in this process), and its result; no lock or temporary left."""
    out = tmp_path_factory.mktemp("lab_runs") / "reference"
    assert main(["compare", *RUN_ARGS, "--out", str(out)]) == 0
    return out, result(out)


@pytest.fixture(scope="session")
def shared_interrupted(tmp_path_factory):
    """A run stopped by Ctrl-C after the baseline finished and the mixup arm's first epoch."""
    out = tmp_path_factory.mktemp("lab_runs") / "interrupted"
    interrupted_run(out, RUN_ARGS)
    return out
