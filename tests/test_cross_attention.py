"""CrossAttentionPooler / COSMOSHead: spec 11.4 cases, nn.MultiheadAttention parity (per-view
repeated keys, as the reference), no per-view K/V copies, torch vs Triton, bad input.

Honours ``VLP_TEST_DEVICE``: the reference-parity, gradcheck, per-view-copy and Triton tests
build their poolers and inputs on the test device (drawn on the CPU, then moved); with
``cuda`` the Triton tests run the compiled attention kernel against a float64 CPU reference
through ``assert_kernel_close``. The spec cases with hand-computed constants, the meta-device
parameter counts, the ``torch.autocast("cpu")`` test and the bad-input checks stay on the CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tests._device import DEVICE, dev, leaf
from vlp.heads import COSMOSHead, CrossAttentionPooler
from vlp.losses import COSMOSLoss
from vlp.testing import assert_close, assert_kernel_close, triton_runnable

F64 = torch.float64


def identity_pooler() -> CrossAttentionPooler:
    """Spec 11.4 set-up: D=4, 2 heads, LN (1, 0), in_proj = [I; I; I], zero biases, out_proj = I."""
    pool = CrossAttentionPooler(4, 2, dtype=F64)
    with torch.no_grad():
        pool.attn.in_proj_weight.copy_(torch.eye(4, dtype=F64).repeat(3, 1))
        pool.attn.in_proj_bias.zero_()
        pool.attn.out_proj.weight.copy_(torch.eye(4, dtype=F64))
        pool.attn.out_proj.bias.zero_()
    return pool


Q = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)


def cross_attention_only(pool: CrossAttentionPooler, q: torch.Tensor, x: torch.Tensor):
    pool.normalize = False
    try:
        return pool(q, x) - q
    finally:
        pool.normalize = True


def test_spec_case_one_key() -> None:
    pool = identity_pooler()
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=F64)
    ca = cross_attention_only(pool, Q[None], x)
    expected_ca = torch.tensor([-1.3416354, -0.4472118, 0.4472118, 1.3416354], dtype=F64)
    assert_close(ca[0], expected_ca, rtol=0, atol=1e-7)
    assert_close(ca, cross_attention_only(pool, 7 * Q[None] - 1, x), rtol=0, atol=1e-12)
    out = pool(Q[None], x)
    expected = torch.tensor([-0.2586087, -0.4446837, 0.7519530, 0.4122434], dtype=F64)
    assert_close(out[0], expected, rtol=0, atol=1e-7)


def test_spec_case_two_keys_permutation_and_scale() -> None:
    pool = identity_pooler()
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]], dtype=F64)
    ca = cross_attention_only(pool, Q[None], x)
    expected_ca = torch.tensor([-0.3811338, -0.1270446, 0.0648584, 0.1945751], dtype=F64)
    assert_close(ca[0], expected_ca, rtol=0, atol=1e-7)
    expected = torch.tensor([0.0502937, -0.4768658, 0.8736658, 0.0823270], dtype=F64)
    assert_close(pool(Q[None], x)[0], expected, rtol=0, atol=1e-7)
    # Keys in reverse order: identical (no positional encoding).
    assert_close(cross_attention_only(pool, Q[None], x.flip(1)), ca, rtol=0, atol=1e-15)
    # q -> 5q: the attention part is unchanged up to LN eps; the residual is not.
    ca5 = cross_attention_only(pool, 5 * Q[None], x)
    assert_close(ca5, ca, rtol=0, atol=1e-5)
    assert (ca5 - ca).abs().max().item() > 0
    assert (pool(5 * Q[None], x) - pool(Q[None], x)).abs().max().item() > 0.1


def random_pooler(dim: int, heads: int, kdim: int, seed: int = 0, dtype=F64):
    torch.manual_seed(seed)
    pool = CrossAttentionPooler(dim, heads, kdim=kdim, dtype=dtype)
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for p in pool.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return pool


def reference_mha(pool: CrossAttentionPooler, q: torch.Tensor, x: torch.Tensor, mask=None):
    """The reference computation: K/V repeated per view, nn.MultiheadAttention seq-first."""
    b, views, d = q.shape
    queries = pool.ln_q(q).reshape(b * views, 1, d).transpose(0, 1)  # (1, B*Q, D)
    keys = pool.ln_k(x).repeat_interleave(views, dim=0).transpose(0, 1)  # (S, B*Q, C)
    m = None if mask is None else mask.repeat_interleave(views, dim=0)
    ca, _ = pool.attn(queries, keys, keys, key_padding_mask=m, need_weights=False)
    return F.normalize(q + ca.transpose(0, 1).reshape(b, views, d), dim=-1)


@pytest.mark.parametrize("kdim", [8, 6])
def test_matches_multihead_attention_per_view(
    kdim: int, generator: torch.Generator, device: torch.device
) -> None:
    pool = random_pooler(8, 2, kdim).to(device)
    q = dev(torch.randn(3, 5, 8, generator=generator, dtype=F64))
    x = dev(torch.randn(3, 7, kdim, generator=generator, dtype=F64))
    assert_close(pool(q, x), reference_mha(pool, q, x), rtol=0, atol=1e-14)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 2:] = True
    mask[2, :3] = True
    mask = dev(mask)
    assert_close(pool(q, x, mask), reference_mha(pool, q, x, mask), rtol=0, atol=1e-14)
    # (B, D) queries are the Q = 1 case.
    assert_close(pool(q[:, 0], x), reference_mha(pool, q[:, :1], x)[:, 0], rtol=0, atol=1e-14)


def test_grouped_equals_repeated_kv_spec_shape(
    generator: torch.Generator, device: torch.device
) -> None:
    # Spec 11.4 "grouped": B=3, 8 views, S=7, D=16, 4 heads.
    pool = random_pooler(16, 4, 16, seed=1).to(device)
    q = dev(torch.randn(3, 8, 16, generator=generator, dtype=F64))
    x = dev(torch.randn(3, 7, 16, generator=generator, dtype=F64))
    assert_close(pool(q, x), reference_mha(pool, q, x), rtol=0, atol=1e-14)
    unnormalised = CrossAttentionPooler(16, 4, normalize=False, dtype=F64, device=device)
    unnormalised.load_state_dict(pool.state_dict())
    assert_close(F.normalize(unnormalised(q, x), dim=-1), pool(q, x), rtol=0, atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 4),
    views=st.integers(1, 9),
    s=st.integers(1, 12),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 5),
    kdim=st.integers(1, 7),
    masked=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_grouped_equals_reference_on_random_cases(b, views, s, heads, head_dim, kdim, masked, seed):
    dim = heads * head_dim
    pool = random_pooler(dim, heads, kdim, seed=seed % 1000).to(DEVICE)
    g = torch.Generator().manual_seed(seed)
    q = dev(torch.randn(b, views, dim, generator=g, dtype=F64))
    x = dev(torch.randn(b, s, kdim, generator=g, dtype=F64))
    mask = None
    if masked:
        mask = torch.rand(b, s, generator=g) < 0.5
        mask[torch.arange(b), torch.randint(0, s, (b,), generator=g)] = False
        mask = dev(mask)
    assert_close(pool(q, x, mask), reference_mha(pool, q, x, mask), rtol=0, atol=1e-13)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any floating tensor an op produces.

    (The Triton interpreter moves whole storages as uint8 bytes; those are not counted.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.largest = max(self.largest, t.numel())
        return out


def test_no_per_view_copy_of_keys_forward_and_backward(
    generator: torch.Generator, device: torch.device
) -> None:
    b, views, s, d, heads = 3, 8, 7, 16, 2
    pool = random_pooler(d, heads, d, dtype=torch.float32).to(device)
    q = leaf(torch.randn(b, views, d, generator=generator))
    x = leaf(torch.randn(b, s, d, generator=generator))
    # Legitimate tensors: tokens / keys+values (B, S, 2D), queries (B, Q, D), scores
    # (B, H, Q, S), weights (3D, D). A per-view copy of K or V has B * Q * S * D elements.
    bound = max(b * s * 2 * d, b * views * d, b * heads * views * s, 3 * d * d)
    per_view_copy = b * views * s * d
    assert bound < per_view_copy
    for backend in ("torch", "triton") if triton_runnable() else ("torch",):
        with LargestTensor() as grouped:
            pool(q, x, backend=backend).sum().backward()
        assert grouped.largest <= bound, backend
    # The same probe catches the repeated-K/V formulation of the reference.
    with LargestTensor() as repeated:
        reference_mha(pool, q, x).sum().backward()
    assert repeated.largest >= per_view_copy


def test_gradcheck(generator: torch.Generator, device: torch.device) -> None:
    pool = random_pooler(4, 2, 3).to(device)
    q = leaf(torch.randn(2, 3, 4, generator=generator, dtype=F64))
    x = leaf(torch.randn(2, 5, 3, generator=generator, dtype=F64))
    mask = dev(torch.tensor([[False, True, False, False, False], [False] * 5]))
    torch.autograd.gradcheck(lambda a, b: pool(a, b, mask), (q, x))
    weight = pool.attn.out_proj.weight
    torch.autograd.gradcheck(
        lambda w: CrossAttentionPooler.forward(pool, q.detach(), x.detach()) * w.sum(), (weight,)
    )


@pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")
@pytest.mark.parametrize(("b", "views", "s", "d", "heads", "kdim", "masked"), [
    (2, 3, 5, 12, 3, 12, False),
    (3, 1, 9, 8, 1, 5, True),
    (1, 7, 17, 16, 2, 16, True),
])  # fmt: skip
def test_triton_matches_torch(b, views, s, d, heads, kdim, masked, generator, device) -> None:
    # The fp32 Triton path on the test device against the torch path in float64 on the CPU,
    # same (fp32-rounded) parameters and inputs: the kernel tolerance table applies.
    pool = random_pooler(d, heads, kdim, dtype=torch.float32)
    q = torch.randn(b, views, d, generator=generator)
    x = torch.randn(b, s, kdim, generator=generator)
    mask = None
    if masked:
        mask = torch.rand(b, s, generator=generator) < 0.4
        mask[:, 0] = False
    upstream = torch.randn(b, views, d, generator=generator)
    results = {}
    for backend, on, dtype in (("torch", torch.device("cpu"), F64), ("triton", device, None)):
        p = copy.deepcopy(pool).to(on, dtype)
        qq, xx = (t.to(on, dtype or t.dtype).requires_grad_() for t in (q, x))
        out = p(qq, xx, None if mask is None else mask.to(on), backend=backend)
        grads = torch.autograd.grad((out * upstream.to(out)).sum(), [qq, xx, *p.parameters()])
        results[backend] = (out, grads)
    assert results["triton"][0].device.type == device.type
    assert_kernel_close(results["triton"][0], results["torch"][0], torch.float32, msg="out")
    names = ["queries", "tokens", *(n for n, _ in pool.named_parameters())]
    # Parameter gradients sum over B * Q query rows: atol is scaled for their magnitude.
    for name, g_tri, g_ref in zip(names, results["triton"][1], results["torch"][1]):
        assert_kernel_close(g_tri, g_ref, torch.float32, scale=4.0, msg=name)


@pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")
@settings(max_examples=6, deadline=None)
@given(
    b=st.integers(1, 3),
    views=st.integers(1, 9),
    s=st.integers(1, 20),
    heads=st.integers(1, 2),
    head_dim=st.sampled_from([4, 8, 16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_triton_matches_torch_on_random_shapes(b, views, s, heads, head_dim, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    pool = random_pooler(heads * head_dim, heads, 6, seed=seed % 1000, dtype=torch.float32)
    q = torch.randn(b, views, heads * head_dim, generator=g)
    x = torch.randn(b, s, 6, generator=g)
    ref_pool = copy.deepcopy(pool).double()
    ref_inputs = [q.double().requires_grad_(), x.double().requires_grad_()]
    want = ref_pool(*ref_inputs, backend="torch")
    pool.to(DEVICE)
    inputs = [leaf(q), leaf(x)]
    got = pool(*inputs, backend="triton")
    assert_kernel_close(got, want, torch.float32, msg="out")
    g_got = torch.autograd.grad(got.pow(2).sum(), [*inputs, pool.attn.in_proj_bias])
    g_want = torch.autograd.grad(want.pow(2).sum(), [*ref_inputs, ref_pool.attn.in_proj_bias])
    for name, g_tri, g_ref in zip(["queries", "tokens", "in_proj_bias"], g_got, g_want):
        assert_kernel_close(g_tri, g_ref, torch.float32, scale=4.0, msg=name)


def test_cosmos_head_parameters_and_reference_keys() -> None:
    # Spec 1.2: ViT-B/16 COSMOS adds 2,761,729 parameters (the last one: the distillation
    # temperature, owned by COSMOSLoss). Built on the meta device: no memory, no init cost.
    head = COSMOSHead(512, image_token_dim=768, text_token_dim=512, num_heads=8, device="meta")
    pools = sum(p.numel() for p in head.image_attn_pool.parameters())
    assert pools == 1_052_672
    assert head.image_token_mapping.weight.numel() + head.image_token_mapping.bias.numel() == (
        393_728
    )
    distill = COSMOSLoss(device="meta").distill_logit_scale
    total = sum(p.numel() for p in head.parameters()) + sum(p.numel() for p in distill.parameters())
    assert total == 2_761_729
    keys = set(CrossAttentionPooler(8, 2).state_dict())
    assert keys == {
        "ln_q.weight", "ln_q.bias", "ln_k.weight", "ln_k.bias", "attn.in_proj_weight",
        "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    }  # fmt: skip


def test_cosmos_head_wires_queries_to_the_other_modality(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    head = COSMOSHead(8, image_token_dim=6, text_token_dim=5, num_heads=2, dtype=F64)
    image = torch.randn(2, 4, 8, generator=generator, dtype=F64)
    text = torch.randn(2, 3, 8, generator=generator, dtype=F64)
    image_tokens = torch.randn(2, 9, 6, generator=generator, dtype=F64)
    text_tokens = torch.randn(2, 7, 5, generator=generator, dtype=F64)
    image_x, text_x = head(image, text, image_tokens, text_tokens)
    assert image_x.shape == (2, 4, 8) and text_x.shape == (2, 3, 8)
    mapped_text = head.text_token_mapping(text_tokens)
    assert_close(image_x, reference_mha(head.text_attn_pool, image, mapped_text), atol=1e-14)
    mapped_image = head.image_token_mapping(image_tokens)
    assert_close(text_x, reference_mha(head.image_attn_pool, text, mapped_image), atol=1e-14)


def test_bad_input() -> None:
    pool = CrossAttentionPooler(8, 2, kdim=6)
    q, x = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        CrossAttentionPooler(8, 3)
    with pytest.raises(TypeError, match="num_heads must be an int"):
        CrossAttentionPooler(8, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"queries must have shape \(B, Q, 8\)"):
        pool(torch.randn(2, 3, 7), x)
    with pytest.raises(ValueError, match=r"tokens must have shape \(2, S, 6\)"):
        pool(q, torch.randn(3, 5, 6))
    with pytest.raises(TypeError, match="dtype of queries"):
        pool(q, x.double())
    with pytest.raises(TypeError, match="floating-point"):
        pool(q, torch.ones(2, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="must not be empty"):
        pool(q, x[:, :0])
    with pytest.raises(TypeError, match="torch.bool"):
        pool(q, x, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="backend must be one of"):
        pool(q, x, backend="cuda")  # type: ignore[arg-type]
    assert isinstance(pool.attn, nn.MultiheadAttention)


def test_half_precision_inputs_outside_and_under_autocast(generator: torch.Generator) -> None:
    pool = random_pooler(8, 2, 6, dtype=torch.float32)
    q = torch.randn(2, 3, 8, generator=generator)
    x = torch.randn(2, 5, 6, generator=generator)
    want = reference_mha(pool.double(), q.double(), x.double()).float()
    pool.float()
    # Outside autocast, half-precision inputs to fp32 parameters are named, not a matmul error.
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.raises(TypeError, match=r"queries must have the dtype of the parameters"):
            pool(q.to(dtype), x.to(dtype))
    # Under autocast (the reference trains with AMP) the projections cast their inputs, so
    # fp32 queries (e.g. pooled embeddings upcast by the tower) may meet bf16 tokens.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for qq, xx in ((q, x.bfloat16()), (q.bfloat16(), x), (q.bfloat16(), x.bfloat16())):
            out = pool(qq, xx)
            assert out.dtype == qq.dtype
            assert_close(out.float(), want, rtol=0, atol=3e-2)
        q_grad = q.clone().requires_grad_()
        pool(q_grad, x.bfloat16()).pow(2).sum().backward()
    assert q_grad.grad is not None and bool(q_grad.grad.isfinite().all())
    # A bf16 module takes bf16 inputs without autocast.
    out = random_pooler(8, 2, 6, dtype=torch.bfloat16)(q.bfloat16(), x.bfloat16())
    assert out.dtype == torch.bfloat16
    # Meta tensors (shape inference) still pass: autocast has no meta device.
    meta = CrossAttentionPooler(8, 2, kdim=6, device="meta")
    out = meta(q.to("meta"), x.to("meta"), backend="torch")
    assert out.shape == (2, 3, 8) and out.is_meta


def test_cosmos_head_loads_reference_checkpoint_keys_after_renaming_the_poolers() -> None:
    # The reference checkpoint keys COSMOS adds (besides distill_logit_scale).
    pool_keys = [
        "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
        "attn.out_proj.bias", "ln_q.weight", "ln_q.bias", "ln_k.weight", "ln_k.bias",
    ]  # fmt: skip
    reference = [f"{m}_token_mapping.{p}" for m in ("image", "text") for p in ("weight", "bias")]
    reference += [f"{pool}.{k}" for pool in ("visual.attn_cross_pool", "text_attn_cross_pool")
                  for k in pool_keys]  # fmt: skip
    rename = {
        "visual.attn_cross_pool.": "image_attn_pool.",
        "text_attn_cross_pool.": "text_attn_pool.",
    }
    mapped = set()
    for key in reference:
        for old, new in rename.items():
            key = key.replace(old, new) if key.startswith(old) else key
        mapped.add(key)
    head = COSMOSHead(8, image_token_dim=6, text_token_dim=5, num_heads=2, device="meta")
    assert set(head.state_dict()) == mapped


def test_backend_is_configuration_with_a_forward_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # The constructor sets the attention backend; forward(..., backend=) overrides one call.
    import vlp.heads.cross_attention as module

    seen: list[str] = []
    real = module.attention

    def spy(*args: object, backend: str = "auto", **kwargs: object) -> torch.Tensor:
        seen.append(backend)
        return real(*args, backend="torch", **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "attention", spy)
    pool = CrossAttentionPooler(8, 2, backend="triton", dtype=F64)
    q, x = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 5, 8, dtype=F64)
    pool(q, x)
    pool(q, x, backend="torch")
    head = COSMOSHead(
        8, image_token_dim=6, text_token_dim=5, num_heads=2, backend="torch", dtype=F64
    )
    head(q, q, torch.randn(2, 4, 6, dtype=F64), torch.randn(2, 3, 5, dtype=F64))
    assert seen == ["triton", "torch", "torch", "torch"]
    with pytest.raises(ValueError, match="backend must be one of"):
        CrossAttentionPooler(8, 2, backend="cuda")  # type: ignore[arg-type]
