"""vlp.optim: the warm-up cosine schedule and AdamW weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlp.optim import param_groups, warmup_cosine, warmup_cosine_scheduler


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.25),  # the first step already trains at 1/W of the peak
        (1, 0.5),
        (3, 1.0),  # peak at W - 1
        (4, 1.0),  # cosine starts at its top
        (5, 0.5 * (1 + math.cos(math.pi / 6))),
        (7, 0.5),  # half-way through the decay
        (10, 0.0),  # zero at T
    ],
)
def test_warmup_cosine_values(step: int, expected: float) -> None:
    assert warmup_cosine(step, warmup_steps=4, total_steps=10) == pytest.approx(expected, abs=1e-15)


def test_warmup_cosine_edge_cases() -> None:
    # No warm-up: start at the peak.
    assert warmup_cosine(0, warmup_steps=0, total_steps=4) == 1.0
    assert warmup_cosine(2, warmup_steps=0, total_steps=4) == pytest.approx(0.5)
    # All warm-up (W == T): the decay takes one step.
    assert warmup_cosine(2, warmup_steps=3, total_steps=3) == 1.0
    assert warmup_cosine(3, warmup_steps=3, total_steps=3) == 1.0
    assert warmup_cosine(4, warmup_steps=3, total_steps=3) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step": -1}, ValueError, "step"),
        ({"step": 1.0}, TypeError, "step"),
        ({"warmup_steps": -1}, ValueError, "warmup_steps"),
        ({"total_steps": 0}, ValueError, "total_steps"),
        ({"total_steps": True}, TypeError, "total_steps"),
    ],
)
def test_warmup_cosine_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    args = {"step": 0, "warmup_steps": 2, "total_steps": 10, **kwargs}
    step = args.pop("step")
    with pytest.raises(error, match=match):
        warmup_cosine(step, **args)


def test_scheduler_multiplies_each_groups_rate() -> None:
    p, q = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([{"params": [p], "lr": 2.0}, {"params": [q], "lr": 0.5}])
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=2, total_steps=4)
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in optimizer.param_groups])  # the rate this step uses
        optimizer.step()
        scheduler.step()
    expected = [[1.0, 0.25], [2.0, 0.5], [2.0, 0.5], [1.0, 0.25], [0.0, 0.0]]
    for got, want in zip(seen, expected):
        assert got == pytest.approx(want, abs=1e-15)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine_scheduler(optimizer, warmup_steps=0, total_steps=0)


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(10, 4)
        self.positional_embedding = nn.Parameter(torch.zeros(3, 4))
        self.class_embedding = nn.Parameter(torch.zeros(4))
        self.ln = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.tied = self.proj  # a shared module: its parameters are listed once


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def test_param_groups_excludes_by_shape_and_name() -> None:
    tower = Tower()
    scale = nn.Parameter(torch.tensor(2.0))
    groups = param_groups(tower, [("logit_scale", scale)], weight_decay=0.2)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    assert _ids(groups[0]) == {id(tower.proj.weight)}
    assert _ids(groups[1]) == {
        id(p)
        for p in (
            tower.token_embedding.weight,  # 2-D, but an embedding
            tower.positional_embedding,
            tower.class_embedding,
            tower.ln.weight,
            tower.ln.bias,
            tower.proj.bias,
            scale,
        )
    }
    assert sum(len(g["params"]) for g in groups) == 8  # frozen left out, shared once
    # Shape only: the 2-D embeddings are decayed.
    by_shape = param_groups(tower.named_parameters(), weight_decay=0.1, no_decay_names=())
    assert _ids(by_shape[0]) == {
        id(tower.token_embedding.weight),
        id(tower.positional_embedding),
        id(tower.proj.weight),
    }


def test_param_groups_drive_adamw_decay() -> None:
    """One AdamW step with zero gradients: only the decayed matrix shrinks, by lr * wd."""
    tower = Tower()
    with torch.no_grad():
        for p in tower.parameters():
            p.fill_(1.0)
    optimizer = torch.optim.AdamW(param_groups(tower, weight_decay=0.5), lr=0.1)
    for p in tower.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.equal(tower.proj.weight, torch.full((4, 4), 0.95))
    assert torch.equal(tower.token_embedding.weight, torch.ones(10, 4))
    assert torch.equal(tower.proj.bias, torch.ones(4))


def test_param_groups_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(Tower(), weight_decay=-0.1)
    with pytest.raises(TypeError, match="sources\\[1\\]"):
        param_groups(Tower(), [torch.zeros(2)], weight_decay=0.1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="no_decay_names"):
        param_groups(Tower(), weight_decay=0.1, no_decay_names="embedding")
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter"):
        param_groups(frozen, weight_decay=0.1)
    # Only one kind present: the empty group is left out.
    assert len(param_groups(nn.LayerNorm(3), weight_decay=0.1)) == 1


def test_param_groups_bad_arguments_name_them() -> None:
    # Issue 17 fuzz findings: the messages named no argument / types went unchecked.
    with pytest.raises(ValueError, match=r"\bsources\b"):
        param_groups(weight_decay=0.1)
    with pytest.raises(ValueError, match=r"\bsources\b"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), weight_decay=0.1)
    with pytest.raises(TypeError, match=r"\bno_decay_names\b"):
        param_groups(nn.Linear(2, 2), weight_decay=0.1, no_decay_names=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\bno_decay_names\b"):
        param_groups(nn.Linear(2, 2), weight_decay=0.1, no_decay_names=["bias", 1])  # type: ignore[list-item]


@pytest.mark.parametrize("optimizer", [None, "adam", nn.Linear(2, 2)])
def test_warmup_cosine_scheduler_rejects_non_optimizer(optimizer: object) -> None:
    with pytest.raises(TypeError, match=r"\boptimizer\b"):
        warmup_cosine_scheduler(optimizer, warmup_steps=1, total_steps=4)  # type: ignore[arg-type]
