"""Cross-attention pooling of one modality's pooled embedding over the other's tokens.

COSMOS (Kim et al., CVPR 2025) builds its cross-modal features this way: every view's
pooled embedding (a query) attends over the tokens of one view of the other modality of
the same sample, and the result is added back onto the query. Several query views per
sample share one set of keys and values (a grouped form, exactly equal to the reference
code's copying of keys and values once per view), so keys and values are normalised and
projected once per sample, never copied per view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import (
    check_bool,
    check_bool_mask,
    check_floating,
    check_input_like,
    check_int,
    check_same_device,
    check_shape,
)
from vlp._hub import HubMixin
from vlp.kernels import Backend
from vlp.kernels.attention import attention

__all__ = ["COSMOSHead", "CrossAttentionPooler"]


def _check_backend(backend: object) -> None:
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be one of ('auto', 'torch', 'triton'), got {backend!r}")


def _positive_int(name: str, value: object) -> int:
    return check_int(name, value, low=1)


def _autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled`` for devices autocast knows; ``False`` for others (meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # e.g. "meta": autocast has no dispatch key for it
        return False


class CrossAttentionPooler(HubMixin, nn.Module):
    r"""One multi-head cross-attention of queries over tokens, plus the raw-query residual.

    For a query $q$ (a pooled embedding) and the tokens $X$ of the same sample
    (Kim et al., CVPR 2025, COSMOS "attentional cross pooler", as in the authors' released
    code):

    $$\mathrm{CA} = \mathrm{MHA}\big(\mathrm{LN}_q(q),\ \mathrm{LN}_k(X),\
    \mathrm{LN}_k(X)\big), \qquad y = \mathrm{L2norm}(q + \mathrm{CA}),$$

    with the residual onto the **raw** query, no positional encoding, no MLP, and the
    L2 normalisation optional (``normalize``). ``Q`` queries of a sample share its keys and
    values: LayerNorm and the key/value projections run once per sample, heads are split
    as views, and [`vlp.kernels.attention`][vlp.kernels.attention.attention] attends
    without copying K/V per query. The parameters sit in an ``nn.MultiheadAttention`` named
    ``attn`` beside ``ln_q`` and ``ln_k``, so the state dict has the reference's keys
    (``attn.in_proj_weight``, ``attn.out_proj.weight``, ``ln_q.weight``, ...) and its default
    initialisation; ``self.attn`` itself is never called.

    Args:
        dim: query width ``D`` (and the attention width; must be divisible by ``num_heads``).
        num_heads: number of heads.
        kdim: token width ``C`` (default ``dim``).
        normalize: L2-normalise the output (``eps=1e-12``, as ``F.normalize``).
        eps: LayerNorm epsilon.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the attention itself
            (``forward(..., backend=)`` overrides it for one call).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Example:
        >>> pool = CrossAttentionPooler(16, 2)
        >>> views = torch.randn(3, 8, 16)  # 8 query views per sample
        >>> tokens = torch.randn(3, 7, 16)  # 7 tokens per sample
        >>> pool(views, tokens).shape
        torch.Size([3, 8, 16])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        normalize: bool = True,
        eps: float = 1e-5,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_backend(backend)
        self.backend: Backend = backend
        dim = _positive_int("dim", dim)
        num_heads = _positive_int("num_heads", num_heads)
        kdim = dim if kdim is None else _positive_int("kdim", kdim)
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads={num_heads}, got {dim}")
        check_bool("normalize", normalize)
        self.dim, self.num_heads, self.kdim, self.normalize = dim, num_heads, kdim, normalize
        self.ln_q = nn.LayerNorm(dim, eps=eps, device=device, dtype=dtype)
        self.ln_k = nn.LayerNorm(kdim, eps=eps, device=device, dtype=dtype)
        self.attn = nn.MultiheadAttention(
            dim, num_heads, kdim=kdim, vdim=kdim, device=device, dtype=dtype
        )

    def _projection_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W_q, W_kv, b)``: query weight, stacked key/value weight and the in-proj bias."""
        attn = self.attn
        if attn.in_proj_weight is not None:
            w_q, w_kv = torch.split(attn.in_proj_weight, [self.dim, 2 * self.dim])
        else:
            w_q = attn.q_proj_weight
            w_kv = torch.cat([attn.k_proj_weight, attn.v_proj_weight])
        return w_q, w_kv, attn.in_proj_bias

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        backend: Backend | None = None,
    ) -> torch.Tensor:
        """Pool ``tokens`` with each query and add the result to the query.

        Args:
            queries: ``(B, Q, D)`` (``Q`` views per sample) or ``(B, D)``, floating, the
                raw (unnormalised) pooled embeddings; dtype of the parameters, or any of
                fp32/fp16/bf16 under ``torch.autocast`` (the output then has the dtype of
                ``queries`` promoted with the autocast dtype, as the residual sum gives).
            tokens: ``(B, S, C)`` tokens of the other modality, one set per sample, same
                dtype (under autocast: any of fp32/fp16/bf16) and device. COSMOS: 196
                mapped patch tokens of crop ``g1``, or all 77 mapped text positions of
                caption ``G1`` (padding included).
            key_padding_mask: optional ``(B, S)`` ``torch.bool``, ``True`` = ignore that
                token (``nn.MultiheadAttention``'s convention). Off by default, like the
                reference, which attends over text padding too.
            backend: overrides the module's ``backend`` for this call (``None``: keep it).

        Returns:
            ``(B, Q, D)`` or ``(B, D)`` (matching ``queries``), unit-norm rows if ``normalize``.

        Raises:
            ValueError: on mismatched shapes or devices, or empty inputs. (A mask row
                hiding every token is allowed: that sample's attention output is zero.)
            TypeError: on non-floating inputs, a non-bool mask, or (outside autocast)
                tokens and queries of different dtypes or inputs whose dtype is not the
                parameters'.
        """
        check_floating("queries", queries)
        single = queries.dim() == 2
        if single:
            check_shape("queries", queries, ("B", self.dim))
            queries = queries[:, None]
        check_shape("queries", queries, ("B", "Q", self.dim))
        batch, num_queries, _ = queries.shape
        check_floating("tokens", tokens)
        check_shape("tokens", tokens, (batch, "S", self.kdim))
        autocast_dtypes = (torch.float16, torch.bfloat16, torch.float32)
        autocast = (
            _autocast_enabled(queries.device.type)
            and queries.dtype in autocast_dtypes
            and tokens.dtype in autocast_dtypes
        )
        if not autocast:  # under autocast the projections cast their inputs themselves
            if tokens.dtype != queries.dtype:
                raise TypeError(
                    f"tokens must have the dtype of queries ({queries.dtype}), got {tokens.dtype}"
                )
            param_dtype = self.ln_q.weight.dtype
            if queries.dtype != param_dtype:
                raise TypeError(
                    f"queries must have the dtype of the parameters ({param_dtype}) outside "
                    f"autocast, got {queries.dtype}; convert the module (e.g. .to({queries.dtype}))"
                    f" or run under torch.autocast"
                )
        check_same_device(("queries", queries), ("tokens", tokens))
        if queries.numel() == 0 or tokens.shape[1] == 0:
            raise ValueError(
                f"queries and tokens must not be empty, got {tuple(queries.shape)} and "
                f"{tuple(tokens.shape)}"
            )
        if key_padding_mask is not None:
            check_bool_mask("key_padding_mask", key_padding_mask, (batch, tokens.shape[1]))
            check_same_device(("tokens", tokens), ("key_padding_mask", key_padding_mask))
        check_input_like("queries", queries, self.ln_q.weight)

        heads, head_dim = self.num_heads, self.dim // self.num_heads
        w_q, w_kv, bias = self._projection_weights()
        b_q: torch.Tensor | None = None
        b_kv: torch.Tensor | None = None
        if bias is not None:
            b_q, b_kv = torch.split(bias, [self.dim, 2 * self.dim])
        q = F.linear(self.ln_q(queries), w_q, b_q)  # (B, Q, D)
        kv = F.linear(self.ln_k(tokens), w_kv, b_kv)  # (B, S, 2D): once per sample
        seq = tokens.shape[1]
        q = q.view(batch, num_queries, heads, head_dim).transpose(1, 2)  # (B, H, Q, d)
        kv = kv.view(batch, seq, 2, heads, head_dim)
        k = kv[:, :, 0].transpose(1, 2)  # (B, H, S, d) views of kv, no copy
        v = kv[:, :, 1].transpose(1, 2)
        chosen = self.backend if backend is None else backend
        out = attention(q, k, v, key_padding_mask, backend=chosen)  # (B, H, Q, d)
        out = out.transpose(1, 2).reshape(batch, num_queries, self.dim)
        out_proj = self.attn.out_proj
        pooled = queries + F.linear(out, out_proj.weight, out_proj.bias)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return pooled[:, 0] if single else pooled

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, kdim={self.kdim}, "
            f"normalize={self.normalize}"
        )


class COSMOSHead(HubMixin, nn.Module):
    """The cross-modal part of COSMOS: two token mappings and two cross-attention poolers.

    The modules COSMOS adds to a CLIP model (Kim et al., CVPR 2025; reference implementation).
    The token mappings have the names of its checkpoints; the two poolers are renamed (their
    sub-keys, ``attn.in_proj_weight``, ``ln_q.weight``, ..., are the reference's), so a
    reference checkpoint loads after mapping ``visual.attn_cross_pool.`` to
    ``image_attn_pool.`` and ``text_attn_cross_pool.`` to ``text_attn_pool.``:

    - ``image_token_mapping``: ``Linear(image_token_dim, dim)`` with bias, applied to the
      image tower's patch tokens after its final LayerNorm (CLS excluded, ``proj`` not
      applied);
    - ``text_token_mapping``: ``Linear(text_token_dim, dim)``, applied to the text tower's
      tokens after its final LayerNorm at every position;
    - ``image_attn_pool`` (the reference's ``visual.attn_cross_pool``): caption queries over
      mapped image tokens, giving the cross-modal text features ``T^x``;
    - ``text_attn_pool`` (the reference's ``text_attn_cross_pool``): image-crop queries over
      mapped text tokens, giving the cross-modal image features ``I^x``.

    Use ``open_clip_image_tokens(model, g1, project=False)`` and
    ``open_clip_text_tokens(model, G1, project=False)`` from
    [`vlp.adapters`][vlp.adapters] to get the tokens out of an unmodified open_clip model.

    Args:
        dim: embedding width ``D`` (the CLIP embedding dimension).
        image_token_dim: width of the image tower's tokens (ViT width).
        text_token_dim: width of the text tower's tokens (text width).
        num_heads: heads of both poolers.
        normalize: L2-normalise the cross-modal features.
        backend: attention backend of both poolers (``forward(..., backend=)`` overrides it).
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(
        self,
        dim: int,
        *,
        image_token_dim: int,
        text_token_dim: int,
        num_heads: int = 8,
        normalize: bool = True,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        image_token_dim = _positive_int("image_token_dim", image_token_dim)
        text_token_dim = _positive_int("text_token_dim", text_token_dim)
        self.image_token_mapping = nn.Linear(image_token_dim, dim, device=device, dtype=dtype)
        self.text_token_mapping = nn.Linear(text_token_dim, dim, device=device, dtype=dtype)
        self.image_attn_pool = CrossAttentionPooler(
            dim, num_heads, normalize=normalize, backend=backend, device=device, dtype=dtype
        )
        self.text_attn_pool = CrossAttentionPooler(
            dim, num_heads, normalize=normalize, backend=backend, device=device, dtype=dtype
        )

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        *,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        backend: Backend | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-modal features of every image and caption view, as COSMOS's training step does.

        Args:
            image: ``(B, V_i, D)`` raw pooled image embeddings of every crop (or ``(B, D)``).
            text: ``(B, V_t, D)`` raw pooled caption embeddings of every caption (or ``(B, D)``).
            image_tokens: ``(B, S_i, image_token_dim)`` unmapped patch tokens of one crop
                (COSMOS: ``g1``).
            text_tokens: ``(B, S_t, text_token_dim)`` unmapped tokens of one caption
                (COSMOS: ``G1``, every position).
            image_mask: optional ``(B, S_i)`` bool key padding mask (``True`` = ignore).
            text_mask: optional ``(B, S_t)`` bool key padding mask; the reference uses none.
            backend: overrides the poolers' ``backend`` for this call (``None``: keep it).

        Returns:
            ``(image_x, text_x)``: ``(B, V_i, D)`` cross-modal image features (crops that
            attended over the caption) and ``(B, V_t, D)`` cross-modal text features.

        Raises:
            ValueError: on token widths other than the mappings', a batch size that
                differs between the inputs, or a device other than the parameters'.
            TypeError: on non-floating tokens, or (outside autocast) tokens whose dtype
                is not the parameters'.
        """
        for name, tokens, mapping in (
            ("image_tokens", image_tokens, self.image_token_mapping),
            ("text_tokens", text_tokens, self.text_token_mapping),
        ):
            check_shape(name, tokens, ("B", "S", mapping.in_features))
            check_floating(name, tokens)
            check_input_like(name, tokens, mapping.weight)
        for name, pooled in (("image", image), ("text", text)):
            check_floating(name, pooled)
            if pooled.dim() not in (2, 3):
                raise ValueError(
                    f"{name} must have shape (B, V, D) or (B, D), got {tuple(pooled.shape)}"
                )
        sizes = {
            "image": image.shape[0],
            "text": text.shape[0],
            "image_tokens": image_tokens.shape[0],
            "text_tokens": text_tokens.shape[0],
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"all inputs must have the same batch size B, got {sizes}")
        image_x = self.text_attn_pool(
            image, self.text_token_mapping(text_tokens), text_mask, backend=backend
        )
        text_x = self.image_attn_pool(
            text, self.image_token_mapping(image_tokens), image_mask, backend=backend
        )
        return image_x, text_x
