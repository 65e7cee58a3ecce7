"""Offline compile report: every vlp Triton kernel compiled for sm_80 and sm_90, no GPU.

``python -m benchmarks.compile_report`` calls the kernels' real launchers
(``lse_forward_triton``, ``attention_backward_triton``, ...) on ``meta`` tensors over the
shape/dtype matrix of issue 13, records every launch instead of running it, and compiles
each distinct launch with Triton's own ahead-of-time path (the argument specialisation of
``JITFunction.run``, then ``triton.compile`` for ``GPUTarget("cuda", 80|90, 32)``). The
launchers see the target's SM count and shared-memory limit, so the tiles are the ones
they would pick on an A100 / H100. For each compile it writes shared memory (Triton's
metadata), registers and spill bytes (``ptxas -v`` on the PTX; Triton bundles ptxas),
tensor-core instructions in the PTX (``mma.sync`` on sm_80, ``wgmma.mma_async`` on sm_90),
scalar ``fma.rn.f32`` count, warps and stages, to ``benchmarks/results/compile_report.json``.

Clean means: no compile failure, shared memory within each target's limit, no spills for
fp16/bf16 inputs. ``--subset fast`` / ``--subset test`` compile smaller matrices (the test
suite runs ``test``); ``--only OP`` keeps the ops whose name contains ``OP`` (e.g.
``--only cluster_scores``) and then writes to a temporary file unless ``--out`` is given,
so a partial run never replaces the committed report.
Run it without ``TRITON_INTERPRET`` (the interpreter replaces the kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"

#: name -> (compute capability, shared memory per block in bytes, SMs of the reference GPU)
TARGETS: dict[str, tuple[int, int, int]] = {
    "sm_80": (80, 163 * 1024, 108),  # A100
    "sm_90": (90, 227 * 1024, 132),  # H100 SXM
}

#: (label, dtype, fp32 matmul precision or None)
PRECISIONS: list[tuple[str, torch.dtype, str | None]] = [
    ("float32-highest", torch.float32, "highest"),
    ("float32-high", torch.float32, "high"),
    ("float32-medium", torch.float32, "medium"),
    ("float16", torch.float16, None),
    ("bfloat16", torch.bfloat16, None),
]


#: (op, shape, a function that runs the op's launchers for one dtype)
CaseList = list[tuple[str, dict[str, int], Callable[[torch.dtype], None]]]


@dataclass
class Launch:
    fn: Any  # triton JITFunction
    grid: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Case:
    op: str
    shape: dict[str, int]
    precision: str
    launches: list[Launch] = field(default_factory=list)


@contextlib.contextmanager
def _recording(sms: int, shared: int) -> Iterator[list[Launch]]:
    """Record ``kernel[grid](...)`` launches instead of running them; fake the device."""
    from triton.runtime.jit import JITFunction

    import vlp.kernels.attention as attention
    import vlp.kernels.contrastive as contrastive

    launches: list[Launch] = []

    def getitem(self: Any, grid: Any) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            launches.append(Launch(self, grid, args, kwargs))

        return record

    saved = (JITFunction.__getitem__, contrastive.sm_count, attention.shared_limit)
    JITFunction.__getitem__ = getitem  # type: ignore[method-assign,assignment]
    contrastive.sm_count = lambda device: sms  # type: ignore[assignment]
    attention.shared_limit = lambda device: shared  # type: ignore[assignment]
    try:
        yield launches
    finally:
        JITFunction.__getitem__ = saved[0]  # type: ignore[method-assign]
        contrastive.sm_count, attention.shared_limit = saved[1], saved[2]  # type: ignore[assignment]


@contextlib.contextmanager
def _fp32_precision(value: str | None) -> Iterator[None]:
    old = torch.get_float32_matmul_precision()
    if value is not None:
        torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def contrastive_cases(subset: str) -> CaseList:
    from vlp.kernels import contrastive as c

    def clip(n: int, m: int, d: int, local: bool) -> Callable[[torch.dtype], None]:
        def run(dtype: torch.dtype) -> None:
            a, b, s = _meta(n, d, dtype=dtype), _meta(m, d, dtype=dtype), _meta()
            lse_r, lse_c = c.lse_forward_triton(a, b, s, s, not local)
            c.lse_backward_triton(a, b, s, s, lse_r, lse_c, 0.5, 0.0 if local else 0.5)

        return run

    def siglip(n: int, m: int, d: int) -> Callable[[torch.dtype], None]:
        def run(dtype: torch.dtype) -> None:
            a, b, s = _meta(n, d, dtype=dtype), _meta(m, d, dtype=dtype), _meta()
            ids_a, ids_b = _meta(n, dtype=torch.int64), _meta(m, dtype=torch.int64)
            c.sigmoid_forward_triton(a, b, s, s, ids_a, ids_b, True)

        return run

    dims = [512, 768, 1024] if subset == "full" else [768]
    cases: CaseList = []
    for d in dims:
        shape = {"N": 32768, "M": 32768, "D": d}
        cases.append(("clip_loss", shape, clip(32768, 32768, d, local=False)))
        if subset != "test":
            cases.append(("siglip_loss", shape, siglip(32768, 32768, d)))
    if subset == "full":
        shape = {"N": 1024, "M": 32768, "D": 768}
        cases.append(("clip_loss local_loss", shape, clip(1024, 32768, 768, local=True)))
    return cases


def attention_cases(subset: str) -> CaseList:
    from vlp.kernels import attention as att

    def pooler(b: int, h: int, q: int, s: int, d: int) -> Callable[[torch.dtype], None]:
        def run(dtype: torch.dtype) -> None:
            qq, k, v = (_meta(b, h, n, d, dtype=dtype) for n in (q, s, s))
            mask = _meta(b, s, dtype=torch.bool)
            out, lse = att.attention_forward_triton(qq, k, v, mask)
            att.attention_backward_triton(out, qq, k, v, mask, out, lse)

        return run

    grid = {
        "full": [(q, s, d) for q in (4, 16, 64, 256) for s in (196, 577) for d in (64, 128)],
        "fast": [(16, 196, 64), (256, 577, 128)],
        "test": [(16, 196, 128)],
    }[subset]
    return [
        ("attention (COSMOS pooler)", {"B": 512, "H": 8, "Q": q, "S": s, "d": d},
         pooler(512, 8, q, s, d))
        for q, s, d in grid
    ]  # fmt: skip


def cluster_cases(subset: str) -> CaseList:
    from vlp.kernels.cluster_scores import _cluster_scores_triton

    def scores(b: int, px: int, patch: int, k: int) -> Callable[[torch.dtype], None]:
        def run(dtype: torch.dtype) -> None:
            images = _meta(b, 3, px, px, dtype=dtype)
            anchors = _meta(b, k, dtype=torch.int64)
            g = px // patch
            _cluster_scores_triton(images, anchors, (patch, patch), (g, g), 1e-6)

        return run

    configs = [(256, 224, 16, 6), (256, 336, 14, 17)] if subset == "full" else [(256, 224, 16, 6)]
    return [
        ("cluster_scores", {"B": b, "px": px, "patch": p, "K": k}, scores(b, px, p, k))
        for b, px, p, k in configs
    ]


def _ptxas_stats(ptx: str, capability: int) -> dict[str, int | None]:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    arch = sm_arch_from_capability(capability)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run(
            [get_ptxas(capability).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}",
             str(src), "-o", str(Path(tmp) / "k.cubin")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    log = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_store_bytes": int(stores.group(1)) if stores else None,
        "spill_load_bytes": int(loads.group(1)) if loads else None,
    }


def _compile(launch: Launch, capability: int) -> tuple[str, Callable[[], dict[str, Any]]]:
    """(dedup key, thunk compiling the launch for ``capability``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*launch.args, **launch.kwargs)
    opts, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound, spec, options)
    names = fn.arg_names
    readable = {names[k[0]]: str(v) for k, v in constexprs.items()}
    key = json.dumps(
        [fn.__name__, capability, signature, readable, str(attrs), opts.num_warps,
         opts.num_stages], sort_keys=True,
    )  # fmt: skip

    def run() -> dict[str, Any]:
        row: dict[str, Any] = {
            "kernel": fn.__name__, "num_warps": opts.num_warps, "num_stages": opts.num_stages,
            "constexprs": {k: v for k, v in readable.items()},
        }  # fmt: skip
        start = time.perf_counter()
        try:
            compiled = triton.compile(
                ASTSource(fn, signature, constexprs, attrs), target=target, options=opts.__dict__
            )
        except Exception as exc:  # a compile failure is a finding, not a crash
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
            return row
        ptx = compiled.asm["ptx"]
        row.update(
            ok=True,
            compile_s=round(time.perf_counter() - start, 2),
            shared_bytes=int(compiled.metadata.shared),
            mma_sync=len(re.findall(r"\bmma\.sync", ptx)),
            wgmma=len(re.findall(r"\bwgmma\.mma_async", ptx)),
            fma_f32=len(re.findall(r"\bfma\.rn\.f32", ptx)),
            vector_loads=len(re.findall(r"\bld\.global(?:\.[a-z0-9_:]+)*\.v[248]\.", ptx)),
            **_ptxas_stats(ptx, capability),
        )
        return row

    return key, run


