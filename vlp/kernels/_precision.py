"""The one precision policy of every vlp Triton kernel (see ``docs/kernels.md``).

``tl.dot`` operands and accumulation follow the inputs' dtype, the way ``torch.matmul``
does:

- **fp32 inputs** follow :func:`torch.get_float32_matmul_precision` at launch time:
  ``"highest"`` -> exact fp32 products (``input_precision="ieee"``, FMA units),
  ``"high"`` -> TF32 tensor cores (``input_precision="tf32"``), ``"medium"`` -> operands
  rounded to bf16 (round to nearest even) on bf16 tensor cores. Accumulation is fp32.
- **fp16/bf16 inputs** use tensor cores in the input dtype with fp32 accumulation;
  fp32 intermediates that feed a second product (probabilities, gradients of the
  logits) are rounded to the input dtype first, as a fused kernel must.

Under the interpreter an fp32 ``tl.dot`` is exact whatever the mode (TF32 cannot be
emulated there), and bf16 cannot be computed natively: bf16 values are loaded as fp32
(exact) and every rounding to bf16 is done with integer bit arithmetic
(:func:`vlp.kernels._triton_common.round_bf16`), because the interpreter's own fp32 ->
bf16 conversion truncates where the GPU rounds to nearest even.

The tolerances that follow from this policy are ``vlp.testing.KERNEL_TOLERANCES``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

from vlp.kernels._dispatch import interpreter_active

__all__ = ["DotMode", "device_guard", "dot_mode", "kernel_flags", "policy_name"]

DotMode = Literal["ieee", "tf32", "bf16", "native"]

_FP32_MODES: dict[str, DotMode] = {"highest": "ieee", "high": "tf32", "medium": "bf16"}


def dot_mode(dtype: torch.dtype) -> DotMode:
    """How ``tl.dot`` multiplies operands of ``dtype`` under the current policy.

    Returns ``"ieee"``, ``"tf32"`` or ``"bf16"`` for fp32 (from
    ``torch.get_float32_matmul_precision()``) and ``"native"`` for fp16/bf16.

    Raises:
        TypeError: for any other dtype (float64 never reaches a kernel).
    """
    if dtype == torch.float32:
        return _FP32_MODES[torch.get_float32_matmul_precision()]
    if dtype in (torch.float16, torch.bfloat16):
        return "native"
    raise TypeError(f"Triton kernels take fp32, fp16 or bf16 inputs, got {dtype}")


def policy_name(dtype: torch.dtype) -> str:
    """The row of the tolerance table that applies to ``dtype`` now.

    ``"float32-highest"``, ``"float32-high"``, ``"float32-medium"``, ``"float16"`` or
    ``"bfloat16"`` (the keys of ``vlp.testing.KERNEL_TOLERANCES``).
    """
    if dtype == torch.float32:
        return f"float32-{torch.get_float32_matmul_precision()}"
    return str(dtype).removeprefix("torch.")


def kernel_flags(dtype: torch.dtype) -> dict[str, Any]:
    """The constexpr launch arguments every kernel takes for inputs of ``dtype``.

    ``DOT``: the dot mode; ``OP``: the operand dtype of ``tl.dot`` for ``"native"``
    (``tl.float16``/``tl.bfloat16``); ``INTERP``: whether the interpreter runs the
    kernel (bf16 then loads as fp32 and rounds with bit arithmetic).
    """
    import triton.language as tl

    op = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, tl.float32)
    return {"DOT": dot_mode(dtype), "OP": op, "INTERP": interpreter_active()}


@contextlib.contextmanager
def device_guard(tensor: torch.Tensor) -> Iterator[None]:
    """Make ``tensor``'s CUDA device current for a launch (a no-op on the CPU).

    Triton launches on the current device; without this guard a tensor on ``cuda:1``
    would be read by a kernel launched on ``cuda:0``.
    """
    if tensor.is_cuda:
        with torch.cuda.device(tensor.device):
            yield
    else:
        yield
