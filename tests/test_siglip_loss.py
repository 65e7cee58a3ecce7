"""siglip_loss / SigLipLoss against open_clip, hand-written references and gradcheck.

Honours ``VLP_TEST_DEVICE``: features are drawn on the CPU with a seeded generator and moved
to the test device, and the module under test is moved there too. The two-process DDP
tests stay on the CPU on purpose (gloo process groups carry CPU tensors only).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _gloo_cases import LOSS_CASES, Towers, gloo_results, loss_batch, loss_step
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from tests._device import DEVICE, dev
from vlp.losses import SigLipLoss, siglip_loss
from vlp.testing import assert_close

F64 = torch.float64


def _features(n: int, d: int, seed: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        dev(torch.randn(n, d, generator=g, dtype=dtype)),
        dev(torch.randn(n, d, generator=g, dtype=dtype)),
    )


def _open_clip(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    # Imported here, not at module level: the spawned gloo workers import this module.
    from open_clip.loss import SigLipLoss as OpenClipSigLipLoss

    return OpenClipSigLipLoss()(F.normalize(image, dim=-1), F.normalize(text, dim=-1), scale, bias)


def _leaves(
    n: int, d: int, seed: int, scale: float, bias: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    image, text = _features(n, d, seed)
    return (
        image.requires_grad_(),
        text.requires_grad_(),
        torch.tensor(scale, dtype=F64, device=DEVICE, requires_grad=True),
        torch.tensor(bias, dtype=F64, device=DEVICE, requires_grad=True),
    )


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 24),
    scale=st.floats(0.5, 100.0),
    bias=st.floats(-15.0, 5.0),
    chunk=st.one_of(st.none(), st.integers(1, 50)),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_open_clip_values_and_gradients(
    n: int, d: int, scale: float, bias: float, chunk: int | None, seed: int
) -> None:
    inputs = _leaves(n, d, seed, scale, bias)
    ours = siglip_loss(*inputs, chunk_size=chunk)
    ref = _open_clip(*inputs)
    assert_close(ours, ref)
    for got, want in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs)):
        assert_close(got, want)


def test_closed_form() -> None:
    # Orthonormal features paired with themselves: z = s + b on the diagonal, b elsewhere.
    n, s, b = 3, 4.0, -2.0
    eye = torch.eye(n, dtype=F64, device=DEVICE)
    per_row = math.log1p(math.exp(-(s + b))) + (n - 1) * math.log1p(math.exp(b))
    for chunk in (None, 1, 2):
        assert siglip_loss(eye, eye, s, b, chunk_size=chunk).item() == pytest.approx(
            per_row, rel=1e-12
        )


@pytest.mark.parametrize(("n", "chunk"), [(7, 1), (7, 3), (7, 7), (7, 50), (16, 5), (1, 1)])
def test_chunked_equals_unchunked(n: int, chunk: int) -> None:
    inputs = _leaves(n, 6, seed=n * 100 + chunk, scale=12.0, bias=-4.0)
    full = siglip_loss(*inputs)
    chunked = siglip_loss(*inputs, chunk_size=chunk)
    assert_close(chunked, full)
    for got, want in zip(torch.autograd.grad(chunked, inputs), torch.autograd.grad(full, inputs)):
        assert_close(got, want)


def _multi_positive_reference(
    image: torch.Tensor, text: torch.Tensor, scale: float, bias: float, ids: list[int]
) -> torch.Tensor:
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    n = len(ids)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = scale * float(torch.dot(image[i], text[j])) + bias
            y = 1.0 if ids[i] == ids[j] else -1.0
            total += math.log1p(math.exp(-y * z))  # -log sigmoid(y z)
    return torch.tensor(total / n, dtype=image.dtype)


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_sample_ids_match_hand_written_reference(chunk: int | None) -> None:
    ids = [4, 7, 4, 1, 7, 7, 9]
    image, text = _features(len(ids), 5, seed=11)
    got = siglip_loss(image, text, 6.0, -3.0, chunk_size=chunk, sample_ids=dev(torch.tensor(ids)))
    assert_close(got, _multi_positive_reference(image, text, 6.0, -3.0, ids))
    distinct = dev(torch.tensor([3, 1, 4, 0, 5, 9, 2]))
    assert_close(
        siglip_loss(image, text, 6.0, -3.0, chunk_size=chunk, sample_ids=distinct),
        siglip_loss(image, text, 6.0, -3.0),
    )


def test_sample_ids_chunked_gradients() -> None:
    inputs = _leaves(9, 4, seed=12, scale=7.0, bias=-2.0)
    ids = dev(torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4]))
    full = siglip_loss(*inputs, sample_ids=ids)
    chunked = siglip_loss(*inputs, sample_ids=ids, chunk_size=4)
    for got, want in zip(torch.autograd.grad(chunked, inputs), torch.autograd.grad(full, inputs)):
        assert_close(got, want)


@pytest.mark.parametrize("chunk", [None, 2])
def test_gradcheck(chunk: int | None) -> None:
    inputs = _leaves(5, 3, seed=1, scale=2.5, bias=-1.5)

    def fn(*x: torch.Tensor) -> torch.Tensor:
        return siglip_loss(*x, chunk_size=chunk)

    assert torch.autograd.gradcheck(fn, inputs)


class _LargestTensor(TorchDispatchMode):
    """Record the largest number of elements of any tensor an op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_forward_and_backward_never_form_the_logit_matrix() -> None:
    n, d, chunk = 64, 4, 8
    inputs = _leaves(n, d, seed=2, scale=10.0, bias=-10.0)
    with _LargestTensor() as mode:
        siglip_loss(*inputs, chunk_size=chunk).backward()
    assert mode.largest <= max(n * chunk, n * d) < n * n
    with _LargestTensor() as mode:
        siglip_loss(*inputs).backward()
    assert mode.largest == n * n  # the check itself can fail


