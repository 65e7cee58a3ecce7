from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import common  # noqa: E402

METRICS = [
    *(f"{d} R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)),
    "zero-shot shape",
    "zero-shot colour",
    "comp attribute_swap",
    "comp relation_swap",
    "comp object_replacement",
    "comp attribute_replacement",
    "comp count_change",
    "comp mean",
]


def _run_recipe(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "metrics.json"
    argv = ["train_clip.py", "--threads", "1", "--json", str(out), *args]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(ROOT / "examples" / "train_clip.py"), run_name="__main__")
    finally:
        sys.argv = old
    return json.loads(out.read_text())


def test_recipe_runs_a_few_steps(tmp_path: Path) -> None:
    ckpt = tmp_path / "clip.safetensors"
    result = _run_recipe(
        tmp_path, "--steps", "3", "--batch-size", "16", "--eval-size", "40", "--out", str(ckpt)
    )
    metrics = result["metrics"]
    assert list(metrics) == METRICS
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert len(result["history"]["loss"]) == 3
    assert all(torch.isfinite(torch.tensor(result["history"]["loss"])))
    # The checkpoint loads back into a fresh model, bit for bit.
    from safetensors.torch import load_file

    from vlp.heads import LogitScale

    model, scale = common.tiny_clip(), LogitScale(init=2.0)
    common.load_checkpoint({"model": model, "logit_scale": scale}, str(ckpt))
    state = load_file(str(ckpt))
    assert set(state) == {f"model.{k}" for k in model.state_dict()} | {"logit_scale.log_scale"}
    for k, v in model.state_dict().items():
        assert torch.equal(state[f"model.{k}"], v)
    assert torch.equal(state["logit_scale.log_scale"], scale.log_scale.detach())
    assert float(scale().detach()) == pytest.approx(result["history"]["logit scale"][-1], rel=1e-6)


def test_recipe_reads_webdataset_shards(tmp_path: Path) -> None:
    from vlp.data import write_shards
    from vlp.data.shapes import ShapesDataset

    ds = ShapesDataset(40, seed=9)
    write_shards((ds[i] for i in range(len(ds))), tmp_path / "shards", shard_size=20)
    result = _run_recipe(
        tmp_path, "--data", str(tmp_path / "shards"), "--steps", "2", "--batch-size", "8",
        "--eval-size", "20",
    )  # fmt: skip
    assert len(result["history"]["loss"]) == 2


def test_format_table_side_by_side() -> None:
    table = common.format_table({"clip": {"a": 0.5, "b": 0.25}, "negclip": {"a": 0.75}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "clip", "negclip"]
    assert lines[2].split() == ["a", "50.0", "75.0"]
    assert lines[3].split() == ["b", "25.0", "-"]


def test_tiny_clip_overrides() -> None:
    model = common.tiny_clip(vision_cfg={"layers": 1}, embed_dim=32)
    assert len(model.visual.transformer.resblocks) == 1
    assert model.text_projection.shape == (64, 32)
    x = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    assert model.encode_image(common.to_model_input(x, "cpu")).shape == (2, 32)


@pytest.mark.slow
def test_recipe_learns(tmp_path: Path) -> None:
    result = _run_recipe(tmp_path, "--steps", "300", "--eval-size", "500")
    loss = result["history"]["loss"]
    assert sum(loss[-20:]) / 20 < loss[0] - 1.5  # from ~ln(64) = 4.16
    metrics = result["metrics"]
    assert metrics["i2t R@10"] > 0.1 and metrics["t2i R@10"] > 0.1  # chance 2% (10/500)
    assert metrics["zero-shot colour"] > 0.3  # chance 12.5%
    assert 0.5 < metrics["comp mean"] < 1.0
