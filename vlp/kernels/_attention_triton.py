"""Triton kernels for :mod:`vlp.kernels.attention` (imported only when the Triton path runs).

Flash-attention style: online softmax over key tiles, fp32 accumulation, the log-sum-exp
saved for a backward that recomputes the probabilities. Several query views of one
sample read the same K/V rows (the grid walks query blocks of one (sample, head) pair),
so keys and values are never copied per view. A sample whose keys are all masked has
``l = 0``: its output is written as zero (not 0/0) and its probabilities are zero in the
backward, so every gradient it contributes is zero. Gradients are stored in the input
dtype at the strides the launcher passes (those of the inputs). Products follow the
precision policy of :mod:`vlp.kernels._precision`. Written to the Triton 3.6-3.9 subset:
plain pointers with masks, ``tl.dot`` tiles of at least 16, no libdevice.
"""
# mypy: ignore-errors

import triton
import triton.language as tl

from vlp.kernels._triton_common import cast_operand, load_operand, mma


@triton.jit
def _tile(ptr, rows, rd, stride_row, n_rows, D, DOT: tl.constexpr, OP: tl.constexpr,
          INTERP: tl.constexpr):  # fmt: skip
    x = tl.load(
        ptr + rows[:, None] * stride_row + rd[None, :],
        mask=(rows[:, None] < n_rows) & (rd[None, :] < D),
        other=0.0,
    )
    return load_operand(x, DOT, OP, INTERP)


@triton.jit
def _keep(mask_ptr, b, smb, rs, SLEN, HAS_MASK: tl.constexpr):
    keep = rs < SLEN
    if HAS_MASK:
        pad = tl.load(mask_ptr + b * smb + rs, mask=rs < SLEN, other=1)
        keep = keep & (pad == 0)
    return keep


