"""S-SMKE: contrastive distillation loss, feature distillation, memory bank, frozen teacher."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _gloo_cases import SSMKE_BANK_SIZE, SSMKE_SIZES, gloo_results, ssmke_data
from torch import nn

from vlp.heads import FrozenTeacher
from vlp.losses import (
    ContrastiveDistillationLoss,
    TeacherMemoryBank,
    contrastive_distillation_loss,
    feature_distillation_loss,
    ssmke_loss,
)
from vlp.losses.clip import clip_loss
from vlp.testing import assert_close

F64 = torch.float64


def _unit(*shape: int, generator: torch.Generator, dtype: torch.dtype = F64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


def _reference_kd(
    s_img: torch.Tensor,
    s_txt: torch.Tensor,
    teacher: torch.Tensor,
    bank: torch.Tensor | None,
    scale: float,
) -> tuple[float, float]:
    """Cross-entropy written out with Python floats: (i2i, t2i), mean over rows."""

    def unit(v: list[float]) -> list[float]:
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    cols = [unit(r) for r in teacher.tolist()] + ([] if bank is None else bank.tolist())
    halves = []
    for student in (s_img, s_txt):
        total = 0.0
        for i, row in enumerate(student.tolist()):
            r = unit(row)
            z = [scale * sum(a * b for a, b in zip(r, c)) for c in cols]
            m = max(z)
            total += m + math.log(sum(math.exp(v - m) for v in z)) - z[i]
        halves.append(total / len(student))
    return halves[0], halves[1]


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("bank_rows", [None, 0, 5])
def test_matches_float64_reference(generator: torch.Generator, bank_rows: int | None) -> None:
    b, d = 4, 6
    s_img = torch.randn(b, d, generator=generator, dtype=F64)
    s_txt = torch.randn(b, d, generator=generator, dtype=F64)
    teacher = torch.randn(b, d, generator=generator, dtype=F64)
    bank = None if bank_rows is None else _unit(bank_rows, d, generator=generator)
    out = contrastive_distillation_loss(s_img, s_txt, teacher, bank, 3.5, return_details=True)
    i2i, t2i = _reference_kd(s_img, s_txt, teacher, bank, 3.5)
    g = 0 if bank is None else bank.shape[0]
    assert out.logits_image.shape == out.logits_text.shape == (b, b + g)
    assert torch.equal(out.labels, torch.arange(b))
    assert out.loss_image.item() == pytest.approx(i2i, rel=1e-12)
    assert out.loss_text.item() == pytest.approx(t2i, rel=1e-12)
    assert out.loss.item() == pytest.approx((i2i + t2i) / 2, rel=1e-12)
    # The halves differ (they are separate cross-entropies), and the logits are scaled cosines.
    assert abs(out.loss_image.item() - out.loss_text.item()) > 1e-3
    cols = torch.cat([F.normalize(teacher, dim=-1), *([] if bank is None else [bank])])
    assert_close(out.logits_image, 3.5 * F.normalize(s_img, dim=-1) @ cols.T)


def test_single_row_without_bank_is_zero(generator: torch.Generator) -> None:
    x = torch.randn(1, 8, generator=generator, dtype=F64)
    out = contrastive_distillation_loss(x, x.flip(1), x.roll(1), None, 10.0, return_details=True)
    assert out.loss.item() == 0.0
    assert out.logits_image.shape == (1, 1)


def test_orthogonal_student_gives_exactly_log_b_plus_g(generator: torch.Generator) -> None:
    # Teacher and bank live in the first 8 coordinates, the student in the last 8: every
    # logit is exactly 0, so each cross-entropy is exactly ln(B + G).
    b, g, d = 5, 11, 16
    teacher = torch.cat(
        [torch.randn(b, 8, generator=generator, dtype=F64), torch.zeros(b, 8, dtype=F64)], 1
    )
    bank = F.normalize(
        torch.cat(
            [torch.randn(g, 8, generator=generator, dtype=F64), torch.zeros(g, 8, dtype=F64)], 1
        ),
        dim=-1,
    )
    s_img = torch.cat(
        [torch.zeros(b, 8, dtype=F64), torch.randn(b, 8, generator=generator, dtype=F64)], 1
    )
    s_txt = torch.cat(
        [torch.zeros(b, 8, dtype=F64), torch.randn(b, 8, generator=generator, dtype=F64)], 1
    )
    out = contrastive_distillation_loss(s_img, s_txt, teacher, bank, 1.0, return_details=True)
    assert d == teacher.shape[1]
    assert out.loss.item() == pytest.approx(math.log(b + g), abs=1e-15)
    assert out.loss_image.item() == pytest.approx(math.log(b + g), abs=1e-15)
    assert out.loss_text.item() == pytest.approx(math.log(b + g), abs=1e-15)


def test_random_unit_vectors_at_scale_one_give_log_b_plus_g(generator: torch.Generator) -> None:
    # Random unit vectors in D = 4096 have cosines ~ N(0, 1/D): every logit is within a
    # few hundredths of 0, so the loss is ln(B + G) up to O(1/sqrt(B D)).
    b, g, d = 16, 240, 4096
    args = [_unit(b, d, generator=generator) for _ in range(3)]
    bank = _unit(g, d, generator=generator)
    out = contrastive_distillation_loss(*args, bank, 1.0, return_details=True)
    assert out.logits_image.shape == (b, b + g)
    assert out.loss.item() == pytest.approx(math.log(b + g), abs=0.01)


def test_student_equal_to_teacher_goes_to_zero(generator: torch.Generator) -> None:
    b, g, d = 8, 24, 32
    teacher = _unit(b, d, generator=generator)
    bank = _unit(g, d, generator=generator)
    losses = [
        contrastive_distillation_loss(teacher, teacher, teacher, bank, s).item()
        for s in (1.0, 5.0, 20.0, 100.0)
    ]
    assert losses[0] > losses[1] > losses[2] > losses[3] >= 0.0
    # Each row's loss is log(1 + sum_j exp(-scale * (1 - cos_j))) ~ sum_j exp(-scale * gap_j):
    # with a gap of at least 1 - max cos to the nearest other column it vanishes like
    # exp(-scale * gap).
    columns = torch.cat([teacher, bank])
    cos = teacher @ columns.T
    cos[torch.arange(b), torch.arange(b)] = -2.0
    gap = 1 - cos.max().item()
    assert gap > 0.2
    assert losses[2] < (b + g) * math.exp(-20 * gap)
    assert losses[3] < (b + g) * math.exp(-100 * gap) + 1e-15  # below float64 resolution
    assert losses[0] > 1.0


def test_gradcheck(generator: torch.Generator) -> None:
    b, g, d = 3, 4, 5
    s_img, s_txt, teacher = (
        torch.randn(b, d, generator=generator, dtype=F64, requires_grad=True) for _ in range(3)
    )
    scale = torch.tensor(2.5, dtype=F64, requires_grad=True)
    bank = _unit(g, d, generator=generator)

    def fn(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = contrastive_distillation_loss(xs[0], xs[1], xs[2], bank, xs[3], return_details=True)
        return out.loss, out.loss_image, out.loss_text

    assert torch.autograd.gradcheck(fn, (s_img, s_txt, teacher, scale))
    assert torch.autograd.gradgradcheck(fn, (s_img, s_txt, teacher, scale))


def test_no_gradient_into_the_bank(generator: torch.Generator) -> None:
    bank = _unit(6, 4, generator=generator).requires_grad_()
    s = torch.randn(3, 4, generator=generator, dtype=F64, requires_grad=True)
    t = torch.randn(3, 4, generator=generator, dtype=F64)
    contrastive_distillation_loss(s, s * 2, t, bank, 5.0).backward()
    assert bank.grad is None
    assert s.grad is not None and bool(s.grad.abs().sum() > 0)


def test_low_precision_reduces_in_float32(generator: torch.Generator) -> None:
    x = torch.randn(4, 8, generator=generator)
    y, z = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    bank = _unit(5, 8, generator=generator, dtype=torch.float32)
    ref = contrastive_distillation_loss(x, y, z, bank, 7.0, return_details=True)
    half = contrastive_distillation_loss(
        x.bfloat16(), y.bfloat16(), z.bfloat16(), bank, 7.0, return_details=True
    )
    assert half.loss.dtype == torch.float32
    assert half.loss.item() == pytest.approx(ref.loss.item(), abs=0.05)


def test_bank_module_is_accepted(generator: torch.Generator) -> None:
    bank = TeacherMemoryBank(8, 4, init="empty")
    s, t = (
        torch.randn(3, 4, generator=generator),
        _unit(3, 4, generator=generator, dtype=torch.float32),
    )
    empty = contrastive_distillation_loss(s, s, t, bank, 2.0, return_details=True)
    assert empty.logits_image.shape == (3, 3)  # an empty bank adds no negatives
    bank.enqueue(t)
    out = contrastive_distillation_loss(s, s, t, bank, 2.0, return_details=True)
    assert out.logits_image.shape == (3, 6)
    assert_close(out.loss, contrastive_distillation_loss(s, s, t, bank.negatives(), 2.0))


def test_bad_input(generator: torch.Generator) -> None:
    x = torch.randn(3, 4, generator=generator)
    with pytest.raises(ValueError, match="teacher must have the shape of student_image"):
        contrastive_distillation_loss(x, x, x[:2], None, 1.0)
    # Mixed dtypes are promoted (tests/test_mixed_precision.py), not rejected.
    with pytest.raises(ValueError, match=r"bank must have shape \(G, 4\)"):
        contrastive_distillation_loss(x, x, x, torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        contrastive_distillation_loss(x, x, x, None, 0.0)
    with pytest.raises(ValueError, match="must not be empty"):
        contrastive_distillation_loss(x[:0], x[:0], x[:0], None, 1.0)
    with pytest.raises(ValueError, match="student_image must have shape"):
        contrastive_distillation_loss(x[0], x[0], x[0], None, 1.0)
    with pytest.raises(ValueError, match="teacher must be finite"):
        contrastive_distillation_loss(x, x, x.clone().fill_(float("nan")), None, 1.0)
    with pytest.raises(TypeError, match="student_image must have a floating-point dtype"):
        contrastive_distillation_loss(x.long(), x.long(), x.long(), None, 1.0)
    with pytest.raises(TypeError, match="local_targets must be a bool"):
        contrastive_distillation_loss(x, x, x, None, 1.0, local_targets=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="it needs local_targets=False"):
        contrastive_distillation_loss(x, x, x, None, 1.0, local_loss=False)


# ----------------------------------------------------------------- feature distillation


def test_feature_distillation_kinds(generator: torch.Generator) -> None:
    s = torch.randn(4, 3, 5, generator=generator, dtype=F64)
    t = torch.randn(4, 3, 5, generator=generator, dtype=F64)
    cos = [
        sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
        for u, v in zip(s.reshape(-1, 5).tolist(), t.reshape(-1, 5).tolist())
    ]
    expected_cos = sum(1 - c for c in cos) / len(cos)
    assert feature_distillation_loss(s, t).item() == pytest.approx(expected_cos, rel=1e-12)
    diff = (s - t).flatten().tolist()
    assert feature_distillation_loss(s, t, "mse").item() == pytest.approx(
        sum(e * e for e in diff) / len(diff), rel=1e-12
    )
    beta = 0.7
    huber = [0.5 * e * e / beta if abs(e) < beta else abs(e) - 0.5 * beta for e in diff]
    assert feature_distillation_loss(s, t, "smooth_l1", beta=beta).item() == pytest.approx(
        sum(huber) / len(huber), rel=1e-12
    )
    # normalize=True regresses unit vectors: MSE = mean(2 - 2 cos) / D.
    assert feature_distillation_loss(s, t, "mse", normalize=True).item() == pytest.approx(
        2 * expected_cos / 5, rel=1e-12
    )
    # Equal inputs give 0; the cosine loss ignores scale.
    assert feature_distillation_loss(s, s, "mse").item() == 0.0
    assert feature_distillation_loss(s, 3 * s).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("kind", ["cosine", "smooth_l1", "mse"])
def test_feature_distillation_gradcheck(generator: torch.Generator, kind: str) -> None:
    s = torch.randn(3, 4, generator=generator, dtype=F64, requires_grad=True)
    t = torch.randn(3, 4, generator=generator, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: feature_distillation_loss(a, b, kind, normalize=True),
        (s, t),  # type: ignore[arg-type]
    )


def test_feature_distillation_bad_input() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        feature_distillation_loss(x, x[:, :3])
    with pytest.raises(ValueError, match="kind must be one of"):
        feature_distillation_loss(x, x, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        feature_distillation_loss(x, x, "smooth_l1", beta=0.0)
    with pytest.raises(ValueError, match="at least one element"):
        feature_distillation_loss(x[:0], x[:0])
    with pytest.raises(TypeError, match="floating-point"):
        feature_distillation_loss(x.long(), x.long())


# -------------------------------------------------------------------------- S-SMKE total


def test_ssmke_loss_combines_kd_and_both_itc(generator: torch.Generator) -> None:
    b = 4
    image = tuple(torch.randn(b, w, generator=generator, dtype=F64) for w in (12, 3, 5))
    text = tuple(torch.randn(b, w, generator=generator, dtype=F64) for w in (12, 3, 5))
    teacher = torch.randn(b, 5, generator=generator, dtype=F64)
    bank = _unit(7, 5, generator=generator)
    out = ssmke_loss(image, text, teacher, bank, 14.0, 3.0, 5.0, return_details=True)  # type: ignore[arg-type]
    kd = contrastive_distillation_loss(image[2], text[2], teacher, bank, 14.0, return_details=True)
    itc0 = clip_loss(image[0], text[0], 3.0, return_details=True)
    itc1 = clip_loss(image[1], text[1], 5.0, return_details=True)
    assert out.kd.item() == pytest.approx(kd.loss.item(), rel=1e-14)
    assert out.itc_intermediate.item() == pytest.approx(itc0.loss.item(), rel=1e-14)
    # The expanded form of B3.3.
    expanded = (
        0.5 * kd.loss_image + 0.5 * kd.loss_text
        + 0.25 * (itc0.loss_image_to_text + itc0.loss_text_to_image)
        + 0.25 * (itc1.loss_image_to_text + itc1.loss_text_to_image)
    )  # fmt: skip
    assert out.loss.item() == pytest.approx(expanded.item(), rel=1e-14)
    with pytest.raises(TypeError, match="image must be a tuple"):
        ssmke_loss(image[:2], text, teacher, bank, 1.0, 1.0, 1.0)  # type: ignore[arg-type]


def test_loss_module_fixed_scale_and_bank_update(generator: torch.Generator) -> None:
    loss_fn = ContrastiveDistillationLoss(bank_size=6, dim=4, bank_init="empty", dtype=F64)
    assert not loss_fn.logit_scale.log_scale.requires_grad  # the reference never trains it
    assert list(loss_fn.parameters()) == [loss_fn.logit_scale.log_scale]
    s = torch.randn(4, 4, generator=generator, dtype=F64)
    t = _unit(4, 4, generator=generator)
    first = loss_fn(s, s, t, return_details=True)
    assert first.logits_image.shape == (4, 4)  # the bank is read before the update
    assert first.loss.item() == pytest.approx(
        contrastive_distillation_loss(s, s, t, None, 1 / 0.07).item(), rel=1e-12
    )
    assert len(loss_fn.bank) == 4
    second = loss_fn(s, s, t, return_details=True)
    assert second.logits_image.shape == (4, 8)
    loss_fn.eval()
    loss_fn(s, s, t)
    assert int(loss_fn.bank.pointer) == 2  # 8 rows in a bank of 6; eval does not enqueue


def test_loss_module_enqueues_normalised_teacher(generator: torch.Generator) -> None:
    # The loss normalises the teacher rows itself, so a raw (unnormalised) teacher output
    # is accepted; the bank must then hold the same unit rows the loss used as targets.
    loss_fn = ContrastiveDistillationLoss(bank_size=8, dim=4, bank_init="empty", dtype=F64)
    s = torch.randn(3, 4, generator=generator, dtype=F64)
    raw = 5.0 * torch.randn(3, 4, generator=generator, dtype=F64)
    loss_fn(s, s, raw)
    assert_close(loss_fn.bank.negatives(), F.normalize(raw, dim=-1))
    # The second step therefore equals the functional loss against the unit targets.
    second = loss_fn(s, s, raw)
    bank = F.normalize(raw, dim=-1)
    expected = contrastive_distillation_loss(s, s, raw, bank, 1 / 0.07)
    assert second.item() == pytest.approx(expected.item(), rel=1e-12)


def test_loss_module_learnable_scale(generator: torch.Generator) -> None:
    loss_fn = ContrastiveDistillationLoss(
        bank_size=8, dim=4, learnable_scale=True, init_scale=50.0, max_scale=60.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(loss_fn.bank) == 8  # random_unit: full from the start, as the reference
    s = torch.randn(3, 4, generator=generator)
    t = torch.randn(3, 4, generator=generator)
    out = loss_fn(s, s.flip(0), t, return_details=True)
    assert out.logits_image.shape == (3, 11)
    out.loss.backward()
    grad = loss_fn.logit_scale.log_scale.grad
    assert grad is not None and float(grad) != 0.0
    with torch.no_grad():
        loss_fn.logit_scale.log_scale.fill_(math.log(80.0))
    loss_fn.clamp_()
    assert float(loss_fn.logit_scale().detach()) <= 60.0


# ------------------------------------------------------------------------- memory bank


@pytest.mark.parametrize("size,batch", [(8, 2), (8, 3), (5, 7), (6, 6), (4, 13)])
def test_bank_fifo_content_and_pointer(size: int, batch: int, generator: torch.Generator) -> None:
    bank = TeacherMemoryBank(size, 3, init="empty", dtype=F64)
    history = []
    for n in range(1, 6):
        rows = torch.randn(batch, 3, generator=generator, dtype=F64)
        history.append(rows)
        bank.enqueue(rows)
        seen = torch.cat(history)
        total = n * batch
        assert int(bank.pointer) == total % size
        assert len(bank) == min(total, size)
        # Slot k holds the newest row whose global index is k mod size.
        expected = torch.zeros(size, 3, dtype=F64)
        for index in range(max(0, total - size), total):
            expected[index % size] = seen[index]
        assert torch.equal(bank.bank, expected)
        assert torch.equal(bank.chronological(), seen[-size:])
        valid = bank.negatives()
        assert valid.shape == (min(total, size), 3)
        assert torch.equal(valid, expected[: len(valid)])


def test_bank_random_init_and_state_dict(generator: torch.Generator) -> None:
    bank = TeacherMemoryBank(10, 4, generator=generator)
    assert len(bank) == 10
    assert bool((bank.bank >= 0).all())  # uniform [0, 1) rows, as in the reference
    assert_close(bank.bank.norm(dim=1), torch.ones(10))
    assert list(bank.parameters()) == []
    assert set(bank.state_dict()) == {"bank", "pointer", "filled"}
    again = TeacherMemoryBank(10, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        again.bank, TeacherMemoryBank(10, 4, generator=torch.Generator().manual_seed(0)).bank
    )
    # The pointer and the fill count come back from a state dict.
    empty = TeacherMemoryBank(10, 4, init="empty")
    empty.enqueue(torch.ones(3, 4))
    restored = TeacherMemoryBank(10, 4)
    restored.load_state_dict(empty.state_dict())
    assert len(restored) == 3 and int(restored.pointer) == 3
    restored.enqueue(torch.full((2, 4), 2.0))
    assert torch.equal(restored.negatives()[3:], torch.full((2, 4), 2.0))
    bad = empty.state_dict()
    bad["pointer"] = torch.tensor(11)
    with pytest.raises(RuntimeError, match="inconsistent"):
        restored.load_state_dict(bad)
    # The failed load changed nothing: buffers and their host mirrors still agree.
    assert len(restored) == 5 and int(restored.pointer) == 5
    restored.reset()
    assert len(restored) == 0 and restored.negatives().shape == (0, 4)


def test_bank_takes_no_gradient_and_casts(generator: torch.Generator) -> None:
    bank = TeacherMemoryBank(4, 2, init="empty")
    x = torch.randn(3, 2, generator=generator, dtype=F64, requires_grad=True)
    bank.enqueue(x * 2)
    assert not bank.bank.requires_grad
    assert bank.bank.dtype == torch.float32
    assert_close(bank.negatives(), (2 * x).detach().float())


def test_bank_dtype_moves_and_nested_state_dict(generator: torch.Generator) -> None:
    loss_fn = ContrastiveDistillationLoss(bank_size=5, dim=3, bank_init="empty")
    t = _unit(7, 3, generator=generator, dtype=torch.float32)
    loss_fn.bank.enqueue(t[:4])
    loss_fn.half()
    bank = loss_fn.bank
    assert bank.bank.dtype == torch.float16 and bank.pointer.dtype == torch.long
    bank.enqueue(t[4:])  # float32 rows are cast to the bank's dtype
    assert bank.negatives().dtype == torch.float16 and int(bank.pointer) == 2
    assert_close(bank.chronological().float(), t[2:], atol=1e-3, rtol=0)
    loss_fn.to(F64)
    assert bank.bank.dtype == F64 and len(bank) == 5
    # Through a parent: the host-side pointer of the nested bank follows the loaded buffers.
    fresh = ContrastiveDistillationLoss(bank_size=5, dim=3, bank_init="empty", dtype=F64)
    fresh.load_state_dict(loss_fn.state_dict())
    assert len(fresh.bank) == 5 and int(fresh.bank.pointer) == 2
    fresh.bank.enqueue(t[:1].double())
    assert torch.equal(fresh.bank.bank[2], t[0].double())


def test_bank_bad_input() -> None:
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        TeacherMemoryBank(0, 4)
    with pytest.raises(TypeError, match="dim must be an int"):
        TeacherMemoryBank(4, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init must be"):
        TeacherMemoryBank(4, 2, init="zeros")  # type: ignore[arg-type]
    bank = TeacherMemoryBank(4, 2)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(b, 2\)"):
        bank.enqueue(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        bank.enqueue(torch.ones(3, 2, dtype=torch.long))


# ---------------------------------------------------------------------- frozen teacher


class _Stochastic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.drop(self.proj(x)))


def test_teacher_deterministic_in_parent_train_mode(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    teacher = FrozenTeacher(_Stochastic())
    parent = nn.ModuleDict({"student": nn.Linear(4, 6), "teacher": teacher})
    parent.train()
    assert parent["student"].training and teacher.training
    assert not any(m.training for m in teacher.model.modules())
    x = torch.randn(5, 4, generator=generator)
    stats = teacher.model.norm.running_mean.clone()
    a, b = teacher(x), teacher(x)
    assert torch.equal(a, b)
    assert not a.requires_grad
    assert torch.equal(teacher.model.norm.running_mean, stats)  # BN statistics untouched
    assert all(not p.requires_grad for p in teacher.parameters())
    assert_close(a.norm(dim=1), torch.ones(5))
    # The features are the eval-mode model's, normalised.
    with torch.no_grad():
        assert_close(a, F.normalize(teacher.model(x), dim=-1))
    # Switching the wrapped model itself back to train mode is undone at the next call.
    teacher.model.train()
    assert torch.equal(teacher(x), a)
    assert not teacher.model.training


def test_teacher_no_grad_even_with_grad_inputs(generator: torch.Generator) -> None:
    teacher = FrozenTeacher(nn.Linear(3, 2), lambda m, x: m(x["image"]), normalize=False)
    x = torch.randn(2, 3, generator=generator, requires_grad=True)
    out = teacher({"image": x})
    assert not out.requires_grad
    assert_close(out, teacher.model(x).detach())


def test_teacher_cache_by_sample_id(generator: torch.Generator) -> None:
    calls: list[int] = []

    def feature_fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        out: torch.Tensor = model(x)
        return out

    teacher = FrozenTeacher(nn.Linear(4, 3), feature_fn, cache=True)
    x = torch.randn(6, 4, generator=generator)
    full = teacher(x)  # no ids: computed, not cached
    assert teacher.cache_size() == 0
    first = teacher(x[:4], torch.tensor([0, 1, 2, 3]))
    second = teacher(x[2:], torch.tensor([2, 3, 4, 5]))
    assert calls == [6, 4, 2]  # only ids 4 and 5 were new
    assert teacher.cache_size() == 6
    assert_close(first, full[:4])
    assert_close(second, full[2:])
    teacher.clear_cache()
    assert teacher.cache_size() == 0
    with pytest.raises(ValueError, match=r"sample_ids must have shape \(4,\)"):
        teacher(x[:4], torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer dtype"):
        teacher(x[:2], torch.tensor([0.0, 1.0]))


def test_teacher_stays_frozen_after_parent_requires_grad(generator: torch.Generator) -> None:
    # nn.Module.requires_grad_ on a parent sets every parameter directly, the teacher's too;
    # the next call freezes them again, so an optimiser built from the trainable
    # parameters after it never sees the teacher.
    teacher = FrozenTeacher(nn.Linear(4, 3))
    parent = nn.ModuleDict({"student": nn.Linear(4, 3), "teacher": teacher})
    parent.requires_grad_(True)
    x = torch.randn(2, 4, generator=generator)
    assert not teacher(x).requires_grad
    assert not any(p.requires_grad for p in teacher.parameters())
    trainable = [p for p in parent.parameters() if p.requires_grad]
    assert trainable == list(parent["student"].parameters())
    # The weights stay in the parent's state_dict (a checkpoint restores the teacher too).
    assert {"teacher.model.weight", "teacher.model.bias"} <= set(parent.state_dict())


def test_teacher_cache_follows_dtype_and_device_moves(generator: torch.Generator) -> None:
    teacher = FrozenTeacher(nn.Linear(4, 3), cache=True)
    x = torch.randn(3, 4, generator=generator)
    teacher(x[:2], torch.tensor([0, 1]))
    teacher.double()
    out = teacher(x.double(), torch.tensor([0, 1, 2]))  # ids 0, 1 cached before the cast
    assert out.dtype == F64
    assert_close(out, F.normalize(teacher.model(x.double()), dim=-1).detach(), atol=1e-6, rtol=0)
    assert teacher(x[:2].double(), torch.tensor([0, 1])).dtype == F64  # all cached
    teacher.to(torch.float32)
    assert teacher(x[:1], torch.tensor([2])).dtype == torch.float32


def test_teacher_weights_left_out_of_state_dict_when_not_persistent(
    generator: torch.Generator,
) -> None:
    # persistent=False: the parent's state_dict has no teacher entries (as the reference's
    # checkpoints), and such a checkpoint loads strictly into a fresh parent, whose teacher
    # keeps the weights it was built with. A checkpoint that has them still loads them.
    def parent(seed: int) -> nn.ModuleDict:
        torch.manual_seed(seed)
        return nn.ModuleDict(
            {
                "student": nn.Linear(4, 3),
                "teacher": FrozenTeacher(nn.Linear(4, 3), persistent=False),
            }
        )

    a, b = parent(0), parent(1)
    state = a.state_dict()
    assert set(state) == {"student.weight", "student.bias"}
    teacher_weight = b["teacher"].model.weight.clone()
    b.load_state_dict(state)  # strict
    assert torch.equal(b["student"].weight, a["student"].weight)
    assert torch.equal(b["teacher"].model.weight, teacher_weight)
    full = {
        **state,
        **{f"teacher.model.{k}": v for k, v in a["teacher"].model.state_dict().items()},
    }
    b.load_state_dict(full)
    assert torch.equal(b["teacher"].model.weight, a["teacher"].model.weight)
    x = torch.randn(2, 4, generator=generator)
    assert_close(b["teacher"](x), a["teacher"](x))
    # The default keeps them (a checkpoint restores the teacher too).
    assert "model.weight" in FrozenTeacher(nn.Linear(4, 3)).state_dict()


def test_teacher_bad_input() -> None:
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        FrozenTeacher(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"feature_fn output must have shape \(B, E\)"):
        FrozenTeacher(nn.Identity())(torch.randn(2, 3, 4))


# ---------------------------------------------------------------- two gloo processes


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return [r["ssmke"] for r in gloo_results()]


def test_bank_enqueue_across_two_ranks(results: list[dict[str, Any]]) -> None:
    steps, _, _, _, _ = ssmke_data()
    single = TeacherMemoryBank(SSMKE_BANK_SIZE, steps[0].shape[1], init="empty", dtype=F64)
    for batch in steps:
        single.enqueue(batch)
    for r, res in enumerate(results):
        assert torch.equal(res["bank"], single.bank), f"rank {r}"
        assert res["pointer"] == int(single.pointer)
        assert res["filled"] == len(single)


def test_gathered_teacher_loss_across_two_ranks(results: list[dict[str, Any]]) -> None:
    _, s_img, s_txt, teacher, bank = ssmke_data()
    s_img, s_txt = s_img.clone().requires_grad_(), s_txt.clone().requires_grad_()
    out = contrastive_distillation_loss(s_img, s_txt, teacher, bank, 4.0, return_details=True)
    out.loss.backward()
    assert s_img.grad is not None and s_txt.grad is not None
    world = len(SSMKE_SIZES)
    values = torch.stack([res["loss"] for res in results])
    assert_close(values.mean(), out.loss.detach())
    start = 0
    for r, res in enumerate(results):
        rows = slice(start, start + SSMKE_SIZES[r])
        # Per-rank values sum to W x the global loss, so DDP's average gives its gradient.
        assert_close(res["grad_image"], world * s_img.grad[rows], msg=f"rank {r}")
        assert_close(res["grad_text"], world * s_txt.grad[rows], msg=f"rank {r}")
        assert torch.equal(res["labels"], torch.arange(start, start + SSMKE_SIZES[r]))
        assert_close(res["local_loss"], contrastive_distillation_loss(
            s_img[rows], s_txt[rows], teacher[rows], bank, 4.0))  # fmt: skip
        assert_close(res["tiled"], res["loss"], msg="tiled path")
        # local_loss=False: the global loss on every rank; each rank's own rows get their
        # full gradient (the all-gather's backward sums every rank's copy of the loss).
        assert_close(res["global"], out.loss.detach(), msg="global loss on every rank")
        assert_close(res["grad_image_global"], world * s_img.grad[rows], msg=f"rank {r}")
        start += SSMKE_SIZES[r]


def test_frozen_teacher_inside_ddp(results: list[dict[str, Any]]) -> None:
    # DDP (find_unused_parameters=False) over a parent in train mode: the frozen teacher's
    # parameters are not registered (else the second step fails), its weights and BN
    # statistics stay put, its targets are deterministic, and the students stay in sync.
    for r, res in enumerate(results):
        assert res["ddp_teacher_unchanged"] and res["ddp_targets_equal"], f"rank {r}"
        assert res["ddp_teacher_eval"], f"rank {r}"
    assert torch.equal(results[0]["ddp_student"], results[1]["ddp_student"])


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_contrastive_distillation_tiled_matches_dense(chunk_size: int) -> None:
    # The tiled path never forms the (B, B + G) logits: same value and gradients.
    g = torch.Generator().manual_seed(5)
    s_img, s_txt, teacher = (torch.randn(5, 4, generator=g, dtype=F64) for _ in range(3))
    bank = F.normalize(torch.randn(7, 4, generator=g, dtype=F64), dim=-1)
    inputs = (s_img.requires_grad_(), s_txt.requires_grad_(), teacher.requires_grad_())
    scale = torch.tensor(6.0, dtype=F64, requires_grad=True)
    dense = contrastive_distillation_loss(*inputs, bank, scale)
    tiled = contrastive_distillation_loss(
        *inputs, bank, scale, chunk_size=chunk_size, backend="torch"
    )
    assert_close(tiled, dense)
    wrt = (*inputs, scale)
    for a, b in zip(torch.autograd.grad(tiled, wrt), torch.autograd.grad(dense, wrt)):
        assert_close(a, b)
    with pytest.raises(ValueError, match="return_details=True needs the logits"):
        contrastive_distillation_loss(*inputs, bank, scale, chunk_size=2, return_details=True)


@pytest.mark.parametrize("local_targets", [torch.ones(3, dtype=torch.bool), torch.ones(0), 1, None])
def test_distillation_non_bool_local_targets_named(local_targets: object) -> None:
    # Issue 17 fuzz finding: a tensor local_targets reached a truth test (RuntimeError).
    s = torch.randn(3, 4, dtype=F64)
    with pytest.raises(TypeError, match=r"\blocal_targets\b"):
        contrastive_distillation_loss(s, s, s, None, 10.0, local_targets=local_targets)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"\blocal_targets\b"):
        ContrastiveDistillationLoss(4, 4, local_targets=local_targets)(s, s, s)  # type: ignore[arg-type]


def test_distillation_module_bank_args_named() -> None:
    # Issue 17 fuzz findings: errors named the bank's own arguments (size, init) or none.
    with pytest.raises(TypeError, match=r"\bbank_size\b"):
        ContrastiveDistillationLoss(bank_size="x", dim=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\bbank_size\b"):
        ContrastiveDistillationLoss(bank_size=0, dim=4)
    with pytest.raises(ValueError, match=r"\bbank_init\b"):
        ContrastiveDistillationLoss(4, 4, bank_init=None)  # type: ignore[arg-type]
    for generator in ([1], nn.Linear(2, 2), 3):
        with pytest.raises(TypeError, match=r"\bgenerator\b"):
            ContrastiveDistillationLoss(4, 4, generator=generator)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"\bgenerator\b"):
            TeacherMemoryBank(4, 4, generator=generator)  # type: ignore[arg-type]
    seeded = [
        TeacherMemoryBank(4, 3, generator=torch.Generator().manual_seed(0)).bank for _ in range(2)
    ]
    assert torch.equal(*seeded)
