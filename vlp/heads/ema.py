"""Exponential-moving-average teachers (mean teacher / DINO / COSMOS).

COSMOS (Kim et al., CVPR 2025) keeps an EMA copy of the whole student,
``theta_t <- m * theta_t + (1 - m) * theta_s`` over every parameter, with a fixed momentum
(0.999 at a 1k batch, 0.99 at 4k) or DINO's cosine ramp to 1.

**When to update.** The COSMOS reference calls the update after ``loss.backward()`` and
*before* ``optimizer.step()``, so the teacher averages the student weights of the start of
the step (a one-step lag behind the usual "EMA after the step"). For parity, call
``ema_update`` / ``EMATeacher.update`` between ``backward()`` and ``step()``; calling it
after the step is the common alternative (timm, DINO) and differs only by that lag.

**FSDP2.** A student sharded with ``torch.distributed.fsdp.fully_shard`` holds ``DTensor``
shards. Build the teacher *before* sharding the student (FSDP modules cannot be
deep-copied), then either shard the teacher the same way (``fully_shard(teacher.module,
reshard_after_forward=True)``: each rank keeps and updates only its shard, no
communication) or leave it whole on every rank (each update all-gathers the student's
parameters). See ``docs/distributed.md``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vlp._checks import check_bool, check_float, check_int, check_state_dict

__all__ = ["EMATeacher", "cosine_momentum", "ema_update"]


def _check_momentum(name: str, value: object) -> float:
    return check_float(name, value, low=0.0, high=1.0)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    r"""DINO's cosine momentum ramp from ``base`` at step 0 to 1 at ``total_steps``.

    $$m(t) = 1 + \tfrac12\big(1 + \cos(\pi t / T)\big)(m_0 - 1),$$

    so ``m(0) = base``, ``m(T/2) = (1 + base) / 2`` and ``m(T) = 1``, with no warm-up
    (Caron et al., ICCV 2021, section 3.1; used by COSMOS without ``--fix-momentum``).

    Args:
        step: current step, ``0 <= step <= total_steps``.
        total_steps: length ``T`` of the schedule, ``> 0``.
        base: momentum ``m_0`` at step 0, in ``[0, 1]``.

    Returns:
        The momentum, a float in ``[base, 1]``.

    Raises:
        TypeError: non-integer steps or a non-float base.
        ValueError: ``total_steps <= 0``, ``step`` outside ``[0, total_steps]`` or ``base``
            outside ``[0, 1]``.
    """
    check_int("step", step)
    check_int("total_steps", total_steps, low=1)
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must lie in [0, total_steps={total_steps}], got {step}")
    base = _check_momentum("base", base)
    return 1.0 + 0.5 * (1.0 + math.cos(math.pi * step / total_steps)) * (base - 1.0)


def _pairs(teacher: nn.Module, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    for name, module in (("teacher", teacher), ("student", student)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
    t_params: list[torch.Tensor] = list(teacher.parameters())
    s_params: list[torch.Tensor] = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(
            f"teacher and student must have the same parameters, got {len(t_params)} and "
            f"{len(s_params)} parameter tensors"
        )
    for index, (t, s) in enumerate(zip(t_params, s_params)):
        if t.shape != s.shape or t.dtype != s.dtype or t.device != s.device:
            raise ValueError(
                f"parameter {index} differs between teacher and student: teacher "
                f"{tuple(t.shape)} {t.dtype} on {t.device}, student {tuple(s.shape)} {s.dtype} "
                f"on {s.device}"
            )
    return t_params, s_params


def _buffer_pairs(
    teacher: nn.Module, student: nn.Module
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    t_bufs: list[torch.Tensor] = list(teacher.buffers())
    s_bufs: list[torch.Tensor] = list(student.buffers())
    if len(t_bufs) != len(s_bufs):
        raise ValueError(
            f"teacher and student must have the same buffers, got {len(t_bufs)} and "
            f"{len(s_bufs)} buffer tensors"
        )
    for index, (t, s) in enumerate(zip(t_bufs, s_bufs)):
        if t.shape != s.shape:
            raise ValueError(
                f"buffer {index} differs between teacher and student: teacher "
                f"{tuple(t.shape)}, student {tuple(s.shape)}"
            )
    return t_bufs, s_bufs


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, momentum: float, *, copy_buffers: bool = False
) -> None:
    r"""In place, ``teacher <- momentum * teacher + (1 - momentum) * student`` for every parameter.

    Parameters are paired in ``parameters()`` order, as the COSMOS reference implementation
    does (Kim et al., CVPR 2025), frozen ones included; buffers are left alone unless
    ``copy_buffers`` (the reference's ViTs have none that change). One
    ``torch._foreach_lerp_`` over all tensors of a (device, dtype) group: a single
    memory-bound pass. A student wrapped in ``DistributedDataParallel`` (or compiled) works,
    since only the order of parameters matters. See the module note on calling it before
    or after ``optimizer.step()``.

    Args:
        teacher: the EMA module (updated in place).
        student: a module with the same parameters (shape, dtype, device) in the same order.
        momentum: ``m`` in ``[0, 1]``: 1 keeps the teacher, 0 copies the student.
        copy_buffers: also copy every buffer of the student into the teacher (paired in
            ``buffers()`` order), as timm's EMA does by default: needed for BatchNorm
            models, whose eval-mode teacher would otherwise keep the running statistics
            of the moment it was copied.

    Raises:
        TypeError: non-module arguments, a non-float momentum or a non-bool
            ``copy_buffers``.
        ValueError: mismatched parameters (or buffers), or momentum outside ``[0, 1]``.
    """
    momentum = _check_momentum("momentum", momentum)
    check_bool("copy_buffers", copy_buffers)
    t_params, s_params = _pairs(teacher, student)
    if copy_buffers:
        for t, s in zip(*_buffer_pairs(teacher, student)):
            t.copy_(s)
    if not t_params:
        return
    t_params, s_params = _local_pairs(teacher, student, t_params, s_params)
    # lerp(t, s, w) = t + w (s - t) = (1 - w) t + w s with w = 1 - m.
    torch._foreach_lerp_(t_params, [s.detach() for s in s_params], 1.0 - momentum)


def _dtensor_type() -> type | None:
    if not dist.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def _fsdp_module_type() -> type | None:
    if not dist.is_available():
        return None
    from torch.distributed.fsdp import FSDPModule

    return FSDPModule


def _local_pairs(
    teacher: nn.Module,
    student: nn.Module,
    t_params: list[torch.Tensor],
    s_params: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Plain tensors to lerp: local shards of sharded pairs, a whole student otherwise.

    FSDP2 (``fully_shard``) keeps parameters as ``DTensor`` shards. A sharded teacher of
    a sharded student updates its local shard from the student's (no communication); a
    whole teacher of a sharded student all-gathers the student's parameter (every rank
    must call the update).
    """
    dtensor = _dtensor_type()
    if dtensor is None or not any(isinstance(p, dtensor) for p in (*t_params, *s_params)):
        return t_params, s_params
    fsdp_module = _fsdp_module_type()
    if fsdp_module is not None:
        # A sharded root may still hold gathered parameters after a forward (FSDP2
        # keeps the root unsharded by default): update the shards, not those.
        sharded: list[Any] = [
            m for m in (*teacher.modules(), *student.modules()) if isinstance(m, fsdp_module)
        ]
        for module in sharded:
            module.reshard()
        t_params, s_params = list(teacher.parameters()), list(student.parameters())
    out_t: list[torch.Tensor] = []
    out_s: list[torch.Tensor] = []
    pairs: list[tuple[Any, Any]] = list(zip(t_params, s_params))  # DTensor attributes below
    for index, (t, s) in enumerate(pairs):
        t_sharded, s_sharded = isinstance(t, dtensor), isinstance(s, dtensor)
        if t_sharded and s_sharded:
            if t.placements != s.placements or t.device_mesh != s.device_mesh:
                raise ValueError(
                    f"parameter {index} is sharded differently in teacher and student: "
                    f"teacher {t.placements} on {t.device_mesh}, student {s.placements} on "
                    f"{s.device_mesh}; shard both with the same fully_shard arguments"
                )
            out_t.append(t.to_local())
            out_s.append(s.to_local())
        elif s_sharded:
            out_t.append(t)
            out_s.append(s.full_tensor())
        elif t_sharded:
            raise ValueError(
                f"parameter {index} is sharded in the teacher but not in the student; "
                "shard the student too, or keep the teacher whole"
            )
        else:
            out_t.append(t)
            out_s.append(s)
    return out_t, out_s


class EMATeacher(nn.Module):
    """An EMA copy of a student model, frozen, evaluated without gradients.

    ``EMATeacher(student)`` deep-copies the student (do it before wrapping the student in
    DDP, as the COSMOS reference does), freezes the copy and keeps it in eval mode.
    ``update(student, step)`` applies [`ema_update`][vlp.heads.ema.ema_update] with a fixed
    momentum, or with [`cosine_momentum`][vlp.heads.ema.cosine_momentum] when
    ``total_steps`` is given. Calling the teacher runs the copy under ``torch.no_grad()``;
    reach its other methods through ``teacher.module`` (e.g.
    ``teacher.module.encode_image(x)`` inside ``torch.no_grad()``).
    COSMOS momentum: 0.999 (1k batch) or 0.99 (4k batch), fixed, updated before
    ``optimizer.step()`` (see the module note).

    Args:
        student: the model to copy.
        momentum: fixed momentum, or the base of the cosine ramp.
        total_steps: if given, ``update`` follows ``cosine_momentum(step, total_steps,
            momentum)`` and needs ``step``.
        copy_buffers: ``update`` also copies the student's buffers (see
            [`ema_update`][vlp.heads.ema.ema_update]); set it for models with BatchNorm,
            since the teacher runs in eval mode on its own running statistics.

    Example:
        >>> student = nn.Linear(4, 2)
        >>> teacher = EMATeacher(student, momentum=0.99)
        >>> loss = student(torch.randn(3, 4)).sum()
        >>> loss.backward()
        >>> teacher.update(student)  # before optimizer.step(), as COSMOS; returns m
        0.99
        >>> teacher(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        student: nn.Module,
        momentum: float = 0.999,
        *,
        total_steps: int | None = None,
        copy_buffers: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        self.momentum = _check_momentum("momentum", momentum)
        if total_steps is not None:
            cosine_momentum(0, total_steps, self.momentum)  # validates total_steps
        self.total_steps = total_steps
        self.copy_buffers = check_bool("copy_buffers", copy_buffers)
        fsdp_module = _fsdp_module_type()
        if fsdp_module is not None and any(isinstance(m, fsdp_module) for m in student.modules()):
            raise ValueError(
                "student is already sharded with fully_shard, which cannot be deep-copied: "
                "build the EMATeacher before fully_shard(student), then shard "
                "teacher.module the same way (or keep it whole); see docs/distributed.md"
            )
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()

    def momentum_at(self, step: int | None = None) -> float:
        """The momentum ``update`` uses at ``step`` (fixed unless ``total_steps`` was given)."""
        if self.total_steps is None:
            return self.momentum
        if step is None:
            raise ValueError("step is required when the momentum follows a cosine schedule")
        return cosine_momentum(step, self.total_steps, self.momentum)

    def update(self, student: nn.Module, step: int | None = None) -> float:
        """EMA-update the teacher from ``student``; returns the momentum used.

        Args:
            student: the trained model (same parameters as the copy, DDP wrapper allowed).
            step: current step, needed with a cosine schedule.
        """
        momentum = self.momentum_at(step)
        ema_update(self.module, student, momentum, copy_buffers=self.copy_buffers)
        return momentum

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher copy under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMATeacher:
        """Keep the teacher copy in eval mode whatever ``mode`` is (it never trains)."""
        super().train(mode)
        self.module.eval()
        return self

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a checkpoint; one with a missing, unexpected or misshapen entry changes nothing.

        The teacher's weights are its whole state (the momentum schedule reads the
        ``step`` you pass), so a resumed run's teacher equals the uninterrupted one's.
        """
        own = self.state_dict(keep_vars=True)
        check_state_dict(type(self).__name__, own, state_dict, strict=strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        """Show the momentum configuration."""
        return (
            f"momentum={self.momentum}, total_steps={self.total_steps}, "
            f"copy_buffers={self.copy_buffers}"
        )
