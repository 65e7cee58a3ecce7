"""Augmentations: multi-crop image views, text cropping and caption sampling."""

__all__: list[str] = []
