"""Issue 17: bounded resources and clear errors in adapters, LoRA, readers.

Each test pins one finding of the reliability fuzz run (see docs/reliability.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from adapters_models import make_clip, make_timm
from torch import nn

from vlp.adapters import (
    apply_lora,
    interpolate_pos_embed,
    open_clip_image_tokens,
    open_clip_pos_embed,
    timm_vit_tokens,
)
from vlp.eval import read_sugarcrepe, read_sugarcrepe_file
from vlp.negatives import load_lexicon

# --- apply_lora: rank bounded by the adapted layers ---------------------------------------


def test_apply_lora_rank_bounded_by_narrowest_linear() -> None:
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 16))
    with pytest.raises(ValueError, match=r"rank must be <= 16, .*\(2; .*got 1000000"):
        apply_lora(model, rank=10**6, targets=("linear",))
    with pytest.raises(ValueError, match=r"rank must be <= 16, .*got 17"):
        apply_lora(model, rank=17, targets=("linear",))
    # Nothing was attached by the failed calls; rank 16 (full rank) is allowed.
    assert not any("lora_" in n for n, _ in model.named_parameters())
    apply_lora(model, rank=16, targets=("linear",))
    assert model[2].parametrizations.weight[0].lora_A.shape == (16, 48)


def test_apply_lora_conv_keeps_fsc_clip_rank_four() -> None:
    # FSC-CLIP's rank 4 on the 3-channel patch embedding: above min(3, out) but allowed.
    model = apply_lora(make_clip(), rank=4)
    assert model.visual.conv1.parametrizations.weight[0].lora_A.shape == (4 * 8, 3 * 8)
    with pytest.raises(ValueError, match=r"rank must be <= 32, .*visual\.conv1"):
        apply_lora(make_clip(), rank=33, targets=("conv",))


# --- open_clip / timm adapters: no silent crop --------------------------------------------


def test_open_clip_adapters_reject_sizes_the_patch_conv_would_crop() -> None:
    model = make_clip()  # patch 8, 32 px
    images = torch.randn(2, 3, 39, 39)
    with pytest.raises(
        ValueError, match=r"images must have .*multiples of the patch size \(8, 8\), got \(39, 39\)"
    ):
        open_clip_image_tokens(model, images, pos_interpolation="size")
    with pytest.raises(ValueError, match=r"image_size must be a multiple of the patch size"):
        open_clip_pos_embed(model, 39)
    # A divisible size still works (the same grid as before: 40 px -> 5 x 5).
    out = open_clip_image_tokens(model, torch.randn(2, 3, 40, 40), pos_interpolation="size")
    assert out.tokens.shape[1] == 25


def test_timm_adapter_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"images must be \(32, 32\) .* got \(39, 39\)"):
        timm_vit_tokens(make_timm(), torch.randn(1, 3, 39, 39))
    dynamic = make_timm(dynamic_img_size=True)
    with pytest.raises(ValueError, match=r"multiples of the patch size \(8, 8\), got \(39, 39\)"):
        timm_vit_tokens(dynamic, torch.randn(1, 3, 39, 39))
    assert timm_vit_tokens(dynamic, torch.randn(1, 3, 40, 40)).tokens.shape[1] == 25


def test_pos_embed_image_size_bounded() -> None:
    model = make_clip()  # 4 x 4 grid
    with pytest.raises(ValueError, match=r"more than 16 times the old grid"):
        open_clip_pos_embed(model, 100_000)
    with pytest.raises(TypeError, match="image_size"):
        open_clip_pos_embed(model, 1e5)  # type: ignore[arg-type]
    assert open_clip_pos_embed(model, 16 * 32, rule="size").shape == (1 + 64 * 64, 32)
    pos = torch.randn(1 + 16, 8)
    with pytest.raises(ValueError, match="image_size"):
        interpolate_pos_embed(pos, 8 * 65, 8)


# --- readers: errors name the file ---------------------------------------------------------


def test_read_sugarcrepe_file_latin1_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "replace_att.json"
    path.write_bytes(b'{"0": {"filename": "a.jpg", "caption": "caf\xe9", "negative_caption": "x"}}')
    with pytest.raises(ValueError, match=r"replace_att\.json: not UTF-8 text"):
        read_sugarcrepe_file(path)
    with pytest.raises(ValueError, match=r"replace_att\.json: not UTF-8 text"):
        read_sugarcrepe(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"nouns": {}, "colurs": []}', r"unknown lexicon section\(s\) \['colurs'\]"),
        (b"{}", "holds none of the lexicon's sections"),
        (b'{"nouns": []}', r"lexicon\['nouns'\] must be a mapping"),
    ],
)
def test_load_lexicon_errors_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "my_lexicon.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"my_lexicon\.json: " + message):
        load_lexicon(path)


def test_load_lexicon_accepts_the_shipped_format(tmp_path: Path) -> None:
    from vlp.negatives import lexicon_data

    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps(lexicon_data()), encoding="utf-8")
    assert load_lexicon(path) is not None
