"""Heads: cross-attention pooler, projection and DINO-style heads, EMA and frozen teachers."""

# Learnable temperature
from vlp.heads.logit_scale import LogitScale

__all__ = [
    # Learnable temperature
    "LogitScale",
]

# S-SMKE: frozen teacher and its memory bank
from vlp.heads.frozen_teacher import FrozenTeacher
from vlp.heads.memory_bank import TeacherMemoryBank

__all__ += [
    "FrozenTeacher",
    "TeacherMemoryBank",
]
