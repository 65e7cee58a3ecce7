"""Fused attention: Triton (interpreter on CPU) vs the torch reference, values and gradients."""

import pytest
import torch

from tests._device import DEVICE
from vlp.kernels.attention import attention, attention_reference
from vlp.testing import assert_close, assert_kernel_close, triton_runnable

needs_triton = pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")


def inputs(b, h, q, s, d, dtype, seed=0, views_share_kv=False):
    g = torch.Generator().manual_seed(seed)
    qq = torch.randn(b, h, q, d, generator=g, dtype=torch.float64)
    if views_share_kv:
        # heads split out of a (B, S, H * d) projection: a strided view, never copied
        kv = torch.randn(b, s, 2 * h * d, generator=g, dtype=torch.float64).to(dtype)
        k = kv[..., : h * d].view(b, s, h, d).transpose(1, 2)
        v = kv[..., h * d :].view(b, s, h, d).transpose(1, 2)
        return qq.to(dtype), k, v
    k = torch.randn(b, h, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, s, d, generator=g, dtype=torch.float64)
    return qq.to(dtype), k.to(dtype), v.to(dtype)


def test_reference_matches_softmax_definition_and_mha():
    q, k, v = inputs(2, 3, 5, 7, 4, torch.float64)
    out = attention_reference(q, k, v)
    manual = torch.einsum(
        "bhqs,bhsd->bhqd", torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1), v
    )
    assert_close(out, manual)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert_close(out, sdpa)


def test_reference_mask_equals_dropping_keys():
    q, k, v = inputs(1, 2, 3, 6, 4, torch.float64)
    mask = torch.tensor([[False, True, False, True, False, False]])
    keep = ~mask[0]
    assert_close(
        attention_reference(q, k, v, mask), attention_reference(q, k[:, :, keep], v[:, :, keep])
    )


def test_reference_gradcheck():
    q, k, v = (t.requires_grad_() for t in inputs(1, 2, 3, 5, 4, torch.float64))
    mask = torch.tensor([[False, False, True, False, False]])
    torch.autograd.gradcheck(lambda a, b, c: attention_reference(a, b, c, mask), (q, k, v))


def test_bad_input():
    q, k, v = inputs(2, 2, 3, 5, 4, torch.float32)
    with pytest.raises(ValueError, match=r"k must have shape \(2, 2, S, 4\)"):
        attention(q, k[:1], v[:1])
    with pytest.raises(TypeError, match="dtype of q"):
        attention(q, k.double(), v.double())
    with pytest.raises(TypeError, match="torch.bool"):
        attention(q, k, v, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, Q, d\)"):
        attention(q[0], k, v)


def _check(b, h, q, s, d, dtype, masked, shared):
    qq, k, v = inputs(b, h, q, s, d, dtype, seed=b * 7 + q, views_share_kv=shared)
    qq, k, v = (t.to(DEVICE).requires_grad_() for t in (qq, k, v))
    mask = None
    if masked:
        g = torch.Generator().manual_seed(1)
        mask = torch.rand(b, s, generator=g) < 0.3
        mask[:, 0] = False
    ref_in = [t.detach().cpu().double().requires_grad_() for t in (qq, k, v)]
    ref = attention_reference(*ref_in, mask)
    out = attention(qq, k, v, None if mask is None else mask.to(DEVICE), backend="triton")
    assert out.dtype == dtype
    assert_kernel_close(out, ref, dtype)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad(out, [qq, k, v], grad.to(dtype).to(DEVICE))
    want = torch.autograd.grad(ref, ref_in, grad.to(dtype).double())
    for name, g1, g2 in zip("qkv", got, want):
        assert g1.dtype == dtype
        assert_kernel_close(g1, g2, dtype, msg=f"grad {name}", scale=4)


@needs_triton
@pytest.mark.parametrize(
    "b,h,q,s,d,masked,shared",
    [
        (1, 1, 1, 5, 16, False, False),  # single query (COSMOS text pooling), tiny S
        (2, 2, 3, 37, 16, True, False),  # odd S, masked keys
        (2, 3, 17, 20, 8, False, True),  # Q > 16 (two query blocks), d < 16, shared K/V view
        (1, 2, 6, 77, 32, True, True),  # 77 text tokens with padding
    ],
)
def test_triton_matches_reference_fp32(b, h, q, s, d, masked, shared):
    _check(b, h, q, s, d, torch.float32, masked, shared)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision(dtype):
    _check(2, 2, 5, 33, 16, dtype, True, False)


def test_auto_on_cpu_uses_reference():
    q, k, v = inputs(1, 1, 2, 3, 4, torch.float64)
    assert_close(attention(q, k, v), attention_reference(q, k, v))


def _fully_masked_case(backend, dtype):
    device = DEVICE if backend == "triton" else torch.device("cpu")
    q, k, v = (t.to(device).requires_grad_() for t in inputs(3, 2, 4, 21, 16, dtype, seed=5))
    mask = torch.zeros(3, 21, dtype=torch.bool)
    mask[1] = True  # sample 1 attends to nothing
    mask[2, 5:] = True
    out = attention(q, k, v, mask.to(device), backend=backend)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    dq, dk, dv = torch.autograd.grad(out, [q, k, v], grad.to(device))
    inputs_cpu = tuple(t.detach().cpu().requires_grad_() for t in (q, k, v))
    return out, dq, dk, dv, (*inputs_cpu, mask, grad)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_fully_masked_sample_gives_zero_output_and_gradients(backend):
    dtype = torch.float64 if backend == "torch" else torch.float32
    out, dq, dk, dv, (q, k, v, mask, grad) = _fully_masked_case(backend, dtype)
    for t in (out, dq, dk, dv):
        t = t.cpu()
        assert bool(torch.isfinite(t).all())
        assert bool((t[1] == 0).all())
    # The other samples are unaffected: same as running them alone.
    keep = torch.tensor([0, 2])
    ref = attention_reference(q[keep], k[keep], v[keep], mask[keep])
    assert_kernel_close(out.cpu()[keep], ref, dtype)
    want = torch.autograd.grad(ref, [q, k, v], grad[keep])
    for got, w in zip((dq, dk, dv), want):
        assert_kernel_close(got.cpu()[keep], w[keep], dtype, scale=4)


def test_fully_masked_reference_gradcheck():
    q, k, v = (t.requires_grad_() for t in inputs(2, 1, 2, 4, 3, torch.float64))
    mask = torch.tensor([[True] * 4, [False, True, False, False]])
    torch.autograd.gradcheck(lambda a, b, c: attention_reference(a, b, c, mask), (q, k, v))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_gradients_in_input_dtype_and_layout(dtype):
    q, k, v = inputs(2, 2, 3, 19, 16, dtype, views_share_kv=True)
    q, k, v = (t.detach().requires_grad_() for t in (q, k.to(DEVICE), v.to(DEVICE)))
    q = q.to(DEVICE).detach().requires_grad_()
    out = attention(q, k, v, backend="triton")
    dq, dk, dv = torch.autograd.grad(out, [q, k, v], torch.ones_like(out))
    for g, t in ((dq, q), (dk, k), (dv, v)):
        assert g.dtype == dtype
        assert g.shape == t.shape
        # same memory order as the input (heads split out of a projection stay so)
        order = sorted(range(4), key=lambda i: -t.stride(i))
        assert sorted(range(4), key=lambda i: -g.stride(i)) == order
        assert g.is_contiguous() == t.is_contiguous()
