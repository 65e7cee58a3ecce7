#!/usr/bin/env bash
# One unattended GPU check (issue 13): the CUDA test mode, then the GPU benchmarks that
# carry the issue's targets. Results: benchmarks/results/*.json. Budget: 8 minutes on one
# H100 (each step has its own time limit; the limits add up to 470 s).
#
#   benchmarks/gpu_check.sh            # on a machine with a GPU, from anywhere
#   benchmarks/gpu_check.sh --dry-run  # print the steps, run nothing (works without a GPU)
#
# PY selects the interpreter (default: python). Exit status 0 when every step passed,
# 1 when one failed or ran out of time, 2 when there is no CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python}
OUT=benchmarks/results
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; fi
STATUS=0
STEPS="$OUT/gpu_check_steps.json"

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, record its outcome
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  if [ "$DRY" = 1 ]; then return 0; fi
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  local took=$((SECONDS - start))
  echo "== $name: exit $rc after ${took}s"
  printf '%s{"step": "%s", "exit": %d, "seconds": %d, "limit": %d}' \
    "$([ -s "$STEPS.tmp" ] && echo ', ')" "$name" "$rc" "$took" "$limit" >> "$STEPS.tmp"
  if [ "$rc" != 0 ]; then STATUS=1; fi
}

if [ "$DRY" = 0 ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)" || {
    echo "gpu_check.sh: no CUDA device (use --dry-run to list the steps)" >&2
    exit 2
  }
  mkdir -p "$OUT"
  rm -f "$STEPS.tmp"
fi

# 1. The test suite's kernel, loss and module tests on CUDA (compiled kernels, tolerance table).
step tests 200 env VLP_TEST_DEVICE=cuda "$PY" -m pytest -q -m "not slow" -p no:cacheprovider \
  --junitxml="$OUT/gpu_tests.xml" \
  tests/test_kernels_contrastive.py tests/test_kernels_attention.py \
  tests/test_kernels_cluster_scores.py tests/test_kernels_random_shapes.py \
  tests/test_kernels_work.py tests/test_kernels_dispatch.py
# 2. Benchmarks (one JSON file each; every case in its own process).
step contrastive 150 "$PY" -m benchmarks.contrastive --preset gpu-check \
  --out "$OUT/contrastive_gpu-check.json"
step attention 60 "$PY" -m benchmarks.attention --preset gpu-check \
  --out "$OUT/attention_gpu-check.json"
step cluster_scores 60 "$PY" -m benchmarks.cluster_scores --preset gpu-check \
  --out "$OUT/cluster_scores_gpu-check.json"

if [ "$DRY" = 0 ]; then
  { echo "["; cat "$STEPS.tmp"; echo "]"; } > "$STEPS"
  rm -f "$STEPS.tmp"
  "$PY" - "$OUT/gpu_tests.xml" "$OUT/gpu_tests.json" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
if src.exists():
    suite = ET.parse(src).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = [
        {"test": f"{c.get('classname')}::{c.get('name')}", "seconds": float(c.get("time", 0)),
         "outcome": next((x.tag for x in c if x.tag in ("failure", "error", "skipped")), "passed")}
        for c in suite.iter("testcase")
    ]
    dst.write_text(json.dumps({k: suite.get(k) for k in ("tests", "failures", "errors",
               "skipped", "time")} | {"cases": cases}, indent=1) + "\n")
PYEOF
fi
exit "$STATUS"
