"""Tiled contrastive primitives: torch chunked path vs dense float64, Triton vs torch."""

import pytest
import torch
import torch.nn.functional as F

from vlp.kernels.contrastive import tiled_logsumexp, tiled_sigmoid_loss
from vlp.testing import assert_close, triton_runnable

needs_triton = pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")


def dense_lse(a, b, scale, bias, wr, wc):
    s = scale * a @ b.T + bias
    return wr * torch.logsumexp(s, 1).sum() + wc * torch.logsumexp(s, 0).sum()


def dense_sigmoid(a, b, scale, bias, rid, cid, w):
    s = scale * a @ b.T + bias
    z = (rid[:, None] == cid[None, :]).to(s.dtype) * 2 - 1
    return -w * F.logsigmoid(z * s).sum()


def make(n, m, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    b = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    scale = torch.tensor(2.5, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-0.7, dtype=dtype, requires_grad=True)
    return a, b, scale, bias


def grads(out, inputs):
    return torch.autograd.grad(out, inputs)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (33, 17, 9), (64, 64, 16)])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (1.0, 0.0), (0.2, 1.3)])
@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_lse_torch_matches_dense_float64(shape, weights, chunk):
    a, b, s, bias = make(*shape, torch.float64)
    ref = dense_lse(a, b, s, bias, *weights)
    out = tiled_logsumexp(
        a, b, s, bias, row_weight=weights[0], col_weight=weights[1], chunk_size=chunk
    )
    assert_close(out, ref)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, [a, b, s, bias])):
        assert_close(g, gr)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_sigmoid_torch_matches_dense_float64(chunk):
    a, b, s, bias = make(13, 11, 6, torch.float64)
    rid = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 3])
    cid = torch.arange(11)
    ref = dense_sigmoid(a, b, s, bias, rid, cid, 1 / 13)
    out = tiled_sigmoid_loss(a, b, s, bias, row_ids=rid, col_ids=cid, chunk_size=chunk)
    assert_close(out, ref)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, [a, b, s, bias])):
        assert_close(g, gr)


def test_gradcheck_float64():
    a, b, s, bias = make(6, 5, 4, torch.float64)
    torch.autograd.gradcheck(
        lambda *x: tiled_logsumexp(*x, row_weight=0.4, col_weight=0.9, chunk_size=2),
        (a, b, s, bias),
    )
    # Backward of the sigmoid op replays gradients computed in forward, so its
    # gradient is exact only to first order: gradcheck checks that too.
    torch.autograd.gradcheck(lambda *x: tiled_sigmoid_loss(*x, chunk_size=2), (a, b, s, bias))


def test_float_scale_and_default_bias():
    a, b, _, _ = make(4, 6, 3, torch.float64)
    out = tiled_logsumexp(a, b, 3.0, row_weight=1.0, col_weight=1.0)
    assert_close(out, dense_lse(a, b, 3.0, 0.0, 1.0, 1.0))


def test_bad_input():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same feature dim"):
        tiled_logsumexp(a, torch.randn(4, 5), 1.0)
    with pytest.raises(ValueError, match=r"a must have shape \(N, D\)"):
        tiled_logsumexp(torch.randn(4), a, 1.0)
    with pytest.raises(ValueError, match="b must not be empty"):
        tiled_logsumexp(a, torch.randn(0, 3), 1.0)
    with pytest.raises(TypeError, match="same dtype"):
        tiled_logsumexp(a, a.double(), 1.0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        tiled_logsumexp(a, a, 1.0, chunk_size=0)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        tiled_logsumexp(a, a, torch.ones(2))
    with pytest.raises(ValueError, match=r"row_ids must have shape \(4\)"):
        tiled_sigmoid_loss(a, a, 1.0, 0.0, row_ids=torch.arange(3))
    with pytest.raises(TypeError, match="integer"):
        tiled_sigmoid_loss(a, a, 1.0, 0.0, row_ids=torch.zeros(4))
    with pytest.raises(ValueError, match="backend must be one of"):
        tiled_logsumexp(a, a, 1.0, backend="cuda")


@needs_triton
@pytest.mark.parametrize("shape", [(5, 7, 3), (37, 29, 19), (70, 66, 40)])
def test_lse_triton_matches_torch_fp32(shape):
    a, b, s, bias = make(*shape, torch.float32, seed=1)
    kw = {"row_weight": 0.3, "col_weight": 0.7}
    ref = tiled_logsumexp(a, b, s, bias, backend="torch", **kw)
    out = tiled_logsumexp(a, b, s, bias, backend="triton", **kw)
    assert_close(out, ref, rtol=1e-5)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, [a, b, s, bias])):
        assert_close(g, gr, rtol=1e-4, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lse_triton_low_precision_vs_fp32_reference(dtype):
    a, b, s, bias = make(20, 24, 16, dtype, seed=2)
    ref_in = [t.detach().double().requires_grad_() for t in (a, b, s, bias)]
    ref = tiled_logsumexp(*ref_in, row_weight=0.5, col_weight=0.5)
    out = tiled_logsumexp(a, b, s, bias, row_weight=0.5, col_weight=0.5, backend="triton")
    assert out.dtype == torch.float32
    assert_close(out, ref, dtype=dtype)
    for g, gr in zip(grads(out, [a, b]), grads(ref, ref_in[:2])):
        assert_close(g, gr.to(dtype), dtype=dtype, atol=2e-2)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sigmoid_triton_matches_reference(dtype):
    a, b, s, bias = make(23, 19, 20, dtype, seed=3)
    rid = torch.randint(0, 5, (23,), generator=torch.Generator().manual_seed(0))
    cid = torch.randint(0, 5, (19,), generator=torch.Generator().manual_seed(1))
    ref_in = [t.detach().double().requires_grad_() for t in (a, b, s, bias)]
    ref = tiled_sigmoid_loss(*ref_in, row_ids=rid, col_ids=cid)
    out = tiled_sigmoid_loss(a, b, s, bias, row_ids=rid, col_ids=cid, backend="triton")
    assert_close(out, ref, dtype=dtype, rtol=1e-5 if dtype == torch.float32 else None)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, ref_in)):
        assert_close(g, gr.to(g.dtype), dtype=dtype, atol=1e-4 if dtype == torch.float32 else 2e-2)


def test_triton_rejects_float64_explicitly():
    if not triton_runnable():
        pytest.skip("triton cannot run here")
    a = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        tiled_logsumexp(a, a, 1.0, backend="triton")


def test_double_backward_is_refused():
    a, b, s, bias = make(4, 3, 2, torch.float64)
    for out in (tiled_logsumexp(a, b, s, bias), tiled_sigmoid_loss(a, b, s, bias)):
        with pytest.raises(RuntimeError, match="first-order gradients only"):
            torch.autograd.grad(out, a, create_graph=True)
