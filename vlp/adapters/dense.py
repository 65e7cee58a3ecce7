"""Dense patch embeddings of an open_clip ViT for zero-shot segmentation (SCLIP's CSA).

:func:`open_clip_dense_features` runs an unmodified open_clip image tower and returns its
patch tokens after ``ln_post`` and ``proj`` as a ``(B, g_h, g_w, D)`` grid, the input of
:func:`vlp.eval.sliding_window_scores`. With ``attention="csa"`` the last residual block's
attention is replaced, for this forward only, by SCLIP's correlative self-attention (Wang et
al., ECCV 2024), what the COSMOS release runs with ``--use-csa`` (spec section 8.3): attention
weights ``softmax(Q Qᵀ / √d) + softmax(K Kᵀ / √d)`` over all tokens (CLS included), output
``weights · V`` through ``out_proj``, the block's residual and MLP kept.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlp.adapters.openclip import _check_images, _embed, _vision_tower

__all__ = ["DenseAttention", "open_clip_dense_features"]

#: Attention of the last block: ``"csa"`` (SCLIP correlative self-attention, the COSMOS
#: release's ``--use-csa``) or ``"standard"`` (the tower unchanged).
DenseAttention = Literal["csa", "standard"]


def _csa_block(block: Any, x: torch.Tensor) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` with correlative self-attention; ``x`` (B, S, W)."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise TypeError(
            "attention='csa' needs open_clip ResidualAttentionBlocks with a packed "
            f"nn.MultiheadAttention, got {type(attn).__name__}"
        )
    batch, seq, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (t.reshape(batch, seq, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, -1))
    scale = head_dim**-0.5
    weights = torch.softmax((q * scale) @ q.transpose(-1, -2), dim=-1)
    weights = weights + torch.softmax((k * scale) @ k.transpose(-1, -2), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, seq, width)
    x = x + block.ls_1(attn.out_proj(out))
    out_x: torch.Tensor = x + block.ls_2(block.mlp(block.ln_2(x)))
    return out_x


def open_clip_dense_features(
    model: nn.Module,
    images: torch.Tensor,
    *,
    attention: DenseAttention = "csa",
) -> torch.Tensor:
    """Projected patch embeddings of an open_clip ViT, on the patch grid.

    The tower runs as in ``VisionTransformer.forward`` (patch conv, CLS, positional
    embedding, ``ln_pre``, the residual blocks, ``ln_post`` on every token, ``proj``); with
    ``attention="csa"`` its last block uses SCLIP's correlative self-attention (Wang et al.,
    ECCV 2024), as the COSMOS release does for segmentation (Kim et al., CVPR 2025, spec 8.3).
    With ``attention="standard"`` the result is
    ``open_clip_image_tokens(model, images).tokens`` on the grid. The model is not modified.

    Args:
        model: ``open_clip.CLIP`` / ``CustomTextCLIP`` with a ViT image tower, or the tower;
            towers with an attentional pooler are not supported.
        images: ``(B, 3, H, W)`` float at the tower's input size, preprocessed.
        attention: ``"csa"`` or ``"standard"`` for the last block.

    Returns:
        ``(B, H // p, W // p, D)`` patch embeddings (``D`` the embedding width, unnormalised).

    Raises:
        TypeError: on a model without an open_clip ViT tower, or blocks CSA cannot modify.
        ValueError: on bad images, an unknown ``attention``, or a tower with an attentional
            pooler.
    """
    if attention not in ("csa", "standard"):
        raise ValueError(f"attention must be 'csa' or 'standard', got {attention!r}")
    visual = _vision_tower(model)
    images = _check_images(images, visual)
    if visual.attn_pool is not None:
        raise ValueError(
            "open_clip_dense_features does not support towers with an attentional pooler: "
            "their patch tokens never pass ln_post and proj"
        )
    x = visual.ln_pre(_embed(visual, images, None))
    transformer = visual.transformer
    blocks = list(transformer.resblocks)
    last = len(blocks) - 1 if attention == "csa" else len(blocks)
    batch_first = getattr(transformer, "batch_first", True)
    h = x if batch_first else x.transpose(0, 1)
    for block in blocks[:last]:
        h = block(h)
    if not batch_first:
        h = h.transpose(0, 1)
    if attention == "csa":
        h = _csa_block(blocks[-1], h)
    tokens = visual.ln_post(h[:, 1:])
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    grid_h = images.shape[2] // visual.patch_size[0]
    grid_w = images.shape[3] // visual.patch_size[1]
    out: torch.Tensor = tokens.reshape(tokens.shape[0], grid_h, grid_w, tokens.shape[-1])
    return out
