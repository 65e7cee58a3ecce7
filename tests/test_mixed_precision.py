"""Mixed precision: losses under CPU autocast, mixed input dtypes, large scales in fp16.

Regression tests for issue 14: the chunked SigLIP loss crashed under autocast
("dot : expected both vectors to have same dtype"), the distillation losses rejected an
fp32 teacher against a bf16 student, and ``logit_scale=7e4`` / ``logit_bias=1e5``
overflowed to inf when cast to fp16 features.

Honours ``VLP_TEST_DEVICE``: the autocast tests (tolerances of the autocast dtype) draw their
features on the CPU, move them to the test device and autocast on that device type, so with
``cuda`` the compiled ``backend="triton"`` kernels run under CUDA autocast. The tests that
compare two computations to 1e-5 or tighter (dtype promotion, large scales in fp16, scale
overflow errors) stay on the CPU on purpose: there ``backend="auto"`` is the torch path,
whereas on CUDA it picks the Triton kernels, whose fp16/bf16 policy rounds intermediates
(``vlp.testing.KERNEL_TOLERANCES``), and CUDA's autocast op lists differ from the CPU's.
"""

from __future__ import annotations

import pytest
import torch

from tests._device import DEVICE, dev
from vlp.losses import (
    SigLipLoss,
    clip_loss,
    contrastive_distillation_loss,
    feature_distillation_loss,
    siglip_loss,
)
from vlp.testing import assert_close

# Autocast runs the products in the low-precision dtype: bf16 keeps 8 bits of mantissa
# (relative error up to 2^-8 per product), fp16 keeps 11.
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _features(
    generator: torch.Generator, n: int = 12, d: int = 16, device: torch.device | None = None
) -> tuple[torch.Tensor, ...]:
    """CPU features by default; ``device=DEVICE`` for the tests that honour the switch."""
    image = torch.randn(n, d, generator=generator)
    text = image + 0.5 * torch.randn(n, d, generator=generator)
    return image.to(device), text.to(device)


def _value_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    loss = fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    return (loss.detach(), *grads)


