"""Test set-up shared by the whole suite.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here,
before any ``vlp.kernels`` module is imported: on a CPU-only machine every
``backend="triton"`` call then runs under the interpreter. On a GPU machine run
``VLP_TEST_COMPILED=1 pytest`` to test the compiled kernels instead.
"""

from __future__ import annotations

import os

if os.environ.get("VLP_TEST_COMPILED", "0") in ("", "0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

# Test shapes are tiny: one intra-op thread is faster than two (no thread hand-off) and
# leaves the second core to the spawned gloo workers.
torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator for reproducible test inputs."""
    return torch.Generator().manual_seed(0)
