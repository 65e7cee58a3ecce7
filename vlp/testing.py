"""Helpers for testing vlp components (and your own): tolerant comparisons and gloo process pools.

``assert_close`` compares with a per-dtype tolerance table and, on failure, reports
how many elements mismatch, the worst index and any NaN/inf, instead of a bare
"not close". ``run_distributed`` runs a function in spawned ``gloo`` processes
on the CPU, the way the test suite checks every distributed path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "KERNEL_TOLERANCES",
    "TOLERANCES",
    "assert_close",
    "assert_kernel_close",
    "kernel_tolerance",
    "mismatch_report",
    "run_distributed",
    "triton_runnable",
]

#: (rtol, atol) per dtype. float64 is used for reference parity (the 1e-6 target has
#: margin), float32 for kernels vs references, half types for low-precision kernels
#: compared against an fp32 reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


#: (rtol, atol) of a fused kernel's output or gradient against a float64 reference computed
#: from the same (already rounded) inputs, per input dtype and precision policy (the keys of
#: :func:`vlp.kernels._precision.policy_name`; see docs/kernels.md). ``atol`` applies to
#: values of order one: scale it for sums over many terms. fp32 follows
#: ``torch.get_float32_matmul_precision()``: exact fp32 products, TF32 (10-bit mantissa,
#: relative rounding 2^-11 per operand) or bf16 operands (8-bit mantissa, 2^-8); fp16/bf16
#: inputs also round the intermediates of the second product (probabilities, logit
#: gradients) and the output to the input dtype.
KERNEL_TOLERANCES: dict[str, tuple[float, float]] = {
    "float32-highest": (1e-5, 1e-5),
    "float32-high": (2e-3, 2e-3),
    "float32-medium": (1.6e-2, 1.6e-2),
    "float16": (5e-3, 5e-3),
    "bfloat16": (3e-2, 3e-2),
}


def mismatch_report(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float
) -> str | None:
    """Describe where ``actual`` differs from ``expected`` beyond tolerance, or ``None``."""
    if actual.shape != expected.shape:
        return f"shape mismatch: actual {tuple(actual.shape)} vs expected {tuple(expected.shape)}"
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    a_nonfinite = ~torch.isfinite(a)
    e_nonfinite = ~torch.isfinite(e)
    lines = []
    # Non-finite values must match exactly (same NaN positions, same infinities).
    same_nonfinite = (a_nonfinite == e_nonfinite) & (torch.isnan(a) == torch.isnan(e))
    same_nonfinite &= torch.where(
        a_nonfinite & ~torch.isnan(a), a == e, torch.ones_like(a_nonfinite)
    )
    if not bool(same_nonfinite.all()):
        lines.append(
            f"non-finite values differ: actual has {int(torch.isnan(a).sum())} NaN and "
            f"{int(torch.isinf(a).sum())} inf, expected {int(torch.isnan(e).sum())} NaN and "
            f"{int(torch.isinf(e).sum())} inf"
        )
    finite = ~a_nonfinite & ~e_nonfinite
    diff = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    allowed = atol + rtol * e.abs()
    bad = finite & (diff > allowed)
    if bool(bad.any()):
        excess = torch.where(bad, diff - allowed, torch.full_like(diff, -1.0))
        flat = int(excess.flatten().argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
        rel = diff.flatten()[flat] / e.abs().flatten()[flat].clamp_min(1e-300)
        lines.append(
            f"{int(bad.sum())} of {a.numel()} elements differ beyond rtol={rtol:g}, atol={atol:g}; "
            f"worst at index {idx}: actual {a.flatten()[flat].item():.10g}, expected "
            f"{e.flatten()[flat].item():.10g} (abs diff {diff.flatten()[flat].item():.3g}, "
            f"rel diff {rel.item():.3g}); max abs diff overall {diff.max().item():.3g}"
        )
    return "\n".join(lines) or None


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | None = None,
    msg: str = "",
) -> None:
    """Assert that two tensors agree within the tolerance of ``dtype``.

    Args:
        actual: the tensor under test.
        expected: the reference (compared in float64 on the CPU).
        rtol: relative tolerance; defaults to ``TOLERANCES[dtype][0]``.
        atol: absolute tolerance; defaults to ``TOLERANCES[dtype][1]``.
        dtype: the dtype whose tolerances apply; defaults to the lower precision
            of the two inputs.
        msg: prefix for the failure message.

    Raises:
        AssertionError: with the count of mismatches, the worst index and NaN/inf counts.
    """
    if dtype is None:
        order = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
        ranks = [order.index(t.dtype) if t.dtype in order else 3 for t in (actual, expected)]
        dtype = order[min(ranks)]
    default_rtol, default_atol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    report = mismatch_report(
        actual,
        expected,
        default_rtol if rtol is None else rtol,
        default_atol if atol is None else atol,
    )
    if report is not None:
        raise AssertionError(f"{msg + ': ' if msg else ''}{report}")


def _worker(
    rank: int,
    world_size: int,
    init_file: str,
    out_dir: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    timeout: float | None = None,
) -> None:
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=None if timeout is None else datetime.timedelta(seconds=timeout),
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float | None = None
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned gloo processes.

    ``fn`` must be importable by the children (defined at module level) and return
    something ``torch.save`` can store. The default process group is initialised
    before ``fn`` runs and destroyed after. ``timeout`` (seconds) is the process group's
    timeout: a collective that waits longer raises instead of blocking (torch's default
    is 30 minutes), which fault tests use to turn a hang into a failure.

    Returns:
        The per-rank return values, in rank order.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "init")
        mp.spawn(  # type: ignore[attr-defined,no-untyped-call]
            _worker,
            args=(world_size, init_file, tmp, fn, args, timeout),
            nprocs=world_size,
            join=True,
        )
        return [
            torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)
        ]


def triton_runnable() -> bool:
    """Whether Triton kernels can run here: compiled on CUDA, or under ``TRITON_INTERPRET=1``.

    Tests of ``backend="triton"`` paths use it as a skip condition; in CI (Triton
    installed with torch, interpreter on) it is always true, so they always run.
    """
    from vlp.kernels import interpreter_active, triton_available

    return triton_available() and (interpreter_active() or torch.cuda.is_available())


def kernel_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` of :data:`KERNEL_TOLERANCES` for inputs of ``dtype``.

    fp32 takes the row of the current ``torch.get_float32_matmul_precision()``; float64
    gets the float64 reference tolerance.
    """
    if dtype == torch.float64:
        return TOLERANCES[torch.float64]
    from vlp.kernels._precision import policy_name

    return KERNEL_TOLERANCES[policy_name(dtype)]


def assert_kernel_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    *,
    scale: float = 1.0,
    msg: str = "",
) -> None:
    """Assert a kernel result against a float64 reference with the kernel tolerance table.

    Args:
        actual: the kernel's output or gradient (any device).
        expected: the reference (compared in float64 on the CPU).
        dtype: the kernel's input dtype; with the current fp32 matmul precision it picks
            the row of :data:`KERNEL_TOLERANCES`.
        scale: multiplies ``atol`` (for values of magnitude ``scale``).
        msg: prefix for the failure message.
    """
    rtol, atol = kernel_tolerance(dtype)
    report = mismatch_report(actual, expected, rtol, atol * scale)
    if report is not None:
        policy = f"{dtype}, fp32 precision {torch.get_float32_matmul_precision()!r}"
        raise AssertionError(f"{msg + ': ' if msg else ''}[{policy}] {report}")
