from __future__ import annotations

from typing import Any

import pytest
import torch
from _gloo_cases import GATHER_SIZES, gather_data, gather_loss, gloo_results

from vlp.distributed import (
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
    is_distributed,
)
from vlp.testing import assert_close


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return [r["gather"] for r in gloo_results()]


def test_no_process_group_is_a_world_of_one() -> None:
    assert get_rank() == 0
    assert get_world_size() == 1
    assert not is_distributed()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    y = all_gather_no_grad(x)
    assert not y.requires_grad
    assert torch.equal(y, x.detach())
    assert all_gather_sizes(x) == [3]
    assert average_gradient(x) is x


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 1 dim"):
        all_gather_with_grad(torch.tensor(1.0))
    with pytest.raises(ValueError, match="at least 1 dim"):
        all_gather_no_grad(torch.tensor(1.0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        all_gather_with_grad([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.Tensor"):
        average_gradient(3.0)  # type: ignore[arg-type]


def test_rank_helpers(results: list[dict[str, Any]]) -> None:
    for r, res in enumerate(results):
        assert (res["rank"], res["world"], res["is_distributed"]) == (r, 2, True)
        assert res["sizes"] == list(GATHER_SIZES)
        assert "sizes must have one entry per rank (2), got 1" in res["bad_sizes"]


def test_uneven_gather_forward_and_backward(results: list[dict[str, Any]]) -> None:
    full, _ = gather_data()
    # Single process: the sum of both ranks' losses on the concatenated batch.
    x = full.clone().requires_grad_()
    (gather_loss(0, x, x) + gather_loss(1, x, x) - (x**3).sum()).backward()
    assert x.grad is not None
    start = 0
    for r, res in enumerate(results):
        assert_close(res["gathered"], full)
        assert_close(res["no_grad"], full)
        assert not res["no_grad_requires_grad"]
        size = GATHER_SIZES[r]
        assert_close(res["grad"], x.grad[start : start + size], msg=f"rank {r}")
        start += size


def test_gather_with_an_empty_rank(results: list[dict[str, Any]]) -> None:
    for r, res in enumerate(results):
        assert torch.equal(res["empty_gathered"], torch.full((4, 2), 2.0))
        # Both ranks' losses depend on rank 1's rows: gradient 1 + 2.
        expected = torch.full((0, 2), 3.0) if r == 0 else torch.full((4, 2), 3.0)
        assert torch.equal(res["empty_grad"], expected)


def test_average_gradient(results: list[dict[str, Any]]) -> None:
    for res in results:
        assert res["scalar_grad"].item() == pytest.approx((3.0 + 6.0) / 2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"facts": 3.0}, "facts"),
        ({"facts": torch.ones(2)}, "facts"),
        ({"facts": {1: True}}, "facts"),
        ({"facts": {"flag": [1]}}, "facts"),
        ({"facts": {"flag": 0.5}}, "facts"),
        ({"failure": "bad input"}, "failure"),
        ({"failure": 3}, "failure"),
        ({"caller": 7}, "caller"),
        ({"caller": None}, "caller"),
    ],
)
def test_all_gather_sizes_agreement_args_checked(kwargs: dict[str, Any], name: str) -> None:
    # Issue 17 fuzz findings: these reached a truth test / `raise` of a non-exception.
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        all_gather_sizes(torch.ones(3, 2), **kwargs)


def test_all_gather_sizes_valid_agreement_args_single_process() -> None:
    facts = {"flag": True, "n": 4, "dtype": torch.float16, "absent": None}
    assert all_gather_sizes(torch.ones(3, 2), facts=facts, caller="f") == [3]
    with pytest.raises(KeyError, match="own"):
        all_gather_sizes(torch.ones(3, 2), failure=KeyError("own"))
