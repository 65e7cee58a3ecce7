"""Losses: contrastive (CLIP, SigLIP), hard negatives (NegCLIP, FSC-CLIP) and distillation.

Every loss is a pure function with a thin ``nn.Module`` beside it that holds its
configuration or learnable parameters.
"""

# Contrastive (CLIP)
from vlp.losses.clip import ClipLoss, ClipLossOutput, clip_loss

# COSMOS: multi-view InfoNCE and cross-modality self-distillation
from vlp.losses.cosmos import (
    COSMOSLoss,
    COSMOSLossOutput,
    cosmos_distillation_loss,
    multiview_clip_loss,
)

# Contrastive (SigLIP)
from vlp.losses.siglip import SigLipLoss, siglip_loss

__all__ = [
    # COSMOS: multi-view InfoNCE and cross-modality self-distillation
    "COSMOSLoss",
    "COSMOSLossOutput",
    # Contrastive (CLIP)
    "ClipLoss",
    "ClipLossOutput",
    # Contrastive (SigLIP)
    "SigLipLoss",
    "clip_loss",
    "cosmos_distillation_loss",
    "multiview_clip_loss",
    "siglip_loss",
]

# Distillation from frozen unimodal teachers (S-SMKE)
from vlp.losses.distill import (
    ContrastiveDistillationLoss,
    ContrastiveDistillationOutput,
    SSMKELossOutput,
    contrastive_distillation_loss,
    feature_distillation_loss,
    ssmke_loss,
)

__all__ += [
    "ContrastiveDistillationLoss",
    "ContrastiveDistillationOutput",
    "SSMKELossOutput",
    "contrastive_distillation_loss",
    "feature_distillation_loss",
    "ssmke_loss",
]