#: precision labels per subset
SUBSET_PRECISIONS = {
    "full": [p[0] for p in PRECISIONS],
    "fast": ["float32-high", "bfloat16"],
    "test": ["bfloat16"],
}


_JOBS: list[tuple[Launch, int]] = []  # read by forked workers (no pickling of kernels)


def _run_job(index: int) -> dict[str, Any]:
    launch, capability = _JOBS[index]
    return _compile(launch, capability)[1]()


def _priority(label: str) -> int:
    # fp16/bf16 first (the clean criteria are about them), then the fp32 policies
    order = ["bfloat16", "float16", "float32-high", "float32-highest", "float32-medium"]
    return order.index(label)


def build_report(
    subset: str,
    log: Callable[[str], None] = print,
    *,
    jobs: int = 1,
    partial: Callable[[dict[str, Any]], None] | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Compile the matrix of ``subset`` (full, fast, test) and return the report.

    Every launch is recorded first; the distinct compiles (fp16/bf16 first) then run in
    ``jobs`` forked processes, and ``partial`` receives the report so far after each one.
    ``only``: keep the ops whose name contains one of these strings (all ops if None).
    """
    import concurrent.futures
    import multiprocessing

    import triton

    groups = [contrastive_cases(subset), attention_cases(subset), cluster_cases(subset)]
    if only:
        groups = [[case for case in group if any(o in case[0] for o in only)] for group in groups]
        if not any(groups):
            raise ValueError(f"--only {only} matches no op of the {subset!r} subset")
    precisions = [p for p in PRECISIONS if p[0] in SUBSET_PRECISIONS[subset]]
    keys: dict[str, int] = {}
    pending: list[tuple[int, dict[str, Any], str]] = []  # (job, row stub, label)
    _JOBS.clear()
    for target, (capability, shared, sms) in TARGETS.items():
        for group in groups:
            for op, shape, run in group:
                for label, dtype, fp32 in precisions:
                    if op == "cluster_scores" and label not in (
                        "float32-highest",
                        "float16",
                        "bfloat16",
                    ):
                        continue  # cluster scores always use exact fp32 products
                    with _fp32_precision(fp32), _recording(sms, shared) as launches:
                        run(dtype)
                    for launch in launches:
                        key, _ = _compile(launch, capability)
                        if key not in keys:
                            keys[key] = len(_JOBS)
                            _JOBS.append((launch, capability))
                        stub = {
                            "target": target, "shared_limit_bytes": shared, "op": op,
                            "shape": shape, "precision": label, "grid": list(launch.grid),
                        }  # fmt: skip
                        pending.append((keys[key], stub, label))
    first_label = {job: label for job, _, label in reversed(pending)}
    order = sorted(range(len(_JOBS)), key=lambda j: _priority(first_label[j]))
    results: dict[int, dict[str, Any]] = {}

    def report() -> dict[str, Any]:
        rows = [{**stub, **results[job]} for job, stub, _ in pending if job in results]
        return {
            "triton": triton.__version__, "torch": torch.__version__, "subset": subset,
            "only": only or None,
            "compiles_done": len(results), "compiles_total": len(_JOBS),
            "complete": len(results) == len(_JOBS), "rows": rows, "summary": summarize(rows),
        }  # fmt: skip

    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(_run_job, j): j for j in order}
        for future in concurrent.futures.as_completed(futures):
            j = futures[future]
            c = results[j] = future.result()
            log(
                f"[{len(results)}/{len(_JOBS)}] {TARGETS_BY_CAP[_JOBS[j][1]]} {c['kernel']:<18} "
                f"{first_label[j]:<16} shared={c.get('shared_bytes')} regs={c.get('registers')} "
                f"spill={c.get('spill_store_bytes')} mma={c.get('mma_sync')} "
                f"wgmma={c.get('wgmma')} ok={c['ok']}"
            )
            if partial is not None:
                partial(report())
    return report()


TARGETS_BY_CAP = {cap: name for name, (cap, _, _) in TARGETS.items()}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of failures, shared-memory overruns and spills (half types must have none)."""
    failures = [r for r in rows if not r["ok"]]
    ok = [r for r in rows if r["ok"]]
    over = [r for r in ok if r["shared_bytes"] > r["shared_limit_bytes"]]
    half_spills = [
        r for r in ok if r["precision"] in ("float16", "bfloat16") and r["spill_store_bytes"]
    ]
    fp32_spills = [r for r in ok if r["precision"].startswith("float32") and r["spill_store_bytes"]]

    def ident(r: dict[str, Any]) -> str:
        return f"{r['target']} {r['kernel']} {r['precision']} {r['shape']}"

    per_target = {
        t: {
            "max_shared_bytes": max((r["shared_bytes"] for r in ok if r["target"] == t), default=0),
            "limit_bytes": TARGETS[t][1],
            "max_registers": max((r["registers"] or 0 for r in ok if r["target"] == t), default=0),
        }
        for t in TARGETS
    }
    no_tensor_cores = sorted({
        f"{r['target']} {r['kernel']} {r['precision']}" for r in ok
        if not r["precision"].endswith("highest") and r["precision"] != "float32-highest"
        and r["op"] != "cluster_scores" and r["mma_sync"] + r["wgmma"] == 0
    })  # fmt: skip
    return {
        "launches": len(rows),
        "failures": sorted({ident(r) + ": " + r["error"] for r in failures}),
        "shared_over_limit": sorted({ident(r) for r in over}),
        "half_spills": sorted({ident(r) for r in half_spills}),
        "fp32_spills": sorted({ident(r) for r in fp32_spills}),
        "tensor_core_paths_without_mma": no_tensor_cores,
        "per_target": per_target,
        "clean": not failures and not over and not half_spills and not no_tensor_cores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subset", choices=["full", "fast", "test"], default="full",
        help="full: issue 13's matrix; fast: a few shapes; test: the test suite's subset",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", metavar="OP",
        help="keep the ops whose name contains OP (repeatable), e.g. cluster_scores",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON path (default: results/compile_report.json; a temporary file with --only)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="compiles run in parallel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter replaces the kernels", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = (
            Path(tempfile.gettempdir()) / f"vlp_compile_report_only_{os.getpid()}.json"
            if args.only
            else RESULTS / "compile_report.json"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(report: dict[str, Any]) -> None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    report = build_report(args.subset, jobs=args.jobs, partial=write, only=args.only)
    write(report)
    print(json.dumps(report["summary"], indent=1))
    print(f"written to {args.out}")
    return 0 if report["summary"]["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
