"""The tiled clip_loss path (chunk_size / backend) equals the dense path, every option included.

Honours ``VLP_TEST_DEVICE``: inputs are drawn on the CPU with a seeded generator and moved
to the test device; with ``cuda`` the ``backend="triton"`` path runs the compiled kernel and
is compared with a float64 CPU reference through ``assert_kernel_close``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests._device import DEVICE
from vlp.losses import clip_loss
from vlp.testing import assert_close, assert_kernel_close, triton_runnable

F64 = torch.float64


def _inputs(
    n: int, d: int, seed: int, dtype: torch.dtype = F64, device: torch.device = DEVICE
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, d, generator=g, dtype=F64).to(device, dtype).requires_grad_()
    text = torch.randn(n, d, generator=g, dtype=F64).to(device, dtype).requires_grad_()
    scale = torch.tensor(7.5, dtype=dtype, device=device, requires_grad=True)
    bias = torch.tensor(-1.25, dtype=dtype, device=device, requires_grad=True)
    return [image, text, scale, bias]


OPTIONS: list[dict[str, Any]] = [
    {},
    {"bias": True},
    {"label_smoothing": 0.2},
    {"sample_ids": [0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 7]},
    {"sample_ids": [5, 5, 1, 2, 9, 3, 3, 4, 5, 6, 0], "label_smoothing": 0.1, "bias": True},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_tiled_equals_dense_float64(options: dict[str, Any], chunk: int) -> None:
    image, text, scale, bias = _inputs(11, 6, seed=chunk)
    kwargs: dict[str, Any] = {}
    if options.get("bias"):
        kwargs["logit_bias"] = bias
    if "label_smoothing" in options:
        kwargs["label_smoothing"] = options["label_smoothing"]
    if "sample_ids" in options:
        kwargs["sample_ids"] = torch.tensor(options["sample_ids"], device=image.device)
    dense = clip_loss(image, text, scale, **kwargs)
    tiled = clip_loss(image, text, scale, chunk_size=chunk, **kwargs)
    assert_close(tiled, dense)
    inputs = [image, text, scale] + ([bias] if options.get("bias") else [])
    for got, want in zip(torch.autograd.grad(tiled, inputs), torch.autograd.grad(dense, inputs)):
        assert_close(got, want)


def test_tiled_gradcheck() -> None:
    image, text, scale, bias = _inputs(5, 3, seed=0)
    ids = torch.tensor([0, 1, 1, 2, 3], device=DEVICE)
    torch.autograd.gradcheck(
        lambda i, t, s, b: clip_loss(
            i, t, s, logit_bias=b, sample_ids=ids, label_smoothing=0.1, chunk_size=2
        ),
        (image, text, scale, bias),
    )


def test_tiled_rejects_details_and_bad_chunk() -> None:
    image, text, scale, _ = _inputs(4, 3, seed=0)
    with pytest.raises(ValueError, match="return_details=True needs the logits"):
        clip_loss(image, text, scale, chunk_size=2, return_details=True)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        clip_loss(image, text, scale, chunk_size=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        clip_loss(image, text, scale, backend="gpu")  # type: ignore[arg-type]


@pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")
@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[4]])
def test_triton_path_equals_dense_float32(options: dict[str, Any], device: torch.device) -> None:
    # The fused kernel on the test device against the dense loss in float64 on the CPU,
    # from the same fp32 inputs (the kernel tolerance table: compiled kernels may use TF32).
    inputs = _inputs(11, 16, seed=3, dtype=torch.float32, device=device)
    reference = [t.detach().cpu().double().requires_grad_() for t in inputs]

    def run(
        image: torch.Tensor,
        text: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        **kwargs: Any,
    ) -> torch.Tensor:
        kwargs["label_smoothing"] = options.get("label_smoothing", 0.0)
        if options.get("bias"):
            kwargs["logit_bias"] = bias
        if "sample_ids" in options:
            kwargs["sample_ids"] = torch.tensor(options["sample_ids"], device=image.device)
        return clip_loss(image, text, scale, **kwargs)

    fused = run(*inputs, backend="triton")
    dense = run(*reference)  # the dense path
    assert fused.device.type == device.type
    assert_kernel_close(fused, dense, torch.float32, msg="loss")
    got = torch.autograd.grad(fused, inputs[:3])
    want = torch.autograd.grad(dense, reference[:3])
    for name, g, w in zip(["image", "text", "scale"], got, want):
        assert_kernel_close(g, w, torch.float32, msg=name)
