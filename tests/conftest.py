"""Shared test set-up: a device option, deterministic hypothesis, the shared/ folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("KERAS_BACKEND", "torch")

settings.register_profile(
    "mixlab", derandomize=True, deadline=None, max_examples=40, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("mixlab")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for the core tests, e.g. cuda")


@pytest.fixture
def device(request) -> torch.device:
    d = torch.device(request.config.getoption("--device"))
    if d.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return d


@pytest.fixture
def gen(device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(1234)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train small models: faster on 2 shared cores, repeatable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
