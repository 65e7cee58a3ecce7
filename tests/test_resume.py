"""Issue 17, exact resume: every stateful vlp module round-trips through ``state_dict``.

A small training loop uses all of them at once (ClusterMasking with its generator,
LogitScale, EMATeacher, FrozenTeacher with its cache, TeacherMemoryBank). Three steps,
a checkpoint through ``torch.save``/``torch.load``, fresh objects built from another seed,
three more steps: every loss and every tensor of the final state equals, bit for bit, six
uninterrupted steps on the CPU. Failed loads leave each module unchanged.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch import nn

from vlp.heads import EMATeacher, FrozenTeacher
from vlp.losses import (
    LogitScale,
    TeacherMemoryBank,
    clip_loss,
    contrastive_distillation_loss,
    feature_distillation_loss,
)
from vlp.masking import ClusterMasking, gather_tokens, patchify

DIM = 16
PATCH = 4


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Linear(3 * PATCH * PATCH, DIM)
        self.text = nn.EmbeddingBag(50, DIM)
        self.dropout = nn.Dropout(0.1)  # the global RNG is part of the state, too

    def forward(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        keep: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch(patchify(images, PATCH))
        if keep is None:
            image = tokens.mean(dim=1)
        else:
            idx, pad = keep
            kept = gather_tokens(tokens, idx, num_prefix_tokens=0)
            weight = (~pad).unsqueeze(-1).to(kept.dtype)
            image = (kept * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
        return self.dropout(image), self.text(text)


class Run:
    """Everything a training run holds, built from one seed."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.student = Student()
        self.ema = EMATeacher(self.student, momentum=0.9)
        teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, DIM))
        self.frozen = FrozenTeacher(teacher, cache=True)
        self.bank = TeacherMemoryBank(8, DIM, generator=torch.Generator().manual_seed(seed))
        self.scale = LogitScale()
        self.masking = ClusterMasking(PATCH, generator=torch.Generator().manual_seed(seed + 1))
        params = [*self.student.parameters(), *self.scale.parameters()]
        self.opt = torch.optim.AdamW(params, lr=0.05)

    def step(self, k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + k)
        images = torch.randn(4, 3, 16, 16, generator=g)
        text = torch.randint(0, 50, (4, 5), generator=g)
        ids = (2 * k + torch.arange(4)) % 10  # ids repeat: the cache is used
        image, txt = self.student(images, text, keep=self.masking(images))
        target = self.frozen(images, ids)
        with torch.no_grad():
            ema_image, _ = self.ema(images, text)
        loss = (
            clip_loss(image, txt, self.scale())
            + contrastive_distillation_loss(image, txt, target, self.bank, self.scale())
            + feature_distillation_loss(image, ema_image)
        )
        self.opt.zero_grad()
        loss.backward()
        self.ema.update(self.student)  # before the step, as COSMOS
        self.opt.step()
        self.scale.clamp_()
        self.bank.enqueue(target)
        return loss.detach()

    def state(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "frozen": self.frozen.state_dict(),
            "bank": self.bank.state_dict(),
            "scale": self.scale.state_dict(),
            "masking": self.masking.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": torch.get_rng_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.frozen.load_state_dict(state["frozen"])
        self.bank.load_state_dict(state["bank"])
        self.scale.load_state_dict(state["scale"])
        self.masking.load_state_dict(state["masking"])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])


