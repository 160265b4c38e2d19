"""Fault injection for the lab's run folder (docs/RELIABILITY.md lists the promises these tests check).

* kill -9 of ``mixlab compare ...`` at seeded points (half-written temporary file,
  before / after a rename, a seeded delay after a write), then ``--resume``: the run ends with
  exactly the weights (hashes in summary.json) and metrics of an uninterrupted run;
* every file the run writes truncated, zeroed, bit-flipped, emptied or deleted, then
  ``--resume``: the exact result, or one ``mixlab: ...`` line naming the file (status 2);
* two processes started on one ``--out``: one is refused; live, stale and foreign locks;
* data changed under a resume: refused, saying what changed; ``--threads`` changed: noted;
* a fresh run into a user's folder or over a finished run: refused, every byte left as it was.

All on scikit-learn's digits, 2 epochs, one thread, fixed seeds. Run with::

    KERAS_BACKEND=torch nice .venv/bin/python -m pytest -q tests/lab/test_lab_reliability.py
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from _runs import RUN_ARGS, cli, result, strip
import torch

pytest.importorskip("sklearn")

from mixlab_lab import report as report_module  # noqa: E402
from mixlab_lab import runner  # noqa: E402
from mixlab_lab.store import _proc_start, load_checkpoint, save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARGS = RUN_ARGS  # digits, 2 epochs, batch 64, one thread, seed 0
MARKER, LOCK = runner.MARKER, runner.LOCK
CKPTS = ["checkpoints/seed0_init.pt", "checkpoints/seed0_baseline.pt", "checkpoints/seed0_baseline.prev.pt",
         "checkpoints/seed0_mixup.pt", "checkpoints/seed0_mixup.prev.pt"]
DAMAGES = ("truncate", "zero4", "flip", "empty", "delete")
DEADLINE_S = 180
OUTCOMES: dict = {}  # (case kind) -> list of "exact" / "error", summarised by the last test


# ---------------------------------------------------------------------------------------------- helpers

def _env() -> dict:
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


_cli, _strip, _result = cli, strip, result  # shared with the other run tests (tests/lab/_runs.py)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "delete":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "zero4":
        while True:  # four bytes that are not all zero already, so the file really changes
            i = rng.randrange(len(data) - 4)
            if any(data[i:i + 4]):
                break
        data[i:i + 4] = b"\0\0\0\0"
        path.write_bytes(bytes(data))
    elif how == "flip":
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    else:  # pragma: no cover
        raise ValueError(how)


def _no_leftovers(out: Path) -> None:
    assert not (out / LOCK).exists(), "the lock outlived its run"
    assert not [p for p in out.rglob("*.tmp")], "a temporary file was left behind"


def _judge(kind: str, out: Path, target: str, expected: str, ref: dict, capsys) -> str:
    """Resume ``out``; it must give ``ref`` exactly, or one clear line naming ``target`` (status 2)."""
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert "Traceback" not in err, err
    if rc == 0:
        assert expected in ("exact", "either"), f"{target}: expected an error, got a finished run; stderr: {err}"
        assert _result(out) == ref, f"{target}: the resumed run differs from the uninterrupted one"
        _no_leftovers(out)
        outcome = "exact"
    else:
        assert expected in ("error", "either"), f"{target}: expected an exact resume, got rc {rc}: {err}"
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and lines and lines[-1].startswith("mixlab: "), err
        assert Path(target).name in lines[-1], f"the error does not name {target}: {lines[-1]}"
        outcome = "error"
    OUTCOMES.setdefault(kind, []).append(outcome)
    return outcome


@pytest.fixture(scope="module")
def reference(shared_reference):
    """An uninterrupted ``mixlab compare`` run (in this process) and its result (tests/lab/conftest.py)."""
    _no_leftovers(shared_reference[0])
    return shared_reference


@pytest.fixture(scope="module")
def interrupted(shared_interrupted):
    """A run stopped by Ctrl-C after the baseline finished and the mixup arm's first epoch (tests/lab/conftest.py)."""
    out = shared_interrupted
    ck = load_checkpoint(out / "checkpoints" / "seed0_mixup.pt")
    assert ck["epoch"] == 1 and not (out / "checkpoints" / "seed0_mixup.prev.pt").exists()
    assert not (out / LOCK).exists(), "Ctrl-C must release the lock"
    return out


@pytest.fixture
def no_report(monkeypatch):
    """Skip the plots where a case does not concern them (saves ~1 s per resume)."""
    monkeypatch.setattr(report_module, "write_report", lambda *a, **k: None)


