"""Heads: cross-attention pooler, EMA and frozen teachers, memory bank, S-SMKE model parts.

- :class:`LogitScale`: a learnable, clamped temperature shared by every suite.
- COSMOS: :class:`CrossAttentionPooler`, :class:`COSMOSHead`, :class:`EMATeacher`,
  :func:`ema_update`, :func:`cosine_momentum`.
- S-SMKE: :class:`FrozenTeacher`, :class:`TeacherMemoryBank`, the model parts
  (:class:`TokenTypeEmbedding`, :class:`SharedBlock`, :class:`SSMKEHead`, :class:`SSMKE`)
  and the student builder :func:`build_ssmke` with its checkpoint loaders.
"""

from vlp.heads.cross_attention import COSMOSHead, CrossAttentionPooler
from vlp.heads.ema import EMATeacher, cosine_momentum, ema_update
from vlp.heads.frozen_teacher import FrozenTeacher
from vlp.heads.logit_scale import LogitScale
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

__all__ = [
    "IMAGE_TYPE",
    "SSMKE",
    "TEXT_TYPE",
    "COSMOSHead",
    "CrossAttentionPooler",
    "EMATeacher",
    "FrozenTeacher",
    "LogitScale",
    "OpenClipTextEncoder",
    "PostLNBlock",
    "SSMKEHead",
    "SSMKEOutput",
    "SharedBlock",
    "TeacherMemoryBank",
    "TimmViTEncoder",
    "TokenTypeEmbedding",
    "build_ssmke",
    "cosine_momentum",
    "ema_update",
    "load_pretrained",
    "load_state_dict_file",
]
