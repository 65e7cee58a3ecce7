"""Heads: cross-attention pooler, projection and DINO-style heads, EMA and frozen teachers."""

# COSMOS: cross-attention pooler, cross-modal head, EMA teacher
from vlp.heads.cross_attention import COSMOSHead, CrossAttentionPooler
from vlp.heads.ema import EMATeacher, cosine_momentum, ema_update

# Learnable temperature
from vlp.heads.logit_scale import LogitScale

__all__ = [
    # COSMOS: cross-attention pooler, cross-modal head, EMA teacher
    "COSMOSHead",
    "CrossAttentionPooler",
    "EMATeacher",
    # Learnable temperature
    "LogitScale",
    # COSMOS
    "cosine_momentum",
    "ema_update",
]
