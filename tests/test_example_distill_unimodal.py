from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import distill_unimodal as recipe  # noqa: E402

from vlp.data.shapes import COLOURS, SHAPES  # noqa: E402


def test_scene_labels() -> None:
    scene = {
        "objects": [
            {"shape": "diamond", "colour": "cyan"},
            {"shape": "diamond", "colour": "purple"},
        ]
    }
    labels = recipe.scene_labels([scene])
    assert labels.shape == (1, 62)
    on = set(torch.nonzero(labels[0]).flatten().tolist())
    shape = SHAPES.index("diamond")
    colours = {6 + COLOURS.index("cyan"), 6 + COLOURS.index("purple")}
    pairs = {14 + recipe.PAIRS.index((c, "diamond")) for c in ("cyan", "purple")}
    assert on == {shape} | colours | pairs


def test_student_starts_from_the_pretrained_blocks() -> None:
    torch.manual_seed(0)
    vit, text = recipe.image_encoder().eval(), recipe.text_encoder().eval()
    vit.requires_grad_(False)
    student = recipe.make_student(vit, text, 2, pretrained=True, seed=1)
    scratch = recipe.make_student(vit, text, 2, pretrained=False, seed=1)
    kept = student.image_encoder.vit.blocks
    assert len(kept) == 2 and len(vit.blocks) == 4  # the source model is not truncated
    for i in range(2):
        for (name, p), q in zip(kept[i].named_parameters(), vit.blocks[i].parameters()):
            assert torch.equal(p, q), name
            assert p.requires_grad
    s_text = student.text_encoder.text
    assert torch.equal(s_text.token_embedding.weight, text.token_embedding.weight)
    assert torch.equal(
        s_text.transformer.resblocks[1].mlp.c_fc.weight,
        text.transformer.resblocks[1].mlp.c_fc.weight,
    )
    assert not torch.equal(
        scratch.image_encoder.vit.blocks[0].attn.qkv.weight, kept[0].attn.qkv.weight
    )
    # The teacher: every block, no final norm, CLS of the last block, normalised and frozen.
    teacher = recipe.make_teacher(vit)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        expected = F.normalize(vit.blocks(x)[:, 0], dim=-1)
    torch.testing.assert_close(teacher(images), expected)
    student.train()
    assert not teacher.model.training


def test_bank_fills_during_training() -> None:
    torch.manual_seed(0)
    vit, text = recipe.image_encoder().eval(), recipe.text_encoder().eval()
    model = recipe.make_student(vit, text, 1, pretrained=True, seed=0)
    args = argparse.Namespace(
        steps=3, batch_size=8, lr=1e-3, weight_decay=0.01, bank_size=20, bank_init="empty", seed=0
    )
    tokenize = recipe.common.tokenizer(32)
    history, bank = recipe.train_student(
        model, recipe.make_teacher(vit), args, tokenize, torch.device("cpu")
    )
    assert bank is not None
    assert len(bank) == 20 and int(bank.pointer) == 24 % 20  # 3 steps x 8 in a bank of 20
    # Step 0 sees the empty bank: 8 columns, so its KD loss is bounded by the worst case
    # 2 * scale (all-wrong logits) and its ITC starts near ln(8).
    assert 0 < history["kd"][0] < math.log(8) + 2 / 0.07
    assert history["itc"][0] == pytest.approx(math.log(8), abs=0.5)
    assert all(math.isfinite(v) for v in history["loss"])
    _, none = recipe.train_student(model, None, args, tokenize, torch.device("cpu"))
    assert none is None


def test_recipe_runs_a_few_steps(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    result = recipe.main(
        [
            "--teacher-steps", "2", "--steps", "2", "--batch-size", "8", "--eval-size", "20",
            "--threads", "1", "--bank-size", "16", "--json", str(out),
        ]
    )  # fmt: skip
    assert list(result["metrics"]) == ["distill", "scratch"]
    for run in ("distill", "scratch"):
        metrics = result["metrics"][run]
        assert "i2t R@1" in metrics and "comp mean" in metrics
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
        assert len(result["history"][run]["loss"]) == 2
    assert all(math.isfinite(v) for v in result["history"]["distill"]["kd"])
    assert all(math.isnan(v) for v in result["history"]["scratch"]["kd"])
    assert len(result["pretraining"]["image loss"]) == 2
    assert out.exists()
    with pytest.raises(SystemExit):
        recipe.main(["--runs", "distill,bogus"])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_distillation_beats_itc_from_scratch() -> None:
    # The defaults (300 + 300 unimodal steps, 600 student steps per run, batch 64); measured
    # with 1000 evaluation images: i2t R@10 65.2 vs 27.8, t2i R@10 63.4 vs 26.8, comp mean
    # 62.2 vs 58.4 (docs/ssmke.md).
    result = recipe.main(["--threads", "1", "--eval-size", "500"])
    distill, scratch = result["metrics"]["distill"], result["metrics"]["scratch"]
    for key in ("i2t R@10", "t2i R@10"):
        assert distill[key] > scratch[key] + 0.15, key  # chance 2% (10/500)
    assert distill["i2t R@1"] > 2 * scratch["i2t R@1"]
    assert distill["zero-shot colour"] > 0.9
    assert distill["comp mean"] > scratch["comp mean"]
    history = result["history"]["distill"]
    # The KD loss rises while the empty bank fills (ln(64) -> up to ln(64 + 1024) = 7.0) and
    # then falls well below it; the ITC part ends below the scratch run's.
    assert sum(history["kd"][-20:]) / 20 < 4.0
    scratch_itc = result["history"]["scratch"]["itc"]
    assert sum(history["itc"][-20:]) / 20 < sum(scratch_itc[-20:]) / 20
    assert result["pretraining"]["text"]["label accuracy"] > 0.95
