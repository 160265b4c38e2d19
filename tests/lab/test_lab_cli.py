"""End-to-end tests of ``mixlab compare/train/preview/datasets`` on small real data (digits, a Fashion-MNIST slice)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixlab_lab import runner
from mixlab_lab.cli import main
from mixlab_lab.store import load_checkpoint

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--quiet", "--seeds", "0"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(("time_s", "_per_s"))} for r in rows]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "run"
    assert main(["compare", *TINY, "--out", str(out)]) == 0
    return out


def test_run_folder_schema(digits_run):
    cfg = json.loads((digits_run / "config.json").read_text())
    assert {"config", "arms", "data", "versions", "git_commit", "machine"} <= set(cfg)
    assert cfg["arms"] == ["baseline", "mixup"]
    assert cfg["config"]["model"] == "fast-cnn" and cfg["config"]["dataset"] == "digits"
    assert cfg["versions"]["torch"] == torch.__version__
    assert {"cpu", "cores", "torch_threads"} <= set(cfg["machine"])
    assert cfg["data"]["num_classes"] == 10 and cfg["data"]["input_shape"] == [1, 8, 8]

    rows = _lines(digits_run / "metrics.jsonl")
    assert [(r["arm"], r["epoch"]) for r in rows] == [("baseline", 1), ("baseline", 2), ("mixup", 1), ("mixup", 2)]
    for r in rows:
        assert {"seed", "arm", "epoch", "train_loss", "test_acc", "test_nll", "test_ece", "lr"} <= set(r)
        assert 0 <= r["test_ece"] <= 1 and r["test_nll"] > 0

    summary = json.loads((digits_run / "summary.json").read_text())
    assert {"arms", "seeds", "per_seed", "aggregate", "difference", "init_sha256"} <= set(summary)
    for arm in ("baseline", "mixup"):
        final = summary["per_seed"][arm]["0"]
        assert final["test_acc"] > 0.5, f"{arm} is not well above chance (0.1): {final['test_acc']}"
        assert summary["aggregate"][arm]["test_acc"]["mean"] == pytest.approx(final["test_acc"])
    diff = summary["difference"]["test_acc"]["mean"]
    assert diff == pytest.approx(summary["per_seed"]["mixup"]["0"]["test_acc"]
                                 - summary["per_seed"]["baseline"]["0"]["test_acc"])
    report = (digits_run / "report.md").read_text()
    for png in ("curves.png", "reliability.png", "beta.png", "mixed_samples.png"):
        assert f"plots/{png}" in report
        assert (digits_run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(digits_run.rglob("*.tmp")), "a temporary file was left behind"


def test_both_arms_start_from_identical_weights(digits_run):
    summary = json.loads((digits_run / "summary.json").read_text())
    hashes = summary["init_sha256"]
    assert hashes["baseline"]["0"] == hashes["mixup"]["0"]
    init = load_checkpoint(digits_run / "checkpoints" / "seed0_init.pt")["model"]
    base = load_checkpoint(digits_run / "checkpoints" / "seed0_baseline.pt")
    mixed = load_checkpoint(digits_run / "checkpoints" / "seed0_mixup.pt")
    assert base["init_sha256"] == mixed["init_sha256"]
    assert base["done"] and mixed["done"]
    # the arms trained differently from the same start
    assert any(not torch.equal(base["model"][k], mixed["model"][k]) for k in init if init[k].is_floating_point())


def test_resume_equals_uninterrupted(digits_run, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    calls = {"n": 0}
    real_write = runner._write_metrics

    def interrupt_on_third_epoch(path, histories):
        real_write(path, histories)
        calls["n"] += 1
        if calls["n"] == 3:  # baseline finished, mixup after its first epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_write_metrics", interrupt_on_third_epoch)
    assert main(["compare", *TINY, "--out", str(out)]) == 130
    ck = load_checkpoint(out / "checkpoints" / "seed0_mixup.pt")
    assert ck["epoch"] == 1 and not ck["done"]
    monkeypatch.setattr(runner, "_write_metrics", real_write)
    assert main(["compare", "--out", str(out), "--resume", "--quiet"]) == 0

    assert _strip_times(_lines(out / "metrics.jsonl")) == _strip_times(_lines(digits_run / "metrics.jsonl"))
    for arm in ("baseline", "mixup"):
        a = load_checkpoint(out / "checkpoints" / f"seed0_{arm}.pt")["model"]
        b = load_checkpoint(digits_run / "checkpoints" / f"seed0_{arm}.pt")["model"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{arm}: resumed weights differ from uninterrupted ones"


def test_resume_refuses_changed_options(digits_run, capsys):
    assert main(["compare", "--out", str(digits_run), "--resume", "--alpha", "0.5"]) == 2  # one line, status 2
    assert "--alpha" in capsys.readouterr().err


def test_train_with_classes_and_label_noise(tmp_path):
    out = tmp_path / "noisy"
    args = ["train", "--mix", "mixup", "--dataset", "digits", "--classes", "3,7", "--label-noise", "0.25",
            "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arms"] == ["mixup"]
    assert cfg["config"]["classes"] == [3, 7] and cfg["config"]["label_noise"] == 0.25
    data = cfg["data"]
    assert data["num_classes"] == 2
    assert data["num_noisy"] == round(0.25 * data["num_train"])
    # digits has ~180 images per class; a 2-class 80/20 split keeps ~290 for training
    assert 250 <= data["num_train"] <= 320
    (row,) = _lines(out / "metrics.jsonl")
    assert 0 <= row["noisy_memorised"] <= 1 and 0 <= row["train_clean_acc"] <= 1


def test_train_baseline_only(tmp_path):
    out = tmp_path / "erm"
    assert main(["train", "--mix", "none", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"] == ["baseline"] and "difference" not in summary


def test_preview_writes_png(tmp_path, capsys):
    png = tmp_path / "mixed.png"
    assert main(["preview", "--dataset", "digits", "--alpha", "0.4", "--mode", "sample", "--n", "6",
                 "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


def test_datasets_lists_every_name(capsys):
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    for name in ("digits", "fashion-mnist", "mnist", "cifar10", "wine", "breast-cancer"):
        assert name in text
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["present"] for r in rows}["digits"] is True


@pytest.mark.parametrize("argv, option", [
    (["compare", "--alpha", "-1"], "--alpha"),
    (["compare", "--seeds", "a,b"], "--seeds"),
    (["compare", "--model", "nope"], "--model"),
    (["compare", "--epochs", "0"], "--epochs"),
    (["compare", "--mix", "cutmix", "--mode", "pair"], "--mode"),
    (["compare", "--optimizer", "lion"], "--optimizer"),
    (["compare", "--dataset", "nope"], "--dataset"),
])
def test_bad_cli_input_names_the_option(argv, option, capsys):
    assert main(argv + ["--quiet"]) == 2  # `mixlab: <message>` on stderr, status 2 (tests/lab/test_lab_options.py)
    assert option in capsys.readouterr().err


def test_missing_bench_module_gives_clear_message(monkeypatch, capsys):
    import mixlab

    monkeypatch.setitem(sys.modules, "mixlab_lab.bench", None)  # makes `from mixlab_lab import bench` fail
    if "bench" in vars(mixlab):  # ...also when another test imported it already (hasattr would import it lazily)
        monkeypatch.delattr(mixlab, "bench")
    assert main(["bench"]) == 1
    assert "mixlab_lab.bench" in capsys.readouterr().err


def test_python_m_mixlab_help():
    res = subprocess.run([sys.executable, "-m", "mixlab_lab", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for cmd in ("compare", "train", "preview", "datasets", "bench"):
        assert cmd in res.stdout


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_slice(tmp_path):
    out = tmp_path / "fmnist"
    assert main(["compare", "--dataset", "fashion-mnist", "--train-size", "3000", "--epochs", "2",
                 "--batch-size", "64", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["num_train"] == 3000 and cfg["data"]["input_shape"] == [1, 28, 28]
    for arm in ("baseline", "mixup"):
        assert summary["per_seed"][arm]["0"]["test_acc"] > 0.6  # chance is 0.1


@pytest.mark.parametrize("preset, extra", [
    ("fastai-mnist-sample", []),                     # simple_cnn, classes 3 vs 7, per-sample keep-dominant lam
    ("cifar10-bce", ["--model", "fast-cnn"]),        # sigmoid outputs + BCE on soft labels, 1 row in 5 mixed
])
def test_article_presets_run_on_digits(preset, extra, tmp_path):
    out = tmp_path / preset
    assert main(["compare", "--preset", preset, "--dataset", "digits", "--epochs", "1", "--quiet",
                 "--seeds", "0", "--out", str(out), *extra]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["preset"] == preset and cfg["epochs"] == 1
    summary = json.loads((out / "summary.json").read_text())
    for arm in summary["arms"]:
        assert 0 <= summary["per_seed"][arm]["0"]["test_acc"] <= 1


def test_tabular_compare_uses_the_mlp(tmp_path):
    out = tmp_path / "wine"
    assert main(["compare", "--dataset", "wine", "--epochs", "3", "--batch-size", "32", "--quiet",
                 "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["model"] == "mlp" and cfg["data"]["kind"] == "tabular"
    summary = json.loads((out / "summary.json").read_text())
    for arm in ("baseline", "mixup"):
        assert summary["per_seed"][arm]["0"]["test_acc"] > 0.6  # 3 classes: chance is about 0.4
    assert "mixed_samples.png" not in (out / "report.md").read_text()


@pytest.mark.parametrize("mix", ["fmix", "saliencymix", "gridmix"])
def test_new_methods_run_in_the_lab(tmp_path, mix):
    out = tmp_path / mix
    rc = main(["train", "--dataset", "digits", "--mix", mix, "--epochs", "1", "--threads", "1", "--quiet",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"] == [mix]
    png = tmp_path / f"{mix}.png"
    assert main(["preview", "--dataset", "digits", "--mix", mix, "--alpha", "1", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_an_image_method_on_tabular_data_fails_before_training(tmp_path, capsys):
    rc = main(["compare", "--dataset", "wine", "--mix", "saliencymix", "--epochs", "1", "--quiet",
               "--out", str(tmp_path / "w")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--mix saliencymix cannot mix this dataset's inputs" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # nothing trained, nothing written


def test_mix_stop_epoch_ends_mixing(tmp_path):
    out = tmp_path / "stop"
    assert main(["train", "--dataset", "digits", "--mix", "mixup", "--alpha", "1", "--epochs", "3",
                 "--mix-stop-epoch", "1", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    assert main(["train", "--dataset", "digits", "--mix", "mixup", "--alpha", "1", "--epochs", "3",
                 "--threads", "1", "--quiet", "--out", str(tmp_path / "always")]) == 0

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return {r["epoch"]: r["train_loss"] for r in rows}

    stopped, always = losses(out), losses(tmp_path / "always")
    assert stopped[1] == pytest.approx(always[1])  # epoch 1 (index 0): mixed in both, the same numbers
    assert stopped[3] < always[3] - 0.3  # after the stop: the plain loss, far below the mixed one
    assert main(["train", "--mix-stop-epoch", "x"]) == 2
    assert main(["train", "--dataset", "digits", "--mix-stop-epoch", "-1", "--out", str(tmp_path / "bad")]) == 2


# ---- the lab without its optional packages (`pip install mixlab` without the `lab` extra) ----------------------

# Runs `main(argv)` in a fresh interpreter where the top-level packages named in argv[1] are not found, exactly
# as in an environment without them: the path finder is wrapped to find nothing under those names, so `import`
# raises ModuleNotFoundError and importlib.util.find_spec returns None (which other libraries' probes rely on).
_WITHOUT = r'''
import importlib.machinery
import sys

HIDDEN = frozenset(n for n in sys.argv[1].split(",") if n)


class _PathFinderWithout(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_PathFinderWithout if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
from mixlab_lab.cli import main

sys.exit(main(sys.argv[2:]))
'''
LAB_MODULES = {"torchvision": "torchvision", "matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn",
               "PIL": "pillow", "scipy": "scipy"}  # import name -> pip name


def _mixlab_without(modules, argv, cwd, env_extra=None):
    import os
    import time

    env = {**os.environ, "MIXLAB_CACHE": str(cwd / "cache"), **(env_extra or {})}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WITHOUT, ",".join(modules), *argv], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=600)
    return res, time.perf_counter() - start


def _assert_one_line_refusal(res, names, install="pip install "):
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-3000:])
    (line,) = lines
    assert line.startswith("mixlab: ") and "Traceback" not in line
    for name in names:
        assert name in line, line
    assert install in line, line


@pytest.mark.parametrize("command, blocked, extra", [
    ("compare", ["matplotlib", "sklearn"], []),  # the digits set needs scikit-learn, the report matplotlib
    ("train", ["matplotlib"], ["--mix", "mixup"]),  # trained, then died writing the report
    ("train", sorted(LAB_MODULES), ["--mix", "none"]),  # every optional package of the lab, named at once
])
def test_lab_without_its_packages_says_so_before_any_work(tmp_path, command, blocked, extra):
    out = tmp_path / "run"
    res, seconds = _mixlab_without(blocked, [command, *TINY, *extra, "--out", str(out)], tmp_path)
    _assert_one_line_refusal(res, [LAB_MODULES[m] for m in blocked])
    assert "not installed" in res.stderr
    assert not out.exists(), "a run folder was made: the check came after work had started"
    assert not (tmp_path / "cache").exists(), "data was read before the check"
    assert seconds < 60, f"took {seconds:.0f} s: the check must come before any training"


def test_preview_without_matplotlib_says_so(tmp_path):
    png = tmp_path / "mixed.png"
    res, _ = _mixlab_without(["matplotlib"], ["preview", "--dataset", "digits", "--out", str(png)], tmp_path)
    _assert_one_line_refusal(res, ["matplotlib"])
    assert not png.exists()


def test_datasets_needs_no_optional_package(tmp_path):
    res, _ = _mixlab_without(sorted(LAB_MODULES), ["datasets", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["digits"]["present"] is False and "scikit-learn" in rows["digits"]["how_to_get"]


def test_a_broken_lab_package_is_named_in_one_line(tmp_path):
    import os

    stub = tmp_path / "stub" / "torchvision"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    out = tmp_path / "run"
    res, _ = _mixlab_without([], ["train", *TINY, "--model", "resnet18", "--out", str(out)], tmp_path,
                             env_extra={"PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"),
                                                                       *filter(None, [os.environ.get("PYTHONPATH")])])})
    _assert_one_line_refusal(res, ["torchvision", "RuntimeError: operator torchvision::nms does not exist"],
                             install="pip install --force-reinstall torchvision")
    assert not out.exists()


def _optional_imports(files) -> dict:
    """Top-level names of every `import` (module level or inside functions) in ``files`` that are neither the
    standard library nor mixlab's own dependencies (torch, numpy) nor mixlab: ``{name: [file:line, ...]}``."""
    import ast

    found: dict = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("torch", "numpy", "mixlab", "mixlab_lab", "__future__"):
                    found.setdefault(top, []).append(f"{path.name}:{node.lineno}")
    return found


