"""Shared test set-up: deterministic hypothesis, seeded generators, one-thread fixture."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("KERAS_BACKEND", "torch")

settings.register_profile(
    "mixlab", derandomize=True, deadline=None, max_examples=40, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("mixlab")

@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator (the core tests build their inputs on the CPU)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train small models: faster on 2 shared cores, repeatable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
