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

# S-SMKE: frozen teacher, memory bank, model parts and the student builder
from vlp.heads.frozen_teacher import FrozenTeacher
from vlp.heads.memory_bank import TeacherMemoryBank
from vlp.heads.ssmke import (
    IMAGE_TYPE,
    SSMKE,
    TEXT_TYPE,
    PostLNBlock,
    SharedBlock,
    SSMKEHead,
    SSMKEOutput,
    TokenTypeEmbedding,
)
from vlp.heads.ssmke_student import (
    OpenClipTextEncoder,
    TimmViTEncoder,
    build_ssmke,
    load_pretrained,
    load_state_dict_file,
)

__all__ += [
    "IMAGE_TYPE",
    "SSMKE",
    "TEXT_TYPE",
    "FrozenTeacher",
    "OpenClipTextEncoder",
    "PostLNBlock",
    "SSMKEHead",
    "SSMKEOutput",
    "SharedBlock",
    "TeacherMemoryBank",
    "TimmViTEncoder",
    "TokenTypeEmbedding",
    "build_ssmke",
    "load_pretrained",
    "load_state_dict_file",
]
