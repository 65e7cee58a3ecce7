"""Losses: contrastive (CLIP, SigLIP), hard negatives (NegCLIP, FSC-CLIP) and distillation.

Every loss is a pure function with a thin ``nn.Module`` beside it that holds its
configuration or learnable parameters.

- Contrastive: :func:`clip_loss`, :func:`siglip_loss`, :func:`multiview_clip_loss`.
- Hard negatives: :func:`negclip_loss`, :func:`hard_negative_loss`,
  :func:`local_hard_negative_loss`, :func:`scr_loss`, :func:`fsc_clip_loss` (FSC-CLIP).
- Gradient caching: :class:`GradCache` (exact full-batch gradients, micro-batched encoders).
- Distillation: :func:`cosmos_distillation_loss` (COSMOS),
  :func:`contrastive_distillation_loss`, :func:`feature_distillation_loss` and
  :func:`ssmke_loss` (S-SMKE).
- The state they own: :class:`LogitScale` (a learnable, clamped temperature) and
  :class:`TeacherMemoryBank` (S-SMKE's bank of past teacher embeddings).
"""

from vlp.losses.clip import ClipLoss, ClipLossOutput, clip_loss
from vlp.losses.cosmos import (
    COSMOSLoss,
    COSMOSLossOutput,
    cosmos_distillation_loss,
    multiview_clip_loss,
)
from vlp.losses.distill import (
    ContrastiveDistillationLoss,
    ContrastiveDistillationOutput,
    SSMKELossOutput,
    contrastive_distillation_loss,
    feature_distillation_loss,
    ssmke_loss,
)
from vlp.losses.fsc_clip import FSCCLIPLoss, FSCCLIPLossOutput, fsc_clip_loss
from vlp.losses.grad_cache import GradCache
from vlp.losses.hard_negative import hard_negative_loss
from vlp.losses.local_hard_negative import local_hard_negative_loss
from vlp.losses.logit_scale import LogitScale
from vlp.losses.memory_bank import TeacherMemoryBank
from vlp.losses.negclip import negclip_loss
from vlp.losses.scr import scr_loss
from vlp.losses.siglip import SigLipLoss, siglip_loss

__all__ = [
    "COSMOSLoss",
    "COSMOSLossOutput",
    "ClipLoss",
    "ClipLossOutput",
    "ContrastiveDistillationLoss",
    "ContrastiveDistillationOutput",
    "FSCCLIPLoss",
    "FSCCLIPLossOutput",
    "GradCache",
    "LogitScale",
    "SSMKELossOutput",
    "SigLipLoss",
    "TeacherMemoryBank",
    "clip_loss",
    "contrastive_distillation_loss",
    "cosmos_distillation_loss",
    "feature_distillation_loss",
    "fsc_clip_loss",
    "hard_negative_loss",
    "local_hard_negative_loss",
    "multiview_clip_loss",
    "negclip_loss",
    "scr_loss",
    "siglip_loss",
    "ssmke_loss",
]
