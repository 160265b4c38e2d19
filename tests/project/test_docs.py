"""The documentation site builds in strict mode (a broken API reference or link fails CI), and what it
is built from: every public module has an API entry, reST roles in docstrings are rendered as links,
the methods table is read from the registry."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mixlab"
NOT_DOCUMENTED = {"mixlab.lab", "mixlab_lab.bench", "mixlab.__main__",
                  "mixlab.puzzlemix"}  # the CLI lab and benchmarks, `python -m mixlab_lab`, an alias of mixlab.methods.puzzlemix


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _html(site: Path) -> dict:
    return {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}


def test_mkdocs_strict_build(site):
    api = (site / "api" / "core" / "index.html").read_text()
    assert "sample_params" in api and "MixParams" in api  # the reference is rendered from the docstrings
    assert (site / "img" / "methods.png").exists()
    assert not (site / "_ext").exists()  # the build's own hooks are not published


def public_modules() -> list:
    """Every public module of the package, from the source tree (no import: some need optional packages)."""
    mods = ["mixlab"]
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if any(p.startswith("_") for p in parts) or name == "mixlab":
            continue
        if not any(name == n or name.startswith(n + ".") for n in NOT_DOCUMENTED):
            mods.append(name)
    return mods


def test_every_public_module_has_an_api_entry(site):
    api = "".join(text for page, text in _html(site).items() if page.startswith("api/"))
    missing = [m for m in public_modules() if f'id="{m}"' not in api]
    assert not missing, f"public modules without an API entry (add `::: module` to a docs/api page): {missing}"
    for mod in ("mixlab.methods.mixup", "mixlab.methods.puzzlemix", "mixlab.data.mixing", "mixlab.fastai",
                "mixlab.keras", "mixlab.lightning", "mixlab.transformers", "mixlab.registry"):
        assert mod in public_modules()
    assert 'id="mixlab.data.mixing.MixCollate"' in api and 'id="mixlab.mixer.Mixer"' in api


def test_rest_roles_render_as_links(site):
    pages = _html(site)
    left = {page: re.findall(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):", text)
            for page, text in pages.items()}
    assert not {p: n for p, n in left.items() if n}, "literal reST roles in the built site"
    assert not [p for p, text in pages.items() if "autoref" in text.replace("autorefs", "")], "unresolved autoref tags"
    # mixlab.methods' docstring: :class:`~mixlab.registry.MethodInfo` and :class:`~mixlab.Mixer`
    methods = pages["api/methods/index.html"]
    section = methods[methods.index('id="mixlab.methods"'):methods.index('id="mixlab.registry"')]
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="#mixlab\.registry\.MethodInfo"><code>MethodInfo</code></a>',
                     section)
    assert re.search(r'href="\.\./core/#mixlab\.mixer\.Mixer"><code>Mixer</code></a>', section)
    # every link to an API entry lands on an existing anchor
    ids = {page: set(re.findall(r'id="([^"]+)"', text)) for page, text in pages.items()}
    bad = []
    for page, text in pages.items():
        for href in re.findall(r'href="([^"]*#mixlab[^"]*)"', text):
            path, anchor = href.split("#", 1)
            target = os.path.normpath(os.path.join(os.path.dirname(page), path, "index.html")) if path else page
            if anchor not in ids.get(target, ()):
                bad.append((page, href))
    assert not bad, bad[:10]


def test_top_level_names_link_to_their_entries(site):
    import mixlab

    core = (site / "api" / "core" / "index.html").read_text()
    section = core[core.index('id="mixlab"'):core.index('id="mixlab.mixer"')]
    for name in mixlab.__all__:
        assert re.search(rf'<a class="autorefs autorefs-internal"[^>]*><code>{name}</code></a>', section), name


def test_methods_page_lists_every_registered_method(site):
    import mixlab.methods

    page = (site / "methods" / "index.html").read_text()
    table = page[page.index("<th>method</th>"):]
    table = table[:table.index("</table>")]
    names = mixlab.methods.available()
    assert len(names) >= 12
    for name in names:
        info = mixlab.methods.get(name)
        row = re.search(rf"<tr>\s*<td><code>{re.escape(name)}</code></td>(.*?)</tr>", table, re.S)
        assert row, f"{name} missing from the methods table"
        anchor = f"{info.cls.__module__}.{info.cls.__qualname__}"
        assert f'href="../api/methods/#{anchor}"' in row[1], (name, row[1])
        assert (">yes<" if info.alpha else ">no<") in row[1]
        assert ", ".join(info.inputs) in row[1]
    assert len(re.findall(r"<tr>\s*<td><code>", table)) == len(names)



def test_gallery_rows_come_from_the_registry():
    """examples/methods_gallery.py (docs/img/methods.png) has a row for every image method of the registry."""
    import importlib.util

    import torch

    import mixlab.methods

    spec = importlib.util.spec_from_file_location("mixlab_docs_gallery", ROOT / "examples" / "methods_gallery.py")
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    rows = gallery.methods(seed=0)
    wanted = [n for n in mixlab.methods.available(inputs="images") if mixlab.methods.get(n).task != "regression"]
    assert [n for n in rows if n in mixlab.methods.available()] == wanted
    x, y = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    for name, mixer in rows.items():
        mixed, target = mixer(x, y)
        assert mixed.shape == x.shape and target.params.index.shape[0] == 6, name  # (6,) or k-way (6, k)
