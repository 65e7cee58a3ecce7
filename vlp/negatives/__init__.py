"""Rule-based hard-negative captions (swap, replace, shuffle) on a shipped lexicon."""

__all__: list[str] = []
