"""Shared benchmark machinery: environment record, timing, peak memory, JSON rows.

Every row carries the metric set of the performance spec (section 4): device name,
versions, git sha, op, implementation, shape, dtype, direction, median/p20/p80 time,
peak memory, and -- on CUDA -- the fraction of the device's measured ceilings.

CPU peak memory is the growth of the process's peak resident set size while the op
runs, measured in a fresh subprocess per case (so that earlier cases cannot hide it).
CUDA peak memory is ``torch.cuda.max_memory_allocated`` above the inputs.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: Measured ceilings of the lent GPUs: the H100 from the performance spec (section 2.1), the
#: H200 from the device tool's notes (a device-to-device copy at 4.3 TB/s counting reads and
#: writes, an 8192^3 bf16 matmul at 788 TFLOP/s on random data). Keys match the device name.
CEILINGS: dict[str, dict[str, float]] = {
    "H200": {"bw_bytes_per_s": 4.3e12, "bf16_flops": 788e12},
    "H100": {"bw_bytes_per_s": 3.0e12, "bf16_flops": 798e12, "tf32_flops": 494.7e12},
}


def ceilings(device_name: str) -> dict[str, float]:
    """The measured ceilings of the GPU named ``device_name`` (empty when unknown or a CPU)."""
    for key, values in CEILINGS.items():
        if key in device_name:
            return values
    return {}


def add_rates(
    row: dict[str, Any], *, bytes_min: float | None = None, flops: float | None = None
) -> None:
    """Add achieved bandwidth / FLOP/s to ``row`` and, on a known GPU, their ceiling fractions.

    ``row`` must hold ``device``, ``device_name``, ``dtype`` and ``t_median_ms``. Bandwidth is
    compared with the measured copy bandwidth (``bw_frac``); FLOP/s with the bf16 matrix rate
    for bfloat16 rows and the tf32 rate otherwise (``tflops_frac``), where one is known.
    """
    seconds = row["t_median_ms"] * 1e-3
    ceiling = ceilings(row["device_name"]) if row["device"] == "cuda" else {}
    if bytes_min is not None:
        row["achieved_bytes_per_s"] = bytes_min / seconds
        if "bw_bytes_per_s" in ceiling:
            row["bw_frac"] = bytes_min / seconds / ceiling["bw_bytes_per_s"]
    if flops is not None:
        row["achieved_tflops"] = flops / seconds / 1e12
        peak = ceiling.get("bf16_flops" if row["dtype"] == "bfloat16" else "tf32_flops")
        if peak:
            row["tflops_frac"] = flops / seconds / peak


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except Exception:
        return "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_sha": git_sha(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    return env


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], Any], device: str, *, warmup: int = 1, reps: int = 5
) -> dict[str, float]:
    """Median, p20 and p80 wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return {"t_median_ms": statistics.median(times), "t_p20_ms": q[0], "t_p80_ms": q[3]}


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark (VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], Any], device: str) -> int:
    """Peak memory (bytes) the call adds above what was allocated before it.

    On CPU this is the growth of the resident set's high-water mark during the call,
    after a reset. ``run_isolated`` sets ``MALLOC_MMAP_THRESHOLD_`` so that glibc serves
    every large block with mmap and returns it on free: the resident set then tracks the
    live tensors, and a warm-up call cannot leave a cache that hides the next call's
    allocations. Call it after a warm-up so one-time allocations are not counted.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    reset_peak_rss()
    base = current_rss_bytes()
    fn()
    return max(0, peak_rss_bytes() - base)


def run_isolated(module: str, case: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m <module> --case '<json>'`` in a fresh process; return its JSON row."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    proc = subprocess.run(
        [sys.executable, "-m", module, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {**case, "error": f"exit {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