def test_the_package_check_covers_every_optional_import_of_the_lab():
    from mixlab_lab import cli

    import mixlab

    lab = Path(cli.__file__).resolve().parent  # lab/src/mixlab_lab: the command, its readers and the bench
    library = Path(mixlab.__file__).resolve().parent
    files = [*sorted(p for p in lab.rglob("*.py") if "bench" not in p.parts),
             *sorted(library.rglob("puzzlemix.py"))]  # the lab's --mix puzzlemix: scipy's max-flow
    found = _optional_imports(files)
    found.pop("gco")  # PuzzleMix(solver="gco") only: the lab builds PuzzleMix with the default "builtin" solver
    assert {"matplotlib", "sklearn", "torchvision", "tqdm", "PIL", "scipy"} <= set(found)  # the walk sees them
    for command in ("compare", "train"):
        unchecked = {k: v for k, v in found.items() if k not in cli.NEEDS[command]}
        assert not unchecked, f"mixlab {command} would die later on these imports: {unchecked}"
    assert set(cli.NEEDS["preview"]) <= set(cli.NEEDS["compare"]) and cli.NEEDS["datasets"] == ()
    assert set(cli.NEEDS["compare"]) <= set(cli.LAB_PACKAGES)


def test_the_package_check_matches_the_lab_extra():
    import importlib.metadata
    import re
    import tomllib

    from mixlab_lab import cli

    pyproject = tomllib.loads((Path(cli.__file__).resolve().parents[2] / "pyproject.toml").read_text())  # lab/
    extra = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in pyproject["project"]["dependencies"]} - {"mixlab", "scipy"}
    assert extra == set(cli.LAB_EXTRA)
    outside = set(cli.LAB_PACKAGES.values()) - extra
    assert outside == {"scipy"}  # not in the extra: scikit-learn brings it, and the message names it when missing
    assert any(r.split(";")[0].strip().lower().startswith("scipy")
               for r in importlib.metadata.requires("scikit-learn") or [])


