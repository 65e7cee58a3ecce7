"""The tiled clip_loss path (chunk_size / backend) equals the dense path, every option included."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vlp.losses import clip_loss
from vlp.testing import assert_close, triton_runnable

F64 = torch.float64


def _inputs(n: int, d: int, seed: int, dtype: torch.dtype = F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, d, generator=g, dtype=F64).to(dtype).requires_grad_()
    text = torch.randn(n, d, generator=g, dtype=F64).to(dtype).requires_grad_()
    scale = torch.tensor(7.5, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-1.25, dtype=dtype, requires_grad=True)
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
        kwargs["sample_ids"] = torch.tensor(options["sample_ids"])
    dense = clip_loss(image, text, scale, **kwargs)
    tiled = clip_loss(image, text, scale, chunk_size=chunk, **kwargs)
    assert_close(tiled, dense)
    inputs = [image, text, scale] + ([bias] if options.get("bias") else [])
    for got, want in zip(torch.autograd.grad(tiled, inputs), torch.autograd.grad(dense, inputs)):
        assert_close(got, want)


def test_tiled_gradcheck() -> None:
    image, text, scale, bias = _inputs(5, 3, seed=0)
    ids = torch.tensor([0, 1, 1, 2, 3])
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
def test_triton_path_equals_dense_float32(options: dict[str, Any]) -> None:
    image, text, scale, bias = _inputs(11, 16, seed=3, dtype=torch.float32)
    kwargs: dict[str, Any] = {"label_smoothing": options.get("label_smoothing", 0.0)}
    if options.get("bias"):
        kwargs["logit_bias"] = bias
    if "sample_ids" in options:
        kwargs["sample_ids"] = torch.tensor(options["sample_ids"])
    dense = clip_loss(image, text, scale, **kwargs)
    fused = clip_loss(image, text, scale, backend="triton", **kwargs)
    assert_close(fused, dense, rtol=1e-5)
    inputs = [image, text, scale]
    for got, want in zip(torch.autograd.grad(fused, inputs), torch.autograd.grad(dense, inputs)):
        assert_close(got, want, rtol=1e-4, atol=1e-5)
