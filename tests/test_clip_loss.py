"""clip_loss / ClipLoss / LogitScale against open_clip, hand-written references and gradcheck.

Honours ``VLP_TEST_DEVICE``: features are drawn on the CPU with a seeded generator and moved
to the test device, and the modules under test are moved there too. The two-process DDP
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
from torch import nn

from tests._device import DEVICE, dev
from vlp.losses import ClipLoss, LogitScale, clip_loss
from vlp.testing import assert_close

F64 = torch.float64


def _features(n: int, d: int, seed: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, d, generator=g, dtype=dtype)
    text = torch.randn(n, d, generator=g, dtype=dtype)
    return dev(image), dev(text)


def _open_clip(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # The oracle is imported here, not at module level: the spawned gloo workers import
    # this module and open_clip's import is slow.
    from open_clip.loss import ClipLoss as OpenClipLoss

    oracle = OpenClipLoss()
    return oracle(F.normalize(image, dim=-1), F.normalize(text, dim=-1), scale, logit_bias=bias)


def _grads(loss: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 24),
    scale=st.floats(0.5, 100.0),
    bias=st.one_of(st.none(), st.floats(-10.0, 10.0)),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_open_clip_values_and_gradients(
    n: int, d: int, scale: float, bias: float | None, seed: int
) -> None:
    image, text = _features(n, d, seed)
    image.requires_grad_()
    text.requires_grad_()
    s = torch.tensor(scale, dtype=F64, device=DEVICE, requires_grad=True)
    b = None if bias is None else torch.tensor(bias, dtype=F64, device=DEVICE, requires_grad=True)
    ours = clip_loss(image, text, s, logit_bias=b)
    ref = _open_clip(image, text, s, b)
    assert_close(ours, ref)
    assert_close(ours, clip_loss(image, text, s, logit_bias=b, local_loss=False))
    for got, want in zip(_grads(ours, image, text, s), _grads(ref, image, text, s)):
        assert_close(got, want)


def _multi_positive_reference(
    image: torch.Tensor, text: torch.Tensor, scale: float, ids: list[int], eps: float
) -> torch.Tensor:
    """A loop over rows: uniform target over equal ids, smoothed as torch does."""
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    n = len(ids)
    total = torch.zeros((), dtype=image.dtype, device=image.device)
    for queries, keys in ((image, text), (text, image)):
        for i in range(n):
            logits = torch.stack([scale * torch.dot(queries[i], keys[j]) for j in range(n)])
            log_probs = logits - torch.logsumexp(logits, dim=0)
            positives = [j for j in range(n) if ids[j] == ids[i]]
            for j in range(n):
                target = (1 - eps) * (1 / len(positives) if j in positives else 0.0) + eps / n
                total = total - target * log_probs[j]
    return total / (2 * n)


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_sample_ids_and_label_smoothing_match_hand_written_reference(eps: float) -> None:
    ids = [4, 7, 4, 1, 7, 7, 9]
    image, text = _features(len(ids), 5, seed=1)
    ours = clip_loss(
        image, text, 3.5, sample_ids=dev(torch.tensor(ids)), label_smoothing=eps, local_loss=False
    )
    assert_close(ours, _multi_positive_reference(image, text, 3.5, ids, eps))
    assert_close(
        clip_loss(image, text, 3.5, sample_ids=dev(torch.tensor(ids)), label_smoothing=eps),
        ours,
    )


def test_distinct_sample_ids_equal_the_one_hot_loss() -> None:
    image, text = _features(6, 3, seed=2)
    ids = dev(torch.tensor([10, 3, 5, 0, 8, 1]))
    for eps in (0.0, 0.2):
        assert_close(
            clip_loss(image, text, 7.0, sample_ids=ids, label_smoothing=eps),
            clip_loss(image, text, 7.0, label_smoothing=eps),
        )


def test_label_smoothing_matches_torch_cross_entropy() -> None:
    image, text = _features(5, 4, seed=3)
    logits = 2.0 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    labels = torch.arange(5, device=DEVICE)
    want = (
        F.cross_entropy(logits, labels, label_smoothing=0.3)
        + F.cross_entropy(logits.T, labels, label_smoothing=0.3)
    ) / 2
    assert_close(clip_loss(image, text, 2.0, label_smoothing=0.3), want)


def test_closed_form_identical_orthogonal_pairs() -> None:
    # Orthonormal features paired with themselves: the diagonal logit is s, others 0.
    n, s = 4, 5.0
    eye = torch.eye(n, dtype=F64, device=DEVICE)
    expected = -(s - math.log(math.exp(s) + n - 1))
    assert clip_loss(eye, eye, s).item() == pytest.approx(expected, rel=1e-12)


def test_gradcheck() -> None:
    image, text = _features(5, 3, seed=4)
    image.requires_grad_()
    text.requires_grad_()
    s = torch.tensor(2.5, dtype=F64, device=DEVICE, requires_grad=True)
    b = torch.tensor(-0.5, dtype=F64, device=DEVICE, requires_grad=True)
    ids = dev(torch.tensor([0, 1, 0, 2, 2]))

    def fn(i: torch.Tensor, t: torch.Tensor, s_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        return clip_loss(i, t, s_, logit_bias=b_, sample_ids=ids, label_smoothing=0.1)

    assert torch.autograd.gradcheck(fn, (image, text, s, b))


def test_return_details() -> None:
    image, text = _features(6, 4, seed=5)
    ids = dev(torch.tensor([0, 0, 1, 2, 3, 3]))
    out = clip_loss(image, text, 3.0, sample_ids=ids, return_details=True)
    assert_close(out.loss, clip_loss(image, text, 3.0, sample_ids=ids))
    assert_close(out.loss, (out.loss_image_to_text + out.loss_text_to_image) / 2)
    assert out.logits_per_image.shape == out.logits_per_text.shape == (6, 6)
    assert_close(out.logits_per_text, out.logits_per_image.T)
    assert_close(out.targets.sum(dim=1), torch.ones(6, dtype=F64))
    assert out.targets[0, 1].item() == 0.5
    one_hot = clip_loss(image, text, 3.0, return_details=True).targets
    assert torch.equal(one_hot, torch.eye(6, dtype=F64, device=DEVICE))


def test_low_precision_is_reduced_in_float32() -> None:
    image, text = _features(16, 8, seed=6, dtype=torch.float32)
    want = clip_loss(image.double(), text.double(), 10.0)
    got = clip_loss(image.bfloat16(), text.bfloat16(), 10.0)
    assert got.dtype == torch.float32
    assert_close(got, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.randn(4, 3), torch.randn(5, 3), 1.0), {}, ValueError, "same shape"),
        ((torch.randn(4, 3), torch.randn(4, 2), 1.0), {}, ValueError, "same shape"),
        ((torch.randn(4), torch.randn(4), 1.0), {}, ValueError, "image_features must have shape"),
        ((torch.randn(0, 3), torch.randn(0, 3), 1.0), {}, ValueError, "must not be empty"),
        ((torch.randn(4, 3), torch.randn(4, 3), 0.0), {}, ValueError, "logit_scale must be > 0"),
        ((torch.randn(4, 3), torch.randn(4, 3), -2.0), {}, ValueError, "logit_scale must be > 0"),
        (
            (torch.randn(4, 3), torch.randn(4, 3), torch.tensor(-1.0, requires_grad=True)),
            {},
            ValueError,
            "logit_scale must be > 0",
        ),
        ((torch.randn(4, 3), torch.randn(4, 3), float("nan")), {}, ValueError, "finite"),
        ((torch.randn(4, 3), torch.randn(4, 3), torch.ones(2)), {}, ValueError, "scalar"),
        ((torch.randn(4, 3), torch.randn(4, 3), "1"), {}, TypeError, "logit_scale"),
        (
            (torch.randn(4, 3), torch.full((4, 3), float("nan")), 1.0),
            {},
            ValueError,
            "text_features must be finite",
        ),
        ((torch.ones(4, 3, dtype=torch.long),) * 2 + (1.0,), {}, TypeError, "floating-point"),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0),
            {"label_smoothing": 1.5},
            ValueError,
            "label_smoothing",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0),
            {"sample_ids": torch.zeros(3, dtype=torch.long)},
            ValueError,
            r"sample_ids must have shape \(4,\)",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0),
            {"sample_ids": torch.zeros(4)},
            TypeError,
            "integer dtype",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0),
            {"local_loss": 1},
            TypeError,
            "local_loss must be a bool",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3), 1.0),
            {"logit_bias": float("inf")},
            ValueError,
            "logit_bias must be finite",
        ),
    ],
)
def test_bad_input(args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str) -> None:
    # The cases are built at collection time on the CPU: move them to the test device.
    args = tuple(dev(a) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: dev(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(error, match=match):
        clip_loss(*args, **kwargs)


def test_module_forward_uses_learnable_scale_and_never_mutates_it() -> None:
    loss_fn = ClipLoss(dtype=F64).to(DEVICE)
    image, text = _features(5, 4, seed=7)
    init = torch.tensor(1 / 0.07, dtype=F64, device=DEVICE)
    assert_close(loss_fn.logit_scale(), init)
    assert_close(loss_fn(image, text), clip_loss(image, text, init))
    with torch.no_grad():
        loss_fn.logit_scale.log_scale.fill_(math.log(1000.0))
    loss = loss_fn(image, text)
    assert loss_fn.logit_scale().item() == pytest.approx(1000.0)
    assert_close(loss, clip_loss(image, text, 1000.0))
    loss.backward()
    assert loss_fn.logit_scale.log_scale.grad is not None
    loss_fn.clamp_()
    assert loss_fn.logit_scale().item() == pytest.approx(100.0)
    ids = dev(torch.tensor([0, 0, 1, 2, 3]))
    assert_close(
        loss_fn(image, text, sample_ids=ids), clip_loss(image, text, 100.0, sample_ids=ids)
    )


def test_readme_quickstart_loop_runs() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 4).to(DEVICE)
    loss_fn = ClipLoss().to(DEVICE)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=1.0)
    x = dev(torch.randn(8, 6))
    for _ in range(3):
        loss = loss_fn(model(x), model(x + 0.1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_fn.clamp_()
    # lr=1 pushes the scale to the cap; clamp_ rounds inwards, so never over it.
    assert 99.999 <= loss_fn.logit_scale().item() <= 100.0


def test_module_bad_config() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        ClipLoss(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="init_scale must lie in"):
        ClipLoss(init_scale=200.0)


def test_logit_scale() -> None:
    scale = LogitScale(10.0, dtype=F64, device=DEVICE)
    assert scale.log_scale.dtype == F64
    assert scale.log_scale.shape == ()
    assert scale().item() == pytest.approx(10.0)
    assert "scale=10" in repr(scale)
    with torch.no_grad():
        scale.log_scale.fill_(-3.0)
    scale.clamp_()
    assert scale().item() == pytest.approx(1.0)
    frozen = LogitScale(learnable_scale=False)
    assert not frozen.log_scale.requires_grad
    meta = LogitScale(device="meta")
    assert meta.log_scale.is_meta
    assert "max_scale=100" in repr(meta)
    for kwargs, error in [
        ({"init_scale": 0.0}, ValueError),
        ({"init_scale": float("inf")}, ValueError),
        ({"init_scale": "1"}, TypeError),
        ({"init_scale": 0.5}, ValueError),
        ({"min_scale": 5.0, "max_scale": 2.0}, ValueError),
        ({"max_scale": -1.0}, ValueError),
    ]:
        with pytest.raises(error):
            LogitScale(**kwargs)


# ----------------------------------------------------------------------------------------
# Two gloo processes under DDP against one process on the concatenated batch.


@pytest.fixture(scope="module")
def ddp_results() -> list[dict[str, Any]]:
    return gloo_results()


CLIP_CASES = [i for i, (name, _) in enumerate(LOSS_CASES) if name == "clip"]


@pytest.mark.parametrize("index", CLIP_CASES)
def test_two_process_ddp_matches_single_process(
    ddp_results: list[dict[str, Any]], index: int
) -> None:
    # CPU only, whatever VLP_TEST_DEVICE says: the gloo backend reduces CPU tensors.
    # Ranks hold 4 and 5 pairs; the model is DDP-wrapped, the scale lives outside it.
    name, config = LOSS_CASES[index]
    x, t, ids = loss_batch()
    single = loss_step(Towers(), x, t, ids, name, config)
    per_rank = [r["losses"][index] for r in ddp_results]

    losses = torch.stack([r["loss"] for r in per_rank])
    assert_close(losses.mean(), single["loss"], msg="mean of per-rank losses")
    if not config.get("local_loss", True):
        assert_close(losses, single["loss"].expand(2), msg="global loss on every rank")

    # DDP has already averaged the model gradients; they agree across ranks.
    for param, want in single["grads"].items():
        assert_close(per_rank[0]["grads"][param], per_rank[1]["grads"][param], msg=param)
        got = per_rank[0]["grads"][param]
        if config.get("gather_with_grad", True):
            assert_close(got, want, msg=param)
        elif not config.get("local_loss", True):
            # open_clip's no-grad gather: the global gradient divided by the world size.
            assert_close(got * 2, want, msg=param)
        else:
            # Local loss without gathered gradients drops the column terms.
            assert (got - want).abs().max() > 1e-6
    # The scale is not a DDP parameter: the loss averages its gradient itself.
    for r in per_rank:
        assert_close(r["scale"], single["scale"], msg="logit scale gradient")
