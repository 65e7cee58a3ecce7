"""GradCache: the parameters' gradients equal one backward through the whole batch.

Honours ``VLP_TEST_DEVICE``: the towers are built from the global seed on the CPU and moved
to the test device, inputs are drawn on the CPU and moved. On CUDA dropout draws from the
CUDA generator, so the replay check compares its state too. The tiled cases pin
``backend="torch"`` (what ``"auto"`` gives on the CPU): these tests are about GradCache in
float64, not about the fused kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tests._device import DEVICE, ON_CUDA, dev
from vlp.losses import ClipLoss, GradCache, SigLipLoss, clip_loss, siglip_loss

F64 = torch.float64
BATCH, MICRO = 10, 3


class Tower(nn.Module):
    """A small MLP encoder with dropout, recording the rows and grad mode of each call."""

    def __init__(self, d_in: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, 8, dtype=F64),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(8, 5, dtype=F64),
        )
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        out: torch.Tensor = self.net(x)
        return out


def make(dropout: float = 0.3) -> tuple[Tower, Tower, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    image, text = Tower(6, dropout).to(DEVICE), Tower(7, dropout).to(DEVICE)
    g = torch.Generator().manual_seed(1)
    return (
        image,
        text,
        dev(torch.randn(BATCH, 6, generator=g, dtype=F64)),
        dev(torch.randn(BATCH, 7, generator=g, dtype=F64)),
    )


def rng_state() -> list[torch.Tensor]:
    """The generator states dropout draws from on the test device (CPU always included)."""
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if ON_CUDA else [])


def grads(*modules: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for i, m in enumerate(modules):
        for name, p in m.named_parameters():
            if p.grad is not None:
                out[f"{i}.{name}"] = p.grad.clone()
    return out


def assert_grads_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        err = (actual[name] - expected[name]).norm() / expected[name].norm()
        assert err <= 1e-10, f"{name}: relative error {err.item():.3g}"


def reference(
    loss_fn: Callable[..., Any], image: Tower, text: Tower, x: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """One backward through the micro-batched encoders, in GradCache's pass-1 RNG order."""
    fi = torch.cat([image(x[s : s + MICRO]) for s in range(0, BATCH, MICRO)])
    ft = torch.cat([text(t[s : s + MICRO]) for s in range(0, BATCH, MICRO)])
    out = loss_fn(fi, ft)
    loss: torch.Tensor = getattr(out, "loss", out)
    loss.backward()
    return loss.detach()


