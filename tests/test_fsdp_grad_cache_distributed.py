"""FSDP2 training and distributed gradient caching match one process on the global batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _gloo_scale import (
    CACHE_LOSSES,
    CACHE_MICRO,
    CACHE_SIZES,
    FSDP_WORLD,
    CacheTowers,
    cache_batch,
    cache_loss_fn,
    fsdp_grad_cache,
    fsdp_train,
    scale_results,
    tiny_clip,
)

from vlp.losses import ClipLoss
from vlp.testing import assert_close

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return scale_results()


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return fsdp_train(slice(None), sharded=False)


def test_fsdp2_matches_single_process(
    results: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for res in results:
        out = res["fsdp"]
        assert out["student_sharded"], "the student was not sharded"
        for key in ("student", "teacher_sharded", "teacher_whole"):
            assert out[key].keys() == single[key].keys()
            for name, expected in single[key].items():
                assert_close(out[key][name], expected, rtol=1e-9, atol=1e-11, msg=f"{key} {name}")
        assert_close(out["log_scale"], single["log_scale"], rtol=1e-9, atol=1e-11)
        # The per-rank losses average to the global loss (ClipLoss's local_loss weighting).
    mean_losses = torch.stack([r["fsdp"]["losses"] for r in results]).mean(0)
    assert_close(mean_losses, single["losses"], rtol=1e-9, atol=1e-11)
    # The parameters did move, and the teachers lag behind the student.
    init = dict(tiny_clip().named_parameters())
    for name in ("text_projection", "visual.proj"):
        student = single["student"][name]
        assert (student - init[name]).abs().max() > 1e-3
        for key in ("teacher_sharded", "teacher_whole"):
            assert (student - single[key][name]).abs().max() > 1e-4


def test_fsdp2_frozen_teacher_and_memory_bank(results: list[dict[str, Any]]) -> None:
    rows = torch.cat([r["fsdp_frozen_bank"]["bank_rows"] for r in results])
    for res in results:
        out = res["fsdp_frozen_bank"]
        assert out["frozen_is_dtensor"]
        assert out["frozen_equal"]
        # Buffers are never sharded: every rank holds the same whole bank (last 7 rows).
        assert_close(out["bank"], rows[-7:].roll(rows.shape[0] % 7, dims=0))


def test_grad_cache_under_fsdp2_equals_one_process(results: list[dict[str, Any]]) -> None:
    # Each re-encoding backward reduce-scatters (averages) by itself: no step afterwards.
    single = fsdp_grad_cache(slice(None), sharded=False)
    for res in results:
        grads = res["fsdp_grad_cache"]
        assert grads.keys() == single.keys()
        for name, expected in single.items():
            assert_close(grads[name], expected, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("name", list(CACHE_LOSSES))
def test_grad_cache_distributed_equals_single_process(
    results: list[dict[str, Any]], name: str
) -> None:
    x, t = cache_batch()
    towers = CacheTowers()
    loss_fn = cache_loss_fn(CACHE_LOSSES[name])
    # Rank r encoded its rows in micro-batches after seeding 11 + r: replay those masks.
    image, text = [], []
    start = 0
    for rank, size in enumerate(CACHE_SIZES):
        torch.manual_seed(11 + rank)
        stops = range(start, start + size, CACHE_MICRO)
        image += [towers.image(x[s : min(s + CACHE_MICRO, start + size)]) for s in stops]
        text += [towers.text(t[s : min(s + CACHE_MICRO, start + size)]) for s in stops]
        start += size
    loss = loss_fn(torch.cat(image), torch.cat(text))
    loss.backward()
    per_rank = [r["cache"][name] for r in results]
    if name == "global_rows":
        for out in per_rank:
            assert_close(out["loss"], loss.detach(), rtol=1e-12, atol=0)
    else:
        assert_close(
            torch.stack([o["loss"] for o in per_rank]).mean(), loss.detach(), rtol=1e-12, atol=0
        )
    for out in per_rank:
        for n, p in towers.named_parameters():
            assert p.grad is not None
            err = (out["grads"][n] - p.grad).norm() / p.grad.norm()
            assert err <= 1e-10, f"{n}: relative error {err.item():.3g}"
        if isinstance(loss_fn, ClipLoss):
            expected = loss_fn.logit_scale.log_scale.grad
            assert expected is not None
            assert_close(out["scale"], expected, rtol=1e-10, atol=1e-14)
    assert len(results) == FSDP_WORLD