def test_check_packages_passes_here_and_names_what_is_missing(monkeypatch):
    from mixlab_lab import cli

    for command in cli.NEEDS:
        cli.check_packages(command)  # the test environment has the lab extra
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` raises ModuleNotFoundError
    with pytest.raises(cli.MissingPackages, match=r"the lab \(mixlab train\) needs tqdm \(not installed\); "
                                                  r"install it with: pip install tqdm$"):
        cli.check_packages("train")
    cli.check_packages("preview")  # no progress bars there
    assert main(["train", "--dataset", "digits", "--out", "never-made"]) == 2 and not Path("never-made").exists()


# ---- a crafted CIFAR pickle -----------------------------------------------------------------------------------

class _RunsACommand:
    """Unpickles as ``os.system(command)`` (``posix.system`` in the file): the pickle must be refused unrun."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_pickle_is_one_line_not_a_traceback(tmp_path, capsys):
    import pickle

    import numpy as np

    batches = tmp_path / "cifar" / "cifar-10-batches-py"  # the official layout
    batches.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {"data": np.full((4, 3072), i, dtype=np.uint8), "labels": [0, 1, 2, 3], "batch_label": name}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    marker = tmp_path / "pwned"
    crafted = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "x": _RunsACommand(marker)}
    (batches / "data_batch_2").write_bytes(pickle.dumps(crafted, protocol=2))
    assert b"posix\nsystem" in (batches / "data_batch_2").read_bytes()

    out = tmp_path / "run"
    rc = main(["compare", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--epochs", "1",
               "--quiet", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"mixlab: CIFAR file {batches / 'data_batch_2'}: refusing to load posix.system"), err
    assert not marker.exists(), "the crafted pickle ran its command"
