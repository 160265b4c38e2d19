"""``mixlab train`` under ``torchrun``: 2 CPU processes (gloo) on scikit-learn's digits.

The command these tests run (``python -m torch.distributed.run`` is ``torchrun``)::

    torchrun --standalone --nproc_per_node=2 -m mixlab_lab train --dataset digits --epochs 6 --batch-size 32 \
        --threads 1 --quiet --out RUN

Every launch has a deadline; a run that outlives it is killed and the test fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6
RUN_ARGS = ("--dataset", "digits", "--epochs", str(EPOCHS), "--batch-size", "32")
DEADLINE_S = 150.0


def _env() -> dict:
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1", MIXLAB_DIST_TIMEOUT="60")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _command(out: Path, *extra: str) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mixlab_lab",
            "train", "--out", str(out), "--threads", "1", "--quiet", *extra]


def _launch(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_command(out, *extra), env=_env(), cwd=out.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, deadline_s: float = DEADLINE_S) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the ranks it started
        out, err = proc.communicate()
        pytest.fail(f"torchrun still running after {deadline_s} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _records(out: Path) -> list:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _child_pids(pid: int) -> list:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids + [g for k in kids for g in _child_pids(k)]


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _child_pids(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=%d" % rank in env:
            return pid
    return None


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "full"
    out.parent.mkdir(exist_ok=True)
    code, stdout, stderr = _finish(_launch(out, *RUN_ARGS))
    assert code == 0, stderr[-3000:]
    return out, stdout


def test_torchrun_train_finishes_with_identical_weights_on_both_ranks(full_run):
    import torch

    from mixlab_lab.store import load_checkpoint
    from mixlab_lab.train import weights_sha256

    out, stdout = full_run
    records = _records(out)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    for r in records:  # after every epoch both ranks hashed the same weights
        assert len(r["weights_sha256_ranks"]) == 2 and len(set(r["weights_sha256_ranks"])) == 1
    ck = load_checkpoint(out / "checkpoints" / "seed0_mixup.pt")
    assert ck["done"] and ck["world_size"] == 2 and len(ck["rng_ranks"]) == 2
    # The ranks drew different augmentation / mixing / dropout streams.
    assert not torch.equal(ck["rng_ranks"][0]["mix"], ck["rng_ranks"][1]["mix"])
    saved = SimpleNamespace(state_dict=lambda: ck["model"])  # rank 0's checkpoint holds those weights
    assert weights_sha256(saved) == records[-1]["weights_sha256_ranks"][0]
    assert stdout.count("test accuracy") == 1  # only rank 0 prints the table
    assert (out / "summary.json").exists() and (out / "report.md").exists()
    assert records[-1]["test_acc"] > 0.5


def test_killed_rank_stops_the_run_and_resume_finishes_it_identically(tmp_path, full_run):
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs Linux /proc/<pid>/task/<tid>/children to find the rank to kill")
    out = tmp_path / "killed"
    proc = _launch(out, *RUN_ARGS)
    end = time.monotonic() + DEADLINE_S
    while len(_records(out)) < 1 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None and len(_records(out)) < EPOCHS, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    code, _, stderr = _finish(proc)
    assert code != 0
    assert "ChildFailedError" in stderr and "SIGKILL" in stderr, stderr[-3000:]
    done = len(_records(out))
    assert 1 <= done < EPOCHS
    # --resume continues from the last complete checkpoint and ends where the uninterrupted run ended.
    code, _, stderr = _finish(_launch(out, "--resume"))
    assert code == 0, stderr[-3000:]
    resumed, full = _records(out), _records(full_run[0])
    assert [r["epoch"] for r in resumed] == list(range(1, EPOCHS + 1))
    assert resumed[-1]["weights_sha256_ranks"] == full[-1]["weights_sha256_ranks"]
    assert resumed[-1]["test_acc"] == full[-1]["test_acc"]
