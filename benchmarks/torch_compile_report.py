"""Graph breaks and compile times of vlp's losses, heads and masking under torch.compile.

For every case of ``tests/test_compile.py`` (the same inputs the test matrix compiles):
the graph and graph-break counts that ``torch._dynamo.explain`` reports, and the wall time
of the first compiled forward + backward (tracing, AOTAutograd and code generation,
then one run) against one eager forward + backward, with ``backend="aot_eager"``; the
cases of ``tests.test_compile.INDUCTOR`` also with inductor. Each number is one
measurement on a fresh dynamo cache (compile times vary with the machine's load).

    python -m benchmarks.torch_compile_report            # -> results/torch_compile_cpu.json
    python -m benchmarks.torch_compile_report --inductor # also the inductor cases
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from benchmarks.harness import environment, write_rows


def _seconds(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(name: str, backend: str) -> dict[str, Any]:
    from tests import test_compile as cases

    fn, inputs, module = cases.CASES[name]()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*inputs)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    eager_s = _seconds(cases._run, fn, inputs, module)
    first_s = _seconds(cases._run, compiled, inputs, module)
    again_s = _seconds(cases._run, compiled, inputs, module)
    return {
        "case": name,
        "backend": backend,
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "eager_fwd_bwd_s": round(eager_s, 3),
        "first_compiled_fwd_bwd_s": round(first_s, 3),
        "compiled_fwd_bwd_s": round(again_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inductor", action="store_true", help="also the inductor cases")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from tests import test_compile as cases

    torch.set_num_threads(1)
    plan = [(name, "aot_eager") for name in cases.CASES]
    if args.inductor:
        plan += [(name, "inductor") for name in cases.INDUCTOR]
    rows = []
    env = environment("cpu")
    for name, backend in plan:
        if backend == "inductor":
            with torch._inductor.config.patch(fallback_random=True):
                row = measure(name, backend)
        else:
            row = measure(name, backend)
        rows.append({**env, **row})
        print(json.dumps(row))
    out = args.out or Path(__file__).parent / "results" / "torch_compile_cpu.json"
    write_rows(rows, out)


if __name__ == "__main__":
    main()
