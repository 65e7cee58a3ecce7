"""Dense image and text tokens out of unmodified open_clip models."""

from __future__ import annotations

import pytest
import torch
from adapters_models import (
    CONTEXT,
    EOT,
    VISION_CONFIGS,
    captions,
    images_for,
    make_clip,
    single_thread,  # noqa: F401  (autouse fixture)
)

from vlp.adapters import (
    DenseTokens,
    open_clip_image_tokens,
    open_clip_text_tokens,
    text_token_mask,
)
from vlp.testing import assert_close

PROJECTABLE = [name for name in VISION_CONFIGS if name != "attn_pool"]


@pytest.mark.parametrize("name", list(VISION_CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pooled_equals_encode_image_exactly(name: str, dtype: torch.dtype) -> None:
    model = make_clip(name).to(dtype)
    images = images_for(model, dtype=dtype)
    project = name != "attn_pool"
    out = open_clip_image_tokens(model, images, project=project)
    assert isinstance(out, DenseTokens)
    expected = model.encode_image(images)
    if project:
        assert torch.equal(out.pooled, expected)
    else:
        assert torch.equal(out.pooled @ model.visual.proj, expected)
    grid = model.visual.grid_size
    width = model.visual.proj.shape[1] if project else model.visual.conv1.out_channels
    assert out.tokens.shape == (3, grid[0] * grid[1], width)
    assert out.mask.dtype == torch.bool and bool(out.mask.all())
    assert out.mask.shape == out.tokens.shape[:2]


@pytest.mark.parametrize("name", list(VISION_CONFIGS))
def test_patch_tokens_match_the_models_own_post_ln_tokens(name: str) -> None:
    """Unprojected tokens = ln_post of the last block's patch outputs (open_clip's own API)."""
    model = make_clip(name).double()
    images = images_for(model, dtype=torch.float64)
    out = open_clip_image_tokens(model, images, project=False)
    inter = model.visual.forward_intermediates(
        images, indices=1, normalize_intermediates=name != "attn_pool", output_fmt="NLC"
    )["image_intermediates"][-1]
    assert_close(out.tokens, inter, rtol=0, atol=1e-12)
    if name in ("tok", "avg"):
        # open_clip's own output_tokens path returns the same post-ln_post patch tokens.
        model.visual.output_tokens = True
        _, own_tokens = model.visual(images)
        assert torch.equal(out.tokens, own_tokens)


@pytest.mark.parametrize("name", PROJECTABLE)
def test_projected_tokens_are_consistent_with_the_projection(name: str) -> None:
    model = make_clip(name).double()
    images = images_for(model, dtype=torch.float64)
    raw = open_clip_image_tokens(model, images, project=False)
    proj = open_clip_image_tokens(model, images, project=True)
    assert_close(proj.tokens, raw.tokens @ model.visual.proj, rtol=0, atol=1e-12)
    assert_close(proj.pooled, raw.pooled @ model.visual.proj, rtol=0, atol=1e-12)
    if model.visual.pool_type == "avg" and not model.visual.final_ln_after_pool:
        # average pooling commutes with the linear projection
        assert_close(proj.pooled, proj.tokens.mean(dim=1), rtol=0, atol=1e-12)


def test_pooled_cls_is_the_projected_post_ln_cls_token() -> None:
    model = make_clip("tok").double()
    images = images_for(model, dtype=torch.float64)
    out = open_clip_image_tokens(model, images, project=False)
    # CLS row after ln_post, computed by hand from the tower's parts
    visual = model.visual
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    x = visual.transformer(visual.ln_pre(x + visual.positional_embedding))
    assert_close(out.pooled, visual.ln_post(x)[:, 0], rtol=0, atol=1e-12)
    assert_close(out.tokens, visual.ln_post(x)[:, 1:], rtol=0, atol=1e-12)


def test_image_tokens_accept_the_bare_tower_and_carry_gradients() -> None:
    model = make_clip("tok")
    images = images_for(model)
    a = open_clip_image_tokens(model.visual, images)
    b = open_clip_image_tokens(model, images)
    assert torch.equal(a.tokens, b.tokens)
    a.tokens.square().sum().backward()
    assert model.visual.conv1.weight.grad is not None
    assert float(model.visual.conv1.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_text_pooled_equals_encode_text_exactly(dtype: torch.dtype) -> None:
    model = make_clip().to(dtype)
    text = captions()
    out = open_clip_text_tokens(model, text)
    assert torch.equal(out.pooled, model.encode_text(text))
    assert out.tokens.shape == (3, CONTEXT, 16)


def test_text_tokens_at_all_positions_and_projection() -> None:
    model = make_clip().double()
    text = captions()
    raw = open_clip_text_tokens(model, text, project=False)
    proj = open_clip_text_tokens(model, text, project=True)
    inter = model.forward_intermediates(text=text, normalize_intermediates=True)
    assert_close(raw.tokens, inter["text_intermediates"][-1], rtol=0, atol=1e-12)
    assert_close(proj.tokens, raw.tokens @ model.text_projection, rtol=0, atol=1e-12)
    eot = text.argmax(dim=-1)
    rows = torch.arange(3)
    assert_close(raw.pooled, raw.tokens[rows, eot], rtol=0, atol=0)
    # the projected token at EOT is the model's pooled embedding
    assert_close(proj.tokens[rows, eot], model.encode_text(text), rtol=0, atol=1e-12)


def test_text_mask_excludes_sot_and_padding_includes_eot() -> None:
    model = make_clip()
    out = open_clip_text_tokens(model, captions())
    expected = torch.zeros(3, CONTEXT, dtype=torch.bool)
    expected[0, 1:5] = True  # 5, 6, 7, EOT
    expected[1, 1:4] = True  # 0, 12, EOT
    expected[2, 1:] = True  # full row: words and the EOT in the last slot
    assert torch.equal(out.mask, expected)


def test_text_token_mask_rules() -> None:
    text = captions()
    assert torch.equal(text_token_mask(text), open_clip_text_tokens(make_clip(), text).mask)
    # FSC-CLIP reference rule: (text > 0) with column 0 cleared -> drops the in-caption id 0
    fsc = (text > 0).clone()
    fsc[:, 0] = False
    assert torch.equal(text_token_mask(text, pad_token_id=0), fsc)
    # explicit EOT id: first occurrence; no SOT -> position 0 counts
    ids = torch.tensor([[4, 2, 9, 2, 0], [2, 0, 0, 0, 0]])
    assert torch.equal(
        text_token_mask(ids, eot_token_id=2, has_sot=False),
        torch.tensor([[True, True, False, False, False], [True, False, False, False, False]]),
    )


def test_text_tokens_custom_text_clip_with_eos_pooling() -> None:
    eos = 7
    model = make_clip(text={"pool_type": "eos", "eos_id": eos})
    text = torch.tensor(
        [[1, 50, 60, eos, 0, 0, 0, 0, 0, 0, 0, 0], [1, 90, eos, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    )
    out = open_clip_text_tokens(model, text)
    assert torch.equal(out.pooled, model.encode_text(text))
    images = images_for(model)
    assert torch.equal(open_clip_image_tokens(model, images).pooled, model.encode_image(images))
    assert torch.equal(out.mask[:, :5], torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]]).bool())
    raw = open_clip_text_tokens(model.text, text, project=False)
    assert_close(raw.tokens[torch.arange(2), torch.tensor([3, 2])], raw.pooled, rtol=0, atol=0)
    assert_close(out.tokens, raw.tokens @ model.text.text_projection, rtol=0, atol=1e-6)


def test_image_bad_input() -> None:
    model = make_clip()
    images = images_for(model)
    with pytest.raises(TypeError, match="image tower"):
        open_clip_image_tokens(torch.nn.Linear(2, 2), images)
    with pytest.raises(ValueError, match="images must have shape"):
        open_clip_image_tokens(model, images[0])
    with pytest.raises(TypeError, match="floating"):
        open_clip_image_tokens(model, images.long())
    with pytest.raises(ValueError, match="images must not be empty"):
        open_clip_image_tokens(model, images[:0])
    with pytest.raises(ValueError, match="pos_interpolation"):
        open_clip_image_tokens(model, images[:, :, :16, :16])
    with pytest.raises(ValueError, match="at least one patch"):
        open_clip_image_tokens(model, images[:, :, :4, :4], pos_interpolation="size")
    with pytest.raises(ValueError, match="project=False"):
        open_clip_image_tokens(make_clip("attn_pool"), images)


def test_text_bad_input() -> None:
    model = make_clip()
    text = captions()
    with pytest.raises(TypeError, match="integer token ids"):
        open_clip_text_tokens(model, text.float())
    with pytest.raises(ValueError, match="text must have shape"):
        open_clip_text_tokens(model, text[0])
    with pytest.raises(ValueError, match="must not be empty"):
        open_clip_text_tokens(model, text[:0])
    with pytest.raises(TypeError, match="CustomTextCLIP"):
        open_clip_text_tokens(torch.nn.Linear(2, 2), text)
    with pytest.raises(ValueError, match="no EOT position"):
        open_clip_text_tokens(make_clip(text={"pool_type": "last"}), text)
    with pytest.raises(ValueError, match="CoCa"):
        open_clip_text_tokens(make_clip(text={"embed_cls": True}), text)
    with pytest.raises(TypeError, match="integer token ids"):
        text_token_mask(text.bool())
    with pytest.raises(ValueError, match="text must have shape"):
        text_token_mask(text[0])
    assert int(text.max()) == EOT
