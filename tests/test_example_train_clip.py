"""examples/train_clip.py, run as a user runs it: its printed table, JSON and checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _recipes import parse_tables, run_json
from _tiny_clip import tiny_clip
from safetensors.torch import load_file

from vlp.eval import SHAPES_METRICS
from vlp.losses import LogitScale

SHORT_RUN = ("--steps", "3", "--batch-size", "16", "--eval-size", "40")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """One short run of the recipe (shared by the tests that read it)."""
    tmp_path = tmp_path_factory.mktemp("train_clip")
    ckpt, plot = tmp_path / "clip.safetensors", tmp_path / "curves.png"
    result, stdout = run_json(
        "train_clip.py", *SHORT_RUN, "--out", str(ckpt), "--plot", str(plot), cwd=tmp_path
    )
    return result, stdout, tmp_path


def test_recipe_runs_a_few_steps(short_run: tuple[dict[str, Any], str, Path]) -> None:
    result, stdout, tmp_path = short_run
    ckpt, plot = tmp_path / "clip.safetensors", tmp_path / "curves.png"
    metrics = result["metrics"]
    assert tuple(metrics) == SHAPES_METRICS
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    loss = result["history"]["loss"]
    assert len(loss) == 3 and all(map(math.isfinite, loss))
    assert abs(loss[0] - math.log(16)) < 1.0  # near chance at initialisation
    # The printed table is the JSON's metrics in percent.
    (table,) = parse_tables(stdout)
    assert list(table) == ["clip"]
    assert table["clip"] == {k: float(f"{100 * v:.1f}") for k, v in metrics.items()}
    assert "step 3/3: loss" in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The checkpoint loads back into the recipe's model, bit for bit.
    model, scale = tiny_clip(), LogitScale()
    state = load_file(str(ckpt))
    assert set(state) == {f"model.{k}" for k in model.state_dict()} | {"logit_scale.log_scale"}
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    scale.load_state_dict({"log_scale": state["logit_scale.log_scale"]})
    assert float(scale().detach()) == pytest.approx(result["history"]["logit scale"][-1], rel=1e-6)


def test_recipe_reads_webdataset_shards(tmp_path: Path) -> None:
    from vlp.data import write_shards
    from vlp.data.shapes import ShapesDataset

    ds = ShapesDataset(40, seed=9)
    write_shards((ds[i] for i in range(len(ds))), tmp_path / "shards", shard_size=20)
    result, _ = run_json(
        "train_clip.py", "--data", str(tmp_path / "shards"), "--steps", "2", "--batch-size", "8",
        "--eval-size", "20", cwd=tmp_path,
    )  # fmt: skip
    assert len(result["history"]["loss"]) == 2


@pytest.mark.slow
def test_recipe_learns(tmp_path: Path) -> None:
    result, _ = run_json("train_clip.py", "--steps", "300", "--eval-size", "500", cwd=tmp_path)
    loss = result["history"]["loss"]
    assert sum(loss[-20:]) / 20 < loss[0] - 1.5  # from ~ln(64) = 4.16
    metrics = result["metrics"]
    assert metrics["i2t R@10"] > 0.1 and metrics["t2i R@10"] > 0.1  # chance 2% (10/500)
    assert metrics["zero-shot colour"] > 0.3  # chance 12.5%
    assert 0.5 < metrics["comp mean"] < 1.0


def test_micro_batch_flag_trains_exactly_like_the_full_batch(
    short_run: tuple[dict[str, Any], str, Path], tmp_path: Path
) -> None:
    # Gradient caching changes the memory, not the training: the same losses step by step.
    cached, _ = run_json("train_clip.py", *SHORT_RUN, "--micro-batch", "5", cwd=tmp_path)
    plain = short_run[0]["history"]
    for key in ("loss", "logit scale"):
        assert cached["history"][key] == pytest.approx(plain[key], rel=1e-4), key
