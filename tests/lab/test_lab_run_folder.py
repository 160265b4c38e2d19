"""The run folder's file list, ``--overwrite``, arm identity and layout (docs/RELIABILITY.md, "The folder").

* the marker ``.mixlab-run.json`` lists every file the run wrote, before each is written;
* ``--overwrite`` removes exactly those, never through a symbolic link, and leaves every other file;
* arm names are unique and exact, and a checkpoint is adopted only by its own arm;
* a refused resume changes nothing on disk, also when the marker is missing or damaged;
* a run folder whose layout is wrong (``predictions/`` a file, ``checkpoints/`` a link) is refused
  in one line before anything is trained or removed.

Tiny runs on scikit-learn's digits (2 epochs, one thread), each test a few seconds::

    KERAS_BACKEND=torch nice .venv/bin/python -m pytest -q tests/lab/test_lab_run_folder.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from _runs import RUN_ARGS, cli, result, strip

pytest.importorskip("sklearn")

from mixlab_lab import report as report_module  # noqa: E402
from mixlab_lab import runner, store  # noqa: E402
from mixlab_lab.config import resolve_config  # noqa: E402
from mixlab_lab.store import load_checkpoint  # noqa: E402

ARGS = RUN_ARGS  # digits, 2 epochs, batch 64, one thread, seed 0
MARKER = runner.MARKER


_cli, _strip, _result = cli, strip, result  # shared with the other run tests (tests/lab/_runs.py)


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed): bytes of files, link targets, None for folders."""
    snap = {}
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            p = Path(root) / name
            key = str(p.relative_to(folder))
            snap[key] = (("link", os.readlink(p)) if p.is_symlink() else None if p.is_dir() else p.read_bytes())
    return snap


def _files(out: Path) -> set:
    """The regular files under ``out`` but the marker (relative POSIX paths)."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name != MARKER}


def _listed(out: Path) -> set:
    return set(json.loads((out / MARKER).read_text())["files"])


def _one_line(rc: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("mixlab: ") and "Traceback" not in err, (rc, err)
    return lines[0]


@pytest.fixture(scope="module")
def reference(shared_reference):
    """An uninterrupted run and its result, shared with the reliability tests (tests/lab/conftest.py)."""
    return shared_reference


@pytest.fixture(scope="module")
def interrupted(shared_interrupted):
    """Stopped by Ctrl-C after the baseline and the mixup arm's first epoch (tests/lab/conftest.py)."""
    return shared_interrupted


@pytest.fixture
def no_report(monkeypatch):
    monkeypatch.setattr(report_module, "write_report", lambda *a, **k: None)


# ------------------------------------------------------------------------------ the marker's file list

def test_marker_lists_every_file_before_it_is_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = store._write_tmp
    unlisted = []

    def checked(path, data):  # the moment a file's bytes first reach the folder
        path = Path(path)
        rel = os.path.relpath(path, out)
        if (out / MARKER).exists() and path.name != MARKER:
            if rel not in set(json.loads((out / MARKER).read_text()).get("files", [])):
                unlisted.append(rel)
        return real(path, data)

    monkeypatch.setattr(store, "_write_tmp", checked)
    rc, err = _cli(["compare", *ARGS, "--out", out], capsys)
    assert rc == 0, err
    assert not unlisted, f"written before the marker listed them: {sorted(set(unlisted))}"
    assert _listed(out) == _files(out), "the marker's list differs from the files the run left"
    assert {"config.json", "checkpoints/seed0_mixup.prev.pt", "predictions/seed0_baseline.npz",
            "plots/curves.png"} <= _listed(out)


# -------------------------------------------------------------------- --overwrite removes only the run's files

