"""Triton kernels for :mod:`vlp.kernels.attention` (imported only when the Triton path runs).

Flash-attention style: online softmax over key tiles, fp32 accumulation, the log-sum-exp
saved for a backward that recomputes the probabilities. Several query views of one
sample read the same K/V rows (the grid walks query blocks of one (sample, head) pair),
so keys and values are never copied per view. Written to the Triton 3.6-3.9 subset:
plain pointers with masks, ``tl.dot`` tiles of at least 16, no libdevice, and a
``UPCAST`` flag converting bf16 loads to fp32 under the interpreter.
"""
# mypy: ignore-errors
# ruff: noqa: SIM108

import triton
import triton.language as tl


@triton.jit
def attn_fwd(
    q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, lse_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sob, soh, som,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_q = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rq = pid_q * BQ + tl.arange(0, BQ)
    rd = tl.arange(0, BD)
    q = tl.load(
        q_ptr + b * sqb + h * sqh + rq[:, None] * sqm + rd[None, :],
        mask=(rq[:, None] < QLEN) & (rd[None, :] < D),
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full((BQ,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BQ,), dtype=tl.float32)
    acc = tl.zeros((BQ, BD), dtype=tl.float32)
    for s0 in range(0, SLEN, BS):
        rs = s0 + tl.arange(0, BS)
        kv_mask = (rs[:, None] < SLEN) & (rd[None, :] < D)
        k = tl.load(
            k_ptr + b * skb + h * skh + rs[:, None] * skn + rd[None, :], mask=kv_mask, other=0.0
        )
        v = tl.load(
            v_ptr + b * svb + h * svh + rs[:, None] * svn + rd[None, :], mask=kv_mask, other=0.0
        )
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * sm_scale
        keep = rs < SLEN
        if HAS_MASK:
            pad = tl.load(mask_ptr + b * smb + rs, mask=rs < SLEN, other=1)
            keep = keep & (pad == 0)
        s = tl.where(keep[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Guard rows whose keys so far are all hidden (m_new = -inf).
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(
        o_ptr + b * sob + h * soh + rq[:, None] * som + rd[None, :],
        o,
        mask=(rq[:, None] < QLEN) & (rd[None, :] < D),
    )
    tl.store(lse_ptr + pid_bh * QLEN + rq, m_i + tl.log(l_i), mask=rq < QLEN)


@triton.jit
def attn_bwd_dq(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sdob, sdoh, sdom,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_q = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rq = pid_q * BQ + tl.arange(0, BQ)
    rd = tl.arange(0, BD)
    qm = (rq[:, None] < QLEN) & (rd[None, :] < D)
    q = tl.load(q_ptr + b * sqb + h * sqh + rq[:, None] * sqm + rd[None, :], mask=qm, other=0.0)
    do = tl.load(
        do_ptr + b * sdob + h * sdoh + rq[:, None] * sdom + rd[None, :], mask=qm, other=0.0
    )
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(lse_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
    delta = tl.load(delta_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
    dq = tl.zeros((BQ, BD), dtype=tl.float32)
    for s0 in range(0, SLEN, BS):
        rs = s0 + tl.arange(0, BS)
        kv_mask = (rs[:, None] < SLEN) & (rd[None, :] < D)
        k = tl.load(
            k_ptr + b * skb + h * skh + rs[:, None] * skn + rd[None, :], mask=kv_mask, other=0.0
        )
        v = tl.load(
            v_ptr + b * svb + h * svh + rs[:, None] * svn + rd[None, :], mask=kv_mask, other=0.0
        )
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k)) * sm_scale
            dp = tl.dot(do, tl.trans(v))
        keep = (rs < SLEN)[None, :] & (rq < QLEN)[:, None]
        if HAS_MASK:
            pad = tl.load(mask_ptr + b * smb + rs, mask=rs < SLEN, other=1)
            keep = keep & (pad == 0)[None, :]
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        if IEEE:
            dq += tl.dot(ds, k, input_precision="ieee")
        else:
            dq += tl.dot(ds.to(k.dtype), k)
    tl.store(
        dq_ptr + pid_bh * QLEN * D + rq[:, None] * D + rd[None, :],
        dq * sm_scale,
        mask=qm,
    )


@triton.jit
def attn_bwd_dkv(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sdob, sdoh, sdom,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rs = pid_s * BS + tl.arange(0, BS)
    rd = tl.arange(0, BD)
    kv_mask = (rs[:, None] < SLEN) & (rd[None, :] < D)
    k = tl.load(
        k_ptr + b * skb + h * skh + rs[:, None] * skn + rd[None, :], mask=kv_mask, other=0.0
    )
    v = tl.load(
        v_ptr + b * svb + h * svh + rs[:, None] * svn + rd[None, :], mask=kv_mask, other=0.0
    )
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    keep_s = rs < SLEN
    if HAS_MASK:
        pad = tl.load(mask_ptr + b * smb + rs, mask=rs < SLEN, other=1)
        keep_s = keep_s & (pad == 0)
    dk = tl.zeros((BS, BD), dtype=tl.float32)
    dv = tl.zeros((BS, BD), dtype=tl.float32)
    for q0 in range(0, QLEN, BQ):
        rq = q0 + tl.arange(0, BQ)
        qm = (rq[:, None] < QLEN) & (rd[None, :] < D)
        q = tl.load(q_ptr + b * sqb + h * sqh + rq[:, None] * sqm + rd[None, :], mask=qm, other=0.0)
        do = tl.load(
            do_ptr + b * sdob + h * sdoh + rq[:, None] * sdom + rd[None, :], mask=qm, other=0.0
        )
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(lse_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
        delta = tl.load(delta_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k)) * sm_scale
            dp = tl.dot(do, tl.trans(v))
        keep = keep_s[None, :] & (rq < QLEN)[:, None]
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        if IEEE:
            dv += tl.dot(tl.trans(p), do, input_precision="ieee")
            dk += tl.dot(tl.trans(ds), q, input_precision="ieee")
        else:
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    out = pid_bh * SLEN * D + rs[:, None] * D + rd[None, :]
    tl.store(dk_ptr + out, dk * sm_scale, mask=kv_mask)
    tl.store(dv_ptr + out, dv, mask=kv_mask)
