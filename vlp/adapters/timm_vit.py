"""Dense tokens out of unmodified timm Vision Transformers.

Both paths re-run the model's own submodules in the order of ``forward_features`` and
``forward_head`` (``patch_embed``, ``_pos_embed``, ``norm_pre``, the blocks, ``norm``,
``pool``, ``fc_norm``, ``head``); the masked path gathers the kept patches after the
positional embedding and gives the blocks an additive key bias. Nothing in timm is patched.
Here "projection" means timm's classifier path ``fc_norm -> head_drop -> head`` (the
identity for ``num_classes=0``), so with ``project=True`` ``pooled == model(images)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlp._checks import check_input_like
from vlp._patches import check_images
from vlp.adapters.tokens import DenseTokens, check_keep_indices, padding_bias
from vlp.masking.dropout import gather_tokens

__all__ = ["timm_vit_masked_tokens", "timm_vit_tokens"]


def _check_model(model: nn.Module) -> Any:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(
            "model must be a timm.models.vision_transformer.VisionTransformer, got "
            f"{type(model).__name__}"
        )
    return model


def _check_image_size(vit: Any, images: torch.Tensor) -> None:
    """Check the size rules of timm's patch embedding, which asserts (or crops) otherwise."""
    embed = vit.patch_embed
    size = (images.shape[2], images.shape[3])
    patch = tuple(embed.patch_size)
    img_size = getattr(embed, "img_size", None)
    if img_size is not None and getattr(embed, "strict_img_size", False):
        if size != tuple(img_size):
            raise ValueError(
                f"images must be {tuple(img_size)} for this model (built without "
                f"dynamic_img_size=True), got {size}"
            )
    elif not getattr(embed, "dynamic_img_pad", False) and (
        size[0] % patch[0] or size[1] % patch[1]
    ):
        raise ValueError(
            f"images must have a height and width that are multiples of the patch size "
            f"{patch}, got {size}"
        )


def _project_tokens(vit: Any, tokens: torch.Tensor, project: bool) -> torch.Tensor:
    if not project:
        return tokens
    out: torch.Tensor = vit.head(vit.head_drop(vit.fc_norm(tokens)))
    return out


def timm_vit_tokens(model: nn.Module, images: torch.Tensor, *, project: bool = True) -> DenseTokens:
    """Pooled embedding and patch tokens of an unmodified timm ViT.

    Patch tokens are what ``forward_features`` returns (after the final ``norm``) with the
    prefix tokens (CLS, registers) removed. With ``project=True`` every token also goes
    through ``fc_norm``, ``head_drop`` and ``head``, and ``pooled == model(images)``; with
    ``project=False`` ``pooled == model.forward_head(features, pre_logits=True)``. The
    model's own ``patch_drop`` (training only) is not applied: tokens cover the full grid.
    ViT: Dosovitskiy et al., ICLR 2021.

    Args:
        model: a ``timm.models.vision_transformer.VisionTransformer``.
        images: ``(B, C, H, W)`` float at a size the model accepts.
        project: apply the head path to tokens and pooled embedding.

    Returns:
        :class:`DenseTokens`: ``pooled`` ``(B, D)``, ``tokens`` ``(B, L, D)`` in row-major
        grid order, ``mask`` ``(B, L)`` all ``True``.

    Raises:
        TypeError: if ``model`` is not a timm ViT or ``images`` is not float.
        ValueError: on a bad image shape.
    """
    return _encode(model, images, None, None, masked=False, project=project)