def test_overwrite_keeps_user_files_that_look_like_run_files(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    mine = {"checkpoints/seed42_mymodel.pt": b"my weights", "predictions/seed3_mine.npz": b"my predictions",
            "plots/alpha.png": b"my plot", "checkpoints/seed0_init.prev.pt": b"mine as well"}
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    rc, err = _cli(["compare", *ARGS, "--out", out, "--overwrite"], capsys)
    assert rc == 0, err
    for rel, data in mine.items():
        assert (out / rel).read_bytes() == data, f"--overwrite deleted the user's {rel}"
    assert _result(out) == reference[1]
    assert _listed(out) == _files(out) - set(mine)


def test_overwrite_never_follows_a_symlinked_folder(reference, tmp_path, capsys):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    shutil.copytree(reference[0], out)
    shutil.move(out / "checkpoints", elsewhere)
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    before, outside = _snapshot(out), _snapshot(elsewhere)
    rc, err = _cli(["compare", *ARGS, "--out", out, "--overwrite"], capsys)
    line = _one_line(rc, err)
    assert "checkpoints" in line and "link" in line, line
    assert _snapshot(elsewhere) == outside, "--overwrite changed files outside --out through a link"
    assert _snapshot(out) == before


def test_overwrite_skips_listed_paths_that_are_now_links_or_outside(reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"not the run's")
    (out / "predictions" / "seed0_mixup.npz").unlink()
    (out / "predictions" / "seed0_mixup.npz").symlink_to(victim)  # a listed file, now a link
    marker = json.loads((out / MARKER).read_text())
    marker["files"] = marker["files"] + ["../victim.npz", str(victim)]  # edited by hand: outside --out
    (out / MARKER).write_text(json.dumps(marker))
    rc, err = _cli(["compare", *ARGS, "--mix", "cutmix", "--out", out, "--overwrite"], capsys)  # writes no mixup file
    assert rc == 0, err
    assert victim.read_bytes() == b"not the run's"
    assert (out / "predictions" / "seed0_mixup.npz").is_symlink(), "a link the run did not write was removed"
    assert not (out / "checkpoints" / "seed0_mixup.pt").exists()  # the old run's own files are gone
    assert json.loads((out / "config.json").read_text())["arms"] == ["baseline", "cutmix"]


def test_remove_listed_never_follows_links(tmp_path):
    root, outside = tmp_path / "run", tmp_path / "outside"
    (root / "checkpoints").mkdir(parents=True)
    (root / "plots").mkdir()
    outside.mkdir()
    (outside / "x.pt").write_bytes(b"outside")
    (root / "linked").symlink_to(outside, target_is_directory=True)  # a linked folder
    (root / "checkpoints" / "seed0_a.pt").write_bytes(b"run")
    (root / "checkpoints" / "seed0_mine.pt").write_bytes(b"user")  # not listed
    (root / "plots" / "curves.png").symlink_to(outside / "x.pt")  # listed, now a link
    (root / "plots" / "beta.png").mkdir()  # listed, now a folder
    listed = ["checkpoints/seed0_a.pt", "linked/x.pt", "plots/curves.png", "plots/beta.png", "../outside/x.pt",
              str(outside / "x.pt"), "checkpoints/gone.pt", "a//b", "./config.json"]
    assert store.remove_listed(root, listed, dry_run=True)[0] == ["checkpoints/seed0_a.pt"]
    assert (root / "checkpoints" / "seed0_a.pt").exists()
    removed, skipped = store.remove_listed(root, listed)
    assert removed == ["checkpoints/seed0_a.pt"]
    assert {rel for rel, _ in skipped} == set(listed) - {"checkpoints/seed0_a.pt", "checkpoints/gone.pt"}
    assert (outside / "x.pt").read_bytes() == b"outside" and (root / "plots" / "curves.png").is_symlink()
    assert (root / "checkpoints" / "seed0_mine.pt").read_bytes() == b"user" and (root / "plots" / "beta.png").is_dir()
    (root / "checkpoints" / "seed0_mine.pt").unlink()
    (root / "checkpoints" / "seed0_b.pt").write_bytes(b"run")
    assert store.remove_listed(root, ["checkpoints/seed0_b.pt"])[0] == ["checkpoints/seed0_b.pt"]
    assert not (root / "checkpoints").exists(), "a folder the removal emptied stays"


def test_overwrite_cleans_arms_whose_names_have_a_plus(tmp_path, capsys, no_report):
    out = tmp_path / "run"
    assert _cli(["compare", *ARGS, "--alpha", "1e6,0.2", "--out", out], capsys)[0] == 0  # 1e20: refused by now
    assert (out / "checkpoints" / "seed0_mixup-1e+06.prev.pt").exists()
    rc, err = _cli(["compare", *ARGS, "--alpha", "1e6,0.2", "--epochs", "1", "--out", out, "--overwrite"], capsys)
    assert rc == 0, err  # was: refused, the 2-epoch checkpoint of mixup-1e+06 was left and belongs to another run
    assert not (out / "checkpoints" / "seed0_mixup-1e+06.prev.pt").exists()
    assert load_checkpoint(out / "checkpoints" / "seed0_mixup-1e+06.pt")["epoch"] == 1
    assert _listed(out) == _files(out)


# ------------------------------------------------------------------------------- arms and their checkpoints

def test_arm_names_are_unique_and_exact():
    names = [a.name for a in runner.arms_for("compare", resolve_config({"alpha": [0.2, 0.2000001, 1e6, 1234567.0,
                                                                                   0.1 + 0.2, 1.0]}))]
    assert names == ["baseline", "mixup-0.2", "mixup-0.2000001", "mixup-1e+06", "mixup-1234567.0",
                     "mixup-0.30000000000000004", "mixup-1"]
    plain = runner.arms_for("compare", resolve_config({"mix": ["mixup", "cutmix"], "alpha": [0.2, 1.0]}))
    assert [a.name for a in plain] == ["baseline", "mixup-0.2", "mixup-1", "cutmix-0.2", "cutmix-1"]


def test_close_alphas_are_two_arms_each_trained(tmp_path, capsys, no_report):
    out = tmp_path / "run"
    rc, err = _cli(["compare", *ARGS, "--alpha", "0.2,0.2000001", "--out", out], capsys)
    assert rc == 0, err
    arms = json.loads((out / "config.json").read_text())["arms"]
    assert arms == ["baseline", "mixup-0.2", "mixup-0.2000001"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["epoch"]) for r in rows] == [(a, e) for a in arms for e in (1, 2)]
    for arm, alpha in (("mixup-0.2", 0.2), ("mixup-0.2000001", 0.2000001)):
        ck = load_checkpoint(out / "checkpoints" / f"seed0_{arm}.pt")
        assert ck["identity"] == {"seed": 0, "arm": arm, "method": "mixup", "alpha": alpha}


