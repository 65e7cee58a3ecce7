"""A module that encodes masked images in training mode and full images in eval mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlp.adapters.openclip import (
    FillerAttention,
    _embed,
    open_clip_image_tokens,
    open_clip_masked_image_tokens,
)
from vlp.adapters.pos_embed import PosInterpolation
from vlp.adapters.timm_vit import timm_vit_masked_tokens, timm_vit_tokens
from vlp.adapters.tokens import DenseTokens

__all__ = ["MaskFn", "MaskedImageEncoder"]

#: ``mask_fn(images) -> (keep_idx (B, K) int64, key_padding_mask (B, K) bool or None)``.
MaskFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _model_kind(model: nn.Module) -> str:
    from open_clip.transformer import VisionTransformer as OpenClipViT
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    if isinstance(model, TimmViT):
        return "timm"
    if isinstance(getattr(model, "visual", model), OpenClipViT):
        return "open_clip"
    raise TypeError(
        "model must be an open_clip model with a ViT image tower (or the tower) or a timm "
        f"VisionTransformer, got {type(model).__name__}"
    )


class MaskedImageEncoder(nn.Module):
    """Wrap an unmodified open_clip or timm ViT so that training sees only kept patches.

    In training mode, ``forward(images)`` asks ``mask_fn(images)`` for ``keep_idx`` and a
    filler ``key_padding_mask`` (e.g. from cluster masking, Wei et al., CVPR 2024, or FLIP
    random patch dropout, Li et al., CVPR 2023) and runs
    :func:`~vlp.adapters.open_clip_masked_image_tokens` /
    :func:`~vlp.adapters.timm_vit_masked_tokens`; in eval mode (or without ``mask_fn``) it
    runs the full sequence. Indices passed to ``forward`` explicitly are used in either
    mode. ``train()`` / ``eval()`` reach the wrapped model, which is a submodule: pass
    ``clip_model.visual`` to hold only the image tower.

    Args:
        model: open_clip model with a ViT tower, the tower itself, or a timm ViT.
        mask_fn: ``images -> (keep_idx, key_padding_mask)``; an ``nn.Module`` is registered
            as a submodule.
        project: apply the output projection (open_clip ``proj``, timm head path).
        pos_interpolation: open_clip only, see :func:`~vlp.adapters.open_clip_image_tokens`.
        filler_attention: open_clip only, see
            :func:`~vlp.adapters.open_clip_masked_image_tokens`.
    """

    def __init__(
        self,
        model: nn.Module,
        mask_fn: MaskFn | None = None,
        *,
        project: bool = True,
        pos_interpolation: PosInterpolation | None = None,
        filler_attention: FillerAttention = "mask",
    ) -> None:
        super().__init__()
        self.kind = _model_kind(model)
        if mask_fn is not None and not callable(mask_fn):
            raise TypeError(f"mask_fn must be callable, got {type(mask_fn).__name__}")
        if self.kind == "timm" and pos_interpolation is not None:
            raise ValueError("pos_interpolation applies to open_clip towers only; got a timm ViT")
        if self.kind == "timm" and filler_attention != "mask":
            raise ValueError(
                f"filler_attention={filler_attention!r} applies to open_clip towers only; "
                "got a timm ViT"
            )
        self.model = model
        self.mask_fn = mask_fn
        self.project = project
        self.pos_interpolation: PosInterpolation | None = pos_interpolation
        self.filler_attention: FillerAttention = filler_attention

    def _patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, L, width)`` patch projection + positional embedding, detached (no prefix)."""
        if self.kind != "open_clip":
            raise ValueError(
                "a mask_fn that needs patch embeddings is supported for open_clip towers only; "
                "for timm, call it with your tokens yourself"
            )
        with torch.no_grad():
            tokens = _embed(
                self.model.visual if hasattr(self.model, "visual") else self.model,
                images,
                self.pos_interpolation,
            )
        return tokens[:, 1:]

    def forward(
        self,
        images: torch.Tensor,
        keep_idx: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> DenseTokens:
        """Encode ``images``, masked or not (see the class docstring).

        Args:
            images: ``(B, 3, H, W)`` float.
            keep_idx: optional ``(B, K)`` int64 kept patch indices (overrides ``mask_fn``).
            key_padding_mask: optional ``(B, K)`` bool, ``True`` = filler.

        Returns:
            :class:`~vlp.adapters.DenseTokens` (``tokens``/``mask`` cover the kept slots
            when masked, all ``L`` patches otherwise).
        """
        if keep_idx is None and key_padding_mask is not None:
            raise ValueError("key_padding_mask was given without keep_idx")
        if keep_idx is None and self.training and self.mask_fn is not None:
            if getattr(self.mask_fn, "needs_embeddings", False):
                # e.g. ClusterMasking(features="embedding_rgb"): the patch token embeddings.
                mask_fn: Any = self.mask_fn
                keep_idx, key_padding_mask = mask_fn(images, self._patch_embeddings(images))
            else:
                keep_idx, key_padding_mask = self.mask_fn(images)
        if self.kind == "timm":
            if keep_idx is None:
                return timm_vit_tokens(self.model, images, project=self.project)
            return timm_vit_masked_tokens(
                self.model, images, keep_idx, key_padding_mask, project=self.project
            )
        if keep_idx is None:
            return open_clip_image_tokens(
                self.model, images, project=self.project, pos_interpolation=self.pos_interpolation
            )
        return open_clip_masked_image_tokens(
            self.model,
            images,
            keep_idx,
            key_padding_mask,
            project=self.project,
            pos_interpolation=self.pos_interpolation,
            filler_attention=self.filler_attention,
        )
