"""Count the matrix-product work Triton kernels issue under the interpreter.

:func:`count_dots` wraps the interpreter's ``tl.dot`` (``InterpreterBuilder.create_dot``)
and sums ``2 * m * n * k`` over every product it executes, padded tiles included: the
work a GPU would issue for the same launch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class DotWork:
    flops: int = 0
    calls: int = 0


@contextlib.contextmanager
def count_dots() -> Iterator[DotWork]:
    from triton.runtime.interpreter import InterpreterBuilder

    work = DotWork()
    original = InterpreterBuilder.create_dot

    def counting(self, a, b, d, *args, **kwargs):  # type: ignore[no-untyped-def]
        *_, m, k = a.data.shape
        n = b.data.shape[-1]
        work.flops += 2 * m * n * k
        work.calls += 1
        return original(self, a, b, d, *args, **kwargs)

    InterpreterBuilder.create_dot = counting  # type: ignore[method-assign]
    try:
        yield work
    finally:
        InterpreterBuilder.create_dot = original  # type: ignore[method-assign]
