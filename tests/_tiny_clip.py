"""Test helpers: the recipes' tiny open_clip CLIP and its tokenizer, built offline.

The same configuration as the one written out in each ``examples/*.py`` recipe (a ViT on
64x64 images with 8x8 patches, 2 layers, width 64; a 2-layer text transformer with a
32-token context), so that tests can load a recipe's checkpoint.
"""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

VISION_CFG: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,
    "width": 64,
    "layers": 2,
    "head_width": 32,
    "mlp_ratio": 2.0,
}
TEXT_CFG: dict[str, Any] = {
    "context_length": 32,
    "vocab_size": 49408,
    "width": 64,
    "heads": 2,
    "layers": 2,
    "mlp_ratio": 2.0,
}


def tiny_clip(
    *, embed_dim: int = 64, vision: dict[str, Any] | None = None, text: dict[str, Any] | None = None
) -> open_clip.CLIP:
    """The recipes' tiny CLIP, randomly initialised; ``vision``/``text`` override config keys."""
    return open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(**{**VISION_CFG, **(vision or {})}),
        text_cfg=CLIPTextCfg(**{**TEXT_CFG, **(text or {})}),
    )


def tokenizer(context_length: int = 32) -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE tokenizer (bundled with open_clip)."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """The recipes' input: uint8 images scaled to [0, 1], normalised with mean 0.38, std 0.2."""
    return (images.float() / 255 - 0.38) / 0.2
