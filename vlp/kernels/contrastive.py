"""Memory-efficient contrastive-loss primitives that never form the N x M logits.

Two ops carry the quadratic work of the contrastive losses:

- :func:`tiled_logsumexp` returns ``row_weight * sum_i lse_i + col_weight * sum_j lse_j``
  for the logits ``S = logit_scale * a @ b.T + logit_bias``, where ``lse_i`` is the
  log-sum-exp of row ``i`` and ``lse_j`` that of column ``j``. InfoNCE is this minus the
  positive terms, which are linear in ``S`` and cost only O(N D) (``vlp.losses.clip_loss``
  adds them with ordinary autograd).
- :func:`tiled_sigmoid_loss` returns ``-weight * sum_ij log sigmoid(z_ij S_ij)`` with
  ``z_ij = +1`` where ``row_ids[i] == col_ids[j]`` and ``-1`` elsewhere (the SigLIP loss).

Each has a torch path that walks over column chunks of ``chunk_size`` and recomputes
them in backward (peak extra memory ``O(N * chunk_size)``), and a Triton path
(forward and backward kernels, tiles in SRAM, fp32 accumulation), chosen by the
``backend`` rule of :mod:`vlp.kernels`. References: Inf-CL (Cheng et al., 2024) for the
tiled log-sum-exp; SigLIP (Zhai et al., 2023, Eq. 1) for the sigmoid loss.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from vlp import _checks
from vlp._checks import check_int
from vlp.kernels._blocks import next_pow2
from vlp.kernels._dispatch import no_autocast, resolve_backend
from vlp.kernels._precision import device_guard, kernel_flags

__all__ = ["tiled_logsumexp", "tiled_sigmoid_loss"]

DEFAULT_CHUNK = 1024


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _validate(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None,
    chunk_size: int,
) -> None:
    _checks.check_matrix("a", a)
    _checks.check_matrix("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must have the same feature dim, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    for name, t in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.numel() != 1):
            raise ValueError(f"{name} must be a scalar tensor, got {t!r}")
    _checks.check_same_device(("a", a), ("b", b))
    for name, t in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if t is not None and t.device != a.device:
            # A kernel would read a host pointer on the GPU (or the reverse).
            raise ValueError(f"{name} must be on the features' device {a.device}, got {t.device}")
    check_int("chunk_size", chunk_size, low=1)


def _first_order_only(op: str) -> None:
    # The backward passes replay saved statistics (log-sum-exps, or gradients computed in
    # the forward), which carry no graph: a second derivative would be silently wrong.
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{op} (the chunk_size / Triton path of the contrastive losses) supports "
            "first-order gradients only; use chunk_size=None for higher-order gradients "
            "(create_graph=True)"
        )


def _chunks(m: int, chunk_size: int) -> range:
    return range(0, m, chunk_size)


# ----------------------------------------------------------------------------------------
# torch reference: column chunks, recomputed in backward
# ----------------------------------------------------------------------------------------


def _logits_chunk(
    a_scaled: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, acc: torch.dtype
) -> torch.Tensor:
    # scale is folded into the rows and the bias into the matmul: no extra pass.
    return torch.addmm(bias.reshape(1, 1), a_scaled, b.to(acc).T)


def _torch_lse_forward(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    chunk: int,
    with_cols: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    acc = _acc_dtype(a.dtype)
    n, m = a.shape[0], b.shape[0]
    a_scaled = a.to(acc) * scale.to(acc)
    bias_ = bias.to(acc)
    row = torch.full((n,), float("-inf"), dtype=acc, device=a.device)
    col = torch.empty((m if with_cols else 0,), dtype=acc, device=a.device)
    for j in _chunks(m, chunk):
        s = _logits_chunk(a_scaled, b[j : j + chunk], bias_, acc)
        row = torch.logaddexp(row, torch.logsumexp(s, dim=1))
        if with_cols:
            col[j : j + chunk] = torch.logsumexp(s, dim=0)
    return row, col


def _torch_lse_backward(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    lse_row: torch.Tensor,
    lse_col: torch.Tensor,
    row_weight: float,
    col_weight: float,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = lse_row.dtype
    a_ = a.to(acc)
    sc, bi = scale.to(acc), bias.to(acc)
    a_scaled = a_ * sc
    grad_a = torch.zeros_like(a_)
    grad_b = torch.empty((b.shape[0], b.shape[1]), dtype=acc, device=b.device)
    # dS_ij = w_r softmax_row(S)_ij + w_c softmax_col(S)_ij; the weights are folded into
    # the shifts (w exp(x) = exp(x + log w)) so each direction costs a subtract and an
    # exp, and at most three chunk-sized matrices are alive at once.
    row_shift = (lse_row - math.log(row_weight))[:, None] if row_weight else None
    col_shift = (lse_col - math.log(col_weight)) if col_weight else None
    for j in _chunks(b.shape[0], chunk):
        b_ = b[j : j + chunk].to(acc)
        s = _logits_chunk(a_scaled, b_, bi, acc)
        ds = torch.zeros_like(s) if row_shift is None else torch.sub(s, row_shift).exp_()
        if col_shift is not None:
            ds.add_(torch.sub(s, col_shift[None, j : j + chunk]).exp_())
        grad_a.addmm_(ds, b_)
        torch.mm(ds.T, a_, out=grad_b[j : j + chunk])
    # sum_ij dS_ij <a_i, b_j> = sum_i <a_i, (dS b)_i>: O(N D), no extra pass over dS.
    dot_sum = torch.dot(a_.reshape(-1), grad_a.reshape(-1))
    return grad_a, grad_b, dot_sum


class _TiledLSE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        row_weight: float,
        col_weight: float,
        chunk: int,
        use_triton: bool,
    ) -> torch.Tensor:
        with no_autocast(a.device):
            return _TiledLSE._forward(
                ctx, a, b, scale, bias, row_weight, col_weight, chunk, use_triton
            )

    @staticmethod
    def _forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        row_weight: float,
        col_weight: float,
        chunk: int,
        use_triton: bool,
    ) -> torch.Tensor:
        if use_triton:
            lse_row, lse_col = lse_forward_triton(a, b, scale, bias, col_weight != 0.0)
        else:
            lse_row, lse_col = _torch_lse_forward(a, b, scale, bias, chunk, col_weight != 0.0)
        ctx.save_for_backward(a, b, scale, bias, lse_row, lse_col)
        ctx.weights = (row_weight, col_weight)
        ctx.chunk = chunk
        ctx.use_triton = use_triton
        total = row_weight * lse_row.sum()
        if col_weight != 0.0:
            total = total + col_weight * lse_col.sum()
        return total.to(a.dtype if a.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _first_order_only("tiled_logsumexp")
        with no_autocast(grad_out.device):
            return _TiledLSE._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b, scale, bias, lse_row, lse_col = ctx.saved_tensors
        row_w, col_w = ctx.weights
        if ctx.use_triton:
            grad_a, grad_b, dot_sum = lse_backward_triton(
                a, b, scale, bias, lse_row, lse_col, row_w, col_w
            )
        else:
            grad_a, grad_b, dot_sum = _torch_lse_backward(
                a, b, scale, bias, lse_row, lse_col, row_w, col_w, ctx.chunk
            )
        g = grad_out.to(lse_row.dtype)
        sc = scale.to(lse_row.dtype)
        grad_a = (grad_a * (g * sc)).to(a.dtype)
        grad_b = (grad_b * (g * sc)).to(b.dtype)
        grad_scale = (g * dot_sum).reshape(scale.shape).to(scale.dtype)
        # Every softmax row (column) sums to one.
        n, m = a.shape[0], b.shape[0]
        grad_bias = (g * (row_w * n + col_w * m)).reshape(bias.shape).to(bias.dtype)
        return grad_a, grad_b, grad_scale, grad_bias, None, None, None, None


def _resolve(backend: str, a: torch.Tensor, b: torch.Tensor, op: str) -> bool:
    which = resolve_backend(backend, a, b, op=op)
    if which == "triton" and a.dtype == torch.float64:
        if backend == "triton":
            raise TypeError(f"backend='triton' for {op} supports fp32/fp16/bf16, got float64")
        return False
    return which == "triton"


def _as_scalar(
    name: str, value: torch.Tensor | float | None, like: torch.Tensor, default: float
) -> torch.Tensor:
    if value is None:
        return torch.full((), default, dtype=like.dtype, device=like.device)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        return value.reshape(())
    return torch.full((), float(value), dtype=_acc_dtype(like.dtype), device=like.device)


def tiled_logsumexp(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    row_weight: float = 1.0,
    col_weight: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
    backend: str = "auto",
) -> torch.Tensor:
    """Weighted sum of the row and column log-sum-exps of ``scale * a @ b.T + bias``.

    The logits matrix is never formed: the torch path walks over column chunks and
    recomputes them in backward; the Triton path keeps tiles in SRAM.

    Args:
        a: (N, D) floating tensor (rows of the logits).
        b: (M, D) tensor of the same dtype (columns of the logits).
        logit_scale: scalar multiplier (already exponentiated), tensor or float.
        logit_bias: optional scalar added to every logit.
        row_weight: weight of ``sum_i lse_row_i``.
        col_weight: weight of ``sum_j lse_col_j``; ``0`` skips the column pass.
        chunk_size: column chunk of the torch path (its extra memory is ``N * chunk_size``).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`vlp.kernels`).

    Returns:
        Scalar tensor (float32, or float64 for float64 inputs), differentiable with
        respect to ``a``, ``b``, ``logit_scale`` and ``logit_bias``.

    Reference: Inf-CL, Cheng et al. 2024 (tile-wise log-sum-exp, Eq. 4-5).
    """
    scale = _as_scalar("logit_scale", logit_scale, a, 1.0)
    bias = _as_scalar("logit_bias", logit_bias, a, 0.0)
    _validate(a, b, scale, bias, chunk_size)
    use_triton = _resolve(backend, a, b, "tiled_logsumexp")
    if use_triton:  # the registered op vlp::lse (vlp.kernels._ops)
        total: torch.Tensor = torch.ops.vlp.lse(
            a, b, scale, bias, float(row_weight), float(col_weight)
        )[0]
        return total
    out: torch.Tensor = _TiledLSE.apply(
        a, b, scale, bias, float(row_weight), float(col_weight), chunk_size, use_triton
    )
    return out


# ----------------------------------------------------------------------------------------
# SigLIP: the gradient is known in the forward pass
# ----------------------------------------------------------------------------------------


def _torch_sigmoid_forward(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    row_ids: torch.Tensor,
    col_ids: torch.Tensor,
    weight: float,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = _acc_dtype(a.dtype)
    a_ = a.to(acc)
    bi = bias.to(acc)
    a_scaled = a_ * scale.to(acc)
    loss = torch.zeros((), dtype=acc, device=a.device)
    grad_a = torch.zeros_like(a_)
    grad_b = torch.empty(b.shape, dtype=acc, device=b.device)
    g_sum = torch.zeros((), dtype=acc, device=a.device)
    for j in _chunks(b.shape[0], chunk):
        b_ = b[j : j + chunk].to(acc)
        s = _logits_chunk(a_scaled, b_, bi, acc)
        pos = (row_ids[:, None] == col_ids[None, j : j + chunk]).to(acc)
        # -log sigmoid(z s) = softplus(s) - [z = +1] s, and its derivative in s is
        # sigmoid(s) - [z = +1]: the gradient comes with the forward pass.
        # softplus(s) as -logsigmoid(-s): exact (softplus drops log1p(exp(-s)) above 20)
        softplus = torch.nn.functional.logsigmoid(s.neg()).sum().neg()
        loss += softplus - torch.dot(s.reshape(-1), pos.reshape(-1))
        g = torch.sigmoid(s).sub_(pos)
        del s, pos
        grad_a.addmm_(g, b_)
        torch.mm(g.T, a_, out=grad_b[j : j + chunk])
        g_sum += g.sum()
    dot_sum = torch.dot(a_.reshape(-1), grad_a.reshape(-1))
    w = weight
    return loss * w, grad_a * w, grad_b * w, dot_sum * w, g_sum * w


class _TiledSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        row_ids: torch.Tensor,
        col_ids: torch.Tensor,
        weight: float,
        chunk: int,
        use_triton: bool,
    ) -> torch.Tensor:
        with no_autocast(a.device):
            return _TiledSigmoid._forward(
                ctx, a, b, scale, bias, row_ids, col_ids, weight, chunk, use_triton
            )

    @staticmethod
    def _forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        row_ids: torch.Tensor,
        col_ids: torch.Tensor,
        weight: float,
        chunk: int,
        use_triton: bool,
    ) -> torch.Tensor:
        if use_triton:
            with_grad = any(ctx.needs_input_grad[:4])
            loss, grad_a, grad_b, dot_sum, g_sum = sigmoid_forward_triton(
                a, b, scale, bias, row_ids, col_ids, with_grad
            )
            loss, grad_a, grad_b = loss * weight, grad_a * weight, grad_b * weight
            dot_sum, g_sum = dot_sum * weight, g_sum * weight
        else:
            loss, grad_a, grad_b, dot_sum, g_sum = _torch_sigmoid_forward(
                a, b, scale, bias, row_ids, col_ids, weight, chunk
            )
        ctx.save_for_backward(grad_a, grad_b, dot_sum, g_sum, scale)
        ctx.dtypes = (a.dtype, b.dtype, scale.dtype, bias.dtype)
        ctx.shapes = (scale.shape, bias.shape)
        return loss.to(a.dtype if a.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _first_order_only("tiled_sigmoid_loss")
        grad_a, grad_b, dot_sum, g_sum, scale = ctx.saved_tensors
        a_dt, b_dt, s_dt, bias_dt = ctx.dtypes
        s_shape, b_shape = ctx.shapes
        g = grad_out.to(grad_a.dtype)
        sc = scale.to(grad_a.dtype)
        return (
            (grad_a * (g * sc)).to(a_dt),
            (grad_b * (g * sc)).to(b_dt),
            (g * dot_sum).reshape(s_shape).to(s_dt),
            (g * g_sum).reshape(b_shape).to(bias_dt),
            None,
            None,
            None,
            None,
            None,
        )


def tiled_sigmoid_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    row_ids: torch.Tensor | None = None,
    col_ids: torch.Tensor | None = None,
    weight: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    backend: str = "auto",
) -> torch.Tensor:
    """Sigmoid (SigLIP) loss summed over all pairs without forming the logits matrix.

    Computes ``-weight * sum_ij log sigmoid(z_ij * (scale * a_i . b_j + bias))`` with
    ``z_ij = 1`` where ``row_ids[i] == col_ids[j]`` and ``-1`` elsewhere. The gradient
    is known during the forward pass, so forward computes it and backward only scales it
    (no recompute); memory stays ``O((N + M) D)`` plus one chunk.

    Args:
        a: (N, D) floating tensor.
        b: (M, D) tensor of the same dtype.
        logit_scale: scalar multiplier (already exponentiated).
        logit_bias: scalar bias.
        row_ids: (N,) integer ids of the rows; default ``arange(N)``.
        col_ids: (M,) integer ids of the columns; default ``arange(M)``.
        weight: factor on the sum; default ``1 / N`` (open_clip's ``SigLipLoss``).
        chunk_size: column chunk of the torch path.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        Scalar loss tensor (float32, or float64 for float64 inputs).

    Reference: SigLIP, Zhai et al. 2023, Eq. 1.
    """
    scale = _as_scalar("logit_scale", logit_scale, a, 1.0)
    bias = _as_scalar("logit_bias", logit_bias, a, 0.0)
    _validate(a, b, scale, bias, chunk_size)
    n, m = a.shape[0], b.shape[0]
    rid = torch.arange(n, device=a.device) if row_ids is None else row_ids
    cid = torch.arange(m, device=a.device) if col_ids is None else col_ids
    _checks.check_shape("row_ids", rid, (n,))
    _checks.check_shape("col_ids", cid, (m,))
    if rid.is_floating_point() or cid.is_floating_point():
        raise TypeError("row_ids and col_ids must be integer tensors")
    for name, t in (("row_ids", rid), ("col_ids", cid)):
        if t.device != a.device:
            raise ValueError(f"{name} must be on the features' device {a.device}, got {t.device}")
    use_triton = _resolve(backend, a, b, "tiled_sigmoid_loss")
    w = 1.0 / n if weight is None else float(weight)
    if use_triton:  # the registered op vlp::sigmoid_loss (vlp.kernels._ops)
        with_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, scale, bias))
        loss: torch.Tensor = torch.ops.vlp.sigmoid_loss(a, b, scale, bias, rid, cid, w, with_grad)[
            0
        ]
        return loss
    out: torch.Tensor = _TiledSigmoid.apply(a, b, scale, bias, rid, cid, w, chunk_size, use_triton)
    return out


# ----------------------------------------------------------------------------------------
# Triton launchers. Each is callable on its own (the autograd.Functions above only wrap
# them), takes and returns tensors only, and launches under a device guard.
# ----------------------------------------------------------------------------------------


def _cdiv(x: int, y: int) -> int:
    return -(-x // y)


class LaunchConfig(NamedTuple):
    """Tiles and grid of one contrastive kernel launch (also read by the compile report)."""

    bm: int  # rows per program
    bn: int  # columns per tile
    bd: int  # feature block (a tail of 16-wide blocks covers D % bd)
    num_warps: int
    num_stages: int
    row_blocks: int
    splits: int  # column splits: grid = (row_blocks, splits)
    cols_per_split: int

    @property
    def grid(self) -> tuple[int, int]:
        return (self.row_blocks, self.splits)


#: GPU tiles (BM, BN, BD, warps, stages) per kernel and operand width. Forward tiles are
#: large (one product per tile); backward/sigmoid tiles hold the logits tile and two
#: gradient blocks at once. Checked for sm_80/sm_90 shared memory and spills by
#: ``python -m benchmarks.compile_report``.
_TILES: dict[tuple[str, int], tuple[int, int, int, int, int]] = {
    ("lse_fwd", 2): (128, 64, 64, 8, 3),
    ("lse_fwd", 4): (64, 64, 32, 4, 3),
    ("lse_bwd", 2): (64, 64, 32, 8, 1),
    ("lse_bwd", 4): (64, 64, 32, 8, 2),
    ("sigmoid_fwd", 2): (64, 64, 32, 8, 1),
    ("sigmoid_fwd", 4): (64, 64, 32, 8, 2),
}

#: Programs per SM the column split aims for; the interpreter pretends to have 4 SMs.
_PROGRAMS_PER_SM = 2
_INTERPRETER_SMS = 4


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a fixed 4 for the interpreter on CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    return _INTERPRETER_SMS


def launch_config(
    kernel: str, n: int, m: int, d: int, dtype: torch.dtype, sms: int
) -> LaunchConfig:
    """The tiles and grid the launchers use for ``kernel`` on an (N, D) x (M, D) problem.

    The grid covers row blocks and column splits, so a small local batch against a large
    gathered one still gives about ``2 * sms`` programs (partial results are merged).
    """
    width = 4 if dtype == torch.float32 else 2
    bm, bn, bd, warps, stages = _TILES[(kernel, width)]
    bm = min(bm, max(16, next_pow2(n)))
    bn = min(bn, max(16, next_pow2(m)))
    bd = min(bd, max(16, next_pow2(d)))
    row_blocks, col_blocks = _cdiv(n, bm), _cdiv(m, bn)
    splits = min(col_blocks, max(1, _cdiv(_PROGRAMS_PER_SM * sms, row_blocks)))
    per_split = _cdiv(col_blocks, splits)
    splits = _cdiv(col_blocks, per_split)
    return LaunchConfig(bm, bn, bd, warps, stages, row_blocks, splits, per_split * bn)


def _kernels() -> Any:
    from vlp.kernels import _contrastive_triton

    return _contrastive_triton


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _scalar32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(1).to(torch.float32)


def _launch_kwargs(cfg: LaunchConfig, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "BM": cfg.bm, "BN": cfg.bn, "BD": cfg.bd, "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages, **kernel_flags(dtype),
    }  # fmt: skip


def lse_forward_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    with_cols: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (and column) log-sum-exps of ``scale * a @ b.T + bias`` in one pass.

    Args:
        a: (N, D) fp32/fp16/bf16 features.
        b: (M, D) features, same dtype and device.
        scale: scalar tensor on the same device.
        bias: scalar tensor on the same device.
        with_cols: also return the column log-sum-exps (else an empty tensor).

    Returns:
        ``(lse_row (N,), lse_col (M,) or (0,))`` in float32.
    """
    a, b = _rows(a), _rows(b)
    n, d = a.shape
    m = b.shape[0]
    cfg = launch_config("lse_fwd", n, m, d, a.dtype, sm_count(a.device))
    row_part = torch.empty((cfg.splits, n), dtype=torch.float32, device=a.device)
    col_part = torch.empty(
        (cfg.row_blocks, m) if with_cols else (1, 1), dtype=torch.float32, device=a.device
    )
    with device_guard(a):
        _kernels().lse_fwd[cfg.grid](
            a, b, row_part, col_part, _scalar32(scale), _scalar32(bias),
            n, m, d, a.stride(0), b.stride(0), cfg.cols_per_split,
            HAS_COL=with_cols, **_launch_kwargs(cfg, a.dtype),
        )  # fmt: skip
    lse_row = torch.logsumexp(row_part, dim=0)
    lse_col = torch.logsumexp(col_part, dim=0) if with_cols else row_part.new_empty(0)
    return lse_row, lse_col


def lse_backward_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    lse_row: torch.Tensor,
    lse_col: torch.Tensor,
    row_weight: float,
    col_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient products of ``row_weight * sum lse_row + col_weight * sum lse_col``.

    With ``dS = row_weight * softmax_rows(S) + col_weight * softmax_cols(S)`` (recomputed
    once per tile), returns ``(dS @ b (N, D), dS.T @ a (M, D), sum_ij dS_ij (a_i . b_j))``
    in float32; the caller multiplies by ``grad_out * scale``.
    """
    a, b = _rows(a), _rows(b)
    n, d = a.shape
    m = b.shape[0]
    cfg = launch_config("lse_bwd", n, m, d, a.dtype, sm_count(a.device))
    grad_a = torch.zeros((n, d), dtype=torch.float32, device=a.device)
    grad_b = torch.zeros((m, d), dtype=torch.float32, device=a.device)
    dot = torch.empty((cfg.splits, n), dtype=torch.float32, device=a.device)
    has_row, has_col = row_weight != 0.0, col_weight != 0.0
    dummy = torch.zeros(1, dtype=torch.float32, device=a.device)
    with device_guard(a):
        _kernels().lse_bwd[cfg.grid](
            a, b, lse_row if has_row else dummy, lse_col if has_col else dummy,
            grad_a, grad_b, dot, _scalar32(scale), _scalar32(bias),
            float(row_weight), float(col_weight), n, m, d,
            a.stride(0), b.stride(0), grad_a.stride(0), grad_b.stride(0), cfg.cols_per_split,
            HAS_ROW=has_row, HAS_COL=has_col, **_launch_kwargs(cfg, a.dtype),
        )  # fmt: skip
    return grad_a, grad_b, dot.sum()


def sigmoid_forward_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    row_ids: torch.Tensor,
    col_ids: torch.Tensor,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SigLIP loss ``-sum_ij log sigmoid(z_ij S_ij)`` and its gradient products, one pass.

    Returns ``(loss, dS @ b (N, D), dS.T @ a (M, D), sum_ij dS_ij (a_i . b_j),
    sum_ij dS_ij)`` in float32, ``dS = dloss/dS``; with ``with_grad=False`` only the loss
    is computed (one product per tile instead of three) and the rest are empty.
    """
    a, b = _rows(a), _rows(b)
    n, d = a.shape
    m = b.shape[0]
    cfg = launch_config("sigmoid_fwd", n, m, d, a.dtype, sm_count(a.device))
    shape_a, shape_b = ((n, d), (m, d)) if with_grad else ((0, d), (0, d))
    grad_a = torch.zeros(shape_a, dtype=torch.float32, device=a.device)
    grad_b = torch.zeros(shape_b, dtype=torch.float32, device=a.device)
    parts = torch.empty(
        (3 if with_grad else 1, cfg.splits, n), dtype=torch.float32, device=a.device
    )
    with device_guard(a):
        _kernels().sigmoid_fwd[cfg.grid](
            a, b, row_ids.contiguous(), col_ids.contiguous(), grad_a, grad_b, parts,
            _scalar32(scale), _scalar32(bias), n, m, d, a.stride(0), b.stride(0),
            max(1, grad_a.stride(0)), max(1, grad_b.stride(0)), cfg.cols_per_split,
            WITH_GRAD=with_grad, **_launch_kwargs(cfg, a.dtype),
        )  # fmt: skip
    sums = parts.sum(dim=(1, 2))
    empty = sums.new_zeros(())
    if not with_grad:
        return sums[0], grad_a, grad_b, empty, empty
    return sums[0], grad_a, grad_b, sums[1], sums[2]
