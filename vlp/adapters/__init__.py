"""Adapters for unmodified open_clip and timm models (not forks).

Dense tokens out of their towers, masked image encoding, LoRA, truncated pretrained
encoders (:class:`TimmViTEncoder`, :class:`OpenClipTextEncoder`) and checkpoint loaders
(:func:`load_state_dict_file`, :func:`load_pretrained`). open_clip and timm are imported
where a function uses them, not when this package is imported.
"""

from vlp.adapters.dense import DenseAttention, open_clip_dense_features
from vlp.adapters.lora import (
    LoRAInit,
    LoRATarget,
    LoRAUpdate,
    apply_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    merge_lora,
)
from vlp.adapters.masked import MaskedImageEncoder, MaskFn
from vlp.adapters.openclip import (
    FillerAttention,
    open_clip_image_tokens,
    open_clip_masked_image_tokens,
    open_clip_multi_crop_tokens,
    open_clip_pos_embed,
    open_clip_text_tokens,
)
from vlp.adapters.pos_embed import PosInterpolation, interpolate_pos_embed
from vlp.adapters.pretrained import (
    OpenClipTextEncoder,
    StateSource,
    TimmViTEncoder,
    load_pretrained,
    load_state_dict_file,
)
from vlp.adapters.timm_vit import timm_vit_masked_tokens, timm_vit_tokens
from vlp.adapters.tokens import DenseTokens, text_token_mask

__all__ = [
    "DenseAttention",
    "DenseTokens",
    "FillerAttention",
    "LoRAInit",
    "LoRATarget",
    "LoRAUpdate",
    "MaskFn",
    "MaskedImageEncoder",
    "OpenClipTextEncoder",
    "PosInterpolation",
    "StateSource",
    "TimmViTEncoder",
    "apply_lora",
    "interpolate_pos_embed",
    "load_lora_state_dict",
    "load_pretrained",
    "load_state_dict_file",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
    "open_clip_dense_features",
    "open_clip_image_tokens",
    "open_clip_masked_image_tokens",
    "open_clip_multi_crop_tokens",
    "open_clip_pos_embed",
    "open_clip_text_tokens",
    "text_token_mask",
    "timm_vit_masked_tokens",
    "timm_vit_tokens",
]
