from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _recipes import parse_tables, run_json, run_recipe

from vlp.eval import SHAPES_METRICS

METRICS = list(SHAPES_METRICS)


def _run_recipe(tmp_path: Path, *args: str) -> dict[str, Any]:
    result, stdout = run_json("pretrain_cosmos.py", *args, cwd=tmp_path)
    result["stdout"] = stdout
    return result


def test_recipe_runs_a_few_steps(tmp_path: Path) -> None:
    result = _run_recipe(
        tmp_path, "--steps", "2", "--batch-size", "6", "--eval-size", "20", "--num-local", "2",
        "--num-text-local", "2", "--warmup", "1", "--seg-size", "3",
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
    # The table prints the runs side by side, as the JSON holds them.
    table, seg_table = parse_tables(result["stdout"])
    assert list(table) == ["clip", "cosmos", "cosmos teacher"]
    for name, run in metrics.items():
        assert table[name] == {k: float(f"{100 * v:.1f}") for k, v in run.items()}
    # The segmentation table: mIoU by shape and colour per run, and the chance column.
    seg = result["segmentation"]
    assert list(seg) == ["clip", "cosmos", "cosmos teacher", "chance"]
    for name, run in seg.items():
        assert list(run) == ["seg mIoU shape", "seg mIoU colour"]
        assert all(0.0 <= v <= 1.0 for v in run.values())
        assert seg_table[name] == {k: float(f"{100 * v:.1f}") for k, v in run.items()}
    # Uniform labels over 6 shapes / 8 colours score well below 1/6 and 1/8 of the pixels.
    assert 0.0 < seg["chance"]["seg mIoU shape"] < 1 / 6
    assert 0.0 < seg["chance"]["seg mIoU colour"] < 1 / 8


def test_recipe_rejects_unknown_methods(tmp_path: Path) -> None:
    proc = run_recipe("pretrain_cosmos.py", "--methods", "dino", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--methods must list clip and/or cosmos" in proc.stderr


@pytest.mark.slow
def test_recipe_comparison_reproduces_the_documented_table(tmp_path: Path) -> None:
    # docs/cosmos.md: `python examples/pretrain_cosmos.py --threads 1` (about 4 CPU minutes).
    result = _run_recipe(tmp_path)
    clip, cosmos = result["metrics"]["clip"], result["metrics"]["cosmos"]
    history = result["history"]["cosmos"]
    assert history["loss"][0] > 7.0 and sum(history["loss"][-20:]) / 20 < 3.0
    assert sum(history["distillation"][-20:]) / 20 < 1.2
    documented = {
        "i2t R@10": (0.479, 0.382),
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
    # docs/cosmos.md: segmentation by colour far above chance (50.2 / 27.7 / 29.8 vs 6.6).
    seg = result["segmentation"]
    for run, want in (("clip", 0.502), ("cosmos", 0.277), ("cosmos teacher", 0.298)):
        assert seg[run]["seg mIoU colour"] == pytest.approx(want, abs=0.03), run
    assert seg["chance"]["seg mIoU colour"] == pytest.approx(0.066, abs=0.005)
