"""The wheel carries the package only (with py.typed), and the README's quick start runs from it outside
the repository, in a fresh virtual environment that sees this one's packages (torch) but not the source tree.
Installed without the `lab` extra, the `mixlab` command names the missing packages in one line."""
from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Library quick start\n\n```python\n(.*?)```", text, re.S).group(1)
    setup = ("import torch\nfrom torch import nn\nmodel = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))\n"
             "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
             "loader = [(torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))) for _ in range(3)]\n")
    return setup + block + "\nprint('quick start ok', float(loss))\n"


def _clean_source(tmp: Path, names) -> Path:
    """A copy of the tracked sources ``names`` (a stale ``build/`` in the checkout would leak old files into the wheel)."""
    import shutil

    for name in names:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / Path(name).name,
                                                               **({"ignore": shutil.ignore_patterns("*.egg-info", "__pycache__")}
                                                                  if src.is_dir() else {}))
    return tmp


def _build_wheel(tmp_path_factory, names, pattern: str) -> Path:
    """The wheel of a clean copy of ``names`` (the distribution's sources and metadata files)."""
    dist = tmp_path_factory.mktemp("dist")
    source = _clean_source(tmp_path_factory.mktemp("src"), names)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                          str(source)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (built,) = dist.glob(pattern)
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _build_wheel(tmp_path_factory, ["src", "pyproject.toml", "README.md", "LICENSE"], "mixlab-*.whl")


