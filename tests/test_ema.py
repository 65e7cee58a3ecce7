"""EMA teacher: the update formula, the before-the-step order of the reference (spec 11.5),
the cosine momentum ramp, freezing, and bad input.

Honours ``VLP_TEST_DEVICE``: the networks are built (seeded) on the CPU and moved to the test
device, and inputs are drawn on the CPU and moved; ``test_bad_input`` checks argument
validation only and stays on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests._device import DEVICE, dev
from vlp.heads import EMATeacher, cosine_momentum, ema_update
from vlp.testing import assert_close

F64 = torch.float64


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4, dtype=F64)
        self.frozen = nn.Parameter(torch.zeros(2, dtype=F64), requires_grad=False)
        self.norm = nn.BatchNorm1d(4, dtype=F64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.a(x))


def net() -> Net:
    """A ``Net`` initialised from the global seed on the CPU, on the test device."""
    return Net().to(DEVICE)


def test_cosine_momentum_spec_values() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99, abs=1e-15)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995, abs=1e-15)
    assert cosine_momentum(100, 100, 0.99) == 1.0
    values = [cosine_momentum(t, 10, 0.9) for t in range(11)]
    assert values == sorted(values)


def test_update_formula_every_parameter_no_buffers() -> None:
    torch.manual_seed(0)
    student, teacher = net(), net()
    with torch.no_grad():
        student.frozen.fill_(2.0)
        student.norm.running_mean.fill_(5.0)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.9)
    for name, p in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        assert_close(p, expected, rtol=1e-15, atol=1e-15, msg=name)
    assert torch.equal(
        teacher.norm.running_mean, torch.zeros(4, dtype=F64, device=DEVICE)
    )  # buffers untouched
    ema_update(teacher, student, 0.0)  # momentum 0 copies the student
    for (_, p), (_, q) in zip(teacher.named_parameters(), student.named_parameters()):
        assert torch.equal(p, q)


def test_reference_order_updates_before_the_optimizer_step() -> None:
    # Spec 11.5 "EMA": m=0.999, teacher 1, student 0 before the step and -5 after it.
    student = nn.Linear(1, 1, bias=False, dtype=F64, device=DEVICE)
    with torch.no_grad():
        student.weight.fill_(1.0)
    teacher = EMATeacher(student, momentum=0.999)
    with torch.no_grad():
        student.weight.fill_(0.0)
    optimizer = torch.optim.SGD(student.parameters(), lr=5.0)
    (student(torch.ones(1, 1, dtype=F64, device=DEVICE)).sum()).backward()  # gradient 1: step to -5
    assert teacher.update(student) == 0.999  # before optimizer.step(), as the reference
    optimizer.step()
    assert student.weight.item() == -5.0
    assert float(teacher.module.weight) == pytest.approx(0.999, abs=1e-15)
    late = EMATeacher(nn.Linear(1, 1, bias=False, dtype=F64, device=DEVICE))
    with torch.no_grad():
        late.module.weight.fill_(1.0)
    late.update(student)  # after the step: the variant the reference does not use
    assert float(late.module.weight) == pytest.approx(0.994, abs=1e-15)


def test_teacher_is_a_frozen_copy_in_eval_mode() -> None:
    torch.manual_seed(0)
    student = net()
    teacher = EMATeacher(student, momentum=0.5, total_steps=10)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(
        p.data_ptr() != q.data_ptr() for p, q in zip(teacher.parameters(), student.parameters())
    )
    teacher.train()
    assert not teacher.module.training and teacher.training
    x = dev(torch.randn(5, 3, dtype=F64))
    out = teacher(x)
    assert not out.requires_grad
    assert_close(out, student.eval()(x), rtol=0, atol=0)
    # Cosine schedule: step 5 of 10 from 0.5 gives 0.75.
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = teacher.module.a.weight.clone()
    assert teacher.update(student, step=5) == pytest.approx(0.75)
    assert_close(teacher.module.a.weight, 0.75 * before + 0.25 * student.a.weight, rtol=1e-15)
    with pytest.raises(ValueError, match="step is required"):
        teacher.update(student)


def test_bad_input() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 3)
    with pytest.raises(ValueError, match="parameter 0 differs"):
        ema_update(a, b, 0.9)
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(a, nn.Linear(2, 2, bias=False), 0.9)
    with pytest.raises(ValueError, match=r"momentum must be .* in \[0.0, 1.0\], got 1.5"):
        ema_update(a, a, 1.5)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        ema_update([a], a, 0.9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps must be an int >= 1"):
        cosine_momentum(0, 0, 0.9)
    with pytest.raises(ValueError, match=r"step must lie in \[0, total_steps=10\], got 11"):
        cosine_momentum(11, 10, 0.9)
    with pytest.raises(TypeError, match="step must be an int"):
        cosine_momentum(1.0, 10, 0.9)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="student must be an nn.Module"):
        EMATeacher("model")  # type: ignore[arg-type]


def test_copy_buffers_keeps_a_batchnorm_teacher_in_step() -> None:
    torch.manual_seed(0)
    student = net()
    default, copying = (
        EMATeacher(student, momentum=0.9),
        EMATeacher(student, momentum=0.9, copy_buffers=True),
    )
    student.train()
    student(dev(3.0 + torch.randn(16, 3, dtype=F64)))  # moves the BatchNorm running statistics
    default.update(student)
    copying.update(student)
    for name, buf in copying.module.named_buffers():
        assert torch.equal(buf, dict(student.named_buffers())[name]), name
    assert torch.equal(default.module.norm.running_mean, torch.zeros(4, dtype=F64, device=DEVICE))
    assert int(default.module.norm.num_batches_tracked) == 0
    # Parameters follow the EMA in both.
    for a, b in zip(default.parameters(), copying.parameters()):
        assert torch.equal(a, b)
    # The eval-mode teacher then normalises with the student's statistics.
    x = dev(torch.randn(5, 3, dtype=F64))
    with torch.no_grad():
        for t, s in zip(copying.module.parameters(), student.parameters()):
            t.copy_(s)
    assert_close(copying(x), student.eval()(x), rtol=0, atol=0)
    tracked = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    untracked = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="same buffers"):
        ema_update(tracked, untracked, 0.9, copy_buffers=True)
    with pytest.raises(TypeError, match="copy_buffers must be a bool"):
        ema_update(student, student, 0.9, copy_buffers=1)  # type: ignore[arg-type]
