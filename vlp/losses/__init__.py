"""Losses: contrastive (CLIP, SigLIP), hard negatives (NegCLIP, FSC-CLIP) and distillation.

Every loss is a pure function with a thin ``nn.Module`` beside it that holds its
configuration or learnable parameters.
"""

# Contrastive (CLIP)
from vlp.losses.clip import ClipLoss, ClipLossOutput, clip_loss

# Hard negatives (NegCLIP, FSC-CLIP)
from vlp.losses.fsc_clip import FSCCLIPLoss, FSCCLIPLossOutput, fsc_clip_loss
from vlp.losses.hard_negative import hard_negative_loss
from vlp.losses.local_hard_negative import local_hard_negative_loss
from vlp.losses.negclip import negclip_loss
from vlp.losses.scr import scr_loss

# Contrastive (SigLIP)
from vlp.losses.siglip import SigLipLoss, siglip_loss

__all__ = [
    "ClipLoss",
    "ClipLossOutput",
    "FSCCLIPLoss",
    "FSCCLIPLossOutput",
    "SigLipLoss",
    "clip_loss",
    "fsc_clip_loss",
    "hard_negative_loss",
    "local_hard_negative_loss",
    "negclip_loss",
    "scr_loss",
    "siglip_loss",
]
