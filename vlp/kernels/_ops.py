"""The Triton kernels as ``torch.library`` custom ops (namespace ``vlp``).

Each op wraps one launcher of :mod:`vlp.kernels.contrastive`, :mod:`vlp.kernels.attention`
or :mod:`vlp.kernels.cluster_scores` and has a fake (meta) implementation, so that
``torch.compile`` and ``torch.export`` trace through the fused paths as single opaque
nodes. The training ops carry their gradient formula (``register_autograd``), whose
backward is itself an op (``*_backward``); the backward ops are first order only (they
have no autograd of their own: a second derivative through them is an error, never a
silently wrong value).

Importing :mod:`vlp.kernels` registers them (this module imports the launchers; the
public functions call ``torch.ops.vlp.*``). ``torch.library.custom_op`` (torch >= 2.4)
registers them. ``torch.library.triton_op``
(which would let inductor see inside the kernels) is not used: the launchers choose
their tiles from the device at call time, which ``triton_op`` would have to re-trace.

Ops: ``vlp::lse``, ``vlp::lse_backward``, ``vlp::sigmoid_loss``, ``vlp::attention``,
``vlp::attention_backward``, ``vlp::cluster_scores``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vlp.kernels._dispatch import no_autocast
from vlp.kernels.attention import attention_backward_triton, attention_forward_triton
from vlp.kernels.cluster_scores import _cluster_scores_triton
from vlp.kernels.contrastive import (
    lse_backward_triton,
    lse_forward_triton,
    sigmoid_forward_triton,
)

__all__ = ["NAMESPACE", "OPS"]

NAMESPACE = "vlp"
F32 = torch.float32


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------------------
# Contrastive: tiled log-sum-exp (InfoNCE) and the sigmoid (SigLIP) loss
# ----------------------------------------------------------------------------------------


@torch.library.custom_op("vlp::lse", mutates_args=())
def lse(
    a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, row_weight: float, col_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(row_weight * sum lse_row + col_weight * sum lse_col, lse_row, lse_col)``, fp32.

    ``lse_col`` is empty when ``col_weight == 0``. Only the first output is
    differentiable; the other two are the statistics its backward replays.
    """
    with no_autocast(a.device):
        lse_row, lse_col = lse_forward_triton(a, b, scale, bias, col_weight != 0.0)
        total = row_weight * lse_row.sum()
        if col_weight != 0.0:
            total = total + col_weight * lse_col.sum()
    return total, lse_row, lse_col


@lse.register_fake
def _(a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, row_weight: float, col_weight: float):  # type: ignore[no-untyped-def]
    cols = b.shape[0] if col_weight != 0.0 else 0
    return (
        a.new_empty((), dtype=F32),
        a.new_empty((a.shape[0],), dtype=F32),
        a.new_empty((cols,), dtype=F32),
    )


@torch.library.custom_op("vlp::lse_backward", mutates_args=())
def lse_backward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Tensor,
    lse_row: Tensor,
    lse_col: Tensor,
    row_weight: float,
    col_weight: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dS @ b (N, D), dS.T @ a (M, D), sum dS * (a . b))`` in fp32 (see the launcher)."""
    with no_autocast(a.device):
        return lse_backward_triton(a, b, scale, bias, lse_row, lse_col, row_weight, col_weight)


@lse_backward.register_fake
def _(a, b, scale, bias, lse_row, lse_col, row_weight, col_weight):  # type: ignore[no-untyped-def]
    return (
        a.new_empty(a.shape, dtype=F32),
        b.new_empty(b.shape, dtype=F32),
        a.new_empty((), dtype=F32),
    )


def _lse_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    a, b, scale, bias, row_weight, col_weight = inputs
    _, lse_row, lse_col = output
    ctx.save_for_backward(a, b, scale, bias, lse_row, lse_col)
    ctx.weights = (row_weight, col_weight)


def _lse_grad(ctx: Any, grad_total: Tensor, _grad_row: Any, _grad_col: Any) -> tuple[Any, ...]:
    a, b, scale, bias, lse_row, lse_col = ctx.saved_tensors
    row_w, col_w = ctx.weights
    grad_a, grad_b, dot_sum = torch.ops.vlp.lse_backward(
        a, b, scale, bias, lse_row, lse_col, row_w, col_w
    )
    g = grad_total.to(F32)
    gs = g * scale.to(F32)
    n, m = a.shape[0], b.shape[0]
    return (
        (grad_a * gs).to(a.dtype),
        (grad_b * gs).to(b.dtype),
        (g * dot_sum).reshape(scale.shape).to(scale.dtype),
        # Every softmax row (column) sums to one.
        (g * (row_w * n + col_w * m)).reshape(bias.shape).to(bias.dtype),
        None,
        None,
    )


lse.register_autograd(_lse_grad, setup_context=_lse_setup)


@torch.library.custom_op("vlp::sigmoid_loss", mutates_args=())
def sigmoid_loss(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Tensor,
    row_ids: Tensor,
    col_ids: Tensor,
    weight: float,
    with_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(loss, dS @ b, dS.T @ a, sum dS * (a . b), sum dS)`` of the SigLIP sum, fp32.

    All five are multiplied by ``weight``; the gradient products are computed in the same
    pass (``with_grad``; else they are empty / zero). Only ``loss`` is differentiable.
    """
    with no_autocast(a.device):
        loss, grad_a, grad_b, dot_sum, g_sum = sigmoid_forward_triton(
            a, b, scale, bias, row_ids, col_ids, with_grad
        )
        return loss * weight, grad_a * weight, grad_b * weight, dot_sum * weight, g_sum * weight