def test_low_precision_chunked() -> None:
    image, text = _features(24, 8, seed=3, dtype=torch.float32)
    want = siglip_loss(image.double(), text.double(), 10.0, -10.0)
    for chunk in (None, 5):
        got = siglip_loss(image.bfloat16(), text.bfloat16(), 10.0, -10.0, chunk_size=chunk)
        assert got.dtype == torch.float32
        assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_double_backward_of_chunked_path_is_refused() -> None:
    image, text, s, b = _leaves(4, 3, seed=4, scale=2.0, bias=0.0)
    loss = siglip_loss(image, text, s, b, chunk_size=2)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(loss, image, create_graph=True)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.randn(4, 3), torch.randn(5, 3), 1.0, 0.0), {}, ValueError, "same shape"),
        ((torch.randn(4), torch.randn(4), 1.0, 0.0), {}, ValueError, "image_features must have"),
        ((torch.randn(0, 3), torch.randn(0, 3), 1.0, 0.0), {}, ValueError, "must not be empty"),
        ((torch.randn(4, 3), torch.randn(4, 3), 0.0, 0.0), {}, ValueError, "logit_scale must be"),
        ((torch.randn(4, 3), torch.randn(4, 3), -1.0, 0.0), {}, ValueError, "logit_scale must be"),
        ((torch.randn(4, 3), torch.randn(4, 3), 1.0, None), {}, TypeError, "logit_bias"),
        ((torch.randn(4, 3), torch.randn(4, 3), 1.0, float("nan")), {}, ValueError, "logit_bias"),
        (
            (torch.randn(4, 3), torch.full((4, 3), float("inf")), 1.0, 0.0),
            {},
            ValueError,
            "text_features must be finite",
        ),
        ((torch.ones(4, 3, dtype=torch.int32),) * 2 + (1.0, 0.0), {}, TypeError, "floating"),
        ((torch.randn(4, 3), torch.randn(4, 3), 1.0, 0.0), {"chunk_size": 0}, ValueError, ">= 1"),
        ((torch.randn(4, 3), torch.randn(4, 3), 1.0, 0.0), {"chunk_size": 2.0}, TypeError, "int"),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0, 0.0),
            {"sample_ids": torch.zeros(3, dtype=torch.long)},
            ValueError,
            r"sample_ids must have shape \(4,\)",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0, 0.0),
            {"sample_ids": torch.zeros(4)},
            TypeError,
            "integer dtype",
        ),
    ],
)
def test_bad_input(args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str) -> None:
    # The cases are built at collection time on the CPU: move them to the test device.
    args = tuple(dev(a) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: dev(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(error, match=match):
        siglip_loss(*args, **kwargs)


def test_module() -> None:
    loss_fn = SigLipLoss(chunk_size=3, dtype=F64).to(DEVICE)
    assert loss_fn.logit_scale().item() == pytest.approx(10.0)
    assert loss_fn.logit_bias.item() == -10.0
    image, text = _features(7, 4, seed=5)
    loss = loss_fn(image, text)
    assert_close(loss, siglip_loss(image, text, 10.0, -10.0))
    loss.backward()
    assert loss_fn.logit_bias.grad is not None
    assert loss_fn.logit_scale.log_scale.grad is not None
    with torch.no_grad():
        loss_fn.logit_scale.log_scale.fill_(8.0)
    loss_fn.clamp_()
    assert 99.999 <= loss_fn.logit_scale().item() <= 100.0
    assert "chunk_size=3" in repr(loss_fn)
    with pytest.raises(ValueError, match="chunk_size"):
        SigLipLoss(chunk_size=0)
    with pytest.raises(TypeError, match="init_bias"):
        SigLipLoss(init_bias="-10")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# Two gloo processes under DDP against one process on the concatenated batch.

SIGLIP_CASES = [i for i, (name, _) in enumerate(LOSS_CASES) if name == "siglip"]


@pytest.mark.parametrize("index", SIGLIP_CASES)
def test_two_process_ddp_matches_single_process(index: int) -> None:
    # CPU only, whatever VLP_TEST_DEVICE says: the gloo backend reduces CPU tensors.
    # Ranks hold 4 and 5 pairs; the model is DDP-wrapped, scale and bias live outside it.
    name, config = LOSS_CASES[index]
    x, t, ids = loss_batch()
    single = loss_step(Towers(), x, t, ids, name, config)
    per_rank = [r["losses"][index] for r in gloo_results()]
    losses = torch.stack([r["loss"] for r in per_rank])
    assert_close(losses.mean(), single["loss"])
    if not config.get("local_loss", True):
        assert_close(losses, single["loss"].expand(2), msg="global loss on every rank")
    for r in per_rank:
        for param, want in single["grads"].items():
            got = r["grads"][param]
            if config.get("gather_with_grad", True):
                assert_close(got, want, msg=param)
            elif not config.get("local_loss", True):
                # Each rank's own rows get their full gradient: DDP's average is 1 / W of it.
                assert_close(got * 2, want, msg=param)
            elif param.startswith("image"):
                # Every text is a column of this rank's images: their gradient is whole.
                assert_close(got, want, msg=param)
            else:
                # Other ranks' images drop out of the text gradients.
                assert (got - want).abs().max() > 1e-6
        assert_close(r["scale"], single["scale"], msg="logit scale gradient")
        assert_close(r["bias"], single["bias"], msg="logit bias gradient")


@pytest.mark.parametrize(
    ("chunk_size", "error"),
    [("x", TypeError), (1.5, TypeError), (True, TypeError), (0, ValueError)],
)
def test_siglip_module_bad_chunk_size_named(chunk_size: Any, error: type[Exception]) -> None:
    # Issue 17 fuzz finding (was in test_fuzz.KNOWN): checked at construction, by name.
    with pytest.raises(error, match=r"\bchunk_size\b"):
        SigLipLoss(chunk_size=chunk_size)
