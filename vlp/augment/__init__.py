"""Augmentations: multi-crop image views, text cropping and caption sampling."""

# COSMOS: multi-crop views and text crops
from vlp.augment.multicrop import CLIP_MEAN, CLIP_STD, MultiCropTransform
from vlp.augment.text import split_sentences, text_crop

__all__ = [
    # COSMOS: multi-crop views and text crops
    "CLIP_MEAN",
    "CLIP_STD",
    "MultiCropTransform",
    "split_sentences",
    "text_crop",
]
