"""Heads: cross-attention pooler, EMA and frozen teachers.

Parts for the user's own model, not whole models (those live in :mod:`vlp.models`).

- COSMOS: :class:`CrossAttentionPooler`, :class:`COSMOSHead`, :class:`EMATeacher`,
  :func:`ema_update`, :func:`cosine_momentum`.
- S-SMKE: :class:`FrozenTeacher`. The student model moved to
  :mod:`vlp.models` (:func:`vlp.models.build_ssmke`), its encoder wrappers and checkpoint
  loaders to :mod:`vlp.adapters`; the old names here still work for one release, with a
  ``DeprecationWarning``.
- The loss state moved to :mod:`vlp.losses`: :class:`~vlp.losses.LogitScale` and
  :class:`~vlp.losses.TeacherMemoryBank` (old names here: deprecated aliases).
"""

from vlp._deprecated import Target, deprecated_getattr, deprecated_modules, moved
from vlp.heads.cross_attention import COSMOSHead, CrossAttentionPooler
from vlp.heads.ema import EMATeacher, cosine_momentum, ema_update
from vlp.heads.frozen_teacher import FrozenTeacher

__all__ = [
    "COSMOSHead",
    "CrossAttentionPooler",
    "EMATeacher",
    "FrozenTeacher",
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
# Moved in 0.2 (issue 12): the state the losses own, to vlp.losses.
_LOGIT_SCALE = moved(("LogitScale",), "vlp.losses.logit_scale", public="vlp.losses")
_MEMORY_BANK = moved(("TeacherMemoryBank",), "vlp.losses.memory_bank", public="vlp.losses")
__getattr__ = deprecated_getattr(__name__, {**_SSMKE, **_STUDENT, **_LOGIT_SCALE, **_MEMORY_BANK})
deprecated_modules(
    {
        "vlp.heads.ssmke": _SSMKE,
        "vlp.heads.ssmke_student": _STUDENT,
        "vlp.heads.logit_scale": _LOGIT_SCALE,
        "vlp.heads.memory_bank": _MEMORY_BANK,
    }
)
