"""Benchmark few-query cross-attention: vlp Triton vs PyTorch SDPA vs the eager reference.

COSMOS shapes: B samples, H = 12 heads of d = 64, Q query views (1-80) over S = 197 image
tokens or 77 text tokens. On CUDA every SDPA backend that accepts the shape is timed
(flash, efficient, cudnn, math) and the best is the baseline. ``bytes_min`` counts each
input read once and each output written once; ``bw_frac`` divides by the H100's measured
3.0 TB/s (performance spec, section 4.2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import (
    add_rates,
    environment,
    peak_memory,
    run_isolated,
    time_fn,
    write_rows,
)


def _impl(name: str) -> Any:
    from vlp.kernels.attention import attention, attention_reference

    if name == "vlp-triton":
        return lambda q, k, v: attention(q, k, v, backend="triton")
    if name == "eager":
        return attention_reference
    if name.startswith("sdpa"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {
            "sdpa-flash": SDPBackend.FLASH_ATTENTION,
            "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
            "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa-math": SDPBackend.MATH,
            "sdpa": None,
        }[name]

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)

        return run
    raise ValueError(name)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    device, dtype = case["device"], getattr(torch, case["dtype"])
    b, h, q, s, d = case["b"], case["h"], case["q"], case["s"], case["d"]
    g = torch.Generator().manual_seed(0)
    qq = torch.randn(b, h, q, d, generator=g).to(device, dtype).requires_grad_()
    k = torch.randn(b, h, s, d, generator=g).to(device, dtype).requires_grad_()
    v = torch.randn(b, h, s, d, generator=g).to(device, dtype).requires_grad_()
    fn = _impl(case["impl"])
    grad = torch.randn(b, h, q, d, generator=g).to(device, dtype)

    def fwd() -> None:
        with torch.no_grad():
            fn(qq, k, v)

    def fwd_bwd() -> None:
        out = fn(qq, k, v)
        torch.autograd.grad(out, [qq, k, v], grad)

    step = fwd_bwd if case["direction"] == "fwd+bwd" else fwd
    step()
    mem = peak_memory(step, device)
    timing = time_fn(step, device, warmup=1, reps=case.get("reps", 20))
    esize = torch.finfo(dtype).bits // 8
    n_in = b * h * (q + 2 * s) * d
    n_out = b * h * q * d
    bytes_min = (n_in + n_out) * esize
    if case["direction"] == "fwd+bwd":
        bytes_min = bytes_min * 2 + n_in * esize  # read inputs + dO, write dQ, dK, dV
    row = {**environment(device), **case, **timing, "peak_mem_bytes": mem, "bytes_min": bytes_min}
    add_rates(row, bytes_min=bytes_min)
    return row


def presets(name: str) -> list[dict[str, Any]]:
    if name == "cpu":
        return [
            {"b": 32, "h": 12, "q": q, "s": s, "d": 64, "dtype": "float32", "device": "cpu",
             "direction": "fwd+bwd", "impl": impl, "reps": 5}
            for q, s in ((1, 197), (16, 197), (8, 77))
            for impl in ("eager", "sdpa")
        ]  # fmt: skip
    if name == "cuda":
        impls = ("vlp-triton", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "eager")
        return [
            {"b": 256, "h": 12, "q": q, "s": s, "d": 64, "dtype": "bfloat16", "device": "cuda",
             "direction": direction, "impl": impl}
            for q, s in ((1, 197), (2, 197), (8, 197), (16, 197), (80, 197), (1, 77), (8, 77))
            for direction in ("fwd", "fwd+bwd")
            for impl in impls
        ]  # fmt: skip
    if name == "gpu-check":  # COSMOS pooler shapes (issue 13), sized for gpu_check.sh
        impls = ("vlp-triton", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn")
        return [
            {"b": 512, "h": 8, "q": q, "s": 196, "d": 64, "dtype": "bfloat16", "device": "cuda",
             "direction": "fwd+bwd", "impl": impl}
            for q in (4, 16)
            for impl in impls
        ]  # fmt: skip
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case")
    parser.add_argument("--preset", default="cpu", choices=["cpu", "cuda", "gpu-check"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    rows = []
    for case in presets(args.preset):
        row = run_isolated("benchmarks.attention", case)
        rows.append(row)
        keys = ("impl", "q", "s", "direction", "t_median_ms", "peak_mem_bytes", "bw_frac", "error")
        print(json.dumps({k: row[k] for k in keys if k in row}))
    write_rows(
        rows, args.out or Path(__file__).parent / "results" / f"attention_{args.preset}.json"
    )


if __name__ == "__main__":
    main()
