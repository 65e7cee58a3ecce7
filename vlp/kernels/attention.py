"""Multi-head attention for few queries per sample: torch reference and fused Triton path.

The op behind :class:`vlp.heads.CrossAttentionPooler`: every query of sample ``b``
(for COSMOS, one per crop view) attends over that sample's key/value tokens. The
Triton path walks query blocks of one (sample, head) pair over the same K/V rows, so
several views share one K/V without copies, and saves only the per-query
log-sum-exp for the backward (flash-attention style recompute).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vlp._checks import check_bool_mask, check_floating, check_same_device, check_shape
from vlp.kernels._dispatch import Backend, resolve_backend, triton_interpret_upcast

__all__ = ["attention", "attention_reference"]


def _validate(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    check_shape("q", q, ("B", "H", "Q", "d"))
    check_floating("q", q)
    batch, heads, _, head_dim = q.shape
    check_shape("k", k, (batch, heads, "S", head_dim))
    check_shape("v", v, tuple(k.shape))
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have the dtype of q ({q.dtype}), got {t.dtype}")
    check_same_device(("q", q), ("k", k), ("v", v))
    if q.numel() == 0 or k.shape[2] == 0:
        raise ValueError(f"q and k must not be empty, got {tuple(q.shape)} and {tuple(k.shape)}")
    if key_padding_mask is not None:
        check_bool_mask("key_padding_mask", key_padding_mask, (batch, k.shape[2]))
        check_same_device(("q", q), ("key_padding_mask", key_padding_mask))
        if key_padding_mask.device.type == "cpu" and bool(key_padding_mask.all(dim=1).any()):
            raise ValueError(
                "key_padding_mask must leave at least one key per sample, got a row that "
                "masks all of them"
            )


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled-dot-product attention in plain torch (the definition the kernel is tested against).

    ``out[b, h, i] = sum_j softmax_j(q[b, h, i] . k[b, h, j] / sqrt(d)) v[b, h, j]``, keys
    with ``key_padding_mask[b, j] = True`` left out (the ``nn.MultiheadAttention``
    convention).

    Paper: Vaswani et al., "Attention is all you need", NeurIPS 2017, Eq. 1.

    Args:
        q: (B, H, Q, d) floating queries.
        k: (B, H, S, d) keys, dtype and device of ``q``.
        v: (B, H, S, d) values.
        key_padding_mask: optional (B, S) ``torch.bool``, ``True`` = ignore that key.

    Returns:
        (B, H, Q, d) tensor in the dtype of ``q``.
    """
    _validate(q, k, v, key_padding_mask)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _blocks(qlen: int, slen: int, d: int) -> tuple[int, int, int]:
    bq = min(64, max(16, _next_pow2(qlen)))
    bs = min(64, max(16, _next_pow2(slen)))
    bd = max(16, _next_pow2(d))
    return bq, bs, bd


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        from vlp.kernels import _attention_triton as kern

        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        batch, heads, qlen, d = q.shape
        slen = k.shape[2]
        bq, bs, bd = _blocks(qlen, slen, d)
        out = torch.empty_like(q)
        lse = torch.empty((batch * heads, qlen), dtype=torch.float32, device=q.device)
        mask = (
            key_padding_mask.to(torch.int8).contiguous()
            if key_padding_mask is not None
            else torch.zeros((1, 1), dtype=torch.int8, device=q.device)
        )
        flags = _flags(q.dtype, key_padding_mask is not None)
        grid = (batch * heads, -(-qlen // bq))
        kern.attn_fwd[grid](
            q, k, v, mask, out, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], mask.stride(0), *out.stride()[:3],
            heads, qlen, slen, d, 1.0 / math.sqrt(d),
            BQ=bq, BS=bs, BD=bd, **flags,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.flags = flags
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from vlp.kernels import _attention_triton as kern

        q, k, v, mask, out, lse = ctx.saved_tensors
        do = _last_dim_contiguous(grad_out)
        batch, heads, qlen, d = q.shape
        slen = k.shape[2]
        bq, bs, bd = _blocks(qlen, slen, d)
        delta = (do.float() * out.float()).sum(-1).reshape(batch * heads, qlen).contiguous()
        dq = torch.empty((batch, heads, qlen, d), dtype=torch.float32, device=q.device)
        dk = torch.empty((batch, heads, slen, d), dtype=torch.float32, device=q.device)
        dv = torch.empty_like(dk)
        common = (
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], mask.stride(0), *do.stride()[:3],
            heads, qlen, slen, d, 1.0 / math.sqrt(d),
        )  # fmt: skip
        kern.attn_bwd_dq[(batch * heads, -(-qlen // bq))](
            q, k, v, mask, do, lse, delta, dq, *common, BQ=bq, BS=bs, BD=bd, **ctx.flags
        )
        kern.attn_bwd_dkv[(batch * heads, -(-slen // bs))](
            q, k, v, mask, do, lse, delta, dk, dv, *common, BQ=bq, BS=bs, BD=bd, **ctx.flags
        )
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None


def _flags(dtype: torch.dtype, has_mask: bool) -> dict[str, bool]:
    return {
        "HAS_MASK": has_mask,
        "UPCAST": triton_interpret_upcast(dtype),
        "IEEE": dtype == torch.float32,
    }


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Multi-head attention of few queries over each sample's keys, torch or fused Triton.

    Several queries of one sample (e.g. COSMOS's crop views) share that sample's keys and
    values; neither path copies K/V per query. The Triton path (CUDA, or the interpreter
    in tests) has its own backward and supports fp32 (IEEE dots), fp16 and bf16 with
    fp32 accumulation; float64 always takes the torch path under ``"auto"``.

    Paper: Vaswani et al., "Attention is all you need", NeurIPS 2017, Eq. 1; kernel after
    FlashAttention-2 (Dao, 2023).

    Args:
        q: (B, H, Q, d) floating queries; the last dim must be contiguous or is made so.
        k: (B, H, S, d) keys, dtype and device of ``q`` (views are fine, e.g. heads split
            out of a (B, S, H * d) projection).
        v: (B, H, S, d) values.
        key_padding_mask: optional (B, S) ``torch.bool``, ``True`` = ignore that key;
            every sample must keep at least one key.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`vlp.kernels`).

    Returns:
        (B, H, Q, d) tensor in the dtype of ``q``.

    Raises:
        ValueError: mismatched shapes or devices, empty inputs, or a mask row hiding
            every key.
        TypeError: non-floating inputs, mixed dtypes, a non-bool mask, or float64 with
            ``backend="triton"``.
    """
    which = resolve_backend(backend, q, k, v, op="attention")
    if which == "triton" and q.dtype == torch.float64:
        if backend == "triton":
            raise TypeError("backend='triton' for attention supports fp32/fp16/bf16, got float64")
        which = "torch"
    if which == "torch":
        return attention_reference(q, k, v, key_padding_mask)
    _validate(q, k, v, key_padding_mask)
    out: torch.Tensor = _FusedAttention.apply(q, k, v, key_padding_mask)
    return out