def _check_near(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], tol: float) -> None:
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert torch.isfinite(g).all()
        assert_close(g, w, rtol=tol, atol=tol * float(w.abs().max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_chunked_siglip_under_autocast(
    generator: torch.Generator, dtype: torch.dtype, backend: str
) -> None:
    image, text = _features(generator, device=DEVICE)

    def loss(i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return siglip_loss(i, t, 10.0, -5.0, chunk_size=5, backend=backend)  # type: ignore[arg-type]

    want = _value_and_grads(loss, image, text)
    with torch.autocast(DEVICE.type, dtype=dtype):
        got = _value_and_grads(loss, image, text)
    _check_near(got, want, TOLERANCE[dtype])


def test_siglip_module_chunked_under_autocast(generator: torch.Generator) -> None:
    image, text = _features(generator, device=DEVICE)
    module = SigLipLoss(chunk_size=4).to(DEVICE)
    want = module(image, text)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = module(image, text)
    got.backward()
    assert got.dtype == torch.float32
    assert_close(got, want, rtol=TOLERANCE[torch.bfloat16], atol=0)
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_chunked_clip_under_autocast(
    generator: torch.Generator, dtype: torch.dtype, backend: str
) -> None:
    image, text = _features(generator, device=DEVICE)

    def loss(i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return clip_loss(i, t, 10.0, chunk_size=5, backend=backend)  # type: ignore[arg-type]

    want = _value_and_grads(loss, image, text)
    with torch.autocast(DEVICE.type, dtype=dtype):
        got = _value_and_grads(loss, image, text)
    _check_near(got, want, TOLERANCE[dtype])


def test_chunked_paths_keep_fp32_accumulation_under_autocast(generator: torch.Generator) -> None:
    # Autocast must not reach inside the fused ops: with bf16 *inputs* the chunked path
    # gives the same value under autocast as outside it (its products run in fp32).
    image, text = (x.bfloat16() for x in _features(generator))
    outside = clip_loss(image, text, 10.0, chunk_size=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = clip_loss(image, text, 10.0, chunk_size=5)
    assert_close(inside, outside, rtol=1e-6, atol=0)


def test_mixed_feature_dtypes_promote(generator: torch.Generator) -> None:
    image, text = _features(generator)
    half_text = text.bfloat16()
    for fn in (
        lambda i, t: clip_loss(i, t, 10.0),
        lambda i, t: clip_loss(i, t, 10.0, chunk_size=5),
        lambda i, t: siglip_loss(i, t, 10.0, -5.0),
        lambda i, t: siglip_loss(i, t, 10.0, -5.0, chunk_size=5),
    ):
        assert_close(fn(image, half_text), fn(image, half_text.float()), rtol=1e-6, atol=0)
        assert_close(fn(half_text, image), fn(half_text.float(), image), rtol=1e-6, atol=0)


def test_distillation_fp32_teacher_bf16_student(generator: torch.Generator) -> None:
    student_image, student_text = (x.bfloat16() for x in _features(generator))
    teacher = torch.randn(12, 16, generator=generator)
    bank = torch.nn.functional.normalize(torch.randn(5, 16, generator=generator), dim=-1)
    got = contrastive_distillation_loss(
        student_image, student_text, teacher, bank, 10.0, return_details=True
    )
    want = contrastive_distillation_loss(
        student_image.float(), student_text.float(), teacher, bank, 10.0
    )
    assert got.logits_image.dtype == torch.float32
    assert_close(got.loss, want, rtol=1e-6, atol=0)
    for kind in ("cosine", "smooth_l1", "mse"):
        got_f = feature_distillation_loss(student_image, teacher, kind)  # type: ignore[arg-type]
        want_f = feature_distillation_loss(student_image.float(), teacher, kind)  # type: ignore[arg-type]
        assert_close(got_f, want_f, rtol=1e-6, atol=0)


def test_distillation_under_autocast_with_fp32_teacher(generator: torch.Generator) -> None:
    # The reported case: the student runs under autocast, the frozen teacher in fp32.
    image, text = _features(generator, device=DEVICE)
    teacher = dev(torch.randn(12, 16, generator=generator))
    proj = torch.nn.Linear(16, 16).to(DEVICE)

    def loss(i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = contrastive_distillation_loss(proj(i), proj(t), teacher, None, 10.0)
        return out + feature_distillation_loss(proj(i), teacher, "mse")

    want = _value_and_grads(loss, image, text)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        assert proj(image).dtype == torch.bfloat16
        got = _value_and_grads(loss, image, text)
    _check_near(got, want, TOLERANCE[torch.bfloat16])


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_large_scale_and_bias_stay_finite_with_fp16_features(
    generator: torch.Generator, chunk_size: int | None
) -> None:
    # 7e4 and 1e5 exceed fp16's largest finite value (65504); the logits are formed in
    # fp32, where the Python numbers are kept.
    image, text = _features(generator)
    half_image, half_text = image.half(), text.half()
    got = clip_loss(half_image, half_text, 7e4, logit_bias=1e5, chunk_size=chunk_size)
    want = clip_loss(
        half_image.float(), half_text.float(), 7e4, logit_bias=1e5, chunk_size=chunk_size
    )
    assert torch.isfinite(got)
    assert_close(got, want, rtol=1e-5, atol=0)
    got = siglip_loss(half_image, half_text, 7e4, 1e5, chunk_size=chunk_size)
    want = siglip_loss(image, text, 7e4, 1e5, chunk_size=chunk_size)
    assert torch.isfinite(got)
    assert_close(got, want, rtol=1e-5, atol=0)


def test_scale_beyond_the_compute_dtype_is_an_error(generator: torch.Generator) -> None:
    image, text = (x.half() for x in _features(generator))
    with pytest.raises(ValueError, match=r"logit_scale must be finite in torch.float32"):
        clip_loss(image, text, 1e39)
    with pytest.raises(ValueError, match=r"logit_bias must be finite in torch.float32"):
        siglip_loss(image, text, 10.0, -1e39)
    with pytest.raises(ValueError, match=r"logit_scale must be finite in torch.float32"):
        clip_loss(image, text, torch.tensor(1e39, dtype=torch.float64))
    # float64 features compute in float64, where 1e39 is an ordinary number.
    assert torch.isfinite(clip_loss(image.double(), text.double(), 1e39))
