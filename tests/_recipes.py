"""Test helpers: run an ``examples/*.py`` recipe as a user would and read what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(
    name: str, *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/<name> --threads 1 <args>`` in ``cwd``; return the finished process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--threads", "1", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def run_json(name: str, *args: str, cwd: Path) -> tuple[dict[str, Any], str]:
    """Run a recipe with ``--json``; return the JSON it wrote and its standard output."""
    out = cwd / f"{Path(name).stem}.json"
    proc = run_recipe(name, *args, "--json", str(out), cwd=cwd)
    return json.loads(out.read_text()), proc.stdout


def parse_tables(stdout: str) -> list[dict[str, dict[str, float | None]]]:
    """Every metrics table a recipe printed (``vlp.eval.metrics_table``), in order.

    Each table is ``{run name: {metric: percent, or None for "-"}}``. Run names are
    right-aligned header cells with at least two spaces before each, so a name may hold a
    single space ("cosmos teacher"); a metric's values are the last cells of its row.
    """
    tables = []
    lines = stdout.splitlines()
    for i, header in enumerate(lines[:-1]):
        if not header.startswith("metric") or set(lines[i + 1]) != {"-"}:
            continue
        names = [p.strip() for p in header[len("metric") :].split("  ") if p.strip()]
        table: dict[str, dict[str, float | None]] = {n: {} for n in names}
        for row in lines[i + 2 :]:
            if not row.strip():
                break
            cells = row.split()
            metric, values = " ".join(cells[: -len(names)]), cells[-len(names) :]
            for name, value in zip(names, values):
                table[name][metric] = None if value == "-" else float(value)
        tables.append(table)
    return tables