def test_checkpoint_of_another_arm_is_refused_and_falls_back(reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    ck = out / "checkpoints" / "seed0_mixup.pt"
    shutil.copyfile(out / "checkpoints" / "seed0_baseline.pt", ck)  # valid, same run, another arm
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert "seed0_mixup.pt" in err and "baseline" in err and "previous checkpoint" in err, err
    assert _result(out) == reference[1], "the mixup arm adopted the baseline's weights"
    # without a previous one: one line, and the advice (delete it, --resume) ends exactly
    shutil.copyfile(out / "checkpoints" / "seed0_baseline.pt", ck)
    (out / "checkpoints" / "seed0_mixup.prev.pt").unlink()
    line = _one_line(*_cli(["compare", "--out", out, "--resume", "--quiet"], capsys))
    assert "seed0_mixup.pt" in line and "baseline" in line and "--resume" in line, line
    ck.unlink()
    assert _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)[0] == 0
    assert _result(out) == reference[1]


def test_initial_weights_of_another_seed_are_rebuilt(tmp_path, capsys, no_report):
    out = tmp_path / "run"
    assert _cli(["compare", *ARGS, "--seeds", "0,1", "--epochs", "1", "--out", out], capsys)[0] == 0
    first = _result(out)
    shutil.copyfile(out / "checkpoints" / "seed0_init.pt", out / "checkpoints" / "seed1_init.pt")
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0 and "seed1_init.pt" in err and "seed 0" in err, err
    assert load_checkpoint(out / "checkpoints" / "seed1_init.pt")["seed"] == 1
    assert _result(out) == first


# ----------------------------------------------------------------------- a refused resume changes nothing

@pytest.mark.parametrize("marker", ["delete", "truncate"])
def test_refused_resume_changes_nothing_when_the_marker_is_gone(marker, reference, tmp_path, capsys, no_report):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    if marker == "delete":
        (out / MARKER).unlink()
    else:
        (out / MARKER).write_bytes((out / MARKER).read_bytes()[:40])
    original = (out / "config.json").read_text()
    edited = json.loads(original)
    edited["config"]["epochs"] = 3
    (out / "config.json").write_text(json.dumps(edited))
    before = _snapshot(out)
    line = _one_line(*_cli(["compare", "--out", out, "--resume", "--quiet"], capsys))
    assert "config.json" in line, line
    assert _snapshot(out) == before, "a refused resume changed the run folder"
    (out / "config.json").write_text(original)  # the edit undone: the resume is accepted again
    rc, err = _cli(["compare", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert _result(out) == reference[1]
    assert _listed(out) == _files(out)


# --------------------------------------------------------------------------------- the folder's layout

@pytest.mark.parametrize("folder", ["predictions", "checkpoints", "plots"])
def test_a_run_folder_replaced_by_a_file_is_one_line_before_anything(folder, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    shutil.rmtree(out / folder)
    (out / folder).write_text("not a folder\n")
    before = _snapshot(out)
    line = _one_line(*_cli(["compare", *ARGS, "--out", out, "--overwrite"], capsys))
    assert str(out / folder) in line, line
    assert _snapshot(out) == before


def test_predictions_replaced_by_a_file_refuses_the_resume_before_training(interrupted, tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    shutil.rmtree(out / "predictions")
    (out / "predictions").write_text("not a folder\n")
    trained = []
    monkeypatch.setattr(runner, "train_arm", lambda *a, **k: trained.append(k["arm"]) or ([], ""))
    before = _snapshot(out)
    line = _one_line(*_cli(["compare", "--out", out, "--resume", "--quiet"], capsys))
    assert str(out / "predictions") in line and not trained, (line, trained)
    assert _snapshot(out) == before


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, code):
    # 0.2: OSError: [Errno 27] File too large as a traceback, no file named (ulimit -f), a .tmp left behind
    import errno
    import os

    from mixlab_lab import store

    def full(fd):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(store.os, "fsync", full)
    target = tmp_path / "checkpoints" / "seed0_baseline.pt"
    with pytest.raises(store.RunError, match=rf"could not write {re.escape(str(target))}: .*--resume"):
        store.atomic_write_bytes(target, b"x" * 100)
    assert not list(target.parent.iterdir())  # no temporary, no partial file
