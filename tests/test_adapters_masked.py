"""Masked encoding (kept patches + filler key padding) with unmodified open_clip / timm ViTs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adapters_models import (
    VISION_CONFIGS,
    images_for,
    make_clip,
    make_timm,
    single_thread,  # noqa: F401  (autouse fixture)
)

from vlp.adapters import (
    MaskedImageEncoder,
    open_clip_image_tokens,
    open_clip_masked_image_tokens,
    timm_vit_masked_tokens,
    timm_vit_tokens,
)
from vlp.testing import assert_close

TIMM_CONFIGS: dict[str, dict[str, Any]] = {
    "token": {},
    "avg": {"global_pool": "avg"},
    "max_registers": {"global_pool": "max", "reg_tokens": 2},
    "map": {"global_pool": "map", "num_classes": 0},
    "avgmax_no_embed_class": {"global_pool": "avgmax", "no_embed_class": True, "reg_tokens": 1},
}


def _mask(batch: int, num_patches: int, kept: int, seed: int = 0):
    """Random keep_idx (B, K) with per-row filler counts 0, 1, ..., and the last row all fillers."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.stack([torch.randperm(num_patches, generator=g)[:kept] for _ in range(batch)])
    pad = torch.zeros(batch, kept, dtype=torch.bool)
    for b in range(batch):
        fillers = kept if b == batch - 1 else min(b, kept - 1)
        pad[b, kept - fillers :] = True
    return keep, pad


