"""Triton kernels for :mod:`vlp.kernels.contrastive` (imported only when the Triton path runs).

Flash-style: every logits tile ``S = scale * a_rows @ b_cols.T + bias`` is computed once
per pass, in registers, and never written out.

- ``lse_fwd``: grid ``(row blocks, column splits)``. A program walks the column blocks
  of its split, keeps an online log-sum-exp per row (one partial per split) and, from
  the same tile, writes each column's log-sum-exp over the program's rows (one partial
  per row block). The host merges the partials (a log-sum-exp over splits / row blocks).
- ``lse_bwd``: same grid. Each tile is recomputed once; ``dS = w_r softmax_row(S) +
  w_c softmax_col(S)`` feeds both gradient products ``dS @ b`` and ``dS.T @ a``, added
  to fp32 gradient buffers with atomics (column blocks of ``D`` at a time, so any ``D``
  fits in registers). Work: 1 recompute + 2 products.
- ``sigmoid_fwd``: SigLIP's gradient is known in the forward pass, so one pass computes
  the loss and (``WITH_GRAD``) both gradient products: 3 products in all, no backward pass.

Offsets are int64. ``D`` is walked in blocks of ``BD`` and a tail in blocks of 16, so
the issued product work is that of ``D`` rounded up to 16, not to ``BD``. Products follow
the precision policy of :mod:`vlp.kernels._precision` (``DOT``/``OP``/``INTERP``).
Atomic accumulation makes the gradients' last bits depend on the order of the programs.
"""
# mypy: ignore-errors

import triton
import triton.language as tl

from vlp.kernels._triton_common import cast_operand, load_operand, mma

TAIL: tl.constexpr = tl.constexpr(16)


