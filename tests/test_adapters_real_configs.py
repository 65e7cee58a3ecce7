"""The adapters on open_clip's real ViT configurations (randomly initialised, slow)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from adapters_models import single_thread  # noqa: F401  (autouse fixture)

from vlp.adapters import (
    interpolate_pos_embed,
    open_clip_image_tokens,
    open_clip_masked_image_tokens,
    open_clip_text_tokens,
)
from vlp.testing import assert_close

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "grid", "local_grid"), [("ViT-B-32", 7, 3), ("ViT-B-16", 14, 6)])
@torch.no_grad()
def test_clip_vit_b(name: str, grid: int, local_grid: int) -> None:
    model = open_clip.create_model(name, pretrained=None).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = open_clip_image_tokens(model, images)
    assert torch.equal(out.pooled, model.encode_image(images))
    assert out.tokens.shape == (2, grid * grid, 512)

    text = open_clip.get_tokenizer(name)(["a photo of a cat", "two dogs on a red sofa"])
    txt = open_clip_text_tokens(model, text)
    assert torch.equal(txt.pooled, model.encode_text(text))
    assert txt.tokens.shape == (2, 77, 512)
    assert txt.mask.sum(1).tolist() == [6, 7]  # words + EOT (CLIP BPE)

    # COSMOS local crops: 96 px -> (g + 0.1)/sqrt(N) bicubic rule, CLS row unchanged
    crops = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    local = open_clip_image_tokens(model, crops, pos_interpolation="reference")
    assert local.tokens.shape == (2, local_grid * local_grid, 512)
    pos = interpolate_pos_embed(model.visual.positional_embedding, 96, 224 // grid)
    assert pos.shape == (1 + local_grid**2, 768)

    # masked encoding: masked pixels do not matter
    keep = torch.stack([torch.randperm(grid * grid)[:20] for _ in range(2)])
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[:, 15:] = True
    a = open_clip_masked_image_tokens(model, images, keep, pad)
    hidden = torch.ones(2, grid * grid, dtype=torch.bool)
    hidden[0, keep[0, :15]] = False
    hidden[1, keep[1, :15]] = False
    patch = 224 // grid
    noisy = images.clone()
    for b, j in hidden.nonzero().tolist():
        r, c = divmod(j, grid)
        noisy[b, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = 3.0
    assert_close(open_clip_masked_image_tokens(model, noisy, keep, pad).pooled, a.pooled, atol=1e-6)


@torch.no_grad()
def test_coca_attentional_pool_image_tower() -> None:
    model = open_clip.create_model("coca_ViT-B-32", pretrained=None).eval()
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = open_clip_image_tokens(model, images, project=False)
    assert torch.equal(out.pooled @ model.visual.proj, model.encode_image(images, normalize=False))
    assert out.tokens.shape == (1, 49, 768)