def _flat(state: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(state, dict):
        out: dict[str, Any] = {}
        for key, value in state.items():
            out.update(_flat(value, f"{prefix}{key}/"))
        return out
    return {prefix: state}


def test_resume_is_bit_exact() -> None:
    full = Run(seed=0)
    want = [full.step(k) for k in range(6)]

    first = Run(seed=0)
    got = [first.step(k) for k in range(3)]
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # checkpoints need no pickled code
    del first

    resumed = Run(seed=7)  # other weights, other generators: the load must restore all
    resumed.load(state)
    assert resumed.frozen.cache_size() == 8  # ids 0..7 after 3 steps
    got += [resumed.step(k) for k in range(3, 6)]

    for a, b in zip(got, want):
        assert torch.equal(a, b)
    final, reference = _flat(resumed.state()), _flat(full.state())
    assert final.keys() == reference.keys()
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(final[key], value), key
        else:
            assert final[key] == value, key
    assert resumed.frozen.cache_size() == 10


def test_frozen_teacher_cache_round_trips() -> None:
    teacher = FrozenTeacher(nn.Linear(4, 3), cache=True)
    x = torch.randn(5, 4)
    teacher(x, torch.tensor([3, 1, 4, 15, 9]))
    state = teacher.state_dict()
    assert torch.equal(state["cache_ids"], torch.tensor([3, 1, 4, 15, 9]))
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # safetensors-ready
    fresh = FrozenTeacher(nn.Linear(4, 3), cache=True)
    fresh.load_state_dict(state)
    assert fresh.cache_size() == 5
    # Cached rows are served from the checkpoint, not recomputed.
    with torch.no_grad():
        fresh.model.weight.zero_()
    assert torch.equal(
        fresh(x, torch.tensor([3, 1, 4, 15, 9])), teacher(x, torch.tensor([3, 1, 4, 15, 9]))
    )
    # A checkpoint from before the cache was saved still loads (empty cache).
    old = {k: v for k, v in state.items() if not k.startswith("cache_")}
    fresh.load_state_dict(old)
    assert fresh.cache_size() == 5  # left as it was: nothing to restore
    # An empty cache round-trips.
    empty = FrozenTeacher(nn.Linear(4, 3), cache=True)
    fresh.load_state_dict(empty.state_dict())
    assert fresh.cache_size() == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cache_ids": torch.tensor([1, 1]), "cache_features": torch.zeros(2, 3)}, "distinct"),
        ({"cache_ids": torch.tensor([1, 2]), "cache_features": torch.zeros(3, 3)}, "3 rows for 2"),
        ({"cache_ids": torch.tensor([1.0]), "cache_features": torch.zeros(1, 3)}, "int64"),
        ({"cache_ids": torch.tensor([1]), "cache_features": None}, r"\(N, E\) tensor"),
    ],
)
def test_frozen_teacher_failed_load_changes_nothing(extra: dict[str, Any], message: str) -> None:
    teacher = FrozenTeacher(nn.Linear(4, 3), cache=True)
    teacher(torch.randn(2, 4), torch.tensor([7, 8]))
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    cache = teacher.state_dict()["cache_ids"]
    donor = FrozenTeacher(nn.Linear(4, 3), cache=True).state_dict()
    donor.update(extra)
    with pytest.raises(RuntimeError, match=message):
        teacher.load_state_dict(donor)
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, before[key])
    assert torch.equal(teacher.state_dict()["cache_ids"], cache)
    # A misshapen weight: neither the cache nor the other weights change.
    donor = FrozenTeacher(nn.Linear(4, 3), cache=True).state_dict()
    donor["model.bias"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match=r"model\.bias must have shape \(3,\), got \(5,\)"):
        teacher.load_state_dict(donor)
    assert torch.equal(teacher.model.weight, before["weight"])
    assert teacher.cache_size() == 2


def test_ema_teacher_failed_load_changes_nothing() -> None:
    student = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    ema = EMATeacher(student)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    other = EMATeacher(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))).state_dict()
    with pytest.raises(RuntimeError, match=r"module\.1\.weight must have shape \(2, 3\)"):
        ema.load_state_dict(other)
    partial = {
        k: v
        for k, v in EMATeacher(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))).state_dict().items()
        if k.startswith("module.0")
    }
    with pytest.raises(RuntimeError, match=r"missing key\(s\) \['module\.1\.weight'"):
        ema.load_state_dict(partial)
    for key, value in ema.state_dict().items():
        assert torch.equal(value, before[key])
    ema.load_state_dict(partial, strict=False)  # non-strict: loads what is there
    assert not torch.equal(ema.module[0].weight, before["module.0.weight"])


def test_module_states_are_safetensors_ready() -> None:
    from safetensors.torch import load, save

    run = Run(seed=0)
    run.step(0)
    for name in ("student", "ema", "frozen", "bank", "scale", "masking"):
        state = run.state()[name]
        back = load(save(state))
        assert back.keys() == state.keys(), name
        for key, value in state.items():
            assert torch.equal(back[key], value), (name, key)


def test_memory_bank_failed_load_changes_nothing_and_size_is_bounded() -> None:
    bank = TeacherMemoryBank(6, 4, init="empty")
    bank.enqueue(torch.ones(4, 4))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    donor = TeacherMemoryBank(6, 4, generator=torch.Generator().manual_seed(1))
    bad = donor.state_dict()
    bad["filled"] = torch.tensor(7)  # more than the bank holds; bank and pointer are fine
    with pytest.raises(RuntimeError, match="inconsistent"):
        bank.load_state_dict(bad)
    for key, value in bank.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert len(bank) == 4 and int(bank.pointer) == 4  # the host mirror agrees with the buffers
    bad = donor.state_dict()
    bad["bank"] = torch.zeros(5, 4)
    with pytest.raises(RuntimeError, match=r"bank must have shape \(6, 4\)"):
        bank.load_state_dict(bad)
    assert len(bank) == 4
    with pytest.raises(ValueError, match=r"size \* dim must be at most"):
        TeacherMemoryBank(10**12, 4)


def test_logit_scale_refuses_non_finite_state() -> None:
    scale = LogitScale(10.0)
    with pytest.raises(RuntimeError, match="log_scale must be finite"):
        scale.load_state_dict({"log_scale": torch.tensor(float("nan"))})
    assert float(scale()) == pytest.approx(10.0)
