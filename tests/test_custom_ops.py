"""The Triton kernels as ``torch.library`` custom ops: ``opcheck`` on each, under the
interpreter on small shapes (schema, fake tensor, autograd registration, AOT dispatch)."""

from __future__ import annotations

import pytest
import torch

from vlp.kernels import _ops
from vlp.testing import triton_runnable

pytestmark = pytest.mark.skipif(not triton_runnable(), reason="needs Triton (interpreter)")


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _pair(dtype: torch.dtype, grad: bool) -> tuple[torch.Tensor, ...]:
    g = _g()
    a = torch.randn(20, 16, generator=g).to(dtype).requires_grad_(grad)
    b = torch.randn(24, 16, generator=g).to(dtype).requires_grad_(grad)
    scale = torch.tensor(3.0, requires_grad=grad)
    bias = torch.tensor(-1.0, requires_grad=grad)
    return a, b, scale, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("col_weight", [0.0, 0.5])
def test_opcheck_lse(dtype: torch.dtype, col_weight: float) -> None:
    torch.library.opcheck(torch.ops.vlp.lse, (*_pair(dtype, True), 0.25, col_weight))


def test_opcheck_lse_backward() -> None:
    a, b, scale, bias = _pair(torch.float32, False)
    _, lse_row, lse_col = torch.ops.vlp.lse(a, b, scale, bias, 1.0, 1.0)
    torch.library.opcheck(
        torch.ops.vlp.lse_backward, (a, b, scale, bias, lse_row, lse_col, 1.0, 1.0)
    )


@pytest.mark.parametrize("with_grad", [True, False])
def test_opcheck_sigmoid_loss(with_grad: bool) -> None:
    a, b, scale, bias = _pair(torch.float32, with_grad)
    rows, cols = torch.arange(20), torch.arange(24) % 20
    torch.library.opcheck(
        torch.ops.vlp.sigmoid_loss, (a, b, scale, bias, rows, cols, 0.05, with_grad)
    )


def _qkv(grad: bool) -> tuple[torch.Tensor, ...]:
    g = _g()
    q = torch.randn(2, 2, 3, 16, generator=g).requires_grad_(grad)
    k = torch.randn(2, 2, 5, 16, generator=g).requires_grad_(grad)
    v = torch.randn(2, 2, 5, 16, generator=g).requires_grad_(grad)
    return q, k, v


@pytest.mark.parametrize("masked", [False, True])
def test_opcheck_attention(masked: bool) -> None:
    mask = torch.tensor([[False, False, True, False, True], [False] * 5]) if masked else None
    torch.library.opcheck(torch.ops.vlp.attention, (*_qkv(True), mask))


def test_opcheck_attention_backward() -> None:
    q, k, v = _qkv(False)
    out, lse = torch.ops.vlp.attention(q, k, v, None)
    grad = torch.randn(out.shape, generator=_g())
    torch.library.opcheck(torch.ops.vlp.attention_backward, (grad, q, k, v, None, out, lse))


def test_opcheck_cluster_scores() -> None:
    images = torch.randn(2, 3, 16, 16, generator=_g())
    anchors = torch.tensor([[0, 5], [3, 15]])
    torch.library.opcheck(torch.ops.vlp.cluster_scores, (images, anchors, 4, 4, 4, 4, 1e-6))


def test_every_op_is_in_one_namespace() -> None:
    names = sorted(op._qualname for op in _ops.OPS)
    assert names == [
        "vlp::attention",
        "vlp::attention_backward",
        "vlp::cluster_scores",
        "vlp::lse",
        "vlp::lse_backward",
        "vlp::sigmoid_loss",
    ]


def test_second_order_through_a_kernel_is_an_error() -> None:
    a, b, scale, bias = _pair(torch.float32, True)
    total = torch.ops.vlp.lse(a, b, scale, bias, 1.0, 1.0)[0]
    (grad_a,) = torch.autograd.grad(total, a, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_a.sum().backward()
