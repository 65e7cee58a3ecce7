from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "pretrain_cluster_masking.py"


def _run_recipe(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    old = sys.argv
    sys.argv = [RECIPE.name, "--threads", "1", "--json", str(out), *args]
    try:
        runpy.run_path(str(RECIPE), run_name="__main__")
    finally:
        sys.argv = old
    return json.loads(out.read_text())


def test_recipe_runs_a_few_steps(tmp_path: Path) -> None:
    result = _run_recipe(tmp_path, "--steps", "2", "--batch-size", "16", "--eval-size", "20")
    runs = result["runs"]
    assert list(runs) == ["none", "random", "cluster"]
    for run in runs.values():
        assert len(run["loss"]) == 2
        assert all(0.0 <= v <= 1.0 for v in run["metrics"].values())
        assert run["images_per_s"] > 0 and run["tokens_per_s"] > 0
    # 64 patches + CLS; cluster keeps floor(64 * 0.7) = 44 slots; random keeps the
    # patches cluster masking leaves visible on average
    assert runs["none"]["tokens_per_image"] == 65
    assert runs["cluster"]["tokens_per_image"] == 45
    assert 1 - 44 / 64 <= runs["cluster"]["mask_ratio"] <= 1
    kept = 64 - round(64 * runs["random"]["mask_ratio"])
    assert runs["random"]["tokens_per_image"] == 1 + kept
    assert kept == int(64 * (1 - result["cluster_ratio"]))
    assert result["threshold"] == 0.5


def test_recipe_calibrates_the_threshold(tmp_path: Path) -> None:
    result = _run_recipe(
        tmp_path, "--runs", "cluster", "--steps", "1", "--batch-size", "8", "--eval-size", "10",
        "--target-ratio", "0.9",
    )  # fmt: skip
    assert list(result["runs"]) == ["cluster"]
    assert -1 <= result["threshold"] < 0.5  # more masking than at tau = 0.5 needs a lower tau
    assert result["cluster_ratio"] == pytest.approx(0.9, abs=0.03)


@pytest.mark.slow
def test_recipe_cluster_masking_beats_random_dropout(tmp_path: Path) -> None:
    result = _run_recipe(tmp_path)  # the defaults: 300 steps per run
    runs = result["runs"]
    cluster, random, none = (runs[r]["metrics"] for r in ("cluster", "random", "none"))
    for run in runs.values():
        assert sum(run["loss"][-20:]) / 20 < run["loss"][0] - 1.0
    # Same visible-token budget: keeping whole objects and dropping the flat background
    # in clusters beats dropping patches at random.
    assert cluster["i2t R@10"] > random["i2t R@10"] + 0.05
    assert cluster["t2i R@10"] > random["t2i R@10"] + 0.05
    assert none["zero-shot colour"] > 0.5
    assert runs["cluster"]["tokens_per_image"] < runs["none"]["tokens_per_image"]
