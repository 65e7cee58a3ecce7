"""Heads: learnable temperature, cross-attention pooler, EMA and frozen teachers, memory bank.

Parts for the user's own model, not whole models (those live in :mod:`vlp.models`).

- :class:`LogitScale`: a learnable, clamped temperature shared by every suite.
- COSMOS: :class:`CrossAttentionPooler`, :class:`COSMOSHead`, :class:`EMATeacher`,
  :func:`ema_update`, :func:`cosine_momentum`.
- S-SMKE: :class:`FrozenTeacher`, :class:`TeacherMemoryBank`. The student model moved to
  :mod:`vlp.models` (:func:`vlp.models.build_ssmke`), its encoder wrappers and checkpoint
  loaders to :mod:`vlp.adapters`; the old names here still work for one release, with a
  ``DeprecationWarning``.
"""

from vlp._deprecated import Target, deprecated_getattr, deprecated_modules, moved
from vlp.heads.cross_attention import COSMOSHead, CrossAttentionPooler
from vlp.heads.ema import EMATeacher, cosine_momentum, ema_update
from vlp.heads.frozen_teacher import FrozenTeacher
from vlp.heads.logit_scale import LogitScale
from vlp.heads.memory_bank import TeacherMemoryBank

__all__ = [
    "COSMOSHead",
    "CrossAttentionPooler",
    "EMATeacher",
    "FrozenTeacher",
    "LogitScale",
    "TeacherMemoryBank",
    "cosine_momentum",
    "ema_update",
]

# Moved in 0.2 (issue 12): the S-SMKE student to vlp.models, its encoder wrappers and
# checkpoint loaders to vlp.adapters.
_SSMKE: dict[str, Target] = moved(
    (
        "IMAGE_TYPE",
        "SSMKE",
        "TEXT_TYPE",
        "PostLNBlock",
        "SSMKEHead",
        "SSMKEOutput",
        "SharedBlock",
        "TokenTypeEmbedding",
    ),
    "vlp.models.ssmke",
    public="vlp.models",
)
_STUDENT: dict[str, Target] = {
    **moved(
        ("OpenClipTextEncoder", "TimmViTEncoder"), "vlp.adapters.pretrained", public="vlp.adapters"
    ),
    **moved(
        ("load_pretrained", "load_state_dict_file"),
        "vlp.adapters.pretrained",
        public="vlp.adapters",
    ),
    **moved(("build_ssmke",), "vlp.models.ssmke", public="vlp.models"),
}
__getattr__ = deprecated_getattr(__name__, {**_SSMKE, **_STUDENT})
deprecated_modules({"vlp.heads.ssmke": _SSMKE, "vlp.heads.ssmke_student": _STUDENT})