def test_wheel_contents_and_readme_quick_start_from_the_wheel(tmp_path, wheel):
    import mixlab

    assert f"mixlab-{mixlab.__version__}" in wheel.name.replace("_", "-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mixlab/py.typed" in names and "mixlab/__init__.py" in names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/", "examples/")) for n in names), names
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # this environment's packages (torch...) are visible as a plain path: its .pth files, the editable
    # mixlab finder among them, are not processed, so `import mixlab` can only find the wheel
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    import sysconfig

    Path(purelib, "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    script = tmp_path / "quick_start.py"
    script.write_text(_quick_start())
    run = subprocess.run([str(py), str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": "torch"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "quick start ok" in run.stdout
    run = subprocess.run([str(py), "-c", "import mixlab, sys; print(mixlab.__file__)"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert str(env_dir) in run.stdout and str(ROOT / "src") not in run.stdout  # the wheel, not the checkout


@pytest.fixture(scope="module")
def lab_wheel(tmp_path_factory) -> Path:
    """The lab's own distribution (lab/pyproject.toml: mixlab-lab, the `mixlab` command)."""
    return _build_wheel(tmp_path_factory, ["lab/src", "lab/pyproject.toml", "lab/README.md", "lab/LICENSE"],
                        "mixlab_lab-*.whl")


def test_the_library_wheel_carries_no_lab_no_command_and_its_license(wheel, lab_wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith(("mixlab/lab/", "mixlab/bench/", "mixlab_lab/")) for n in names), names
    assert "mixlab/data/mixing.py" in names and "mixlab/data/datasets.py" not in names
    meta = {n: zipfile.ZipFile(wheel).read(n).decode() for n in names if ".dist-info/" in n}
    assert not any(n.endswith("entry_points.txt") for n in meta)  # no console script in the library
    assert any(n.endswith("licenses/LICENSE") for n in meta)
    (metadata,) = [v for n, v in meta.items() if n.endswith("METADATA")]
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires == ["Requires-Dist: torch>=2.1"], requires  # torch alone
    lab = zipfile.ZipFile(lab_wheel)
    assert "mixlab_lab/cli.py" in lab.namelist() and "mixlab_lab/data/datasets.py" in lab.namelist()
    (entry,) = [n for n in lab.namelist() if n.endswith("entry_points.txt")]
    assert "mixlab = mixlab_lab.cli:main" in lab.read(entry).decode()
    assert any(n.endswith("licenses/LICENSE") for n in lab.namelist())


# the lab's dependencies as they appear in site-packages (modules, .libs and .dist-info), and mixlab itself
_LAB_ENTRIES = ("torchvision", "matplotlib", "mpl_toolkits", "tqdm", "sklearn", "scikit_learn", "pil", "pillow",
                "scipy", "mixlab", "__editable__")


def test_the_lab_command_without_its_dependencies_refuses_in_one_line(tmp_path, wheel, lab_wheel):
    """Both wheels installed with --no-deps beside torch and numpy only: `mixlab compare` refuses at once, in one line."""
    py, env = _core_env(tmp_path, _LAB_ENTRIES)
    env["MIXLAB_CACHE"] = str(tmp_path / "cache")
    run = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-cache-dir", "-q",
                          str(wheel), str(lab_wheel)], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    probe = subprocess.run([str(py), "-c", "import torch, numpy, mixlab, mixlab_lab, importlib.util as u; "
                            "print([m for m in ('torchvision', 'matplotlib', 'tqdm', 'sklearn', 'PIL', 'scipy') "
                            "if u.find_spec(m)], mixlab.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert probe.returncode == 0 and probe.stdout.startswith("[] ") and str(tmp_path / "env") in probe.stdout, \
        probe.stdout + probe.stderr[-2000:]
    out = tmp_path / "run"
    command = py.parent / "mixlab"
    for argv in (["compare", "--dataset", "digits"], ["train", "--dataset", "fashion-mnist", "--epochs", "1"]):
        run = subprocess.run([str(command), *argv, "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                             timeout=300, env=env)
        assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, (run.returncode, run.stderr[-3000:])
        assert run.stderr == (f"mixlab: the lab (mixlab {argv[0]}) needs torchvision, matplotlib, tqdm, scikit-learn, "
                              "pillow, scipy (not installed); install them with: pip install torchvision matplotlib "
                              "tqdm scikit-learn pillow scipy\n")
        assert not out.exists() and not (tmp_path / "cache").exists()
    run = subprocess.run([str(command), "datasets"], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert run.returncode == 0 and "digits" in run.stdout, run.stderr[-3000:]


def test_the_lab_wheel_compares_on_digits(tmp_path, wheel, lab_wheel):
    """The two wheels in a fresh venv that sees this environment's packages: `mixlab compare --dataset digits` runs."""
    import sysconfig

    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    Path(purelib, "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # its .pth files unprocessed
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "MIXLAB_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel),
                          str(lab_wheel)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "run"
    run = subprocess.run([str(env_dir / "bin" / "mixlab"), "compare", "--dataset", "digits", "--epochs", "1",
                          "--mix", "mixup", "--quiet", "--out", str(out)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "summary.json").is_file() and "verdict: mixup" in run.stdout
    where = subprocess.run([str(py), "-c", "import mixlab, mixlab_lab; print(mixlab.__file__, mixlab_lab.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert where.stdout.count(str(env_dir)) == 2, where.stdout  # both from the wheels, not the checkout


def _core_env(tmp_path, exclude) -> tuple[Path, dict]:
    """A fresh venv that sees this environment's packages except ``exclude`` (name prefixes), and no mixlab."""
    import sysconfig

    parent = Path(sysconfig.get_paths()["purelib"])
    core = tmp_path / "core-site"
    core.mkdir()
    for entry in parent.iterdir():
        if not entry.name.lower().startswith(exclude) and entry.suffix != ".pth":
            (core / entry.name).symlink_to(entry)
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    Path(purelib, "_core.pth").write_text(f"{core}\n")
    return py, {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}


LIBRARY_ALONE = """
import importlib.util, warnings
assert importlib.util.find_spec("numpy") is None, "numpy is visible: the test would not show torch alone suffices"
import torch, mixlab
g = torch.Generator().manual_seed(0)
x, y = torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
for name in mixlab.methods.available(task="classification"):
    info = mixlab.methods.get(name)
    if info.needs:  # Remix needs class counts, PuzzleMix numpy and scipy: checked below
        continue
    opts = {"n_holes": (1, 2)} if name == "gridmix" else {"patch_size": 4} if name == "tokenmix" else {}
    mixed, target = info.build(alpha=1.0, generator=g, **opts)(x, y)
    loss = target.loss(torch.nn.functional.cross_entropy, torch.randn(8, 10, generator=g))
    assert mixed.shape == x.shape and loss.ndim == 0
try:
    mixlab.PuzzleMix()
except ImportError as e:
    assert 'mixlab[puzzlemix]' in str(e), e
else:
    raise AssertionError("PuzzleMix built without numpy")
print("ok")
"""


def test_the_library_installs_and_runs_with_torch_alone(tmp_path, wheel):
    """`pip install mixlab`: torch is the only requirement; every method that needs nothing else mixes, PuzzleMix
    says which extra it needs."""
    py, env = _core_env(tmp_path, _LAB_ENTRIES + ("numpy",))
    run = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-cache-dir", "-q",
                          str(wheel)], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    warnings = ["-W", "error", "-W", "ignore:Failed to initialize NumPy"]  # torch's own note that numpy is absent
    run = subprocess.run([str(py), *warnings, "-c", LIBRARY_ALONE], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout[-2000:] + run.stderr[-3000:]
