"""Multi-head attention for few queries per sample: torch reference and fused Triton path.

The op behind :class:`vlp.heads.CrossAttentionPooler`: every query of sample ``b``
(for COSMOS, one per crop view) attends over that sample's key/value tokens. The
Triton path walks query blocks of one (sample, head) pair over the same K/V rows, so
several views share one K/V without copies, and saves only the per-query
log-sum-exp for the backward (flash-attention style recompute).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from vlp._checks import check_bool_mask, check_floating, check_same_device, check_shape
from vlp.kernels._blocks import next_pow2
from vlp.kernels._dispatch import Backend, resolve_backend
from vlp.kernels._precision import device_guard, dot_mode, kernel_flags

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
        key_padding_mask: optional (B, S) ``torch.bool``, ``True`` = ignore that key. A
            sample whose keys are all ignored gets a zero output and zero gradients.

    Returns:
        (B, H, Q, d) tensor in the dtype of ``q``.
    """
    _validate(q, k, v, key_padding_mask)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if key_padding_mask is None:
        return torch.matmul(scores.softmax(dim=-1), v)
    # A sample whose keys are all hidden attends to nothing: zero output, zero gradients.
    # Its scores are left finite (not -inf, whose softmax is 0/0 = NaN, also in backward)
    # and its probabilities are multiplied by zero.
    attends = ~key_padding_mask.all(dim=1)  # (B,)
    hidden = key_padding_mask & attends[:, None]
    scores = scores.masked_fill(hidden[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1) * attends[:, None, None, None].to(scores.dtype)
    return torch.matmul(probs, v)


#: Shared memory one block may use, in bytes, by compute capability (major * 10 + minor):
#: sm_80 (A100) 163 KB, sm_90 (H100) 227 KB, consumer Ampere/Ada 99 KB. Other devices get
#: the smallest of these; the interpreter sizes tiles for sm_80.
SHARED_LIMITS: dict[int, int] = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


def shared_limit(device: torch.device) -> int:
    """Shared memory per block that the tiles must fit on ``device``."""
    if device.type != "cuda":
        return SHARED_LIMITS[80]
    major, minor = torch.cuda.get_device_capability(device)
    return SHARED_LIMITS.get(major * 10 + minor, min(SHARED_LIMITS.values()))


class AttentionConfig(NamedTuple):
    """Tiles of one attention kernel launch (also read by the compile report)."""

    bq: int
    bs: int
    bd: int
    num_warps: int
    num_stages: int


# (BQ, BS) candidates, largest first, per operand width; the first that fits is taken.
_CANDIDATES: dict[int | str, tuple[tuple[int, int], ...]] = {
    2: ((64, 64), (32, 64), (32, 32), (16, 32), (16, 16)),
    4: ((32, 64), (32, 32), (16, 32), (16, 16)),
    # exact fp32 products run on FMA units with every operand in registers: small tiles
    # (the compile report found kilobytes of spills per thread with 32 x 64 tiles on sm_80)
    "ieee": ((16, 32), (16, 16)),
}
_NUM_STAGES = 2
# Triton's own scratch (layout conversions, reductions) on top of the operand tiles.
_SHARED_MARGIN = 1.25


def _shared_estimate(kernel: str, bq: int, bs: int, bd: int, width: int, stages: int) -> int:
    """Bytes of shared memory the kernel's operand tiles take, pipelined ``stages`` deep."""
    probs = 2 * bq * bs * width  # P / dS staged as an operand of the second product
    if kernel == "attn_bwd_dkv":  # Q and dO stream; K, V stay
        return stages * 2 * bq * bd * width + 2 * bs * bd * width + probs
    resident = (2 if kernel == "attn_bwd_dq" else 1) * bq * bd * width  # Q (and dO)
    return stages * 2 * bs * bd * width + resident + probs


def attention_config(
    kernel: str, qlen: int, slen: int, d: int, dtype: torch.dtype, limit: int
) -> AttentionConfig:
    """Tiles for ``kernel`` (``attn_fwd``, ``attn_bwd_dq``, ``attn_bwd_dkv``).

    The largest (BQ, BS) pair for the dtype whose operand tiles fit ``limit`` bytes of
    shared memory with margin; BD is the head dim rounded up to a power of two (>= 16).
    """
    width = 4 if dtype == torch.float32 else 2
    bd = max(16, next_pow2(d))
    qcap, scap = max(16, next_pow2(qlen)), max(16, next_pow2(slen))
    candidates = _CANDIDATES["ieee" if dot_mode(dtype) == "ieee" else width]
    choice = candidates[-1]
    for bq, bs in candidates:
        bq, bs = min(bq, qcap), min(bs, scap)
        need = _shared_estimate(kernel, bq, bs, bd, width, _NUM_STAGES) * _SHARED_MARGIN
        if need <= limit:
            choice = (bq, bs)
            break
    bq, bs = min(choice[0], qcap), min(choice[1], scap)
    block = bs if kernel == "attn_bwd_dkv" else bq
    warps = 8 if block * bd >= 64 * 128 and dot_mode(dtype) != "ieee" else 4
    return AttentionConfig(bq, bs, bd, warps, _NUM_STAGES)


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _kernel_kwargs(cfg: AttentionConfig, dtype: torch.dtype, has_mask: bool) -> dict[str, Any]:
    return {
        "BQ": cfg.bq, "BS": cfg.bs, "BD": cfg.bd, "HAS_MASK": has_mask,
        "num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **kernel_flags(dtype),
    }  # fmt: skip


def _mask_arg(key_padding_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if key_padding_mask is None:
        return torch.zeros((1, 1), dtype=torch.int8, device=like.device)
    return key_padding_mask.to(torch.int8).contiguous()


def attention_forward_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: ``(out (B, H, Q, d) in q's dtype, lse (B * H, Q) float32)``.

    ``lse`` is ``+inf`` for the rows of a sample whose keys are all masked (zero output).
    """
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    batch, heads, qlen, d = q.shape
    slen = k.shape[2]
    cfg = attention_config("attn_fwd", qlen, slen, d, q.dtype, shared_limit(q.device))
    out = torch.empty_like(q)
    lse = torch.empty((batch * heads, qlen), dtype=torch.float32, device=q.device)
    mask = _mask_arg(key_padding_mask, q)
    with device_guard(q):
        _kernels().attn_fwd[(batch * heads, -(-qlen // cfg.bq))](
            q, k, v, mask, out, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], mask.stride(0), *out.stride()[:3],
            heads, qlen, slen, d, 1.0 / math.sqrt(d),
            **_kernel_kwargs(cfg, q.dtype, key_padding_mask is not None),
        )  # fmt: skip
    return out, lse


def attention_backward_triton(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused backward: ``(dq, dk, dv)`` in the inputs' dtypes and layouts."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    do = _last_dim_contiguous(grad_out)
    batch, heads, qlen, d = q.shape
    slen = k.shape[2]
    limit = shared_limit(q.device)
    delta = (do.float() * out.float()).sum(-1).reshape(batch * heads, qlen).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    mask = _mask_arg(key_padding_mask, q)
    has_mask = key_padding_mask is not None
    common = (
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], mask.stride(0), *do.stride()[:3],
    )  # fmt: skip
    sizes = (heads, qlen, slen, d, 1.0 / math.sqrt(d))
    cfg_q = attention_config("attn_bwd_dq", qlen, slen, d, q.dtype, limit)
    cfg_kv = attention_config("attn_bwd_dkv", qlen, slen, d, q.dtype, limit)
    kern = _kernels()
    with device_guard(q):
        kern.attn_bwd_dq[(batch * heads, -(-qlen // cfg_q.bq))](
            q, k, v, mask, do, lse, delta, dq, *common, *dq.stride()[:3], *sizes,
            **_kernel_kwargs(cfg_q, q.dtype, has_mask),
        )  # fmt: skip
        kern.attn_bwd_dkv[(batch * heads, -(-slen // cfg_kv.bs))](
            q, k, v, mask, do, lse, delta, dk, dv, *common, *dk.stride()[:3], *dv.stride()[:3],
            *sizes, **_kernel_kwargs(cfg_kv, q.dtype, has_mask),
        )  # fmt: skip
    return dq, dk, dv


def _kernels() -> Any:
    from vlp.kernels import _attention_triton

    return _attention_triton


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
        key_padding_mask: optional (B, S) ``torch.bool``, ``True`` = ignore that key; a
            sample whose keys are all ignored gets a zero output and zero gradients.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`vlp.kernels`).

    Returns:
        (B, H, Q, d) tensor in the dtype of ``q``.

    Raises:
        ValueError: mismatched shapes or devices, or empty inputs.
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
    # The registered op vlp::attention (vlp.kernels._ops), with its backward.
    out: torch.Tensor = torch.ops.vlp.attention(q, k, v, key_padding_mask)[0]
    return out
