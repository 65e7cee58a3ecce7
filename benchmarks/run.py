"""Run the benchmark suites for this machine and write their JSON rows.

    python benchmarks/run.py                 # CPU presets (or CUDA ones when a GPU is present)
    python benchmarks/run.py --suite attention --preset cuda

Each suite also runs on its own: ``python -m benchmarks.contrastive --preset cpu``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("contrastive", "attention", "negatives")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=SUITES, action="append")
    parser.add_argument("--preset", default=None, help="cpu, cpu-small or cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    preset = args.preset or ("cuda" if torch.cuda.is_available() else "cpu")
    for suite in args.suite or SUITES:
        out = args.out / f"{suite}_{preset}.json"
        cmd = [sys.executable, "-m", f"benchmarks.{suite}", "--preset", preset, "--out", str(out)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
