from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from vlp.eval import SHAPES_METRICS  # noqa: E402

METRICS = list(SHAPES_METRICS)


def _run_recipe(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "metrics.json"
    argv = ["pretrain_cosmos.py", "--threads", "1", "--json", str(out), *args]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(ROOT / "examples" / "pretrain_cosmos.py"), run_name="__main__")
    finally:
        sys.argv = old
    return json.loads(out.read_text())


def test_recipe_runs_a_few_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run_recipe(
        tmp_path, "--steps", "2", "--batch-size", "6", "--eval-size", "20", "--num-local", "2",
        "--num-text-local", "2", "--warmup", "1",
    )  # fmt: skip
    metrics = result["metrics"]
    assert list(metrics) == ["clip", "cosmos", "cosmos teacher"]
    for run in metrics.values():
        assert list(run) == METRICS
        assert all(0.0 <= v <= 1.0 for v in run.values())
    history = result["history"]["cosmos"]
    assert len(history["loss"]) == 2 and len(result["history"]["clip"]["loss"]) == 2
    for total, clip, distill in zip(history["loss"], history["clip"], history["distillation"]):
        assert total == pytest.approx(clip + distill, rel=1e-6)
        # Near initialisation every term is close to the chance level ln(B) = ln 6.
        assert abs(clip - math.log(6)) < 1.0 and abs(distill - math.log(6)) < 1.0
    # The table prints the runs side by side.
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("metric")]
    assert header[-1].split() == ["metric", "clip", "cosmos", "cosmos", "teacher"]


def test_recipe_rejects_unknown_methods(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _run_recipe(tmp_path, "--methods", "dino")


@pytest.mark.slow
def test_recipe_comparison_reproduces_the_documented_table(tmp_path: Path) -> None:
    # docs/cosmos.md: `python examples/pretrain_cosmos.py --threads 1` (about 4 CPU minutes).
    result = _run_recipe(tmp_path)
    clip, cosmos = result["metrics"]["clip"], result["metrics"]["cosmos"]
    history = result["history"]["cosmos"]
    assert history["loss"][0] > 7.0 and sum(history["loss"][-20:]) / 20 < 3.0
    assert sum(history["distillation"][-20:]) / 20 < 1.2
    documented = {
        "i2t R@10": (0.480, 0.382),
        "t2i R@10": (0.471, 0.447),
        "comp count_change": (0.533, 0.661),
        "comp mean": (0.599, 0.608),
    }
    for metric, (want_clip, want_cosmos) in documented.items():
        assert clip[metric] == pytest.approx(want_clip, abs=0.03), metric
        assert cosmos[metric] == pytest.approx(want_cosmos, abs=0.03), metric
    # The one clear effect of this run: COSMOS's description sentences teach counting.
    assert cosmos["comp count_change"] > clip["comp count_change"] + 0.08
    assert cosmos["zero-shot colour"] > 0.9 and clip["zero-shot colour"] > 0.9
