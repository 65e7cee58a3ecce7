"""Test set-up shared by the whole suite.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before
any ``vlp.kernels`` module is imported: on a CPU-only machine every ``backend="triton"``
call then runs under the interpreter. On a GPU machine ``VLP_TEST_DEVICE=cuda pytest``
turns the interpreter off and makes the tests that honour the switch (see
``tests/_device.py``) build their tensors on CUDA and run the compiled kernels.
"""

from __future__ import annotations

import os

from tests._device import DEVICE, ON_CUDA

if ON_CUDA:
    os.environ["TRITON_INTERPRET"] = "0"
else:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

# Test shapes are tiny: one intra-op thread is faster than two (no thread hand-off) and
# leaves the second core to the spawned gloo workers.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    if ON_CUDA and not torch.cuda.is_available():
        raise pytest.UsageError(
            "VLP_TEST_DEVICE=cuda was set but torch sees no CUDA device; unset it to run "
            "the kernels under the Triton interpreter on the CPU"
        )


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator for reproducible test inputs."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def device() -> torch.device:
    """The device tests build their tensors on: ``VLP_TEST_DEVICE`` (default CPU)."""
    return DEVICE
