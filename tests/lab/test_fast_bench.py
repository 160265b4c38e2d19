"""``mixlab bench --quick`` runs end to end and writes a table with the documented JSON schema.

Only the schema is checked: speed is reported by the bench, never asserted in a test.
"""
from __future__ import annotations

import json

import pytest

from mixlab_lab import bench

ROW_KEYS = {"name", "skipped", "note", "runs", "median_ms", "min_ms", "ratio_to_floor"}


def test_quick_bench_writes_json_schema(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "copy floor" in printed and "torch" in printed and "threads" in printed
    data = json.loads(path.read_text())
    assert set(data) == {"header", "settings", "groups", "goals", "conditions"}
    assert [(c["contended"], c["label"]) for c in data["conditions"]] == [(False, "")]  # one condition: today's
    assert {"machine", "cpu", "torch", "threads", "date_utc", "loadavg_start", "loadavg_end"} <= set(data["header"])
    kinds = [g["kind"] for g in data["groups"]]
    assert kinds == ["input", "target"]
    inputs, targets = data["groups"]
    assert inputs["floor"] == "copy floor" and inputs["shape"] == [16, 3, 32, 32] and inputs["dtype"] == "float32"
    assert targets["floor"] == "plain CE" and targets["num_classes"] == 10
    for g in data["groups"]:
        names = [r["name"] for r in g["rows"]]
        assert len(names) == len(set(names))
        for r in g["rows"]:
            assert set(r) == ROW_KEYS
            if r["skipped"]:
                assert r["note"].startswith("skipped:") and r["median_ms"] is None
            else:
                assert r["runs"] == 3 and r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"]
        floor = next(r for r in g["rows"] if r["name"] == g["floor"])
        assert floor["ratio_to_floor"] == pytest.approx(1.0)
    measured = {r["name"] for r in inputs["rows"] if not r["skipped"]}
    assert {"copy floor", "x.clone()", "mixlab mix (out of place)", "mixlab mix (in place)", "mixlab mix (out=)",
            "paper weighted sum", "fastai lerp form"} <= measured
    compiled = next(r for r in inputs["rows"] if r["name"] == "mixlab compiled")
    assert compiled["skipped"]  # --quick never compiles
    assert all(set(g) == {"goal", "condition", "value", "met", "value_min", "met_min"} for g in data["goals"])
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_timm_group_pits_each_mode_against_timm(tmp_path):
    pytest.importorskip("timm.data")
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no-targets", "--timm-shape", "4x3x16x16", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert [g["kind"] for g in data["groups"]] == ["input", "timm"]
    group = data["groups"][1]
    assert group["shape"] == [4, 3, 16, 16] and group["floor"] == "copy floor"
    rows = {r["name"]: r for r in group["rows"]}
    for mode in ("batch", "pair", "elem"):
        for name in (f"mixlab.timm Mixup ({mode})", f"timm Mixup ({mode})"):
            assert not rows[name]["skipped"], rows[name]["note"]
            assert set(rows[name]) == ROW_KEYS and rows[name]["runs"] == 3
    goals = [g for g in data["goals"] if g["goal"].startswith("mixlab.timm")]
    assert len(goals) == 3 and all(g["value"] is not None for g in goals)


@pytest.mark.parametrize("argv", [["--runs", "3"], ["--shapes", "3x"], ["--dtypes", "int7"], ["--classes", "1"]])
def test_bench_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_contention_runs_every_group_quiet_and_with_a_busy_core_at_both_thread_counts(tmp_path, monkeypatch):
    import torch

    seen = []
    real = bench._run_groups

    def spy(settings, device, seed, out, cond, groups):
        seen.append((cond["contended"], torch.get_num_threads(), cond["busy_cpu"]))
        real(settings, device, seed, out, cond, groups)

    monkeypatch.setattr(bench, "_run_groups", spy)
    threads = torch.get_num_threads()
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--contention", "--no-targets", "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads  # restored
    want = [(c, n) for c in (False, True) for n in dict.fromkeys((threads, 1))]
    assert [(c, n) for c, n, _ in seen] == want
    assert all((cpu is not None) == c for c, _, cpu in seen)  # a busy core only in the contended runs
    data = json.loads(path.read_text())
    conds = [(g["condition"]["contended"], g["condition"]["threads"]) for g in data["groups"]]
    assert conds == want and len({g["title"] for g in data["groups"]}) == len(want)
    ip = [g for g in data["goals"] if "in place <=" in g["goal"]]
    assert [g["goal"].split("]")[0] + "]" for g in ip] == [c["label"].strip() for c in data["conditions"]]
    assert "1.5x copy floor" in ip[-1]["goal"] and "1.1x copy floor" in ip[0]["goal"]


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/stat"), reason="reads CPU time from /proc")
def test_busy_core_spins_while_open_and_is_gone_after():
    import os
    import time

    with bench.busy_core() as busy:
        os.kill(busy.pid, 0)  # alive
        with open(f"/proc/{busy.pid}/stat") as f:
            t0 = sum(int(v) for v in f.read().split()[13:15])
        time.sleep(0.3)
        with open(f"/proc/{busy.pid}/stat") as f:
            assert sum(int(v) for v in f.read().split()[13:15]) > t0  # it burns CPU time
    with pytest.raises(ProcessLookupError):
        os.kill(busy.pid, 0)


def test_method_group_has_a_row_per_fast_path_and_its_peers(tmp_path):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no-targets", "--methods-shape", "4x3x32x32", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    group = next(g for g in data["groups"] if g["kind"] == "method")
    rows = {r["name"]: r for r in group["rows"]}
    for name in ("CutMix", "FMix", "ResizeMix", "SaliencyMix", "GridMix", "SmoothMix"):
        assert not rows[f"mixlab {name} (batch)"]["skipped"], rows[f"mixlab {name} (batch)"]["note"]
    assert not rows["mixlab TokenMix (sample)"]["skipped"]
    for peer in ("mixup CutMix", "mixup FMix", "torchvision v2 CutMix", "timm CutMix (batch)"):
        assert peer in rows
    # issue 22's methods: SnapMix with given CAMs, SpecMix, RecursiveMix with a history, Feat-/Hidden-Mix on tokens
    for name in ("SnapMix (batch)", "SnapMix (sample)", "SpecMix (batch)", "SpecMix (sample)", "RecursiveMix (batch)",
                 "FeatMix (sample, tokens)", "HiddenMix (sample, tokens)", "MixPro (batch)", "SMMix (sample)",
                 "SimilarityKernelMixup (sample)"):
        row = rows[f"mixlab {name}"]
        assert not row["skipped"] and row["median_ms"] > 0, (name, row["note"])
        assert "no peer package" in row["note"] or "not installed" in row["note"] or "(sample" in name, \
            (name, row["note"])


def test_detection_group_pits_copy_paste_against_torchvisions_reference(tmp_path):
    pytest.importorskip("torchvision.ops")
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no-targets", "--detection-shape", "4x3x48x48", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    group = next(g for g in data["groups"] if g["kind"] == "detection")
    rows = {r["name"]: r for r in group["rows"]}
    for name in ("copy floor", "mixlab CopyPaste (roll)", "torchvision SimpleCopyPaste (reference port)",
                 "mixlab Mosaic (one size)", "mixlab Mosaic(size) (two sizes)", "mixlab MixUp (detection)"):
        assert not rows[name]["skipped"], rows[name]["note"]
    assert any(g["goal"].startswith("CopyPaste") and g["value"] is not None for g in data["goals"])