def _perturb_hidden(images: torch.Tensor, keep, pad, patch: tuple[int, int], grid_w: int):
    """Replace the pixels of every patch that is not a kept, non-filler patch."""
    out = images.clone()
    noise = torch.randn(
        images.shape, generator=torch.Generator().manual_seed(9), dtype=images.dtype
    )
    hidden = torch.ones(images.shape[0], out.shape[2] // patch[0] * grid_w, dtype=torch.bool)
    for b in range(images.shape[0]):
        hidden[b, keep[b][~pad[b]]] = False
    for b, j in hidden.nonzero().tolist():
        r, c = divmod(j, grid_w)
        rows = slice(r * patch[0], (r + 1) * patch[0])
        cols = slice(c * patch[1], (c + 1) * patch[1])
        out[b, :, rows, cols] = 5 * noise[b, :, rows, cols]
    return out


def _other_fillers(keep, pad, num_patches: int):
    """Point every filler slot at a different patch index."""
    keep = keep.clone()
    keep[pad] = (keep[pad] + 3) % num_patches
    return keep


@pytest.mark.parametrize("name", list(VISION_CONFIGS))
def test_open_clip_pooled_ignores_masked_pixels_and_fillers(name: str) -> None:
    model = make_clip(name).double()
    visual = model.visual
    project = name != "attn_pool"
    images = images_for(model, batch=4, dtype=torch.float64)
    num_patches = visual.grid_size[0] * visual.grid_size[1]
    keep, pad = _mask(4, num_patches, kept=num_patches // 2 + 1)
    ref = open_clip_masked_image_tokens(model, images, keep, pad, project=project)
    assert torch.equal(ref.mask, ~pad)
    assert bool(torch.isfinite(ref.pooled).all())

    hidden = _perturb_hidden(images, keep, pad, visual.patch_size, visual.grid_size[1])
    assert float((hidden - images).abs().max()) > 1
    out = open_clip_masked_image_tokens(model, hidden, keep, pad, project=project)
    assert_close(out.pooled, ref.pooled, rtol=0, atol=1e-6)
    assert_close(out.tokens[~pad], ref.tokens[~pad], rtol=0, atol=1e-6)

    moved = open_clip_masked_image_tokens(
        model, images, _other_fillers(keep, pad, num_patches), pad, project=project
    )
    assert_close(moved.pooled, ref.pooled, rtol=0, atol=1e-6)

    # the test can fail: a kept visible patch does move the embedding
    visible = images.clone()
    r, c = divmod(int(keep[0, 0]), visual.grid_size[1])
    ph, pw = visual.patch_size
    visible[0, :, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] += 3
    changed = open_clip_masked_image_tokens(model, visible, keep, pad, project=project)
    assert float((changed.pooled[0] - ref.pooled[0]).detach().abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["tok", "avg", "attn_pool"])
def test_open_clip_fillers_equal_dropping_them(name: str) -> None:
    """Key padding is exactly variable-length encoding of the visible patches."""
    model = make_clip(name).double()
    project = name != "attn_pool"
    images = images_for(model, batch=3, dtype=torch.float64)
    keep, pad = _mask(3, 16, kept=7)
    padded = open_clip_masked_image_tokens(model, images, keep, pad, project=project)
    for b in range(2):  # the last row is all fillers
        alone = open_clip_masked_image_tokens(
            model, images[b : b + 1], keep[b : b + 1, ~pad[b]], project=project
        )
        assert_close(padded.pooled[b], alone.pooled[0], rtol=0, atol=1e-10)
        assert_close(padded.tokens[b, ~pad[b]], alone.tokens[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(VISION_CONFIGS))
def test_open_clip_keeping_every_patch_is_the_full_forward(name: str) -> None:
    model = make_clip(name).double()
    project = name != "attn_pool"
    images = images_for(model, dtype=torch.float64)
    num_patches = model.visual.grid_size[0] * model.visual.grid_size[1]
    full = open_clip_image_tokens(model, images, project=project)
    keep = torch.arange(num_patches).expand(3, -1)
    same = open_clip_masked_image_tokens(
        model, images, keep, torch.zeros_like(keep).bool(), project=project
    )
    assert_close(same.pooled, full.pooled, rtol=0, atol=1e-10)
    assert_close(same.tokens, full.tokens, rtol=0, atol=1e-10)
    # a shuffled order: positions travel with their tokens, so tokens just permute
    perm = torch.randperm(num_patches, generator=torch.Generator().manual_seed(0))
    shuffled = open_clip_masked_image_tokens(model, images, perm.expand(3, -1), project=project)
    assert_close(shuffled.tokens, full.tokens[:, perm], rtol=0, atol=1e-10)
    if name != "attn_pool":  # the attentional pooler's queries are order-free as well
        assert_close(shuffled.pooled, full.pooled, rtol=0, atol=1e-10)


def test_open_clip_masked_trains_and_interpolates() -> None:
    model = make_clip("tok").train()
    crops = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([[0, 3], [1, 2]])
    pad = torch.tensor([[False, True], [False, False]])
    out = open_clip_masked_image_tokens(model, crops, keep, pad, pos_interpolation="reference")
    out.pooled.sum().backward()
    assert float(model.visual.positional_embedding.grad.abs().sum()) > 0
    assert out.tokens.shape == (2, 2, 16)


@pytest.mark.parametrize("name", list(TIMM_CONFIGS))
def test_timm_pooled_ignores_masked_pixels_and_fillers(name: str) -> None:
    model = make_timm(**TIMM_CONFIGS[name]).double()
    images = torch.randn(
        4, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    keep, pad = _mask(4, 16, kept=9)
    ref = timm_vit_masked_tokens(model, images, keep, pad)
    assert bool(torch.isfinite(ref.pooled).all())
    hidden = _perturb_hidden(images, keep, pad, (8, 8), 4)
    out = timm_vit_masked_tokens(model, hidden, keep, pad)
    assert_close(out.pooled, ref.pooled, rtol=0, atol=1e-6)
    moved = timm_vit_masked_tokens(model, images, _other_fillers(keep, pad, 16), pad)
    assert_close(moved.pooled, ref.pooled, rtol=0, atol=1e-6)
    for b in range(3):
        alone = timm_vit_masked_tokens(model, images[b : b + 1], keep[b : b + 1, ~pad[b]])
        assert_close(ref.pooled[b], alone.pooled[0], rtol=0, atol=1e-10)
    visible = images.clone()
    r, c = divmod(int(keep[0, 0]), 4)
    visible[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 3
    changed = timm_vit_masked_tokens(model, visible, keep, pad)
    assert float((changed.pooled[0] - ref.pooled[0]).detach().abs().max()) > 1e-3
    full = timm_vit_tokens(model, images)
    every = timm_vit_masked_tokens(model, images, torch.arange(16).expand(4, -1))
    assert_close(every.pooled, full.pooled, rtol=0, atol=1e-10)
    assert_close(every.tokens, full.tokens, rtol=0, atol=1e-10)


def test_masked_image_encoder_masks_in_training_only() -> None:
    model = make_clip("avg")
    images = images_for(model)
    calls: list[int] = []
    keep, pad = _mask(3, 16, kept=6)

    def mask_fn(x: torch.Tensor):
        calls.append(x.shape[0])
        return keep, pad

    encoder = MaskedImageEncoder(model.visual, mask_fn)
    assert encoder.training
    masked = encoder(images)
    assert calls == [3] and masked.tokens.shape == (3, 6, 16)
    assert_close(masked.pooled, open_clip_masked_image_tokens(model, images, keep, pad).pooled)
    encoder.eval()
    assert not model.visual.training
    full = encoder(images)
    assert calls == [3]
    assert torch.equal(full.pooled, model.encode_image(images))
    explicit = encoder(images, keep, pad)  # explicit indices apply in eval mode too
    assert explicit.tokens.shape == (3, 6, 16)

    vit = make_timm(global_pool="avg")
    timm_encoder = MaskedImageEncoder(vit, mask_fn).eval()
    assert torch.equal(timm_encoder(images_for(model)).pooled, vit(images_for(model)))
    timm_encoder.train()
    assert timm_encoder(images).tokens.shape == (3, 6, 10)


def test_masked_bad_input() -> None:
    model = make_clip()
    images = images_for(model)
    keep, pad = _mask(3, 16, kept=4)
    with pytest.raises(TypeError, match="keep_idx must have dtype torch.int64"):
        open_clip_masked_image_tokens(model, images, keep.int(), pad)
    with pytest.raises(TypeError, match="keep_idx must be a torch.Tensor"):
        open_clip_masked_image_tokens(model, images, [[0]], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_idx must have shape"):
        open_clip_masked_image_tokens(model, images, keep[:2], pad[:2])
    with pytest.raises(ValueError, match=r"0 <= i < 16"):
        open_clip_masked_image_tokens(model, images, keep + 16, pad)
    with pytest.raises(ValueError, match="at least one patch"):
        open_clip_masked_image_tokens(model, images, keep[:, :0], pad[:, :0])
    with pytest.raises(TypeError, match="key_padding_mask must have dtype torch.bool"):
        open_clip_masked_image_tokens(model, images, keep, pad.long())
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        open_clip_masked_image_tokens(model, images, keep, pad[:, :2])
    vit = make_timm()
    with pytest.raises(ValueError, match=r"0 <= i < 16"):
        timm_vit_masked_tokens(vit, images, keep.clone().fill_(-1), pad)
    with pytest.raises(TypeError, match="VisionTransformer"):
        timm_vit_masked_tokens(torch.nn.Linear(2, 2), images, keep, pad)
    with pytest.raises(TypeError, match="ViT image tower"):
        MaskedImageEncoder(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="mask_fn must be callable"):
        MaskedImageEncoder(model, mask_fn=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pos_interpolation applies to open_clip"):
        MaskedImageEncoder(vit, pos_interpolation="reference")
    with pytest.raises(ValueError, match="without keep_idx"):
        MaskedImageEncoder(model)(images, key_padding_mask=pad)


def test_reference_filler_attention_reproduces_the_released_boolean_mask() -> None:
    """filler_attention='reference' = a visible-pair boolean mask fed to open_clip's blocks,
    which cast it to a +1 bias (cluster-masking spec A3.9): fillers stay visible."""
    model = make_clip("tok").double()
    visual = model.visual
    images = images_for(model, batch=4, dtype=torch.float64)
    keep, pad = _mask(4, 16, kept=9)
    out = open_clip_masked_image_tokens(model, images, keep, pad, filler_attention="reference")

    # the released mechanism, written out: embed, gather, boolean mask straight into open_clip
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(4, 1, -1), x], dim=1)
    x = x + visual.positional_embedding
    x = torch.cat([x[:, :1], x[:, 1:][torch.arange(4)[:, None], keep]], dim=1)
    visible = torch.cat([torch.ones(4, 1, dtype=torch.bool), ~pad], dim=1)
    boolean = (visible[:, :, None] & visible[:, None, :]).repeat_interleave(2, dim=0)
    x = visual.transformer(visual.ln_pre(x), attn_mask=boolean)
    expected = visual.ln_post(x)[:, 0] @ visual.proj
    assert_close(out.pooled, expected, rtol=0, atol=1e-12)

    # fillers leak into the embedding under the reference mask, not under the clean one
    moved = _other_fillers(keep, pad, 16)
    leaked = open_clip_masked_image_tokens(model, images, moved, pad, filler_attention="reference")
    assert float((leaked.pooled[1:] - out.pooled[1:]).detach().abs().max()) > 1e-4
    # without fillers the +1 bias is uniform per row and cancels in the softmax
    no_fill = torch.zeros_like(pad)
    assert_close(
        open_clip_masked_image_tokens(
            model, images, keep, no_fill, filler_attention="reference"
        ).pooled,
        open_clip_masked_image_tokens(model, images, keep, no_fill).pooled,
        rtol=0,
        atol=1e-10,
    )
    with pytest.raises(ValueError, match="filler_attention must be"):
        open_clip_masked_image_tokens(model, images, keep, pad, filler_attention="bool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="open_clip towers only"):
        MaskedImageEncoder(make_timm(), filler_attention="reference")
    encoder = MaskedImageEncoder(visual, lambda _: (keep, pad), filler_attention="reference")
    assert_close(encoder(images).pooled, out.pooled, rtol=0, atol=0)


def test_gradient_checkpointing_is_honoured_and_patch_dropout_skipped() -> None:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    keep, pad = _mask(3, 16, kept=6)
    vit = make_timm(global_pool="avg", patch_drop_rate=0.5).train()
    clip = make_clip("tok").train()
    runs = []
    for enabled in (False, True):
        vit.set_grad_checkpointing(enabled)
        clip.visual.set_grad_checkpointing(enabled)
        vit.zero_grad()
        clip.zero_grad()
        a = timm_vit_masked_tokens(vit, images, keep, pad).pooled
        b = open_clip_masked_image_tokens(clip, images, keep, pad).pooled
        (a.square().sum() + b.square().sum()).backward()
        grads = (vit.blocks[0].attn.qkv.weight.grad.clone(), clip.visual.conv1.weight.grad.clone())
        runs.append((a.detach(), b.detach(), grads))
    for first, second in zip(runs[0][:2] + runs[0][2], runs[1][:2] + runs[1][2]):
        assert_close(first, second, rtol=1e-5, atol=1e-6)
    # the model's own PatchDropout (training only) is not applied: the full grid comes back
    assert timm_vit_tokens(vit, images).tokens.shape == (3, 16, 10)
