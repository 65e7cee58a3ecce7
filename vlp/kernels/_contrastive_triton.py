"""Triton kernels for :mod:`vlp.kernels.contrastive` (imported only when the Triton path runs).

Plain pointer arithmetic with masks, fp32 accumulation, ``tl.dot`` tiles of at least 16,
and a ``UPCAST`` flag that converts bf16 loads to fp32 under the interpreter (see
``docs/kernels.md``). fp32 inputs use ``input_precision="ieee"`` so the GPU result matches
the torch reference instead of drifting with tf32.
"""
# mypy: ignore-errors

import triton
import triton.language as tl


@triton.jit
def logits_tile(
    a_ptr,
    b_ptr,
    rows,
    cols,
    n,
    m,
    d,
    stride_a,
    stride_b,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    offs_d = tl.arange(0, BD)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, d, BD):
        kk = k0 + offs_d
        a = tl.load(
            a_ptr + rows[:, None] * stride_a + kk[None, :],
            mask=(rows[:, None] < n) & (kk[None, :] < d),
            other=0.0,
        )
        b = tl.load(
            b_ptr + cols[:, None] * stride_b + kk[None, :],
            mask=(cols[:, None] < m) & (kk[None, :] < d),
            other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE:
            acc += tl.dot(a, tl.trans(b), input_precision="ieee")
        else:
            acc += tl.dot(a, tl.trans(b))
    return acc


@triton.jit
def lse_fwd(
    a_ptr,
    b_ptr,
    lse_ptr,
    scale_ptr,
    bias_ptr,
    n,
    m,
    d,
    stride_a,
    stride_b,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    for j0 in range(0, m, BN):
        cols = j0 + tl.arange(0, BN)
        raw = logits_tile(
            a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD, UPCAST, IEEE
        )
        s = raw * scale + bias
        s = tl.where(cols[None, :] < m, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
    tl.store(lse_ptr + rows, m_i + tl.log(l_i), mask=rows < n)


@triton.jit
def lse_bwd(
    a_ptr,
    b_ptr,
    lse_r_ptr,
    lse_c_ptr,
    grad_ptr,
    dot_ptr,
    scale_ptr,
    bias_ptr,
    w_r,
    w_c,
    n,
    m,
    d,
    stride_a,
    stride_b,
    stride_g,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    BDO: tl.constexpr,
    HAS_ROW: tl.constexpr,
    HAS_COL: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    dcols = pid_d * BDO + tl.arange(0, BDO)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    if HAS_ROW:
        lse_r = tl.load(lse_r_ptr + rows, mask=rows < n, other=0.0)
    acc = tl.zeros((BM, BDO), dtype=tl.float32)
    dot = tl.zeros((BM,), dtype=tl.float32)
    for j0 in range(0, m, BN):
        cols = j0 + tl.arange(0, BN)
        raw = logits_tile(
            a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD, UPCAST, IEEE
        )
        s = raw * scale + bias
        p = tl.zeros((BM, BN), dtype=tl.float32)
        if HAS_ROW:
            p += w_r * tl.exp(s - lse_r[:, None])
        if HAS_COL:
            lse_c = tl.load(lse_c_ptr + cols, mask=cols < m, other=0.0)
            p += w_c * tl.exp(s - lse_c[None, :])
        p = tl.where((rows[:, None] < n) & (cols[None, :] < m), p, 0.0)
        dot += tl.sum(p * raw, axis=1)
        bv = tl.load(
            b_ptr + cols[:, None] * stride_b + dcols[None, :],
            mask=(cols[:, None] < m) & (dcols[None, :] < d),
            other=0.0,
        )
        if UPCAST:
            bv = bv.to(tl.float32)
        if IEEE:
            acc += tl.dot(p, bv, input_precision="ieee")
        else:
            acc += tl.dot(p.to(bv.dtype), bv)
    tl.store(
        grad_ptr + rows[:, None] * stride_g + dcols[None, :],
        acc,
        mask=(rows[:, None] < n) & (dcols[None, :] < d),
    )
    tl.store(dot_ptr + pid_d * n + rows, dot, mask=rows < n)


@triton.jit
def sigmoid_fwd(
    a_ptr,
    b_ptr,
    rid_ptr,
    cid_ptr,
    grad_ptr,
    loss_ptr,
    dot_ptr,
    gsum_ptr,
    scale_ptr,
    bias_ptr,
    n,
    m,
    d,
    stride_a,
    stride_b,
    stride_g,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    BDO: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    dcols = pid_d * BDO + tl.arange(0, BDO)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    rid = tl.load(rid_ptr + rows, mask=rows < n, other=-1)
    acc = tl.zeros((BM, BDO), dtype=tl.float32)
    loss = tl.zeros((BM,), dtype=tl.float32)
    dot = tl.zeros((BM,), dtype=tl.float32)
    gs = tl.zeros((BM,), dtype=tl.float32)
    for j0 in range(0, m, BN):
        cols = j0 + tl.arange(0, BN)
        cid = tl.load(cid_ptr + cols, mask=cols < m, other=-2)
        raw = logits_tile(
            a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD, UPCAST, IEEE
        )
        z = tl.where(rid[:, None] == cid[None, :], 1.0, -1.0)
        x = z * (raw * scale + bias)
        valid = (rows[:, None] < n) & (cols[None, :] < m)
        # -log sigmoid(x) = max(-x, 0) + log(1 + exp(-|x|)), portable (no libdevice)
        nls = tl.maximum(-x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
        loss += tl.sum(tl.where(valid, nls, 0.0), axis=1)
        sig = 1.0 / (1.0 + tl.exp(x))  # sigmoid(-x)
        g = tl.where(valid, -z * sig, 0.0)
        dot += tl.sum(g * raw, axis=1)
        gs += tl.sum(g, axis=1)
        bv = tl.load(
            b_ptr + cols[:, None] * stride_b + dcols[None, :],
            mask=(cols[:, None] < m) & (dcols[None, :] < d),
            other=0.0,
        )
        if UPCAST:
            bv = bv.to(tl.float32)
        if IEEE:
            acc += tl.dot(g, bv, input_precision="ieee")
        else:
            acc += tl.dot(g.to(bv.dtype), bv)
    tl.store(
        grad_ptr + rows[:, None] * stride_g + dcols[None, :],
        acc,
        mask=(rows[:, None] < n) & (dcols[None, :] < d),
    )
    tl.store(loss_ptr + pid_d * n + rows, loss, mask=rows < n)
    tl.store(dot_ptr + pid_d * n + rows, dot, mask=rows < n)
    tl.store(gsum_ptr + pid_d * n + rows, gs, mask=rows < n)
