"""Token masking: random patch dropout, cluster masking and token gather/scatter helpers.

Everything here returns indices (which patches an encoder keeps), never modified
tokens, and every random op takes a ``torch.Generator``. Feed ``keep_idx`` and the
filler ``key_padding_mask`` to :func:`vlp.adapters.open_clip_masked_image_tokens` /
:func:`vlp.adapters.timm_vit_masked_tokens`, or use :class:`ClusterMasking` as the
``mask_fn`` of :class:`vlp.adapters.MaskedImageEncoder`.
"""

from vlp.kernels.cluster_scores import cluster_scores
from vlp.masking.cluster import (
    Calibration,
    ClusterFeatures,
    ClusterMask,
    ClusterMasking,
    KeptLength,
    KeptTokens,
    calibrate_threshold,
    cluster_mask,
    max_kept,
    num_anchors,
    realised_ratio,
    sample_anchors,
    select_kept_tokens,
)
from vlp.masking.cluster_embed import embedding_rgb_scores, embedding_weight
from vlp.masking.draw import draw_mask
from vlp.masking.dropout import gather_tokens, num_kept, patch_dropout, random_patch_mask
from vlp.masking.patches import grid_size, patch_features, patchify, unpatchify

__all__ = [
    "Calibration",
    "ClusterFeatures",
    "ClusterMask",
    "ClusterMasking",
    "KeptLength",
    "KeptTokens",
    "calibrate_threshold",
    "cluster_mask",
    "cluster_scores",
    "draw_mask",
    "embedding_rgb_scores",
    "embedding_weight",
    "gather_tokens",
    "grid_size",
    "max_kept",
    "num_anchors",
    "num_kept",
    "patch_dropout",
    "patch_features",
    "patchify",
    "random_patch_mask",
    "realised_ratio",
    "sample_anchors",
    "select_kept_tokens",
    "unpatchify",
]
