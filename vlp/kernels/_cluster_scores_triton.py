"""Triton kernel for :mod:`vlp.kernels.cluster_scores` (imported only when the Triton path runs).

Grid ``(B, cdiv(L, BL))``: program ``(b, i)`` scores patches ``i*BL ... i*BL+BL-1`` of
image ``b`` against that image's ``K`` anchors. Patch pixels are addressed straight from
the NCHW strides (patch ``j`` is grid cell ``(j // GW, j % GW)``), one channel at a time
in chunks of ``QC`` values, so the image is read once and never copied.

A patch row of ``PW`` pixels is walked as ``PWP = next_pow2(PW)`` lanes (the extra lanes
masked off), so the pixel offset within a chunk is ``(q // PWP) * s_h + (q % PWP) * s_w``:
with a unit width stride (specialised by Triton) runs of ``PWP`` lanes are contiguous and
the loads vectorise. Anchors outside ``[0, L)`` are ignored on the device (they form no
cluster; the CPU path raises before launching). Divisions and square roots round to
nearest (``div_rn``/``sqrt_rn``), as the interpreter computes them, so the GPU and the
interpreter agree to the last bit of each operation.

Numerics (all fp32): each patch's values are shifted by its first pixel before
summing, so that the centred sum of squares ``S2 - S1^2 / P`` does not cancel
catastrophically (a flat patch gives exactly 0). Anchors are centred and normalised
explicitly (a first pass over their pixels gives their mean and norm); the dot
product of a shifted patch with a centred anchor is corrected by
``mean(shifted patch) * sum(anchor)``, which makes it the exact centred dot product.
Written to the Triton 3.6-3.9 subset: plain pointers with masks, ``tl.dot`` tiles of at
least 16 in every dimension, in ``ieee`` precision (no tf32), no libdevice.
"""
# mypy: ignore-errors

import triton
import triton.language as tl


@triton.jit
def cluster_scores_fwd(
    img_ptr, anc_ptr, out_ptr,
    s_b, s_c, s_h, s_w, s_ab, s_ob,
    C, L, GW, PH, PW, K, num, eps_norm,
    BL: tl.constexpr, QC: tl.constexpr, KP: tl.constexpr, PWP: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    base = img_ptr + b * s_b
    pp = PH * PWP
    rq = tl.arange(0, QC)

    # Anchor patches: offsets of their top-left pixels, then mean and norm. An anchor
    # outside [0, L) is treated as absent (no out-of-bounds read, no cluster).
    rk = tl.arange(0, KP)
    a_idx = tl.load(anc_ptr + b * s_ab + rk, mask=rk < K, other=-1)
    kmask = (rk < K) & (a_idx >= 0) & (a_idx < L)
    a_idx = tl.where(kmask, a_idx, 0).to(tl.int32)  # < L: 32-bit div/mod below
    a_off = (a_idx // GW) * PH * s_h + (a_idx % GW) * PW * s_w
    a_shift = tl.load(base + a_off, mask=kmask, other=0.0).to(tl.float32)
    a_s1 = tl.zeros((KP,), dtype=tl.float32)
    a_s2 = tl.zeros((KP,), dtype=tl.float32)
    for c in range(0, C):
        for q0 in range(0, pp, QC):
            q = q0 + rq
            q_off = c * s_c + (q // PWP) * s_h + (q % PWP) * s_w
            m = kmask[:, None] & (q[None, :] < pp) & ((q % PWP) < PW)[None, :]
            a = tl.load(base + a_off[:, None] + q_off[None, :], mask=m, other=0.0)
            y = tl.where(m, a.to(tl.float32) - a_shift[:, None], 0.0)
            a_s1 += tl.sum(y, axis=1)
            a_s2 += tl.sum(y * y, axis=1)
    a_norm = tl.sqrt_rn(tl.maximum(a_s2 - a_s1 * tl.div_rn(a_s1, num), 0.0))
    a_valid = kmask & (a_norm > eps_norm)
    a_inv = tl.where(a_valid, tl.div_rn(1.0, tl.where(a_valid, a_norm, 1.0)), 0.0)
    a_centre = a_shift + tl.div_rn(a_s1, num)

    # This program's patches.
    rl = pid_l * BL + tl.arange(0, BL)
    lmask = rl < L
    t_off = (rl // GW) * PH * s_h + (rl % GW) * PW * s_w
    t_shift = tl.load(base + t_off, mask=lmask, other=0.0).to(tl.float32)
    t_s1 = tl.zeros((BL,), dtype=tl.float32)
    t_s2 = tl.zeros((BL,), dtype=tl.float32)
    a_sum = tl.zeros((KP,), dtype=tl.float32)
    acc = tl.zeros((BL, KP), dtype=tl.float32)
    for c in range(0, C):
        for q0 in range(0, pp, QC):
            q = q0 + rq
            qmask = (q < pp) & ((q % PWP) < PW)
            q_off = c * s_c + (q // PWP) * s_h + (q % PWP) * s_w
            am = kmask[:, None] & qmask[None, :]
            a = tl.load(base + a_off[:, None] + q_off[None, :], mask=am, other=0.0)
            a_hat = tl.where(am, (a.to(tl.float32) - a_centre[:, None]) * a_inv[:, None], 0.0)
            a_sum += tl.sum(a_hat, axis=1)
            tm = lmask[:, None] & qmask[None, :]
            x = tl.load(base + t_off[:, None] + q_off[None, :], mask=tm, other=0.0)
            y = tl.where(tm, x.to(tl.float32) - t_shift[:, None], 0.0)
            t_s1 += tl.sum(y, axis=1)
            t_s2 += tl.sum(y * y, axis=1)
            acc += tl.dot(y, tl.trans(a_hat), input_precision="ieee")
    t_mean = tl.div_rn(t_s1, num)
    t_norm = tl.sqrt_rn(tl.maximum(t_s2 - t_s1 * t_mean, 0.0))
    t_valid = lmask & (t_norm > eps_norm)
    dots = acc - t_mean[:, None] * a_sum[None, :]
    cos = tl.div_rn(dots, tl.where(t_valid, t_norm, 1.0)[:, None])
    self_corr = (rl[:, None] == a_idx[None, :]) & kmask[None, :]
    cos = tl.where(self_corr, 1.0, cos)  # self-correlation: exactly 1
    ok = t_valid[:, None] & a_valid[None, :]
    cos = tl.where(ok, tl.minimum(tl.maximum(cos, -1.0), 1.0), float("-inf"))
    score = tl.max(cos, axis=1)
    tl.store(out_ptr + b * s_ob + rl, score, mask=lmask)