@triton.jit
def attn_fwd(
    q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, lse_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sob, soh, som,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, HAS_MASK: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_q = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rq = pid_q * BQ + tl.arange(0, BQ)
    rd = tl.arange(0, BD)
    q = _tile(q_ptr + b * sqb + h * sqh, rq, rd, sqm, QLEN, D, DOT, OP, INTERP)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    m_i = tl.full((BQ,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BQ,), dtype=tl.float32)
    acc = tl.zeros((BQ, BD), dtype=tl.float32)
    for s0 in range(0, SLEN, BS):
        rs = s0 + tl.arange(0, BS)
        k = _tile(k_base, rs, rd, skn, SLEN, D, DOT, OP, INTERP)
        v = _tile(v_base, rs, rd, svn, SLEN, D, DOT, OP, INTERP)
        s = mma(q, tl.trans(k), tl.zeros((BQ, BS), dtype=tl.float32), DOT) * sm_scale
        keep = _keep(mask_ptr, b, smb, rs, SLEN, HAS_MASK)
        s = tl.where(keep[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows whose keys so far are all hidden have m_new = -inf: shift by 0 instead.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = mma(cast_operand(p, DOT, OP, INTERP), v, acc * alpha[:, None], DOT)
        m_i = m_new
    attends = l_i > 0.0
    o = acc / tl.where(attends, l_i, 1.0)[:, None]
    tl.store(
        o_ptr + b * sob + h * soh + rq[:, None] * som + rd[None, :],
        o,
        mask=(rq[:, None] < QLEN) & (rd[None, :] < D),
    )
    # A row that attends to nothing stores +inf: exp(s - lse) = 0 for it in backward.
    lse = tl.where(attends, m_i + tl.log(tl.where(attends, l_i, 1.0)), float("inf"))
    tl.store(lse_ptr + pid_bh * QLEN + rq, lse, mask=rq < QLEN)


@triton.jit
def attn_bwd_dq(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sdob, sdoh, sdom, sdqb, sdqh, sdqm,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, HAS_MASK: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_q = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rq = pid_q * BQ + tl.arange(0, BQ)
    rd = tl.arange(0, BD)
    q = _tile(q_ptr + b * sqb + h * sqh, rq, rd, sqm, QLEN, D, DOT, OP, INTERP)
    do = _tile(do_ptr + b * sdob + h * sdoh, rq, rd, sdom, QLEN, D, DOT, OP, INTERP)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    lse = tl.load(lse_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=float("inf"))
    delta = tl.load(delta_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
    dq = tl.zeros((BQ, BD), dtype=tl.float32)
    for s0 in range(0, SLEN, BS):
        rs = s0 + tl.arange(0, BS)
        k = _tile(k_base, rs, rd, skn, SLEN, D, DOT, OP, INTERP)
        v = _tile(v_base, rs, rd, svn, SLEN, D, DOT, OP, INTERP)
        s = mma(q, tl.trans(k), tl.zeros((BQ, BS), dtype=tl.float32), DOT) * sm_scale
        dp = mma(do, tl.trans(v), tl.zeros((BQ, BS), dtype=tl.float32), DOT)
        keep = _keep(mask_ptr, b, smb, rs, SLEN, HAS_MASK)[None, :] & (rq < QLEN)[:, None]
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dq = mma(cast_operand(ds, DOT, OP, INTERP), k, dq, DOT)
    tl.store(
        dq_ptr + b * sdqb + h * sdqh + rq[:, None] * sdqm + rd[None, :],
        dq * sm_scale,
        mask=(rq[:, None] < QLEN) & (rd[None, :] < D),
    )


@triton.jit
def attn_bwd_dkv(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sdob, sdoh, sdom,
    sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
    H, QLEN, SLEN, D, sm_scale,
    BQ: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, HAS_MASK: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    rs = pid_s * BS + tl.arange(0, BS)
    rd = tl.arange(0, BD)
    k = _tile(k_ptr + b * skb + h * skh, rs, rd, skn, SLEN, D, DOT, OP, INTERP)
    v = _tile(v_ptr + b * svb + h * svh, rs, rd, svn, SLEN, D, DOT, OP, INTERP)
    keep_s = _keep(mask_ptr, b, smb, rs, SLEN, HAS_MASK)
    q_base = q_ptr + b * sqb + h * sqh
    do_base = do_ptr + b * sdob + h * sdoh
    dk = tl.zeros((BS, BD), dtype=tl.float32)
    dv = tl.zeros((BS, BD), dtype=tl.float32)
    for q0 in range(0, QLEN, BQ):
        rq = q0 + tl.arange(0, BQ)
        q = _tile(q_base, rq, rd, sqm, QLEN, D, DOT, OP, INTERP)
        do = _tile(do_base, rq, rd, sdom, QLEN, D, DOT, OP, INTERP)
        lse = tl.load(lse_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=float("inf"))
        delta = tl.load(delta_ptr + pid_bh * QLEN + rq, mask=rq < QLEN, other=0.0)
        s = mma(q, tl.trans(k), tl.zeros((BQ, BS), dtype=tl.float32), DOT) * sm_scale
        dp = mma(do, tl.trans(v), tl.zeros((BQ, BS), dtype=tl.float32), DOT)
        keep = keep_s[None, :] & (rq < QLEN)[:, None]
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dv = mma(tl.trans(cast_operand(p, DOT, OP, INTERP)), do, dv, DOT)
        dk = mma(tl.trans(cast_operand(ds, DOT, OP, INTERP)), q, dk, DOT)
    out_mask = (rs[:, None] < SLEN) & (rd[None, :] < D)
    tl.store(
        dk_ptr + b * sdkb + h * sdkh + rs[:, None] * sdkn + rd[None, :],
        dk * sm_scale,
        mask=out_mask,
    )
    tl.store(dv_ptr + b * sdvb + h * sdvh + rs[:, None] * sdvn + rd[None, :], dv, mask=out_mask)
