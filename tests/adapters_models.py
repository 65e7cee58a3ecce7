"""Tiny randomly initialised open_clip / timm models shared by the adapter tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from timm.models.vision_transformer import VisionTransformer


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and the CI machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EMBED = 16
CONTEXT = 12
VOCAB = 100
SOT, EOT = 98, 99  # the argmax rule needs EOT to be the largest id in a row

#: open_clip vision configs covering the pooling variants (image size 32, patch 8 -> 4x4 grid).
VISION_CONFIGS: dict[str, dict[str, Any]] = {
    "tok": {},
    "avg": {"pool_type": "avg"},
    "final_ln_after_pool": {"final_ln_after_pool": True, "pool_type": "avg"},
    "attn_pool": {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
    "custom_block_nonsquare": {"qk_norm": True, "image_size": (24, 40), "ls_init_value": 0.5},
}


def make_clip(name: str = "tok", *, seed: int = 0, text: dict[str, Any] | None = None) -> Any:
    """A tiny open_clip.CLIP (or CustomTextCLIP when ``text`` asks for one), in eval mode."""
    torch.manual_seed(seed)
    vision = {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32}
    vision.update(VISION_CONFIGS[name])
    text_cfg = {
        "context_length": CONTEXT,
        "vocab_size": VOCAB,
        "width": 32,
        "heads": 2,
        "layers": 2,
    }
    text_cfg.update(text or {})
    cls = open_clip.CustomTextCLIP if text else open_clip.CLIP
    model = cls(EMBED, CLIPVisionCfg(**vision), CLIPTextCfg(**text_cfg))
    return model.eval()


def make_timm(*, seed: int = 0, **kwargs: Any) -> VisionTransformer:
    """A tiny timm ViT on 32 px images (patch 8), in eval mode."""
    torch.manual_seed(seed)
    args: dict[str, Any] = {
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "num_classes": 10,
    }
    args.update(kwargs)
    return VisionTransformer(**args).eval()


def image_size(model: Any) -> tuple[int, int]:
    return tuple(model.visual.image_size)


def images_for(model: Any, batch: int = 3, *, seed: int = 1, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *image_size(model), generator=g, dtype=dtype)


def captions() -> torch.Tensor:
    """Token ids (3, CONTEXT): SOT, words, EOT, zero padding; one row fills the context."""
    rows = [
        [SOT, 5, 6, 7, EOT],
        [SOT, 0, 12, EOT],  # id 0 inside the caption (``!`` in the CLIP vocabulary)
        [SOT, *range(10, 10 + CONTEXT - 2), EOT],
    ]
    out = torch.zeros(len(rows), CONTEXT, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out
