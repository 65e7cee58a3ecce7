"""Faults across ranks end in the same clear error on every rank, quickly: never a hang,
a crash or garbage (2-process gloo, 20 s process-group timeout)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _gloo_faults import EMPTY_LOSSES, TIMEOUT, empty_step, fault_results

from vlp.distributed import LOCAL, RankAgreementError, all_gather_sizes, get_world_size
from vlp.testing import assert_close


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return [r["faults"] for r in fault_results()]


def same_error(results: list[dict[str, Any]], case: str, *fragments: str) -> str:
    """Both ranks raised the same ValueError, well before the timeout; return its message."""
    outcomes = [r[case] for r in results]
    for rank, out in enumerate(outcomes):
        assert "error" in out, f"{case}: rank {rank} returned {out.get('value')!r}"
        assert out["error"] == "RankAgreementError", f"{case}: rank {rank}: {out}"
        assert out["is_value_error"]
        assert out["seconds"] < TIMEOUT / 2, f"{case}: rank {rank} took {out['seconds']:.1f} s"
        for fragment in fragments:
            assert fragment in out["message"], f"{case}: {fragment!r} not in {out['message']!r}"
    assert outcomes[0]["message"] == outcomes[1]["message"]
    message: str = outcomes[0]["message"]
    return message


def test_gather_with_different_trailing_dims(results: list[dict[str, Any]]) -> None:
    same_error(
        results, "gather_trailing_dim", "shape (all dims but dim 0) differs",
        "rank 0 (n, 8)", "rank 1 (n, 6)",
    )  # fmt: skip
    same_error(results, "gather_trailing_rank", "rank 0 (n, 8)", "rank 1 (n, 2, 4)")


def test_gather_with_different_dtypes(results: list[dict[str, Any]]) -> None:
    same_error(results, "gather_dtype", "dtype differs", "rank 0 float64", "rank 1 float32")


def test_a_rank_that_rejects_its_input_makes_every_rank_raise(
    results: list[dict[str, Any]],
) -> None:
    same_error(
        results, "sizes_with_failure", "some_loss: input rejected on rank 1",
        "rank 1: ValueError: image_features must be finite, got 1 NaN",
    )  # fmt: skip


def test_facts_and_callers_are_compared(results: list[dict[str, Any]]) -> None:
    message = same_error(
        results, "sizes_with_facts", "some_loss: the ranks disagree",
        "sample_ids differs: rank 0 True, rank 1 False",
    )  # fmt: skip
    assert "negatives N" not in message and "scale dtype" not in message
    same_error(results, "sizes_different_callers", "the ranks called different functions")


def test_local_only_and_group_still_usable(results: list[dict[str, Any]]) -> None:
    assert results[0]["gather_local_only"]["value"] == (True, [3])
    for out in results:
        value = out["healthy_after_faults"]["value"]
        assert torch.equal(value, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))


def test_without_a_group() -> None:
    assert LOCAL is False
    assert get_world_size(LOCAL) == 1
    with pytest.raises(ValueError, match="boom"):
        all_gather_sizes(torch.zeros(2, 3), failure=ValueError("boom"))
    with pytest.raises(TypeError, match="group must be a process group"):
        get_world_size(True)
    assert issubclass(RankAgreementError, ValueError)
    with pytest.raises(ValueError, match="at most 16"):
        all_gather_sizes(torch.zeros(2), facts={str(i): i for i in range(17)})


# --------------------------------------------------------------------- faults in losses


def test_feature_dim_mismatch_in_every_gathering_loss(results: list[dict[str, Any]]) -> None:
    for case, caller in (
        ("clip_dim", "clip_loss"),
        ("siglip_dim", "siglip_loss"),
        ("distill_dim", "contrastive_distillation_loss"),
    ):
        same_error(results, case, f"{caller}: the ranks disagree", "rank 0 (n, 8), rank 1 (n, 6)")


def test_dtype_scale_grad_and_optional_tensor_mismatch(results: list[dict[str, Any]]) -> None:
    same_error(results, "clip_dtype", "dtype differs: rank 0 float64, rank 1 float32")
    same_error(
        results, "clip_scale_grad", "logit_scale requires grad differs: rank 0 True, rank 1 False"
    )
    same_error(
        results, "clip_sample_ids_one_rank", "sample_ids given differs: rank 0 True, rank 1 False"
    )
    same_error(results, "negclip_negatives", "negatives N differs: rank 0 2, rank 1 3")
    same_error(results, "multiview_views", "number of feature tensors differs: rank 0 3, rank 1 4")


def test_input_rejected_on_one_rank_raises_on_every_rank(results: list[dict[str, Any]]) -> None:
    same_error(
        results, "clip_nan", "clip_loss: input rejected on rank 1", "image_features", "finite"
    )
    same_error(results, "siglip_bad_scale", "siglip_loss: input rejected on rank 1", "logit_scale")
    same_error(
        results, "cosmos_empty_teacher_list", "cosmos_distillation_loss: input rejected on rank 0",
        "teacher_text must hold at least one view",
    )  # fmt: skip
    same_error(results, "clip_all_empty", "every rank's batch is empty")
    same_error(
        results, "fsc_clip_missing_tokens", "fsc_clip_loss: input rejected on rank 0",
        "needs the token arguments",
    )  # fmt: skip


def test_memory_bank_enqueue(results: list[dict[str, Any]]) -> None:
    same_error(
        results, "bank_enqueue_width", "TeacherMemoryBank.enqueue: input rejected on rank 1",
        "embeddings must have shape (b, 4)",
    )  # fmt: skip
    from _gloo_faults import _features

    for res in results:  # rank 0 enqueues nothing, rank 1 three rows: both banks hold them
        assert torch.equal(res["bank_enqueue_uneven"]["value"], _features(1, 3, 4))


def test_local_only_switch_inside_a_group(results: list[dict[str, Any]]) -> None:
    from _gloo_faults import _features

    from vlp.losses import clip_loss

    value = results[0]["clip_local_only_on_one_rank"]["value"]
    expected = clip_loss(_features(0, 3, 4), _features(2, 3, 4), 5.0)
    assert_close(value, expected, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ empty local batches


@pytest.mark.parametrize("name", list(EMPTY_LOSSES))
def test_a_rank_with_no_rows(name: str) -> None:
    per_rank = [r["empty"][name] for r in fault_results()]
    for rank, out in enumerate(per_rank):
        assert "error" not in out, f"rank {rank}: {out}"
    single = empty_step(name, slice(None))
    # Per-rank values average to the single-process loss of the non-empty rows ...
    mean = (per_rank[0]["value"]["loss"] + per_rank[1]["value"]["loss"]) / 2
    assert_close(mean, single["loss"], rtol=1e-12, atol=1e-14)
    # ... and the gradients are those of the summed per-rank losses (2x the global one).
    for got, want in zip(per_rank[1]["value"]["grads"], single["grads"]):
        if want is None:
            assert got is None
            continue
        assert_close(got, 2 * want, rtol=1e-10, atol=1e-13)
    for got in per_rank[0]["value"]["grads"]:
        assert got is None or got.shape[0] == 0
