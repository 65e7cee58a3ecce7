"""``@triton.jit`` helpers shared by every kernel: the precision policy of ``_precision``.

Imported only when a Triton path runs. ``DOT``, ``OP`` and ``INTERP`` are the constexpr
flags of :func:`vlp.kernels._precision.kernel_flags`.
"""
# mypy: ignore-errors

import triton
import triton.language as tl


@triton.jit
def round_bf16(x):
    """fp32 -> nearest bf16 (ties to even) -> fp32, with integer arithmetic.

    The interpreter truncates on ``.to(tl.bfloat16)``; the GPU rounds to nearest even.
    This reproduces the GPU's rounding everywhere (infinities stay infinite).
    """
    bits = x.to(tl.float32).to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def load_operand(x, DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr):
    """A loaded input tile in the form ``tl.dot`` takes under the policy."""
    if DOT == "native":
        if INTERP and tl.bfloat16 == OP:
            return x.to(tl.float32)  # exact: bf16 values are fp32 values
        else:
            return x
    elif DOT == "bf16":
        if INTERP:
            return round_bf16(x)
        else:
            return x.to(tl.bfloat16)
    else:
        return x


@triton.jit
def cast_operand(x, DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr):
    """An fp32 intermediate (probabilities, logit gradients) rounded for a second product."""
    if DOT == "native":
        if INTERP and tl.bfloat16 == OP:
            return round_bf16(x)
        else:
            return x.to(OP)
    elif DOT == "bf16":
        if INTERP:
            return round_bf16(x)
        else:
            return x.to(tl.bfloat16)
    else:
        return x


@triton.jit
def mma(a, b, acc, DOT: tl.constexpr):
    """``acc + a @ b`` with fp32 accumulation, in the dot mode of the policy."""
    if DOT == "ieee":
        return tl.dot(a, b, acc, input_precision="ieee")
    elif DOT == "tf32":
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, acc)
