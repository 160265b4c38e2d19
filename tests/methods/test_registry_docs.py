"""What the docs read from the registry covers every registered method: a "when to use it" line
(``@register(..., when=...)``), a row of the methods table the docs hook generates, and a place in the
methods gallery (a drawn row, or a reason it is not drawn). Fast: no site build, no figure drawn."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import mixlab.methods
from mixlab.registry import register

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hook():
    return _load("mixlab_docs_hook_for_tests", ROOT / "docs" / "_ext" / "mixlab_docs.py")


@pytest.fixture(scope="module")
def gallery():
    return _load("mixlab_gallery_for_tests", ROOT / "examples" / "methods_gallery.py")


NAMES = mixlab.methods.available()


@pytest.mark.parametrize("name", NAMES)
def test_every_method_says_when_to_use_it(name):
    when = mixlab.methods.get(name).when
    assert isinstance(when, str) and when.strip(), f"register({name!r}, ..., when='...') is missing"
    assert "\n" not in when and len(when) <= 200, f"{name}: the 'when to use it' line should be one short line"


def test_when_must_be_text():
    with pytest.raises(ValueError, match="when"):
        register("not-a-method", when=3)


def test_generated_table_has_a_row_with_the_when_line_for_every_method(hook):
    table = hook.registry_table(mixlab.methods)
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-1] == "when to use it"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == len(header), line
        rows[cells[0].strip("`")] = cells
    assert list(rows) == NAMES
    for name in NAMES:
        when = mixlab.methods.get(name).when.replace("|", "\\|")
        assert rows[name][-1] == when, name


def test_hook_warns_about_a_method_without_a_when_line(hook, caplog, monkeypatch):
    import dataclasses
    import logging

    info = mixlab.methods.get("mixup")

    class Methods:  # the registry with mixup's line blanked
        available = staticmethod(lambda: ["mixup"])
        get = staticmethod(lambda name: dataclasses.replace(info, when=""))

    with caplog.at_level(logging.WARNING, logger=hook.log.name):
        table = hook.registry_table(Methods)
    assert "'mixup' has no 'when to use it' line" in caplog.text  # a warning fails mkdocs build --strict
    assert table.splitlines()[-1].endswith("| - |")


def test_gallery_shows_every_method_or_says_why_not(gallery):
    rows = gallery.methods(seed=0)
    drawn = {getattr(row, "method", None) for row in rows.values()}
    left_out = gallery.not_drawn()
    for name in NAMES:
        assert name in drawn or left_out.get(name), f"{name} is neither drawn in the gallery nor listed with a reason"
    assert not drawn & set(left_out)
    # every image or token method is drawn (today, all of them)
    assert {n for n in NAMES if {"images", "tokens"} & set(mixlab.methods.get(n).inputs)} <= drawn


@pytest.mark.parametrize("name", ["snapmix", "recursivemix", "featmix", "hiddenmix", "cmixup"])
def test_gallery_rows_of_methods_that_need_more_than_images(gallery, name):
    """SnapMix (a CAM model), RecursiveMix (a history), Feat-/Hidden-Mix (tokens), C-Mixup (targets) give images."""
    rows = {row.method: row for row in gallery.methods(seed=0).values()}
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    mixed, target = rows[name](x, y)
    assert mixed.shape == x.shape and not torch.equal(mixed, x), name
    lam, label = gallery.shares(rows[name], target)
    assert lam.shape == (6,) and bool(((lam >= 0) & (lam <= 1)).all())
    if name == "snapmix":
        assert label is not None  # the CAM share, not the area
    if name == "recursivemix":  # the history call came first: the drawn call pastes the previous mixed batch
        assert rows[name].mixer.state_dict()["inputs"] is not None


def test_token_round_trip(gallery):
    x = torch.rand(2, 3, 32, 32)
    tokens = gallery.to_tokens(x)
    assert tokens.shape == (2, 64, 48)
    assert torch.equal(tokens[0, 1], x[0, :, :4, 4:8].reshape(-1))  # token 1: the second patch of the first row
    assert torch.equal(gallery.from_tokens(tokens, x.shape), x)
