"""Dense tokens out of unmodified timm ViTs."""

from __future__ import annotations

import pytest
import timm
import torch
from adapters_models import (
    make_timm,
    single_thread,  # noqa: F401  (autouse fixture)
)

from vlp.adapters import timm_vit_tokens
from vlp.testing import assert_close

TIMM_CONFIGS = {
    "token": {},
    "avg_fc_norm": {"global_pool": "avg"},
    "registers_no_embed_class": {"reg_tokens": 2, "no_embed_class": True},
    "map_headless": {"global_pool": "map", "num_classes": 0},
}


@pytest.mark.parametrize("name", list(TIMM_CONFIGS))
def test_pooled_equals_model_output_and_tokens_exclude_prefix(name: str) -> None:
    model = make_timm(**TIMM_CONFIGS[name]).double()
    images = torch.randn(
        2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    out = timm_vit_tokens(model, images)
    assert torch.equal(out.pooled, model(images))
    features = model.forward_features(images)
    raw = timm_vit_tokens(model, images, project=False)
    assert torch.equal(raw.pooled, model.forward_head(features, pre_logits=True))
    assert raw.tokens.shape == (2, 16, 32)
    assert torch.equal(raw.tokens, features[:, model.num_prefix_tokens :])
    assert bool(out.mask.all()) and out.mask.shape == (2, 16)
    # projected tokens: the head path applied per token
    assert_close(out.tokens, model.head(model.fc_norm(raw.tokens)), rtol=0, atol=1e-12)
    if name == "token":
        # the CLS token is not a patch token: pooled = head(CLS), tokens are the 16 patches
        assert_close(out.pooled, model.head(features[:, 0]), rtol=0, atol=1e-12)
    if name == "avg_fc_norm":
        assert_close(raw.pooled, model.fc_norm(raw.tokens.mean(dim=1)), rtol=0, atol=1e-12)


def test_timm_create_model_vit_tiny() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=0
    ).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = timm_vit_tokens(model, images)
    assert torch.equal(out.pooled, model(images))
    assert out.tokens.shape == (2, 4, 192)


def test_timm_bad_input() -> None:
    model = make_timm()
    with pytest.raises(TypeError, match="timm.models.vision_transformer.VisionTransformer"):
        timm_vit_tokens(torch.nn.Linear(2, 2), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="images must have shape"):
        timm_vit_tokens(model, torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        timm_vit_tokens(model, torch.zeros(1, 3, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="must not be empty"):
        timm_vit_tokens(model, torch.randn(0, 3, 32, 32))
