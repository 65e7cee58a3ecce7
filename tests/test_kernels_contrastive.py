"""Tiled contrastive primitives: torch chunked path vs dense float64, Triton vs torch."""

import pytest
import torch
import torch.nn.functional as F

from vlp.kernels.contrastive import tiled_logsumexp, tiled_sigmoid_loss
from vlp.testing import assert_close, assert_kernel_close, triton_runnable

needs_triton = pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")


def dense_lse(a, b, scale, bias, wr, wc):
    s = scale * a @ b.T + bias
    return wr * torch.logsumexp(s, 1).sum() + wc * torch.logsumexp(s, 0).sum()


def dense_sigmoid(a, b, scale, bias, rid, cid, w):
    s = scale * a @ b.T + bias
    z = (rid[:, None] == cid[None, :]).to(s.dtype) * 2 - 1
    return -w * F.logsigmoid(z * s).sum()


def make(n, m, d, dtype, seed=0, device="cpu"):
    """Inputs drawn on the CPU (same numbers in both test modes), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    scale = torch.tensor(2.5, dtype=dtype)
    bias = torch.tensor(-0.7, dtype=dtype)
    return tuple(t.to(device).requires_grad_() for t in (a, b, scale, bias))


def f64(*tensors):
    """float64 CPU copies of the (rounded) kernel inputs, for the reference."""
    return [t.detach().cpu().double().requires_grad_() for t in tensors]


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
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
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
def test_lse_triton_matches_torch_fp32(shape, device):
    a, b, s, bias = make(*shape, torch.float32, seed=1, device=device)
    kw = {"row_weight": 0.3, "col_weight": 0.7}
    ref_in = f64(a, b, s, bias)
    ref = tiled_logsumexp(*ref_in, backend="torch", **kw)
    out = tiled_logsumexp(a, b, s, bias, backend="triton", **kw)
    assert_kernel_close(out, ref, torch.float32, scale=10)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, ref_in)):
        assert_kernel_close(g, gr, torch.float32, scale=10)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lse_triton_low_precision_vs_fp32_reference(dtype, device):
    a, b, s, bias = make(20, 24, 16, dtype, seed=2, device=device)
    ref_in = f64(a, b, s, bias)
    ref = tiled_logsumexp(*ref_in, row_weight=0.5, col_weight=0.5)
    out = tiled_logsumexp(a, b, s, bias, row_weight=0.5, col_weight=0.5, backend="triton")
    assert out.dtype == torch.float32
    assert_kernel_close(out, ref, dtype, scale=10)
    for g, gr in zip(grads(out, [a, b]), grads(ref, ref_in[:2])):
        assert g.dtype == dtype
        assert_kernel_close(g, gr, dtype)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sigmoid_triton_matches_reference(dtype, device):
    a, b, s, bias = make(23, 19, 20, dtype, seed=3, device=device)
    rid = torch.randint(0, 5, (23,), generator=torch.Generator().manual_seed(0))
    cid = torch.randint(0, 5, (19,), generator=torch.Generator().manual_seed(1))
    ref_in = f64(a, b, s, bias)
    ref = tiled_sigmoid_loss(*ref_in, row_ids=rid, col_ids=cid)
    out = tiled_sigmoid_loss(
        a, b, s, bias, row_ids=rid.to(device), col_ids=cid.to(device), backend="triton"
    )
    assert_kernel_close(out, ref, dtype, scale=10)
    for g, gr in zip(grads(out, [a, b, s, bias]), grads(ref, ref_in)):
        assert_kernel_close(g, gr, dtype, scale=10)


@needs_triton
@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_fp32_follows_float32_matmul_precision(precision, device):
    """fp32 inputs take the dot mode of ``torch.get_float32_matmul_precision()``.

    Under "medium" the kernel multiplies bf16-rounded operands (round to nearest even,
    also under the interpreter), so its log-sum-exps equal the float64 reference on
    bf16-rounded inputs far more closely than the reference on the fp32 inputs.
    """
    a, b, s, bias = make(32, 48, 64, torch.float32, seed=4)
    # unit rows, as CLIP features (logits of order one: bf16 rounding moves them ~1e-2)
    a, b = (F.normalize(t.detach(), dim=1).to(device).requires_grad_() for t in (a, b))
    s, bias = (t.detach().to(device).requires_grad_() for t in (s, bias))
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        out = tiled_logsumexp(a, b, s, bias, row_weight=0.5, col_weight=0.5, backend="triton")
        ga, gb = grads(out, [a, b])
        exact = tiled_logsumexp(*f64(a, b, s, bias), row_weight=0.5, col_weight=0.5)
        assert_kernel_close(out, exact, torch.float32, scale=10)
        rounded_in = [t.detach().cpu().bfloat16().double() for t in (a, b)] + f64(s, bias)
        rounded = tiled_logsumexp(*rounded_in, row_weight=0.5, col_weight=0.5)
        err_exact, err_rounded = (float((out.detach().cpu() - r).abs()) for r in (exact, rounded))
        if precision == "medium":
            assert err_rounded < 1e-5 < 1e-4 < err_exact
        elif precision == "highest":
            assert err_exact < 1e-5 < 1e-4 < err_rounded
        a64, b64, s64, bias64 = f64(a, b, s, bias)
        want = grads(tiled_logsumexp(a64, b64, s64, bias64, row_weight=0.5, col_weight=0.5),
                     [a64, b64])  # fmt: skip
        for g, w in zip((ga, gb), want):
            assert_kernel_close(g, w, torch.float32)
    finally:
        torch.set_float32_matmul_precision(old)


@needs_triton
def test_round_bf16_matches_torch_round_to_nearest_even(device):
    from tests._round_probe import round_kernel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g) * torch.logspace(-20, 20, 1000)
    # exact ties (the 16 dropped bits are 0x8000) round to even; -0, inf, the largest floats
    ties = (torch.arange(-50, 50, dtype=torch.int32) * 65536 + 0x3F808000).view(torch.float32)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 3.3e38, -3.39e38])
    x = torch.cat([x, ties, special]).to(device)
    y = torch.empty_like(x)
    round_kernel[(1,)](x, y, x.numel(), BLOCK=2048)
    want = x.bfloat16().float()
    assert torch.equal(y.view(torch.int32), want.view(torch.int32))


def test_triton_rejects_float64_explicitly(device):
    if not triton_runnable():
        pytest.skip("triton cannot run here")
    a = torch.randn(3, 2, dtype=torch.float64, device=device)
    with pytest.raises(TypeError, match="float64"):
        tiled_logsumexp(a, a, 1.0, backend="triton")


def test_double_backward_is_refused():
    a, b, s, bias = make(4, 3, 2, torch.float64)
    for out in (tiled_logsumexp(a, b, s, bias), tiled_sigmoid_loss(a, b, s, bias)):
        with pytest.raises(RuntimeError, match="first-order gradients only"):
            torch.autograd.grad(out, a, create_graph=True)
