"""The S-SMKE student: token-type embedding, the shared block, the KD head and the composite.

S-SMKE puts the first layers of two pretrained unimodal encoders under one
randomly initialised pre-LN Transformer block shared by both modalities. A token-type
embedding scaled by a tiny LayerScale is added to the encoder outputs first; the
block returns its MLP intermediate (for a second image-text contrastive loss) beside
its output; a LayerNorm + Linear head projects the output CLS onto the frozen
teacher's space for distillation.

[`build_ssmke`][vlp.models.ssmke.build_ssmke] assembles the student from the first layers
of a timm ViT and an open_clip text tower (truncated by :mod:`vlp.adapters.pretrained`).
This is the one whole model of the library; every loss and teacher it trains with is a
part a user can use with their own model.

Reference: T. Cares, "Leveraging Pretrained Unimodal Models for Efficient
Vision-Language Pretraining" (S-SMKE; ``TimCares/EV-LP``, ``src/models/S_SMKE.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from vlp._checks import (
    check_bool,
    check_bool_mask,
    check_float,
    check_floating,
    check_input_like,
    check_int,
    check_shape,
    check_tensor,
    values_readable,
)
from vlp._hub import HubMixin
from vlp.adapters.pretrained import OpenClipTextEncoder, TimmViTEncoder

__all__ = [
    "IMAGE_TYPE",
    "SSMKE",
    "TEXT_TYPE",
    "PostLNBlock",
    "SSMKEHead",
    "SSMKEOutput",
    "SharedBlock",
    "TokenTypeEmbedding",
    "build_ssmke",
]

#: Token type of every text token (CLS included) and of every image token, as in S-SMKE.
TEXT_TYPE = 0
IMAGE_TYPE = 1


def _check_int(name: str, value: object, low: int = 1) -> int:
    return check_int(name, value, low=low)


def _init_linear_layers(module: nn.Module) -> None:
    """Trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms (the S-SMKE init).

    The truncation is torch's default, at +-2 absolute (100 std): as in the reference,
    effectively a plain normal.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TokenTypeEmbedding(nn.Module):
    """A modality embedding scaled by a tiny learnable LayerScale (S-SMKE).

    ``forward(x, type_id) = x + gamma * E[type_id]`` with ``E`` an
    ``nn.Embedding(num_types, dim)`` (default N(0, 1) init) and ``gamma`` a ``(dim,)``
    vector shared by every type, initialised to ``layerscale_init``: at init the
    shared block sees (almost exactly) the encoder outputs. S-SMKE adds it after the
    unimodal encoders, with type 1 for image tokens and 0 for text tokens.

    Args:
        num_types: number of token types (2: text and image).
        dim: ``D``, the token width.
        layerscale_init: initial value of every entry of ``gamma`` (1e-5 in S-SMKE).
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(
        self,
        num_types: int = 2,
        dim: int = 768,
        *,
        layerscale_init: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_types = _check_int("num_types", num_types)
        _check_int("dim", dim)
        self.embedding = nn.Embedding(num_types, dim, device=device, dtype=dtype)
        self.gamma = nn.Parameter(
            torch.full(
                (dim,), check_float("layerscale_init", layerscale_init), device=device, dtype=dtype
            )
        )

    def forward(self, x: torch.Tensor, type_id: int) -> torch.Tensor:
        """Add the scaled embedding of ``type_id`` to every token.

        Args:
            x: ``(B, T, D)`` floating tokens.
            type_id: the token type of every token of ``x``, in ``[0, num_types)``.

        Returns:
            ``(B, T, D)``, ``x + gamma * E[type_id]``.
        """
        check_shape("x", x, ("B", "T", self.gamma.shape[0]))
        check_floating("x", x)
        check_input_like("x", x, self.gamma)
        check_int("type_id", type_id, low=0, high=self.num_types - 1)
        return x + (self.gamma * self.embedding.weight[type_id]).to(x.dtype)


class SharedBlock(nn.Module):
    """The pre-LN Transformer block both modalities share, returning its MLP intermediate too.

    With ``h' = x + gamma_1 * Attn(LN_1(x))`` and ``u = fc1(LN_2(h'))`` (before GELU),
    the block returns ``(u, h' + gamma_2 * fc2(GELU(u)))``: S-SMKE's second ITC loss
    uses the CLS row of ``u`` (width ``mlp_ratio * D``), the first uses the output.
    Attention has BEiT-style biases: learnable query and value biases, no key bias.
    Padded keys (``key_padding`` True) get zero attention weight, so the content of
    padded tokens never reaches the unpadded ones. Init: trunc-normal(0.02) Linear
    weights, zero biases, LayerScale ``layerscale_init`` on both residual branches.

    Args:
        dim: ``D``, the token width (768 in S-SMKE).
        heads: number of attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width over ``D``.
        layerscale_init: initial LayerScale of both branches (0.2 in S-SMKE).
        qv_bias: learn query and value biases (the key bias is always zero).
        eps: LayerNorm epsilon.
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(
        self,
        dim: int = 768,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        *,
        layerscale_init: float = 0.2,
        qv_bias: bool = True,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_int("dim", dim)
        _check_int("heads", heads)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        hidden = int(dim * check_float("mlp_ratio", mlp_ratio, low=0.0, low_inclusive=False))
        check_bool("qv_bias", qv_bias)
        if hidden < 1:
            raise ValueError(f"mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.heads = dim, heads
        self.norm1 = nn.LayerNorm(dim, eps=eps, **dd)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **dd)
        self.q_bias = nn.Parameter(torch.zeros(dim, **dd)) if qv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim, **dd)) if qv_bias else None
        self.proj = nn.Linear(dim, dim, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=eps, **dd)
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.fc2 = nn.Linear(hidden, dim, **dd)
        scale = check_float("layerscale_init", layerscale_init)
        self.gamma_1 = nn.Parameter(torch.full((dim,), scale, **dd))
        self.gamma_2 = nn.Parameter(torch.full((dim,), scale, **dd))
        _init_linear_layers(self)

    def _attention(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        bias = None
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        projected: torch.Tensor = self.proj(out.transpose(1, 2).reshape(b, t, d))
        return projected

    def forward(
        self, x: torch.Tensor, key_padding: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the block.

        Args:
            x: ``(B, T, D)`` floating tokens (the CLS token first).
            key_padding: optional ``(B, T)`` bool, True at padded tokens (never at
                every token of a row).

        Returns:
            ``(intermediate, out)``: ``(B, T, mlp_ratio * D)`` fc1 pre-activation and
            ``(B, T, D)`` block output.
        """
        check_shape("x", x, ("B", "T", self.dim))
        check_floating("x", x)
        check_input_like("x", x, self.qkv.weight)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        if key_padding is not None:
            check_bool_mask("key_padding", key_padding, (x.shape[0], x.shape[1]))
            if key_padding.device != x.device:  # a meta mask would read garbage
                raise ValueError(
                    f"key_padding must be on the device of x ({x.device}), got {key_padding.device}"
                )
            if values_readable(key_padding) and bool(key_padding.all(dim=1).any()):
                raise ValueError("key_padding must leave at least one unpadded token per row")
        h = x + self.gamma_1 * self._attention(self.norm1(x), key_padding)
        intermediate = self.fc1(self.norm2(h))
        out = h + self.gamma_2 * self.fc2(F.gelu(intermediate))
        return intermediate, out


class PostLNBlock(Block):  # type: ignore[misc]
    """A timm ViT block with post-LN residuals (the Data2Vec 2.0 image encoder's blocks).

    ``h = LN_1(x + Attn(x))``, ``out = LN_2(h + MLP(h))``. It keeps timm ``Block``'s
    constructor and submodule names (``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``,
    ``ls2``), so ``timm.models.VisionTransformer(..., block_fn=PostLNBlock)`` builds a
    Data2Vec2-style encoder that loads the same state dict keys.
    """

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """Run the block on ``(B, T, D)`` tokens; returns ``(B, T, D)``."""
        x = self.norm1(
            x + self.drop_path1(self.ls1(self.attn(x, attn_mask=attn_mask, is_causal=is_causal)))
        )
        out: torch.Tensor = self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))
        return out


class SSMKEHead(nn.Module):
    """The KD projection head: ``Linear(LayerNorm(x))`` (S-SMKE).

    Args:
        dim: input width ``D``.
        out_dim: output width (the teacher's embedding width); default ``dim``.
        eps: LayerNorm epsilon.
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(
        self,
        dim: int = 768,
        out_dim: int | None = None,
        *,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_int("dim", dim)
        out_dim = dim if out_dim is None else _check_int("out_dim", out_dim)
        self.dim, self.out_dim = dim, out_dim
        self.norm = nn.LayerNorm(dim, eps=eps, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, out_dim, device=device, dtype=dtype)
        _init_linear_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(..., D)`` features to ``(..., out_dim)``."""
        check_tensor("x", x)
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        check_floating("x", x)
        check_input_like("x", x, self.proj.weight)
        out: torch.Tensor = self.proj(self.norm(x))
        return out


class SSMKEOutput(NamedTuple):
    """The three embeddings S-SMKE computes per sample (CLS rows).

    Attributes:
        x_interm: ``(B, mlp_ratio * D)``, L2-normalised MLP intermediate (ITC #1).
        x: ``(B, D)``, L2-normalised shared-block output (ITC #2, retrieval, zero-shot).
        kd: ``(B, E)``, the KD head's projection (normalised by the distillation loss).
    """

    x_interm: torch.Tensor
    x: torch.Tensor
    kd: torch.Tensor


ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
TextEncoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SSMKE(HubMixin, nn.Module):
    """The S-SMKE student: two unimodal encoders under one shared block.

    ``encode_image`` / ``encode_text`` run the modality's encoder, add the token-type
    embedding, run the [`SharedBlock`][vlp.models.ssmke.SharedBlock] (with the text's
    key-padding mask) and return an [`SSMKEOutput`][vlp.models.ssmke.SSMKEOutput] of the
    CLS (first) token. Feed two of them and the teacher's embeddings to
    [`ssmke_loss`][vlp.losses.distill.ssmke_loss].

    Args:
        image_encoder: module mapping images ``(B, 3, H, W)`` to tokens ``(B, T_v, D)``
            with the CLS token first, e.g. a
            [`TimmViTEncoder`][vlp.adapters.TimmViTEncoder].
        text_encoder: module mapping ``(ids (B, T_w), padding (B, T_w) bool)`` to tokens
            ``(B, T_w, D)``, the CLS (or start) token first, e.g. an
            [`OpenClipTextEncoder`][vlp.adapters.OpenClipTextEncoder].
        dim: ``D``, the width of both encoders' tokens.
        heads: shared-block heads.
        mlp_ratio: shared-block MLP ratio.
        kd_dim: output width of the KD head (the teacher's width); default ``dim``.
        layerscale_init: shared-block LayerScale (0.2).
        token_type_init: token-type LayerScale (1e-5).
        pad_token_id: the id marking padding when ``encode_text`` gets no mask.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        dim: int,
        *,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        kd_dim: int | None = None,
        layerscale_init: float = 0.2,
        token_type_init: float = 1e-5,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.token_type = TokenTypeEmbedding(2, dim, layerscale_init=token_type_init)
        self.shared = SharedBlock(dim, heads, mlp_ratio, layerscale_init=layerscale_init)
        self.kd_head = SSMKEHead(dim, kd_dim)
        self.pad_token_id = pad_token_id

    def _shared(
        self, tokens: torch.Tensor, type_id: int, key_padding: torch.Tensor | None
    ) -> SSMKEOutput:
        x = self.token_type(tokens, type_id)
        intermediate, out = self.shared(x, key_padding)
        cls_intermediate, cls = intermediate[:, 0], out[:, 0]
        return SSMKEOutput(
            F.normalize(cls_intermediate, dim=-1), F.normalize(cls, dim=-1), self.kd_head(cls)
        )

    def encode_image(self, images: torch.Tensor) -> SSMKEOutput:
        """Embed images ``(B, 3, H, W)``.

        Returns:
            An [`SSMKEOutput`][vlp.models.ssmke.SSMKEOutput].
        """
        return self._shared(self.image_encoder(images), IMAGE_TYPE, None)

    def encode_text(
        self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> SSMKEOutput:
        """Embed token ids.

        Args:
            ids: ``(B, T)`` integer token ids.
            padding_mask: ``(B, T)`` bool, True at padding; default ``ids == pad_token_id``.

        Returns:
            An [`SSMKEOutput`][vlp.models.ssmke.SSMKEOutput].
        """
        check_tensor("ids", ids)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"ids must have an integer dtype, got {ids.dtype}")
        check_shape("ids", ids, ("B", "T"))
        if padding_mask is None:
            padding_mask = ids == self.pad_token_id
        check_bool_mask("padding_mask", padding_mask, tuple(ids.shape))
        return self._shared(self.text_encoder(ids, padding_mask), TEXT_TYPE, padding_mask)


def build_ssmke(
    vit: nn.Module,
    text: nn.Module,
    num_layers: int | tuple[int, int] = 6,
    *,
    causal_text: bool = False,
    heads: int = 12,
    mlp_ratio: float = 4.0,
    kd_dim: int | None = None,
    layerscale_init: float = 0.2,
    token_type_init: float = 1e-5,
) -> SSMKE:
    """The S-SMKE student from the first layers of a timm ViT and an open_clip text tower.

    Both encoders are truncated in place (load their pretrained weights first, or
    afterwards with their ``load_pretrained``); the token-type embedding, shared block
    and KD head are new, initialised as in S-SMKE.

    Args:
        vit: a timm ``VisionTransformer`` (see
            [`TimmViTEncoder`][vlp.adapters.TimmViTEncoder]).
        text: an open_clip ``TextTransformer`` (see
            [`OpenClipTextEncoder`][vlp.adapters.OpenClipTextEncoder]).
        num_layers: layers kept from each encoder, or ``(image, text)``.
        causal_text: keep the text tower's causal mask. The default, ``False``, runs the
            truncated tower bidirectionally with padding masked, like the paper's BERT
            student, so the start token that the shared block pools sees the caption.
            With ``True`` that token attends only to itself and is identical for every
            caption.
        heads: shared-block heads.
        mlp_ratio: shared-block MLP ratio.
        kd_dim: KD head output width (the teacher's); default the encoders' width.
        layerscale_init: shared-block LayerScale.
        token_type_init: token-type LayerScale.

    Returns:
        An [`SSMKE`][vlp.models.ssmke.SSMKE] whose ``image_encoder`` is a
        ``TimmViTEncoder`` and ``text_encoder`` an ``OpenClipTextEncoder``.

    Raises:
        ValueError: if the two encoders' widths differ or a layer count is out of range.
    """
    if isinstance(num_layers, int) and not isinstance(num_layers, bool):
        image_layers, text_layers = num_layers, num_layers
    elif isinstance(num_layers, (tuple, list)) and len(num_layers) == 2:
        image_layers, text_layers = num_layers
    else:
        raise TypeError(
            f"num_layers must be an int or an (image, text) pair, got {num_layers!r:.60}"
        )
    image_encoder = TimmViTEncoder(vit, image_layers)
    text_encoder = OpenClipTextEncoder(text, text_layers, causal=causal_text)
    if image_encoder.width != text_encoder.width:
        raise ValueError(
            f"vit and text must have the same width for the shared block, got "
            f"{image_encoder.width} and {text_encoder.width}"
        )
    return SSMKE(
        image_encoder,
        text_encoder,
        image_encoder.width,
        heads=heads,
        mlp_ratio=mlp_ratio,
        kd_dim=kd_dim,
        layerscale_init=layerscale_init,
        token_type_init=token_type_init,
        pad_token_id=int(getattr(text, "pad_id", 0)),
    )