@sigmoid_loss.register_fake
def _(a, b, scale, bias, row_ids, col_ids, weight, with_grad):  # type: ignore[no-untyped-def]
    rows_a, rows_b = (a.shape[0], b.shape[0]) if with_grad else (0, 0)
    return (
        a.new_empty((), dtype=F32),
        a.new_empty((rows_a, a.shape[1]), dtype=F32),
        a.new_empty((rows_b, b.shape[1]), dtype=F32),
        a.new_empty((), dtype=F32),
        a.new_empty((), dtype=F32),
    )


def _sigmoid_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    a, b, scale, bias, *_ = inputs
    _, grad_a, grad_b, dot_sum, g_sum = output
    ctx.save_for_backward(grad_a, grad_b, dot_sum, g_sum, scale)
    ctx.meta = (a.dtype, b.dtype, bias.dtype, bias.shape)


def _sigmoid_grad(ctx: Any, grad_loss: Tensor, *_unused: Any) -> tuple[Any, ...]:
    grad_a, grad_b, dot_sum, g_sum, scale = ctx.saved_tensors
    a_dt, b_dt, bias_dt, bias_shape = ctx.meta
    if grad_a.shape[0] == 0 and grad_b.shape[0] == 0:
        raise RuntimeError(
            "vlp::sigmoid_loss was called with with_grad=False, so it has no gradient"
        )
    g = grad_loss.to(F32)
    gs = g * scale.to(F32)
    return (
        (grad_a * gs).to(a_dt),
        (grad_b * gs).to(b_dt),
        (g * dot_sum).reshape(scale.shape).to(scale.dtype),
        (g * g_sum).reshape(bias_shape).to(bias_dt),
        None,
        None,
        None,
        None,
    )


sigmoid_loss.register_autograd(_sigmoid_grad, setup_context=_sigmoid_setup)


# ----------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------


@torch.library.custom_op("vlp::attention", mutates_args=())
def attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Fused attention: ``(out (B, H, Q, d) in q's dtype, lse (B * H, Q) fp32)``.

    Only ``out`` is differentiable; ``lse`` is the statistic its backward replays.
    """
    with no_autocast(q.device):
        return attention_forward_triton(q, k, v, key_padding_mask)


@attention.register_fake
def _(q, k, v, key_padding_mask):  # type: ignore[no-untyped-def]
    batch, heads, qlen, _ = q.shape
    out = torch.empty_like(_last_dim_contiguous(q))
    return out, q.new_empty((batch * heads, qlen), dtype=F32)


@torch.library.custom_op("vlp::attention_backward", mutates_args=())
def attention_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    out: Tensor,
    lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of the fused attention, in the inputs' dtypes."""
    with no_autocast(q.device):
        return attention_backward_triton(grad_out, q, k, v, key_padding_mask, out, lse)


@attention_backward.register_fake
def _(grad_out, q, k, v, key_padding_mask, out, lse):  # type: ignore[no-untyped-def]
    return tuple(torch.empty_like(_last_dim_contiguous(t)) for t in (q, k, v))


def _attention_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    q, k, v, key_padding_mask = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, key_padding_mask, out, lse)


def _attention_grad(ctx: Any, grad_out: Tensor, _grad_lse: Any) -> tuple[Any, ...]:
    q, k, v, key_padding_mask, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.vlp.attention_backward(grad_out, q, k, v, key_padding_mask, out, lse)
    return dq, dk, dv, None


attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# ----------------------------------------------------------------------------------------
# Cluster-masking scores (not differentiable: masking decisions carry no gradient)
# ----------------------------------------------------------------------------------------


@torch.library.custom_op("vlp::cluster_scores", mutates_args=())
def cluster_scores(
    images: Tensor, anchors: Tensor, ph: int, pw: int, gh: int, gw: int, eps: float
) -> Tensor:
    """``(B, gh * gw)`` fp32 max correlation of each patch with its image's anchors."""
    return _cluster_scores_triton(images, anchors, (ph, pw), (gh, gw), eps)


@cluster_scores.register_fake
def _(images, anchors, ph, pw, gh, gw, eps):  # type: ignore[no-untyped-def]
    return images.new_empty((images.shape[0], gh * gw), dtype=F32)


def _cluster_scores_grad(ctx: Any, grad: Tensor) -> tuple[Any, ...]:
    return (None,) * 7


cluster_scores.register_autograd(_cluster_scores_grad)

#: Every op of the namespace, for tests and docs.
OPS = (lse, lse_backward, sigmoid_loss, attention, attention_backward, cluster_scores)