# ------------------------------------------------------------------- kill -9 at seeded points (subprocesses)

KILLER = r"""
import os, signal, sys, threading
from pathlib import Path
from mixlab_lab import store
k, mode, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
n = 0
real_tmp, real_replace = store._write_tmp, os.replace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def write_tmp(path, data):
    global n
    n += 1
    if n == k and mode == "partial":  # half of the bytes in a temporary file, then the kill
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.killed_1.tmp", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        die()
    if n == k and mode == "delay":
        threading.Timer(delay, die).start()
    tmp = real_tmp(path, data)
    if n == k and mode == "before-rename":
        die()
    return tmp

def replace(src, dst):
    real_replace(src, dst)
    if n == k and mode == "after-rename":  # a checkpoint's first rename moves the latest file to .prev
        die()

store._write_tmp = write_tmp
os.replace = replace
if mode == "count":
    import atexit
    atexit.register(lambda: print(f"WRITES={n}", file=sys.stderr))
from mixlab_lab.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _killer(out: Path, k: int, mode: str, delay: float = 0.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", KILLER, str(k), mode, str(delay), "compare", *ARGS, "--out", str(out)]
    return subprocess.run(cmd, env=_env(), cwd=out.parent, capture_output=True, text=True, timeout=DEADLINE_S)


# A fresh interpreter spends ~5 s (more on a loaded machine) importing torch, torchvision, matplotlib and
# scikit-learn before the run's first write, for each of the kill cases. The zygote is one fresh interpreter
# that imports them once, computes nothing (no autograd, no thread pools: safe to fork), then forks one child
# per case; the child runs KILLER exactly as `python -c KILLER ...` would, and is killed with SIGKILL the same
# way. The `writes` fixture and the two-process test still start real `python` processes.
ZYGOTE = r"""
import json, os, sys, traceback
import matplotlib
matplotlib.use("Agg", force=True)  # as mixlab_lab.report does before its plots
import matplotlib.pyplot, sklearn.datasets, torch
import mixlab_lab.cli, mixlab_lab.report, mixlab_lab.runner, mixlab_lab.store, mixlab_lab.train
mixlab_lab.cli.check_packages("compare")  # the imports every run's first step makes
killer = compile(sys.argv[1], "<killer>", "exec")
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the case: KILLER with its arguments, output to files, status as its exit status
        code = 1
        try:
            os.chdir(req["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = ["-c", *req["argv"]]
            exec(killer, {"__name__": "__main__"})
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:  # as the interpreter's exit would: wait for non-daemon threads (a "delay" kill's timer)
            import threading
            for t in threading.enumerate():
                if t is not threading.current_thread() and not t.daemon:
                    t.join()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    print(json.dumps({"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
"""


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """``run(out, k, mode, delay)``: :func:`_killer`'s case, forked from one interpreter that has the imports."""
    import select

    log = tmp_path_factory.mktemp("zygote") / "zygote.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, KILLER], env=_env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True)

    def reply(deadline: float) -> dict:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        assert line, f"the zygote did not answer: {log.read_text()[-3000:]}"
        return json.loads(line)

    def run(out: Path, k: int, mode: str, delay: float = 0.0) -> subprocess.CompletedProcess:
        end = time.monotonic() + DEADLINE_S
        files = {name: out.parent / f"{out.name}.{name}" for name in ("stdout", "stderr")}
        argv = [str(k), mode, str(delay), "compare", *ARGS, "--out", str(out)]
        proc.stdin.write(json.dumps({"argv": argv, "cwd": str(out.parent), **{n: str(p) for n, p in files.items()}})
                         + "\n")
        proc.stdin.flush()
        pid = reply(end)["pid"]
        try:
            status = reply(end)["status"]
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            raise
        text = {n: p.read_text() for n, p in files.items()}
        return subprocess.CompletedProcess(argv, status, text["stdout"], text["stderr"])

    yield run
    proc.kill()  # it holds nothing to flush; its children have all been waited for
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()


@pytest.fixture(scope="module")
def writes(reference, tmp_path_factory):
    """How many file writes an uninterrupted run makes (and: a subprocess run equals the in-process one)."""
    out = tmp_path_factory.mktemp("reliability") / "counted"
    res = _killer(out, 0, "count")
    assert res.returncode == 0, res.stderr[-3000:]
    assert _result(out) == reference[1], "a `python -m mixlab_lab` run differs from the same run in-process"
    return int(res.stderr.split("WRITES=")[1].split()[0])


KILL_MODES = ("partial", "before-rename", "after-rename", "delay", "partial", "after-rename", "delay")


@pytest.mark.parametrize("case", [c if c < 4 else pytest.param(c, marks=pytest.mark.slow)
                                  for c in range(len(KILL_MODES))])  # one per mode by default; -m slow: 3 more
def test_kill_9_then_resume_ends_exactly_like_an_uninterrupted_run(case, writes, reference, zygote, tmp_path,
                                                                     capsys):
    rng = random.Random(1000 + case)
    mode = KILL_MODES[case]
    k = rng.randint(1, writes)
    delay = rng.uniform(0.0, 0.4)
    out = tmp_path / "killed"
    res = zygote(out, k, mode, delay)
    killed = res.returncode == -signal.SIGKILL
    assert killed or res.returncode == 0, res.stderr[-3000:]
    # a "delay" kill may fire after the run finished and released its lock, while the interpreter exits
    late = killed and mode == "delay" and not (out / LOCK).exists() and (out / "report.md").exists()
    killed = killed and not late
    if killed:
        assert (out / LOCK).exists(), "a killed run leaves its lock behind (the next start recovers it)"
    if (out / "config.json").exists():
        rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    else:  # killed before config.json existed: nothing to resume, and a fresh start must accept the folder
        rc, err = _cli(["compare", *ARGS, "--out", out], capsys)
    assert rc == 0, f"write {k}/{writes}, mode {mode}: {err}"
    if killed:
        assert "stale lock" in err, err
    assert _result(out) == reference[1], f"write {k}/{writes}, mode {mode}: resumed result differs"
    _no_leftovers(out)
    OUTCOMES.setdefault("kill -9", []).append("exact" if killed else "finished before the kill")


# --------------------------------------------------------------- damaged files (in-process resumes)

FINISHED_CASES = ([(f, d, "exact") for f in CKPTS for d in DAMAGES]
                  + [(f, d, "exact") for f in (MARKER, "metrics.jsonl", "summary.json") for d in ("truncate", "flip",
                                                                                                  "delete")]
                  + [("config.json", d, "either") for d in ("truncate", "flip", "delete")]
                  + [(MARKER, "empty", "exact"), (MARKER, "zero4", "exact"), ("metrics.jsonl", "empty", "exact"),
                     ("summary.json", "zero4", "exact")]
                  + [("report.md", "delete", "exact"), ("report.md", "truncate", "exact"),
                     ("plots/curves.png", "truncate", "exact"), ("plots/reliability.png", "delete", "exact"),
                     ("plots/beta.png", "flip", "exact"), ("plots/mixed_samples.png", "zero4", "exact")])


@pytest.mark.parametrize("target, how, expected", FINISHED_CASES)
def test_damaged_file_of_a_finished_run(target, how, expected, reference, tmp_path, capsys, monkeypatch):
    if not target.startswith(("report", "plots")):
        monkeypatch.setattr(report_module, "write_report", lambda *a, **k: None)
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    _damage(out / target, how, random.Random(zlib.crc32(f"{target}/{how}".encode())))
    outcome = _judge("damaged file, finished run", out, target, expected, reference[1], capsys)
    if outcome == "exact" and target.startswith(("report", "plots")):
        assert (out / target).read_bytes()[:2] in (b"# ", b"\x89P")  # written again


INTERRUPTED_CASES = ([("checkpoints/seed0_mixup.pt", d, "exact" if d == "delete" else "error") for d in DAMAGES]
                     + [("checkpoints/seed0_baseline.pt", d, "exact") for d in ("flip", "zero4")]
                     + [("checkpoints/seed0_init.pt", "flip", "exact")])


@pytest.mark.parametrize("target, how, expected", INTERRUPTED_CASES)
def test_damaged_file_of_an_interrupted_run(target, how, expected, interrupted, reference, tmp_path, capsys,
                                            no_report):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    _damage(out / target, how, random.Random(zlib.crc32(f"i/{target}/{how}".encode())))
    _judge("damaged file, interrupted run", out, target, expected, reference[1], capsys)


def test_damaged_latest_checkpoint_falls_back_with_a_message(reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    ck = out / "checkpoints" / "seed0_mixup.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = b"\0\0\0\0"  # what loaded silently before checksums
    ck.write_bytes(bytes(data))
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0 and "seed0_mixup.pt" in err and "continuing from the previous checkpoint" in err, err
    assert _result(out) == reference[1]
    # the damaged file was replaced by a good one; the previous slot kept a good one too
    assert load_checkpoint(ck)["done"] and load_checkpoint(out / "checkpoints" / "seed0_mixup.prev.pt")["epoch"] == 1


def test_unreadable_checkpoint_error_is_one_line_with_what_to_do(interrupted, reference, tmp_path, capsys,
                                                                no_report):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    (out / "checkpoints" / "seed0_mixup.pt").write_bytes(os.urandom(5000))
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "seed0_mixup.pt" in lines[0] and "--resume" in lines[0] and "--overwrite" in lines[0]
    OUTCOMES.setdefault("unusable checkpoint", []).append("error")
    # following the advice (delete it, resume) finishes the run exactly
    (out / "checkpoints" / "seed0_mixup.pt").unlink()
    assert _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)[0] == 0
    assert _result(out) == reference[1]


@pytest.mark.parametrize("write, words", [
    (lambda p: save_checkpoint(p, {"model": {}, "epoch": 1}), "lacks the entries"),       # hash fine, keys missing
    (lambda p: torch.save({"model": {}}, p), "no mixlab integrity hash"),                  # an unverifiable file
])
def test_incomplete_or_unverifiable_checkpoint_is_refused(write, words, interrupted, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    write(out / "checkpoints" / "seed0_mixup.pt")
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "seed0_mixup.pt" in err and words in err, err
    OUTCOMES.setdefault("unusable checkpoint", []).append("error")


def test_checkpoints_stay_plain_torch_zip_files(reference):
    path = reference[0] / "checkpoints" / "seed0_baseline.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)  # no mixlab needed to read one
    assert state["done"] and state["config_sha256"] and state["data_sha256"]["y_train"]["sha256"]
    assert path.read_bytes()[-78:].startswith(b"mixlab-sha256:")


# ----------------------------------------------------------------------------------- one owner at a time

def test_two_processes_on_one_out_one_is_refused(reference, tmp_path):
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "mixlab_lab", "compare", *ARGS, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=DEADLINE_S) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = [err for p, (_, err) in zip(procs, results) if p.returncode != 0]
    assert codes == [0, 2], [r[1][-2000:] for r in results]
    assert ("in use by another mixlab process" in errs[0] and "pid" in errs[0]) or "already holds" in errs[0], errs
    assert _result(out) == reference[1]
    _no_leftovers(out)
    OUTCOMES.setdefault("one owner (locks, concurrent start)", []).append("refused")


def _lock(out: Path, **owner) -> Path:
    path = out / LOCK
    path.write_text(json.dumps({"started": "earlier", "token": "t", **owner}))
    return path


def test_live_lock_is_refused_naming_pid_and_host(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    lock = _lock(out, pid=os.getpid(), host=socket.gethostname(), pid_start=_proc_start(os.getpid()))
    before = _snapshot(out)
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and f"pid {os.getpid()}" in err and socket.gethostname() in err, err
    assert _snapshot(out) == before and lock.exists()
    _lock(out, pid=12345, host="another-machine.example")  # another host: cannot be judged stale, refused
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "another-machine.example" in err, err
    OUTCOMES.setdefault("one owner (locks, concurrent start)", []).extend(["refused", "refused"])


def test_stale_lock_of_a_dead_process_is_recovered(reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(out, pid=dead.pid, host=socket.gethostname(), pid_start=1)
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0 and "stale lock" in err and f"pid {dead.pid}" in err, err
    assert _result(out) == reference[1]
    _no_leftovers(out)
    OUTCOMES.setdefault("one owner (locks, concurrent start)", []).append("exact")


# ------------------------------------------------------------------------ what a resume must refuse

def _csv(path: Path, rows: int = 150, seed: int = 0) -> None:
    g = random.Random(seed)
    lines = ["a,b,c,d,label"]
    for i in range(rows):
        label = i % 3
        lines.append(",".join(f"{g.gauss(label, 1.0):.4f}" for _ in range(4)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def test_resume_over_changed_data_is_refused_saying_what_changed(tmp_path, capsys, no_report):
    data = tmp_path / "table.csv"
    _csv(data)
    out = tmp_path / "run"
    args = ["train", "--mix", "mixup", "--dataset", "csv", "--data-dir", data, "--label-column", "label",
            "--epochs", "2", "--batch-size", "32", "--threads", "1", "--quiet", "--out", out]
    assert _cli(args, capsys)[0] == 0
    first = _result(out)
    original = data.read_text()
    lines = original.splitlines()
    lines[5] = lines[5][:-1] + ("1" if lines[5][-1] != "1" else "2")  # one label changed
    data.write_text("\n".join(lines) + "\n")
    before = _snapshot(out)
    rc, err = _cli(["train", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "different data" in err and "labels values" in err, err
    assert _snapshot(out) == before, "a refused resume changed the run folder"
    lines = original.splitlines()
    lines[7] = "9.9999," + lines[7].split(",", 1)[1]  # one feature value changed
    data.write_text("\n".join(lines) + "\n")
    rc, err = _cli(["train", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "different data" in err and "inputs values" in err, err
    data.write_text(original)  # the original data back: the resume is accepted again
    assert _cli(["train", "--out", out, "--resume", "--quiet"], capsys)[0] == 0
    assert _result(out) == first
    OUTCOMES.setdefault("changed data", []).extend(["error", "error"])


def test_resume_with_the_other_command_is_refused(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    before = _snapshot(out)
    rc, err = _cli(["train", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "mixlab compare" in err, err
    assert _snapshot(out) == before


def test_resume_after_editing_config_json_is_refused(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["config"]["alpha"] = 0.7
    (out / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(out)
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "config.json" in err and "alpha" in err, err
    assert _snapshot(out) == before


def test_resume_with_other_threads_is_allowed_and_noted(interrupted, reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet", "--threads", "2"], capsys)
    assert rc == 0, err
    notes = json.loads((out / "summary.json").read_text())["resume_notes"]
    assert len(notes) == 1 and "threads 2 instead of 1" in notes[0] and "bit-identical" in notes[0]
    torch.set_num_threads(1)


# ------------------------------------------------------------- fresh runs never take what is not theirs

def _user_folder(path: Path) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "config.json").write_text('{"lr": 1}\n')
    (path / "report.md").write_text("# my report\n")
    (path / "checkpoints" / "seed0_baseline.pt").write_bytes(b"my own weights")
    (path / ".hidden.tmp").write_text("mine too")
    return path


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_fresh_run_into_a_users_folder_is_refused_and_touches_nothing(extra, tmp_path, capsys):
    out = _user_folder(tmp_path / "mine")
    before = _snapshot(out)
    rc, err = _cli(["compare", *ARGS, "--out", out, *extra], capsys)
    assert rc == 2 and "not a mixlab run folder" in err and "nothing" in err, err
    assert _snapshot(out) == before, "the user's folder changed"
    OUTCOMES.setdefault("fresh run into a taken folder", []).append("refused, byte-identical")


def test_fresh_run_over_a_finished_run_needs_overwrite(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    before = _snapshot(out)
    rc, err = _cli(["compare", *ARGS, "--out", out], capsys)  # a forgotten --resume
    assert rc == 2 and "already holds a mixlab compare run" in err and "--overwrite" in err, err
    assert _snapshot(out) == before
    # --overwrite with a typo in the data: the data fails to load before anything is removed
    rc, err = _cli(["compare", *ARGS[2:], "--dataset", "csv", "--data-dir", tmp_path / "typo.csv", "--out", out,
                    "--overwrite"], capsys)
    assert rc == 2 and "typo.csv" in err, err
    assert _snapshot(out) == before
    OUTCOMES.setdefault("fresh run into a taken folder", []).extend(["refused, byte-identical"] * 2)


def test_overwrite_removes_only_the_runs_own_files(reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / "mine.txt").write_text("keep me")
    (out / "checkpoints" / "best_by_hand.pt").write_bytes(b"keep me too")
    (out / "checkpoints" / "seed0_extra_notes.txt").write_text("and me")
    rc, err = _cli(["compare", *ARGS, "--out", out, "--overwrite"], capsys)
    assert rc == 0, err
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "checkpoints" / "best_by_hand.pt").read_bytes() == b"keep me too"
    assert (out / "checkpoints" / "seed0_extra_notes.txt").exists()
    assert _result(out) == reference[1]
    _no_leftovers(out)


def test_resume_and_overwrite_together_are_refused(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    rc, err = _cli(["compare", "--out", out, "--resume", "--overwrite", "--quiet"], capsys)
    assert rc == 2 and "--overwrite" in err, err


def test_zz_summary_of_fault_cases(capsys):
    """Prints how many fault cases ran and how each ended (run with -s to see it)."""
    with capsys.disabled():
        total = sum(len(v) for v in OUTCOMES.values())
        print(f"\nfault cases: {total}")
        for kind, outcomes in OUTCOMES.items():
            counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
            print(f"  {kind}: {len(outcomes)} {counts}")
