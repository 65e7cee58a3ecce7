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


# --- load_state_dict_file: nothing dropped silently --------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"ema": {"w": torch.ones(2)}},  # returned {} before
        {"model": {"w": torch.ones(2)}, "w2": torch.ones(1)},  # kept only w2 before
        {"w": torch.ones(2), "step": 3},
    ],
)
def test_load_state_dict_file_refuses_non_tensor_entries(tmp_path: Path, content: dict) -> None:
    from vlp.adapters import load_state_dict_file

    path = tmp_path / "ckpt.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=r"ckpt\.pt.*are not tensors"):
        load_state_dict_file(path)


def test_load_state_dict_file_unwraps_and_keeps_everything(tmp_path: Path) -> None:
    from vlp.adapters import load_state_dict_file

    path = tmp_path / "ckpt.pt"
    weights = {"a": torch.ones(2), "b": torch.zeros(3)}
    torch.save({"state_dict": weights, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    got = load_state_dict_file(path)
    assert got.keys() == weights.keys()
    assert all(torch.equal(got[k], v) for k, v in weights.items())
    torch.save({"model": {"module": weights}}, path)
    assert load_state_dict_file(path).keys() == weights.keys()


# --- shapes data: sizes bounded ------------------------------------------------------------


def test_generate_sample_bounds() -> None:
    from vlp.data.shapes import generate_sample

    with pytest.raises(ValueError, match=r"num_captions must lie in \[1, 64\], got 1000000"):
        generate_sample(0, num_captions=10**6)
    with pytest.raises(TypeError, match="num_captions must be an int"):
        generate_sample(0, num_captions=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"image_size must lie in \[24, 2048\]"):
        generate_sample(0, image_size=100_000)
    sample = generate_sample(0, num_captions=64, image_size=24)
    assert len(sample["captions"]) == 64


# --- S-SMKE and COSMOS heads: errors name the argument ----------------------------------


def test_shared_block_errors() -> None:
    from vlp.models import SharedBlock

    block = SharedBlock(8, 2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 8\)"):
        block(torch.randn(2, 3, 6))
    with pytest.raises(TypeError, match=r"x must have the dtype of the module's parameters"):
        block(x.double())
    with pytest.raises(ValueError, match=r"x must not be empty"):
        block(torch.randn(2, 0, 8))
    meta = torch.zeros(2, 3, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match=r"key_padding must be on the device of x"):
        block(x, meta)
    with pytest.raises(ValueError, match="x must be on the module's device"):
        block(x.to("meta"))
    mask = torch.tensor([[False, False, True], [False, True, True]])
    intermediate, out = block(x, mask)
    assert torch.isfinite(out).all() and intermediate.shape == (2, 3, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the module
        assert block(x.bfloat16())[1].shape == (2, 3, 8)


def test_ssmke_head_errors() -> None:
    from vlp.models import SSMKEHead

    head = SSMKEHead(6, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 6\), got \(8, 5\)"):
        head(torch.randn(8, 5))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        head(torch.ones(8, 6, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must have the dtype of the module's parameters"):
        head(torch.randn(8, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        head([[0.0] * 6])  # type: ignore[arg-type]
    assert head(torch.randn(2, 4, 6)).shape == (2, 4, 8)


def test_cosmos_head_errors() -> None:
    from vlp.heads import COSMOSHead

    head = COSMOSHead(8, image_token_dim=6, text_token_dim=5, num_heads=2)
    image, text = torch.randn(2, 3, 8), torch.randn(2, 2, 8)
    image_tokens, text_tokens = torch.randn(2, 4, 6), torch.randn(2, 7, 5)
    with pytest.raises(ValueError, match=r"text_tokens must have shape \(B, S, 5\)"):
        head(image, text, image_tokens, torch.randn(2, 7, 6))
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(B, S, 6\)"):
        head(image, text, torch.randn(2, 4, 5), text_tokens)
    with pytest.raises(TypeError, match="image_tokens must have the dtype of the module"):
        head(image, text, image_tokens.double(), text_tokens)
    with pytest.raises(ValueError, match="same batch size"):
        head(image, text[:1], image_tokens, text_tokens)
    with pytest.raises(ValueError, match=r"text must have shape \(B, V, D\) or \(B, D\)"):
        head(image, text[0, 0], image_tokens, text_tokens)
    meta = torch.zeros(2, 7, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="key_padding_mask on meta"):
        head(image, text, image_tokens, text_tokens, text_mask=meta)
    image_x, text_x = head(image, text, image_tokens, text_tokens)
    assert image_x.shape == (2, 3, 8) and text_x.shape == (2, 2, 8)


# --- findings of the fuzz harness (tests/fuzz_harness.py), one line each ------------------


def _frozen_teacher_tensor_flag() -> None:
    from vlp.heads import FrozenTeacher

    FrozenTeacher(torch.nn.Linear(2, 2), normalize=torch.ones(3))  # type: ignore[arg-type]


def _fuzz_cases() -> list[tuple[str, object, type[Exception], str]]:
    from vlp import adapters, eval, masking, models

    images = torch.randn(2, 3, 16, 16)
    anchors = torch.tensor([[0, 5], [3, 9]])
    clip = make_clip()
    return [
        ("frozen_flag", _frozen_teacher_tensor_flag, TypeError, "normalize must be a bool"),
        (
            "generator",
            lambda: masking.sample_anchors(2, 16, 2, generator=3),
            TypeError,
            "generator must be a torch.Generator",
        ),
        (
            "generator_random",
            lambda: masking.select_kept_tokens(
                torch.zeros(2, 4, dtype=torch.bool), generator="seed"
            ),
            TypeError,
            "generator must be",
        ),
        (
            "noise_bound",
            lambda: masking.patch_dropout(10**12, 16, 0.5),
            ValueError,
            r"batch x num_patches",
        ),
        (
            "kept_empty",
            lambda: masking.select_kept_tokens(torch.zeros(0, 4, dtype=torch.bool)),
            ValueError,
            "masked must not be empty",
        ),
        (
            "unpatchify_size",
            lambda: masking.unpatchify(torch.randn(2, 16, 48), 4, None),
            TypeError,
            "image_size must be a pair",
        ),
        ("lora_model", lambda: adapters.apply_lora(3), TypeError, "model must be an nn.Module"),
        (
            "lora_state_model",
            lambda: adapters.lora_state_dict("x"),
            TypeError,
            "model must be an nn.Module",
        ),
        (
            "lora_update",
            lambda: adapters.LoRAUpdate(3, 3, 1.0),
            TypeError,
            "a_shape must be a pair of ints",
        ),
        ("lora_update_rank", lambda: adapters.LoRAUpdate((2, 4), (4, 3), 1.0), ValueError, "rank"),
        (
            "load_pretrained",
            lambda: adapters.load_pretrained(torch.zeros(2), {}),
            TypeError,
            "module must be an nn.Module",
        ),
        (
            "state_file_path",
            lambda: adapters.load_state_dict_file(3),
            TypeError,
            "path must be a str",
        ),
        (
            "images_dtype",
            lambda: adapters.open_clip_image_tokens(
                clip, torch.randn(2, 3, 32, 32, dtype=torch.float64)
            ),
            TypeError,
            "images must have the dtype",
        ),
        (
            "text_vocab",
            lambda: adapters.open_clip_text_tokens(clip, torch.tensor([[1, 10**6, 2]])),
            ValueError,
            r"text token ids must lie in \[0, ",
        ),
        (
            "timm_dtype",
            lambda: adapters.timm_vit_tokens(make_timm(), torch.randn(1, 3, 32, 32).half()),
            TypeError,
            "images must have the dtype",
        ),
        (
            "similarity_nan",
            lambda: eval.similarity_matrix(torch.full((2, 4), float("nan")), torch.randn(2, 4)),
            ValueError,
            "image_embeddings must be finite",
        ),
        (
            "paired_nan",
            lambda: eval.paired_similarity(torch.randn(2, 4), torch.full((2, 4), float("inf"))),
            ValueError,
            "b must be finite",
        ),
        (
            "recall_meta",
            lambda: eval.retrieval_recall(torch.randn(2, 2, device="meta"), torch.tensor([0, 1])),
            ValueError,
            "similarity must hold values",
        ),
        (
            "iou_meta",
            lambda: eval.mean_iou(
                torch.zeros(1, 2, 2, dtype=torch.long, device="meta"),
                torch.zeros(1, 2, 2, dtype=torch.long),
                3,
            ),
            ValueError,
            "predictions must hold values",
        ),
        (
            "classifier_none",
            lambda: eval.zero_shot_classifier(None),
            TypeError,
            "prompt_embeddings must be",
        ),
        (
            "types_none",
            lambda: eval.compositional_accuracy(torch.randn(2), torch.randn(2, 1), None),
            TypeError,
            "negative_types must be",
        ),
        (
            "sugarcrepe_source",
            lambda: eval.read_sugarcrepe(torch.zeros(2)),
            TypeError,
            "source must be a path",
        ),
        ("lexicon_path", lambda: load_lexicon(None), TypeError, "path must be a str"),
        (
            "build_ssmke_layers",
            lambda: models.build_ssmke(make_timm(), clip.transformer, num_layers=None),
            TypeError,
            "num_layers must be an int",
        ),
        (
            "mlp_ratio",
            lambda: models.SharedBlock(8, 2, None),
            TypeError,
            "mlp_ratio must be a float",
        ),
        (
            "layerscale",
            lambda: models.TokenTypeEmbedding(2, 8, layerscale_init=None),
            TypeError,
            "layerscale_init must be a float",
        ),
        (
            "embedding_rgb_ok",
            lambda: masking.embedding_rgb_scores(
                images, torch.randn(2, 16, 8), anchors, 4, embed_weight=0.5
            ),
            None,
            "",
        ),
    ]


@pytest.mark.parametrize("case", _fuzz_cases(), ids=lambda c: c[0])
def test_fuzz_findings_are_clear_errors(case: tuple) -> None:
    _, call, exc, match = case
    if exc is None:
        assert torch.isfinite(call()).all()
        return
    with pytest.raises(exc, match=match):
        call()


def test_embedding_rgb_scores_non_finite_patch_is_invalid() -> None:
    from vlp.masking import embedding_rgb_scores

    images = torch.randn(2, 3, 16, 16)
    images[0, 0, 0, 0] = float("nan")  # patch 0 of image 0
    embeddings = torch.randn(2, 16, 8)
    embeddings[1, 7, 3] = float("inf")  # patch 7 of image 1
    anchors = torch.tensor([[0, 5], [3, 9]])
    scores = embedding_rgb_scores(images, embeddings, anchors, 4, embed_weight=0.5)
    assert not torch.isnan(scores).any()
    assert scores[0, 0] == float("-inf") and scores[1, 7] == float("-inf")
    assert scores[0, 5] == 1.0  # the finite anchor still clusters
    # Pixels only (w = 0): the embedding's inf does not matter, as in cluster_scores.
    rgb = embedding_rgb_scores(images, embeddings, anchors, 4, embed_weight=0.0)
    assert torch.isfinite(rgb[1]).all()
    assert rgb[0, 0] == float("-inf")


def test_chunk_size_above_the_batch_allocates_nothing_more() -> None:
    from vlp.losses import clip_loss, siglip_loss

    x, y = torch.randn(4, 8), torch.randn(4, 8)
    # A chunk larger than the batch is one chunk: the batch bounds the work, not chunk_size.
    assert torch.equal(
        clip_loss(x, y, 10.0, chunk_size=10**12), clip_loss(x, y, 10.0, chunk_size=4)
    )
    assert torch.equal(
        siglip_loss(x, y, 10.0, -10.0, chunk_size=10**12),
        siglip_loss(x, y, 10.0, -10.0, chunk_size=4),
    )


def test_long_captions_are_bounded() -> None:
    import random

    from vlp.negatives import hard_negatives, swap

    long = "a red cube left of a blue ball " * 1000  # 31,000 characters: swap took 20 s
    with pytest.raises(ValueError, match=r"caption must have at most 10000 characters"):
        swap(long, random.Random(0))
    with pytest.raises(ValueError, match=r"captions\[1\] must have at most 10000 characters"):
        hard_negatives(["a red cube", long], rng=random.Random(0))


def test_benchmark_readers_name_the_file(tmp_path: Path) -> None:
    from vlp.eval import read_valse_file, read_winoground

    path = tmp_path / "valse.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"valse\.json: not UTF-8 text"):
        read_valse_file(path)
    with pytest.raises(TypeError, match="path must be a str"):
        read_winoground(3)  # type: ignore[arg-type]
