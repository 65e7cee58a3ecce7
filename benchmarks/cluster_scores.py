"""Benchmark cluster-masking scoring: seed-style eager vs vlp's torch path vs the Triton kernel.

Shapes: B images of 224 x 224 (ViT-B/16: L = 196 patches of P = 768 values), K = 6
anchors (3%). Implementations:

- ``seed-eager``: what the released code does per step: normalise every patch, build
  the full ``(B, L, L)`` cosine-similarity matrix, take the anchor rows, threshold,
  sort the keep keys and read the batch's kept length back to the host (``.item()``);
- ``vlp-torch``: :func:`vlp.masking.cluster_scores` (``backend="torch"``: only the
  ``(B, K, L)`` anchor rows), threshold and :func:`vlp.masking.select_kept_tokens`
  (static length, no host sync);
- ``vlp-triton``: the same with the fused kernel (CUDA only; skipped rows otherwise).

``op="scores"`` times the scores alone, ``op="mask"`` scores + threshold + kept slots.
``bytes_min`` counts the image read once plus the outputs; on an H100 ``bw_frac``
divides by its measured 3.0 TB/s.

    python -m benchmarks.cluster_scores --preset cpu
    python -m benchmarks.cluster_scores --preset cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    add_rates,
    environment,
    peak_memory,
    run_isolated,
    time_fn,
    write_rows,
)


def seed_style_mask(
    images: torch.Tensor, anchors: torch.Tensor, threshold: float, min_ratio: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager scoring as the released code does it (patch 16, square images, L x L).

    Returns the kept indices and the anchor scores. Written for the benchmark only.
    """
    b, c, h, w = images.shape
    p = 16
    x = (
        images.reshape(b, c, h // p, p, w // p, p)
        .permute(0, 2, 4, 3, 5, 1)
        .reshape(b, -1, p * p * c)
    )
    x = (x - x.mean(dim=-1, keepdim=True)) / (x.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    norm = x.norm(dim=-1)
    sim = torch.einsum("bid,bjd->bij", x, x) / (norm.unsqueeze(2) * norm.unsqueeze(1))  # (B, L, L)
    rows = sim.gather(1, anchors.unsqueeze(-1).expand(-1, -1, sim.shape[-1]))  # (B, K, L)
    scores = rows.amax(dim=1)
    masked = scores > threshold
    num = masked.shape[1]
    cap = int(num * (1 - min_ratio))
    visible = (~masked).sum(dim=1)
    kept = min(cap, int(visible.max().item()))  # the host sync
    key = torch.where(masked, torch.rand_like(scores).exp(), torch.zeros_like(scores))
    return key.argsort(dim=1)[:, :kept], scores


def _impl(name: str, op: str) -> Any:
    from vlp.masking import cluster_scores, select_kept_tokens

    if name == "seed-eager":
        return lambda x, a: seed_style_mask(x, a, 0.5)
    backend = {"vlp-torch": "torch", "vlp-triton": "triton"}[name]
    if op == "scores":
        return lambda x, a: cluster_scores(x, a, 16, backend=backend)

    def mask(x: torch.Tensor, a: torch.Tensor) -> Any:
        scores = cluster_scores(x, a, 16, backend=backend)
        return select_kept_tokens(scores > 0.5)

    return mask


def _count_syncs(fn: Any, device: str) -> int | None:
    """Host synchronisations in one call (CUDA's sync debug mode), None on the CPU."""
    if device != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            torch.cuda.synchronize()  # not counted: outside the op, and not a warning
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    device, dtype = case["device"], getattr(torch, case["dtype"])
    b, size, k = case["b"], case["size"], case["k"]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, size, size, generator=g).to(device, dtype)
    num = (size // 16) ** 2
    anchors = torch.rand(b, num, generator=g).argsort(dim=1)[:, :k].to(device)
    fn = _impl(case["impl"], case["op"])

    def step() -> None:
        with torch.no_grad():
            fn(images, anchors)

    step()
    mem = peak_memory(step, device)
    timing = time_fn(step, device, warmup=1, reps=case.get("reps", 20))
    esize = torch.finfo(dtype).bits // 8
    bytes_min = images.numel() * esize + anchors.numel() * 8 + b * num * 4
    row = {
        **environment(device),
        **case,
        **timing,
        "peak_mem_bytes": mem,
        "bytes_min": bytes_min,
        "host_syncs": _count_syncs(step, device),
        "flops_useful": 2 * b * k * num * 3 * 256,
    }
    add_rates(row, bytes_min=bytes_min)
    return row


def presets(name: str) -> list[dict[str, Any]]:
    base = {"size": 224, "k": 6}
    if name in ("cpu", "cpu-small"):
        return [
            {**base, "b": 256 if name == "cpu" else 32, "dtype": "float32", "device": "cpu",
             "op": op, "impl": impl, "reps": 3}
            for op, impls in (("mask", ("seed-eager", "vlp-torch", "vlp-triton")),
                              ("scores", ("vlp-torch", "vlp-triton")))
            for impl in impls
        ]  # fmt: skip
    if name == "cuda":
        return [
            {**base, "b": b, "dtype": dtype, "device": "cuda", "op": op, "impl": impl}
            for b in (256, 1024)
            for dtype in ("float32", "bfloat16")
            for op, impls in (("mask", ("seed-eager", "vlp-torch", "vlp-triton")),
                              ("scores", ("vlp-torch", "vlp-triton")))
            for impl in impls
        ]  # fmt: skip
    if name == "gpu-check":  # issue 13's bandwidth target, sized for gpu_check.sh
        return [
            {**base, "b": 256, "dtype": dtype, "device": "cuda", "op": "scores", "impl": impl}
            for dtype in ("float32", "bfloat16")
            for impl in ("vlp-torch", "vlp-triton")
        ]  # fmt: skip
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case")
    parser.add_argument(
        "--preset", default="cpu", choices=["cpu", "cpu-small", "cuda", "gpu-check"]
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    rows = []
    for case in presets(args.preset):
        if case["impl"] == "vlp-triton" and not torch.cuda.is_available():
            row = {**case, "skipped": "the Triton kernel runs on CUDA only (no GPU here)"}
        else:
            row = run_isolated("benchmarks.cluster_scores", case)
        rows.append(row)
        keys = ("op", "impl", "b", "dtype", "t_median_ms", "peak_mem_bytes", "host_syncs",
                "bw_frac", "skipped", "error")  # fmt: skip
        print(json.dumps({k: row[k] for k in keys if k in row}), flush=True)
    write_rows(
        rows, args.out or Path(__file__).parent / "results" / f"cluster_scores_{args.preset}.json"
    )


if __name__ == "__main__":
    main()