@triton.jit
def _logits(
    a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    """``a[rows] @ b[cols].T`` (BM, BN) in fp32: blocks of BD, then a tail of 16s."""
    rmask = rows < n
    cmask = cols < m
    a_row = a_ptr + rows[:, None] * stride_a
    b_row = b_ptr + cols[:, None] * stride_b
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    d_main = (d // BD) * BD
    for k0 in range(0, d_main, BD):
        kk = k0 + tl.arange(0, BD)
        a = tl.load(a_row + kk[None, :], mask=rmask[:, None], other=0.0)
        b = tl.load(b_row + kk[None, :], mask=cmask[:, None], other=0.0)
        acc = mma(
            load_operand(a, DOT, OP, INTERP), tl.trans(load_operand(b, DOT, OP, INTERP)), acc, DOT
        )
    for k0 in range(d_main, d, TAIL):
        kk = k0 + tl.arange(0, TAIL)
        kmask = kk[None, :] < d
        a = tl.load(a_row + kk[None, :], mask=rmask[:, None] & kmask, other=0.0)
        b = tl.load(b_row + kk[None, :], mask=cmask[:, None] & kmask, other=0.0)
        acc = mma(
            load_operand(a, DOT, OP, INTERP), tl.trans(load_operand(b, DOT, OP, INTERP)), acc, DOT
        )
    return acc


@triton.jit
def _grad_block(
    g, a_row, b_row, ga_row, gb_row, kk, kmask_a, kmask_b,
    BM: tl.constexpr, BN: tl.constexpr, W: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    a = load_operand(tl.load(a_row + kk[None, :], mask=kmask_a, other=0.0), DOT, OP, INTERP)
    b = load_operand(tl.load(b_row + kk[None, :], mask=kmask_b, other=0.0), DOT, OP, INTERP)
    da = mma(g, b, tl.zeros((BM, W), dtype=tl.float32), DOT)
    db = mma(tl.trans(g), a, tl.zeros((BN, W), dtype=tl.float32), DOT)
    tl.atomic_add(ga_row + kk[None, :], da, mask=kmask_a, sem="relaxed")
    tl.atomic_add(gb_row + kk[None, :], db, mask=kmask_b, sem="relaxed")


@triton.jit
def _grad_products(
    g, a_ptr, b_ptr, ga_ptr, gb_ptr, rows, cols, n, m, d,
    stride_a, stride_b, stride_ga, stride_gb,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    """``grad_a[rows] += g @ b[cols]`` and ``grad_b[cols] += g.T @ a[rows]``, from one ``g``."""
    rmask = rows[:, None] < n
    cmask = cols[:, None] < m
    gop = cast_operand(g, DOT, OP, INTERP)
    a_row = a_ptr + rows[:, None] * stride_a
    b_row = b_ptr + cols[:, None] * stride_b
    ga_row = ga_ptr + rows[:, None] * stride_ga
    gb_row = gb_ptr + cols[:, None] * stride_gb
    d_main = (d // BD) * BD
    for k0 in range(0, d_main, BD):
        kk = k0 + tl.arange(0, BD)
        _grad_block(
            gop, a_row, b_row, ga_row, gb_row, kk, rmask, cmask, BM, BN, BD, DOT, OP, INTERP
        )
    for k0 in range(d_main, d, TAIL):
        kk = k0 + tl.arange(0, TAIL)
        kmask = kk[None, :] < d
        _grad_block(
            gop, a_row, b_row, ga_row, gb_row, kk, rmask & kmask, cmask & kmask,
            BM, BN, TAIL, DOT, OP, INTERP,
        )  # fmt: skip


@triton.jit
def lse_fwd(
    a_ptr, b_ptr, row_part_ptr, col_part_ptr, scale_ptr, bias_ptr,
    n, m, d, stride_a, stride_b, cols_per_split,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, HAS_COL: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    c0 = split * cols_per_split
    c1 = tl.minimum(c0 + cols_per_split, m)
    for j0 in range(c0, c1, BN):
        cols = j0 + tl.arange(0, BN)
        cmask = cols < m
        raw = _logits(a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD,
                      DOT, OP, INTERP)  # fmt: skip
        s = tl.where(cmask[None, :], raw * scale + bias, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
        if HAS_COL:
            sc = tl.where(rmask[:, None], s, float("-inf"))
            cm = tl.where(cmask, tl.max(sc, axis=0), 0.0)  # padded columns: no -inf - -inf
            cl = tl.sum(tl.exp(sc - cm[None, :]), axis=0)
            cl = tl.where(cmask, cl, 1.0)
            tl.store(col_part_ptr + pid * m + cols, cm + tl.log(cl), mask=cmask)
    tl.store(row_part_ptr + split * n + rows, m_i + tl.log(l_i), mask=rmask)


@triton.jit
def lse_bwd(
    a_ptr, b_ptr, lse_r_ptr, lse_c_ptr, ga_ptr, gb_ptr, dot_ptr, scale_ptr, bias_ptr,
    w_r, w_c, n, m, d, stride_a, stride_b, stride_ga, stride_gb, cols_per_split,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    HAS_ROW: tl.constexpr, HAS_COL: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    if HAS_ROW:
        lse_r = tl.load(lse_r_ptr + rows, mask=rmask, other=0.0)
    dot = tl.zeros((BM,), dtype=tl.float32)
    c0 = split * cols_per_split
    c1 = tl.minimum(c0 + cols_per_split, m)
    for j0 in range(c0, c1, BN):
        cols = j0 + tl.arange(0, BN)
        cmask = cols < m
        raw = _logits(a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD,
                      DOT, OP, INTERP)  # fmt: skip
        s = raw * scale + bias
        p = tl.zeros((BM, BN), dtype=tl.float32)
        if HAS_ROW:
            p += w_r * tl.exp(s - lse_r[:, None])
        if HAS_COL:
            lse_c = tl.load(lse_c_ptr + cols, mask=cmask, other=0.0)
            p += w_c * tl.exp(s - lse_c[None, :])
        p = tl.where(rmask[:, None] & cmask[None, :], p, 0.0)
        dot += tl.sum(p * raw, axis=1)
        _grad_products(p, a_ptr, b_ptr, ga_ptr, gb_ptr, rows, cols, n, m, d,
                       stride_a, stride_b, stride_ga, stride_gb, BM, BN, BD,
                       DOT, OP, INTERP)  # fmt: skip
    tl.store(dot_ptr + split * n + rows, dot, mask=rmask)


@triton.jit
def sigmoid_fwd(
    a_ptr, b_ptr, rid_ptr, cid_ptr, ga_ptr, gb_ptr, part_ptr, scale_ptr, bias_ptr,
    n, m, d, stride_a, stride_b, stride_ga, stride_gb, cols_per_split,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, WITH_GRAD: tl.constexpr,
    DOT: tl.constexpr, OP: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    splits = tl.num_programs(1).to(tl.int64)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    rid = tl.load(rid_ptr + rows, mask=rmask, other=0)
    loss = tl.zeros((BM,), dtype=tl.float32)
    dot = tl.zeros((BM,), dtype=tl.float32)
    gsum = tl.zeros((BM,), dtype=tl.float32)
    c0 = split * cols_per_split
    c1 = tl.minimum(c0 + cols_per_split, m)
    for j0 in range(c0, c1, BN):
        cols = j0 + tl.arange(0, BN)
        cmask = cols < m
        cid = tl.load(cid_ptr + cols, mask=cmask, other=0)
        raw = _logits(a_ptr, b_ptr, rows, cols, n, m, d, stride_a, stride_b, BM, BN, BD,
                      DOT, OP, INTERP)  # fmt: skip
        valid = rmask[:, None] & cmask[None, :]
        z = tl.where(rid[:, None] == cid[None, :], 1.0, -1.0)
        x = z * (raw * scale + bias)
        # -log sigmoid(x) = max(-x, 0) + log(1 + exp(-|x|)): portable, no libdevice, and
        # the same exp gives sigmoid(-x) without overflow.
        e = tl.exp(-tl.abs(x))
        nls = tl.maximum(-x, 0.0) + tl.log(1.0 + e)
        loss += tl.sum(tl.where(valid, nls, 0.0), axis=1)
        if WITH_GRAD:
            sig = tl.where(x >= 0, e, 1.0) / (1.0 + e)  # sigmoid(-x)
            g = tl.where(valid, -z * sig, 0.0)  # dL/dS
            dot += tl.sum(g * raw, axis=1)
            gsum += tl.sum(g, axis=1)
            _grad_products(g, a_ptr, b_ptr, ga_ptr, gb_ptr, rows, cols, n, m, d,
                           stride_a, stride_b, stride_ga, stride_gb, BM, BN, BD,
                           DOT, OP, INTERP)  # fmt: skip
    out = part_ptr + split * n + rows
    tl.store(out, loss, mask=rmask)
    if WITH_GRAD:
        tl.store(out + splits * n, dot, mask=rmask)
        tl.store(out + 2 * splits * n, gsum, mask=rmask)
