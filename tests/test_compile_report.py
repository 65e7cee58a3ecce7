"""Offline compile report (``python -m benchmarks.compile_report``) and ``gpu_check.sh``.

The compile report's ``test`` subset compiles the wrappers' real launches for sm_80 and
sm_90 without a GPU (in a fresh process: ``TRITON_INTERPRET=1``, set for this session,
would replace the kernels) and must come out clean; ``gpu_check.sh`` is checked for
syntax and its dry run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlp.testing import triton_runnable

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.skipif(not triton_runnable(), reason="needs Triton")
def test_compile_report_subset_is_clean_for_sm80_and_sm90(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--subset", "test", "--out", str(out)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert report["complete"], proc.stdout[-2000:]
    assert summary["failures"] == [], summary["failures"]
    assert summary["shared_over_limit"] == []
    assert summary["half_spills"] == []
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = report["rows"]
    kernels = {(r["target"], r["kernel"]) for r in rows}
    for target in ("sm_80", "sm_90"):
        for kernel in ("lse_fwd", "lse_bwd", "attn_fwd", "attn_bwd_dq", "attn_bwd_dkv",
                       "cluster_scores_fwd"):  # fmt: skip
            assert (target, kernel) in kernels
    for r in rows:
        assert 0 < r["shared_bytes"] <= r["shared_limit_bytes"]
        assert r["registers"] is not None and r["spill_store_bytes"] == 0
        if r["kernel"] != "cluster_scores_fwd":  # bf16 products on tensor cores
            assert r["mma_sync"] + r["wgmma"] > 0, r
        if r["target"] == "sm_90" and r["kernel"] in ("lse_fwd", "lse_bwd"):
            assert r["wgmma"] > 0  # Hopper's warpgroup MMA for the large contrastive tiles
    # The wrappers' launch choice reaches the compiler: the grid splits the columns.
    fwd = next(r for r in rows if r["kernel"] == "lse_fwd" and r["target"] == "sm_90")
    assert fwd["grid"][1] > 1


@pytest.mark.skipif(not triton_runnable(), reason="needs Triton")
def test_compile_report_only_cluster_scores_has_no_half_spills() -> None:
    """``--only cluster_scores``: the full cluster-scores matrix, nothing else.

    Both shapes (ViT-B/16 at 224 px, ViT-L/14 at 336 px), fp32/fp16/bf16, sm_80 and sm_90:
    with a 2-stage pipeline ptxas spilled 4 bytes for ViT-B/16 fp16 on sm_90. Without
    ``--out`` a filtered run goes to a temporary file, never the committed report.
    """
    committed = ROOT / "benchmarks" / "results" / "compile_report.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--only", "cluster_scores",
         "--jobs", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = Path(re.findall(r"^written to (.+)$", proc.stdout, flags=re.M)[-1])
    assert written.resolve() != committed.resolve()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    report = json.loads(written.read_text())
    written.unlink()
    assert report["only"] == ["cluster_scores"] and report["complete"]
    rows = report["rows"]
    assert {r["op"] for r in rows} == {"cluster_scores"}
    combos = {(r["target"], r["precision"], r["shape"]["px"]) for r in rows}
    assert combos == {
        (t, p, px)
        for t in ("sm_80", "sm_90")
        for p in ("float32-highest", "float16", "bfloat16")
        for px in (224, 336)
    }
    for r in rows:
        assert r["ok"] and r["spill_store_bytes"] == 0, r
        assert r["registers"] is not None and 0 < r["shared_bytes"] <= r["shared_limit_bytes"]
    assert report["summary"]["clean"]


@pytest.mark.skipif(not triton_runnable(), reason="needs Triton")
def test_compile_report_only_rejects_an_unknown_op(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--only", "no_such_op",
         "--out", str(tmp_path / "r.json")],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "matches no op" in proc.stderr
    assert not (tmp_path / "r.json").exists()


GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses_and_its_dry_run_lists_the_steps() -> None:
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    proc = subprocess.run(
        ["bash", str(GPU_CHECK), "--dry-run"], capture_output=True, text=True, check=True,
        env=_env(), timeout=60,
    )  # fmt: skip
    steps = re.findall(r"^== (\S+) \(limit (\d+)s\): (.*)$", proc.stdout, flags=re.M)
    assert [s[0] for s in steps] == ["tests", "contrastive", "attention", "cluster_scores"]
    assert sum(int(s[1]) for s in steps) <= 8 * 60  # the 8-minute budget
    tests = steps[0][2]
    assert "VLP_TEST_DEVICE=cuda" in tests
    for path in re.findall(r"tests/\S+\.py", tests):
        assert (ROOT / path).exists(), path
    from tests.test_device_switch import NOT_YET

    assert not {Path(p).stem for p in re.findall(r"tests/\S+\.py", tests)} & (
        NOT_YET - {"test_kernels_dispatch"}
    )
    for name, _, command in steps[1:]:
        preset = re.search(r"--preset (\S+)", command)
        assert preset and preset.group(1) == "gpu-check"
        module = __import__(f"benchmarks.{name}", fromlist=["presets"])
        cases = module.presets("gpu-check")
        assert cases and all(c["device"] == "cuda" for c in cases)