def _masked_pool(
    vit: Any, x: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Timm ``VisionTransformer.pool`` with fillers excluded (``valid`` covers all tokens)."""
    prefix = vit.num_prefix_tokens
    if vit.attn_pool is not None:
        from timm.layers.attention_pool import AttentionPoolLatent

        if not isinstance(vit.attn_pool, AttentionPoolLatent):
            raise ValueError(
                f"masked encoding supports the 'map' attention pool, got "
                f"{type(vit.attn_pool).__name__}"
            )
        if not vit.pool_include_prefix:
            x, bias = x[:, prefix:], bias[:, prefix:]
        out: torch.Tensor = vit.attn_pool(x, attn_mask=bias[:, None, None, :])
        return out
    pool_type = vit.global_pool
    if not pool_type:
        return x
    if pool_type == "token":
        return x[:, 0]
    if not vit.pool_include_prefix:
        x, valid = x[:, prefix:], valid[:, prefix:]
    weights = valid.to(x.dtype).unsqueeze(-1)
    mean = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    if pool_type == "avg":
        return mean
    peak = x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
    peak = torch.where(valid.any(dim=1, keepdim=True), peak, torch.zeros_like(peak))
    if pool_type == "max":
        return peak
    if pool_type == "avgmax":
        return 0.5 * (peak + mean)
    raise ValueError(f"unsupported timm global_pool {pool_type!r}")  # pragma: no cover


def timm_vit_masked_tokens(
    model: nn.Module,
    images: torch.Tensor,
    keep_idx: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    project: bool = True,
) -> DenseTokens:
    """Encode only the kept patches of each image with an unmodified timm ViT.

    Positional embeddings are added to all patches by the model's own ``_pos_embed``, then
    the patches at ``keep_idx`` are gathered behind the prefix tokens (always kept). Filler
    slots (``key_padding_mask`` ``True``) get an additive ``-inf`` key bias in every block
    and are left out of pooling (token, avg, max, avgmax, ``map`` attention pool), so
    ``pooled`` depends neither on masked pixels nor on filler contents (cluster masking,
    Wei et al., CVPR 2024, with fillers hidden as the paper describes; FLIP random dropout
    without fillers).

    Args:
        model: a ``timm.models.vision_transformer.VisionTransformer``.
        images: ``(B, C, H, W)`` float.
        keep_idx: ``(B, K)`` int64 indices into the ``L`` patch tokens (row-major grid).
        key_padding_mask: ``(B, K)`` bool, ``True`` = filler to ignore; ``None`` = none.
        project: apply the head path (``fc_norm``, ``head``) as in :func:`timm_vit_tokens`.

    Returns:
        :class:`DenseTokens`: ``pooled`` ``(B, D)``, ``tokens`` ``(B, K, D)`` for the kept
        slots, ``mask`` ``(B, K)`` = ``~key_padding_mask`` (all ``True`` without one).

    Raises:
        TypeError: on a wrong model type or wrong dtypes.
        ValueError: on bad shapes, (CPU tensors) indices outside ``[0, L)``, or an
            unsupported attention pool.
    """
    return _encode(model, images, keep_idx, key_padding_mask, masked=True, project=project)


def _run_blocks(vit: Any, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """The blocks in order, with the model's gradient-checkpointing setting honoured."""
    use_checkpoint = bool(vit.grad_checkpointing) and torch.is_grad_enabled()
    for block in vit.blocks:
        if use_checkpoint:
            x = checkpoint(block, x, attn_mask, use_reentrant=False)
        elif attn_mask is None:
            x = block(x)
        else:
            x = block(x, attn_mask=attn_mask)
    return x


def _encode(
    model: nn.Module,
    images: object,
    keep_idx: object,
    key_padding_mask: object,
    *,
    masked: bool,
    project: bool,
) -> DenseTokens:
    vit = _check_model(model)
    images = check_images(images)
    _check_image_size(vit, images)
    check_input_like("images", images, vit.patch_embed.proj.weight)
    # patch embedding, prefix tokens and positions for all patches, by the model itself
    x = vit._pos_embed(vit.patch_embed(images))
    prefix = vit.num_prefix_tokens
    batch, num_patches = x.shape[0], x.shape[1] - prefix
    pad: torch.Tensor | None = None
    if masked:
        keep, pad = check_keep_indices(
            keep_idx, key_padding_mask, batch=batch, num_patches=num_patches
        )
        if keep.device != x.device:
            raise ValueError(
                f"keep_idx must be on the images' device {x.device}, got {keep.device}"
            )
        x = gather_tokens(x, keep, num_prefix_tokens=prefix)
    x = vit.norm_pre(x)
    kept = x.shape[1] - prefix
    bias = padding_bias(
        pad, batch=batch, num_prefix=prefix, num_kept=kept, dtype=x.dtype, device=x.device
    )
    x = _run_blocks(vit, x, None if bias is None else bias[:, None, None, :])
    x = vit.norm(x)
    if pad is None or bias is None:
        pooled = vit.pool(x)
        valid = torch.ones(batch, kept, dtype=torch.bool, device=x.device)
    else:
        valid = ~pad
        pooled = _masked_pool(vit, x, bias, torch.cat([valid.new_ones(batch, prefix), valid], 1))
    pooled = vit.head_drop(vit.fc_norm(pooled))
    if project:
        pooled = vit.head(pooled)
    tokens = _project_tokens(vit, x[:, prefix:], project)
    return DenseTokens(pooled, tokens, valid)
