"""A one-line Triton kernel around ``round_bf16`` (a module, so the jit sees its globals)."""
# mypy: ignore-errors

import triton
import triton.language as tl

from vlp.kernels._triton_common import round_bf16


@triton.jit
def round_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    tl.store(y_ptr + r, round_bf16(tl.load(x_ptr + r, mask=r < n)), mask=r < n)
