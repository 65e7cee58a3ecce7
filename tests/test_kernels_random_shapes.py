"""Triton kernels vs their torch references on shapes drawn by hypothesis, not picked by hand.

Every Triton path runs under the interpreter here (``TRITON_INTERPRET=1``), so the shapes
stay small and the example counts low; on a GPU (``VLP_TEST_DEVICE=cuda``) the same tests
build their inputs on CUDA and exercise the compiled kernels. Values and gradients are
compared against a float64 CPU torch reference with the kernel tolerance table.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._device import DEVICE
from vlp.kernels.attention import attention, attention_reference
from vlp.kernels.contrastive import tiled_logsumexp, tiled_sigmoid_loss
from vlp.losses import clip_loss, siglip_loss
from vlp.testing import assert_kernel_close, triton_runnable

pytestmark = pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")

FEW = settings(max_examples=10, deadline=None, derandomize=True)


def _f64(*tensors):
    return [t.detach().cpu().double().requires_grad_() for t in tensors]


def _on(*tensors):
    """CPU-drawn inputs moved to the test device as leaves that require grad."""
    return [t.detach().to(DEVICE).requires_grad_() for t in tensors]


def _grads(out, inputs, seed=7):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, upstream.to(out.dtype).to(out.device))


def _close(got, want, msg="", scale=10.0):
    # fp32 under the current matmul precision; sums over up to 50 terms: atol x 10
    assert_kernel_close(got, want, torch.float32, scale=scale, msg=msg)


@FEW
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    q=st.integers(1, 20),
    s=st.integers(1, 40),
    d=st.sampled_from([8, 16, 24, 32]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_attention_random_shapes(b, h, q, s, d, masked, seed):
    g = torch.Generator().manual_seed(seed)
    qq, k, v = _on(*(torch.randn(b, h, n, d, generator=g) for n in (q, s, s)))
    mask = None
    if masked:
        mask = torch.rand(b, s, generator=g) < 0.4
        mask[torch.arange(b), torch.randint(0, s, (b,), generator=g)] = False  # one key kept
    ref_in = _f64(qq, k, v)
    ref = attention_reference(*ref_in, mask)
    out = attention(qq, k, v, None if mask is None else mask.to(DEVICE), backend="triton")
    _close(out, ref)
    for name, got, want in zip("qkv", _grads(out, [qq, k, v]), _grads(ref, ref_in)):
        _close(got, want, msg=f"grad {name}")


@FEW
@given(
    n=st.integers(1, 50),
    m=st.integers(1, 50),
    d=st.integers(1, 40),
    row_weight=st.floats(0.0, 2.0),
    col_weight=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**16),
)
def test_tiled_logsumexp_random_shapes(n, m, d, row_weight, col_weight, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = _on(torch.randn(n, d, generator=g), torch.randn(m, d, generator=g))
    scale, bias = _on(torch.tensor(3.0), torch.tensor(-0.5))
    kw = {"row_weight": row_weight, "col_weight": col_weight}
    ref_in = _f64(a, b, scale, bias)
    ref = tiled_logsumexp(*ref_in, backend="torch", **kw)
    out = tiled_logsumexp(a, b, scale, bias, backend="triton", **kw)
    _close(out, ref, scale=100)
    inputs = [a, b, scale, bias]
    for got, want in zip(_grads(out, inputs), _grads(ref, ref_in)):
        _close(got, want, scale=100)


@FEW
@given(
    n=st.integers(1, 50),
    m=st.integers(1, 50),
    d=st.integers(1, 40),
    num_ids=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_tiled_sigmoid_random_shapes(n, m, d, num_ids, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = _on(torch.randn(n, d, generator=g), torch.randn(m, d, generator=g))
    scale, bias = _on(torch.tensor(2.0), torch.tensor(-1.0))
    rid = torch.randint(0, num_ids, (n,), generator=g)
    cid = torch.randint(0, num_ids, (m,), generator=g)
    ref_in = _f64(a, b, scale, bias)
    ref = tiled_sigmoid_loss(*ref_in, row_ids=rid, col_ids=cid, backend="torch")
    out = tiled_sigmoid_loss(
        a, b, scale, bias, row_ids=rid.to(DEVICE), col_ids=cid.to(DEVICE), backend="triton"
    )
    _close(out, ref, scale=100)
    inputs = [a, b, scale, bias]
    for got, want in zip(_grads(out, inputs), _grads(ref, ref_in)):
        _close(got, want, scale=100)


@FEW
@given(
    n=st.integers(2, 40),
    d=st.integers(2, 33),
    chunk=st.integers(1, 48),
    smoothing=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_losses_triton_path_equals_dense(n, d, chunk, smoothing, seed):
    """The public losses' fused paths equal their dense float64 definitions."""
    g = torch.Generator().manual_seed(seed)
    img, txt = _on(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g))
    scale, bias = _on(torch.tensor(10.0), torch.tensor(-3.0))
    ref_in = _f64(img, txt, scale, bias)

    ref = clip_loss(*ref_in[:3], label_smoothing=smoothing)
    out = clip_loss(img, txt, scale, label_smoothing=smoothing, chunk_size=chunk, backend="triton")
    _close(out, ref)
    for got, want in zip(_grads(out, [img, txt, scale]), _grads(ref, ref_in[:3])):
        _close(got, want)

    ref = siglip_loss(*ref_in)
    out = siglip_loss(img, txt, scale, bias, chunk_size=chunk, backend="triton")
    _close(out, ref)
    for got, want in zip(_grads(out, [img, txt, scale, bias]), _grads(ref, ref_in)):
        _close(got, want)
