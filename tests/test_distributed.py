from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from vlp.distributed import (
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
    is_distributed,
)
from vlp.testing import assert_close, run_distributed

SIZES = (3, 5)
DIM = 4


def _data(sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    full = torch.randn(sum(sizes), DIM, generator=g, dtype=torch.float64)
    weights = torch.randn(len(sizes), sum(sizes), DIM, generator=g, dtype=torch.float64)
    return full, weights


def _worker(rank: int, world: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rank": get_rank(),
        "world": get_world_size(),
        "is_distributed": is_distributed(),
    }
    full, weights = _data(sizes)
    start = sum(sizes[:rank])
    x = full[start : start + sizes[rank]].clone().requires_grad_()
    group = dist.new_group(ranks=list(range(world)))
    y = all_gather_with_grad(x, group)
    # A rank-specific nonlinear loss of the gathered tensor plus a local-only term.
    loss = (weights[rank] * y**2).sum() + (x**3).sum()
    loss.backward()
    out["gathered"] = y.detach()
    out["grad"] = x.grad
    out["sizes"] = all_gather_sizes(x, group)
    out["no_grad"] = all_gather_no_grad(x, group, sizes=list(sizes))
    out["no_grad_requires_grad"] = out["no_grad"].requires_grad

    # A rank holding no rows.
    empty_sizes = (0, 4)
    z = torch.full((empty_sizes[rank], 2), float(rank + 1), requires_grad=True)
    zz = all_gather_with_grad(z)
    (zz * (rank + 1)).sum().backward()
    out["empty_gathered"] = zz.detach()
    out["empty_grad"] = z.grad

    # A shared scalar whose gradient differs per rank is averaged.
    s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    (average_gradient(s) * (rank + 1) * 3.0).backward()
    out["scalar_grad"] = s.grad

    try:
        all_gather_with_grad(x, sizes=[1])
    except ValueError as err:
        out["bad_sizes"] = str(err)
    return out


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_distributed(_worker, SIZES)


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
        assert res["sizes"] == list(SIZES)
        assert "sizes must have one entry per rank (2), got 1" in res["bad_sizes"]


def test_uneven_gather_forward_and_backward(results: list[dict[str, Any]]) -> None:
    full, weights = _data(SIZES)
    # Single process: the sum of both ranks' losses on the concatenated batch.
    x = full.clone().requires_grad_()
    total = sum((weights[r] * x**2).sum() for r in range(2)) + (x**3).sum()
    total.backward()
    assert x.grad is not None
    start = 0
    for r, res in enumerate(results):
        assert_close(res["gathered"], full)
        assert_close(res["no_grad"], full)
        assert not res["no_grad_requires_grad"]
        assert_close(res["grad"], x.grad[start : start + SIZES[r]], msg=f"rank {r}")
        start += SIZES[r]


def test_gather_with_an_empty_rank(results: list[dict[str, Any]]) -> None:
    for r, res in enumerate(results):
        assert torch.equal(res["empty_gathered"], torch.full((4, 2), 2.0))
        # Both ranks' losses depend on rank 1's rows: gradient 1 + 2.
        expected = torch.full((0, 2), 3.0) if r == 0 else torch.full((4, 2), 3.0)
        assert torch.equal(res["empty_grad"], expected)


def test_average_gradient(results: list[dict[str, Any]]) -> None:
    for res in results:
        assert res["scalar_grad"].item() == pytest.approx((3.0 + 6.0) / 2)
