"""The core's docstring examples run (they print shapes, never seed-dependent numbers)."""
from __future__ import annotations

import doctest

import pytest

import mixlab.ops
import mixlab.policies
import mixlab.transforms


@pytest.mark.parametrize("module", [mixlab.ops, mixlab.methods.mixup, mixlab.methods.cutmix, mixlab.policies])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
