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
    assert set(data) == {"header", "settings", "groups", "goals"}
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
    assert all(set(g) == {"goal", "value", "met", "value_min", "met_min"} for g in data["goals"])
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
