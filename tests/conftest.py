"""Shared test set-up: deterministic hypothesis, seeded generators, one-thread fixture, ``--device``.

``pytest --device cuda`` (default ``cpu``) runs the device-parametrised tests (those taking the
``device`` fixture) on that device; without a usable CUDA device they are skipped, not failed.
"""
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


def pytest_addoption(parser):
    parser.addoption(
        "--device", action="store", default="cpu",
        help="device for the tests that take the `device` fixture: cpu (default), cuda or cuda:N",
    )


def pytest_configure(config):
    name = config.getoption("--device")
    try:
        torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise pytest.UsageError(f"--device {name!r} is not a torch device: {err}") from None


@pytest.fixture
def device(request) -> torch.device:
    """The device chosen with ``--device``; skips the test if it is CUDA and CUDA is unusable."""
    name = request.config.getoption("--device")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"--device {name}: torch.cuda.is_available() is False (no usable CUDA device)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            pytest.skip(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator (the core tests build their inputs on the CPU)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def dgen(device, gen) -> torch.Generator:
    """A generator on ``device`` seeded 1234, for tests that draw random numbers on the device.

    On the CPU it is ``gen`` itself (the same object), so a test that builds its inputs from
    ``gen`` and draws its parameters from ``dgen`` consumes one stream in the same order as
    before the device option existed: CPU runs keep their exact numbers. On another device
    it is a separate stream and the numbers differ (tests must not depend on them).
    """
    if device.type == "cpu":
        return gen
    return torch.Generator(device=device).manual_seed(1234)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train small models: faster on 2 shared cores, repeatable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
