"""Heads: cross-attention pooler, projection and DINO-style heads, EMA and frozen teachers."""

__all__: list[str] = []
