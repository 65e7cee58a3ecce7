"""Augmentations: multi-crop image views, text cropping and caption sampling.

The multi-crop names load with their module on first use, so ``import vlp.augment``
imports neither torchvision nor PIL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlp._lazy import lazy_getattr

# COSMOS: text crops
from vlp.augment.text import split_sentences, text_crop

if TYPE_CHECKING:
    # COSMOS: multi-crop views
    from vlp.augment.multicrop import CLIP_MEAN, CLIP_STD, MultiCropTransform

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "MultiCropTransform",
    "split_sentences",
    "text_crop",
]

__getattr__, __dir__ = lazy_getattr(
    __name__,
    dict.fromkeys(("CLIP_MEAN", "CLIP_STD", "MultiCropTransform"), "vlp.augment.multicrop"),
)
