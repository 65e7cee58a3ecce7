"""Block-size arithmetic shared by the Triton launchers."""

from __future__ import annotations

__all__ = ["next_pow2"]


def next_pow2(x: int) -> int:
    """The smallest power of two ``>= x``, for ``x >= 1`` (Triton block sides are powers of two)."""
    return 1 << max(0, (x - 1).bit_length())