LOSSES: dict[str, Callable[[], Any]] = {
    "clip_loss_module": lambda: ClipLoss(dtype=F64).to(DEVICE),
    "clip_sample_smoothing": lambda: functools.partial(
        clip_loss, logit_scale=7.0, label_smoothing=0.1, logit_bias=-0.5
    ),
    "clip_tiled": lambda: functools.partial(
        clip_loss, logit_scale=5.0, chunk_size=4, backend="torch"
    ),
    "clip_details": lambda: functools.partial(clip_loss, logit_scale=5.0, return_details=True),
    "siglip_module_tiled": lambda: SigLipLoss(chunk_size=3, dtype=F64, backend="torch").to(DEVICE),
    "siglip": lambda: functools.partial(siglip_loss, logit_scale=3.0, logit_bias=-2.0),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_grad_cache_equals_full_backward_with_dropout(name: str) -> None:
    image, text, x, t = make()
    loss_fn = LOSSES[name]()
    torch.manual_seed(123)
    expected_loss = reference(loss_fn, image, text, x, t)
    expected_rng = rng_state()
    modules = [image, text] + ([loss_fn] if isinstance(loss_fn, nn.Module) else [])
    expected = grads(*modules)
    for m in modules:
        m.zero_grad()
    image.calls.clear()
    text.calls.clear()

    torch.manual_seed(123)
    loss = GradCache(loss_fn).step(image, text, x, t, micro_batch=MICRO)
    assert not loss.requires_grad
    assert abs(loss.item() - expected_loss.item()) <= 1e-12 * abs(expected_loss.item())
    assert_grads_equal(grads(*modules), expected)
    if isinstance(loss_fn, nn.Module):  # the learnable scale (and bias) got its gradient
        assert any(k.startswith("2.") for k in expected)
    # After the step the generator is where a single encoding pass leaves it.
    assert all(torch.equal(a, b) for a, b in zip(rng_state(), expected_rng, strict=True))
    # Peak activations: never more than one micro-batch per call, pass 1 without a graph.
    sizes = [3, 3, 3, 1]
    assert image.calls == [(n, False) for n in sizes] + [(n, True) for n in sizes]
    assert text.calls == image.calls


def test_dropout_really_differs_between_draws() -> None:
    # Guard for the test above: with another RNG start the gradients differ.
    image, text, x, t = make()
    loss_fn = ClipLoss(dtype=F64).to(DEVICE)
    torch.manual_seed(123)
    reference(loss_fn, image, text, x, t)
    expected = grads(image, text)
    image.zero_grad()
    text.zero_grad()
    torch.manual_seed(124)
    GradCache(loss_fn).step(image, text, x, t, micro_batch=MICRO)
    actual = grads(image, text)
    assert any((actual[k] - expected[k]).abs().max() > 1e-6 for k in expected)


def test_without_dropout_equals_one_full_batch_forward() -> None:
    image, text, x, t = make(dropout=0.0)
    loss_fn = ClipLoss(dtype=F64).to(DEVICE)
    loss = loss_fn(image(x), text(t))
    loss.backward()
    expected = grads(image, text, loss_fn)
    for m in (image, text, loss_fn):
        m.zero_grad()
    for micro in (1, 4, BATCH, 64):
        cached = GradCache(loss_fn).step(image, text, x, t, micro_batch=micro)
        assert abs(cached.item() - loss.item()) <= 1e-12
        assert_grads_equal(grads(image, text, loss_fn), expected)
        for m in (image, text, loss_fn):
            m.zero_grad()


def test_container_inputs_and_accumulation() -> None:
    image, text, x, t = make(dropout=0.0)

    def encode_text(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return text(batch["tokens"] * batch["scale"][:, None])

    loss_fn = functools.partial(clip_loss, logit_scale=4.0)
    scale = torch.linspace(0.5, 2.0, BATCH, dtype=F64, device=DEVICE)
    loss_fn(image(x), text(t * scale[:, None])).backward()
    once = grads(image, text)
    for m in (image, text):
        m.zero_grad()
    cache = GradCache(loss_fn)
    for _ in range(2):  # .grad accumulates like backward()
        cache.step(image, encode_text, x, {"tokens": t, "scale": scale}, micro_batch=4)
    twice = grads(image, text)
    assert_grads_equal(twice, {k: 2 * v for k, v in once.items()})


def test_bad_input() -> None:
    image, text, x, t = make()
    cache = GradCache(ClipLoss(dtype=F64))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        GradCache(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="micro_batch must be an int >= 1, got 0"):
        cache.step(image, text, x, t, micro_batch=0)
    with pytest.raises(TypeError, match="micro_batch must be an int, got float"):
        cache.step(image, text, x, t, micro_batch=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same batch size, got 10 and 9"):
        cache.step(image, text, x, t[:9], micro_batch=2)
    with pytest.raises(ValueError, match=r"same batch size \(dim 0\), got \[9, 10\]"):
        cache.step(image, text, x, (t, t[:9]), micro_batch=2)
    with pytest.raises(TypeError, match="images must be a tensor or a list"):
        cache.step(image, text, "pixels", t, micro_batch=2)
    with pytest.raises(ValueError, match=r"encode_text must return one row per input row"):
        cache.step(image, lambda u: text(u)[:1], x, t, micro_batch=2)
    with pytest.raises(TypeError, match="encode_image must return a tensor"):
        cache.step(lambda u: (image(u),), text, x, t, micro_batch=2)
    with pytest.raises(TypeError, match="loss_fn must return a scalar tensor"):
        GradCache(lambda a, b: a @ b.T).step(image, text, x, t, micro_batch=2)
