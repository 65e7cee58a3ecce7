"""Dense tokens out of unmodified open_clip and timm models (adapters, not forks)."""

__all__: list[str] = []
