"""Heads: cross-attention pooler, projection and DINO-style heads, EMA and frozen teachers."""

# Learnable temperature
from vlp.heads.logit_scale import LogitScale

__all__ = [
    # Learnable temperature
    "LogitScale",
]
