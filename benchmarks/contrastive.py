"""Benchmark the contrastive losses: vlp (chunked torch, Triton) vs open_clip vs dense eager.

Each case runs in a fresh subprocess (``--case JSON``) so that its peak memory is its
own. ``python benchmarks/contrastive.py --preset cpu`` runs the CPU comparison of the
issue (chunked ``clip_loss`` fwd+bwd vs open_clip's ``ClipLoss`` at N = 16,384 and
32,768, D = 512); ``--preset cuda`` the GPU sweep (needs a GPU).
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

IMPLS = {
    "clip": ("vlp-chunked", "vlp-triton", "vlp-dense", "open_clip", "compile-dense"),
    "siglip": ("vlp-chunked", "vlp-triton", "vlp-dense", "open_clip", "compile-dense"),
}


def _loss_fn(op: str, impl: str, chunk: int) -> Any:
    import vlp

    if impl.startswith("vlp"):
        if op == "clip":
            kwargs: dict[str, Any] = {}
            if impl == "vlp-chunked":
                kwargs = {"chunk_size": chunk, "backend": "torch"}
            elif impl == "vlp-triton":
                kwargs = {"chunk_size": chunk, "backend": "triton"}
            return lambda a, b, s, bias: vlp.losses.clip_loss(a, b, s, **kwargs)
        kwargs = {"chunk_size": chunk} if impl != "vlp-dense" else {}
        if impl == "vlp-triton":
            kwargs["backend"] = "triton"
        return lambda a, b, s, bias: vlp.losses.siglip_loss(a, b, s, bias, **kwargs)
    if impl == "open_clip":
        import open_clip.loss as ocl

        if op == "clip":
            clip = ocl.ClipLoss()
            return lambda a, b, s, bias: clip(F.normalize(a, dim=-1), F.normalize(b, dim=-1), s)
        sig = ocl.SigLipLoss()
        return lambda a, b, s, bias: sig(F.normalize(a, dim=-1), F.normalize(b, dim=-1), s, bias)
    if impl == "compile-dense":
        import vlp

        fn = vlp.losses.clip_loss if op == "clip" else vlp.losses.siglip_loss
        compiled = torch.compile(fn, dynamic=False)
        if op == "clip":
            return lambda a, b, s, bias: compiled(a, b, s)
        return lambda a, b, s, bias: compiled(a, b, s, bias)
    raise ValueError(f"unknown impl {impl!r}")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    # Both libraries are imported in every case before anything is measured, so that
    # neither side's figures include (or miss) the other's import-time state.
    import open_clip.loss  # noqa: F401

    import vlp  # noqa: F401

    device = case["device"]
    dtype = getattr(torch, case["dtype"])
    n, d = case["n"], case["d"]
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    b = torch.randn(n, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    scale = torch.tensor(1 / 0.07, device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)
    fn = _loss_fn(case["op"], case["impl"], case.get("chunk", 1024))

    def fwd() -> None:
        with torch.no_grad():
            fn(a, b, scale, bias)

    def fwd_bwd() -> None:
        loss = fn(a, b, scale, bias)
        loss.backward()
        a.grad = b.grad = scale.grad = bias.grad = None

    step = fwd_bwd if case["direction"] == "fwd+bwd" else fwd
    step()  # warm-up: one-time allocations are not the op's memory
    mem = peak_memory(step, device)
    timing = time_fn(step, device, warmup=0, reps=case.get("reps", 3))
    row = {**environment(device), **case, **timing, "peak_mem_bytes": mem}
    row["mem_vs_NxN_fp32"] = mem / (4 * n * n)
    flops = (2 if case["direction"] == "fwd" else 6) * n * n * d
    row["flops_useful"] = flops
    add_rates(row, flops=flops)
    return row


def presets(name: str) -> list[dict[str, Any]]:
    if name == "cpu":
        cases = []
        for n in (16384, 32768):
            for impl in ("vlp-chunked", "open_clip"):
                cases.append(
                    {"op": "clip", "impl": impl, "n": n, "d": 512, "dtype": "float32",
                     "device": "cpu", "direction": "fwd+bwd", "chunk": 1024, "reps": 2}
                )  # fmt: skip
        return cases
    if name == "cpu-16k":
        # Issue 14 item 5: chunked clip_loss (chunk 1024) vs open_clip at N = 16,384, D = 512.
        return [
            {"op": "clip", "impl": impl, "n": 16384, "d": 512, "dtype": "float32",
             "device": "cpu", "direction": "fwd+bwd", "chunk": 1024, "reps": 2}
            for impl in ("vlp-chunked", "open_clip")
        ]  # fmt: skip
    if name == "cpu-small":
        return [
            {"op": op, "impl": impl, "n": 2048, "d": 256, "dtype": "float32", "device": "cpu",
             "direction": "fwd+bwd", "chunk": 512, "reps": 3}
            for op in ("clip", "siglip") for impl in ("vlp-chunked", "vlp-dense", "open_clip")
        ]  # fmt: skip
    if name == "cuda":
        cases = []
        for op in ("clip", "siglip"):
            for n in (8192, 32768, 65536):
                for dtype in ("bfloat16", "float32"):
                    for impl in IMPLS[op]:
                        if impl in ("vlp-dense", "open_clip", "compile-dense") and n > 32768:
                            continue  # the dense paths need several N x N matrices
                        cases.append(
                            {"op": op, "impl": impl, "n": n, "d": 512, "dtype": dtype,
                             "device": "cuda", "direction": "fwd+bwd", "chunk": 4096, "reps": 10}
                        )  # fmt: skip
        return cases
    if name == "gpu-check":  # issue 13's targets, sized for benchmarks/gpu_check.sh
        return [
            {"op": op, "impl": impl, "n": 65536, "d": 768, "dtype": "bfloat16", "device": "cuda",
             "direction": "fwd+bwd", "chunk": 4096, "reps": 5}
            for op, impls in (("clip", ("vlp-triton", "open_clip")), ("siglip", ("vlp-triton",)))
            for impl in impls
        ]  # fmt: skip
    raise ValueError(f"unknown preset {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", help="run one case given as JSON and print its row")
    parser.add_argument(
        "--preset",
        default="cpu-small",
        choices=["cpu", "cpu-16k", "cpu-small", "cuda", "gpu-check"],
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    rows = []
    for case in presets(args.preset):
        row = run_isolated("benchmarks.contrastive", case)
        rows.append(row)
        summary = {k: row.get(k) for k in ("op", "impl", "n", "d", "t_median_ms", "peak_mem_bytes")}
        print(
            json.dumps(summary if "error" not in row else {**summary, "error": row["error"][-300:]})
        )
    out = args.out or Path(__file__).parent / "results" / f"contrastive_{args.preset}.json"
    write_rows(rows, out)


if __name__ == "__main__":
    main()
