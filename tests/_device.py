"""The GPU test mode switch: ``VLP_TEST_DEVICE=cuda pytest ...``.

With ``VLP_TEST_DEVICE=cpu`` (the default) kernel tests build CPU tensors and every Triton
path runs under the interpreter (``TRITON_INTERPRET=1``, set by ``conftest.py`` before any
kernel module is imported). With ``VLP_TEST_DEVICE=cuda`` the interpreter is switched off,
the tests that honour the switch build their inputs on the GPU (drawn on the CPU with a
seeded generator, then moved, so both modes see the same numbers) and run the compiled
kernels, compared with float64 CPU references through ``vlp.testing.assert_kernel_close``.
A module honours the switch by importing this module or taking the ``device`` fixture;
``tests/test_device_switch.py`` lists the modules that do not yet.
``VLP_TEST_COMPILED=1`` is the old name of ``VLP_TEST_DEVICE=cuda``.
"""

from __future__ import annotations

import os

import torch

_raw = os.environ.get("VLP_TEST_DEVICE", "").strip().lower()
if not _raw and os.environ.get("VLP_TEST_COMPILED", "0") not in ("", "0"):
    _raw = "cuda"
if _raw not in ("", "cpu", "cuda"):
    raise ValueError(f"VLP_TEST_DEVICE must be 'cpu' or 'cuda', got {_raw!r}")

#: ``"cpu"`` or ``"cuda"``.
TEST_DEVICE: str = _raw or "cpu"
DEVICE = torch.device(TEST_DEVICE)
ON_CUDA = TEST_DEVICE == "cuda"


def dev(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the test device (a new leaf: call ``requires_grad_()`` after)."""
    return t.to(DEVICE)


def leaf(t: torch.Tensor) -> torch.Tensor:
    """``t`` moved to the test device as a leaf that requires grad."""
    return t.detach().to(DEVICE).requires_grad_()
