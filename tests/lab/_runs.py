"""Shared by the lab's run tests: call the CLI in-process, and what must match between two runs."""
from __future__ import annotations

import json
from pathlib import Path

from mixlab_lab.cli import main

# The tiny run the reliability and run-folder tests resume, damage and compare against (tests/lab/conftest.py
# computes its uninterrupted and its interrupted version once per session).
RUN_ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--threads", "1", "--quiet", "--seeds", "0"]


def cli(argv: list, capsys) -> tuple[int, str]:
    """``mixlab <argv>`` in-process: its exit status and what it printed on stderr."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # an argparse refusal on older command lines
        rc = e.code
    return rc, capsys.readouterr().err


def strip(obj):
    """Drop timings and rates (`*time_s`, `*_per_s`: they differ between runs) from nested results."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not k.endswith(("time_s", "_per_s"))}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def result(out: Path) -> dict:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"weights": summary["weights_sha256"], "init": summary["init_sha256"],
            "per_seed": strip(summary["per_seed"]), "metrics": strip(rows), "notes": summary["resume_notes"]}


def interrupted_run(out: Path, args: list, *, after: int = 3) -> None:
    """``mixlab compare <args> --out <out>`` stopped by Ctrl-C right after the ``after``-th epoch's metrics are written
    (with the usual 2-arm, 2-epoch arguments: after the baseline and the mixup arm's first epoch); exit status 130."""
    import pytest

    from mixlab_lab import runner

    real, calls = runner._write_metrics, {"n": 0}

    def stop(path, histories):
        real(path, histories)
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_write_metrics", stop)
        assert main(["compare", *args, "--out", str(out)]) == 130
