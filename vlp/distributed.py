"""Rank/world helpers and all-gathers that work with or without a process group.

Every function takes an explicit ``group`` (``None`` means the default group). When
``torch.distributed`` is unavailable or no process group is initialised, the
helpers behave as a world of one: rank 0, world size 1, and the gathers return
their input unchanged.

``all_gather_with_grad`` accepts a different batch size on every rank: it first
gathers the sizes, pads each rank's tensor to the largest, gathers, and trims. Its
backward all-reduces (sums) the gradient of the gathered tensor over the group and
returns the rows that belong to this rank, which is the exact gradient of the sum
of all ranks' losses with respect to this rank's input. Under DDP, which averages
parameter gradients over ranks, a loss built on it reproduces single-process
training when the per-rank losses sum to ``world_size`` times the global loss (see
``docs/losses.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from vlp._checks import check_tensor

__all__ = [
    "all_gather_no_grad",
    "all_gather_sizes",
    "all_gather_with_grad",
    "average_gradient",
    "get_rank",
    "get_world_size",
    "is_distributed",
]

ProcessGroup = Any  # torch.distributed.ProcessGroup; kept loose so type-checking never needs dist


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank(group: ProcessGroup | None = None) -> int:
    """Rank of this process within ``group``, or 0 when no process group is initialised.

    Args:
        group: the process group; ``None`` means the default group.

    Returns:
        The rank in ``[0, get_world_size(group))``.
    """
    if not _initialized():
        return 0
    return int(dist.get_rank(group))


def get_world_size(group: ProcessGroup | None = None) -> int:
    """Number of processes in ``group``, or 1 when no process group is initialised.

    Args:
        group: the process group; ``None`` means the default group.

    Returns:
        The world size (at least 1).
    """
    if not _initialized():
        return 1
    return int(dist.get_world_size(group))


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """Whether ``group`` spans more than one process (``False`` without a process group).

    Args:
        group: the process group; ``None`` means the default group.
    """
    return get_world_size(group) > 1


def all_gather_sizes(tensor: torch.Tensor, group: ProcessGroup | None = None) -> list[int]:
    """Gather the size of dim 0 of ``tensor`` from every rank of ``group``.

    This is one small collective and a host synchronisation.

    Args:
        tensor: a tensor of shape ``(n_r, *)`` on this rank.
        group: the process group; ``None`` means the default group.

    Returns:
        ``[n_0, ..., n_{W-1}]`` in rank order; ``[tensor.shape[0]]`` without a group.
    """
    _check_gatherable(tensor)
    world = get_world_size(group)
    if world == 1:
        return [tensor.shape[0]]
    local = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(sizes, local, group=group)
    return [int(s) for s in torch.cat(sizes).tolist()]


def _check_gatherable(tensor: torch.Tensor) -> None:
    check_tensor("tensor", tensor)
    if tensor.dim() == 0:
        raise ValueError(
            "tensor must have at least 1 dim (gathered along dim 0), got a 0-dim tensor"
        )


def _resolve_sizes(
    tensor: torch.Tensor, sizes: Sequence[int] | None, group: ProcessGroup | None
) -> list[int]:
    if sizes is None:
        return all_gather_sizes(tensor, group)
    sizes = [int(s) for s in sizes]
    world, rank = get_world_size(group), get_rank(group)
    if len(sizes) != world:
        raise ValueError(f"sizes must have one entry per rank ({world}), got {len(sizes)}")
    if sizes[rank] != tensor.shape[0]:
        raise ValueError(
            f"sizes[{rank}] must equal this rank's tensor.shape[0] = {tensor.shape[0]}, "
            f"got {sizes[rank]}"
        )
    return sizes


def _gather(tensor: torch.Tensor, sizes: list[int], group: ProcessGroup | None) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, padding to the largest size."""
    tensor = tensor.contiguous()
    largest = max(sizes)
    if tensor.shape[0] < largest:
        pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor, group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, tensor: torch.Tensor, sizes: list[int], group: ProcessGroup | None
    ) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.group = group
        ctx.rank = get_rank(group)
        return _gather(tensor, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # Every rank holds the gradient of its own loss w.r.t. the whole gathered
        # tensor; the gradient of the summed loss w.r.t. this rank's rows is the
        # sum over ranks of the rows that came from here.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def all_gather_with_grad(
    tensor: torch.Tensor,
    group: ProcessGroup | None = None,
    *,
    sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, with gradient to every rank.

    Ranks may hold different batch sizes. The backward sums the incoming gradient
    over the group (one all-reduce) and hands each rank the rows it contributed, so
    ``tensor.grad`` is the gradient of the **sum** of all ranks' losses with respect
    to this rank's ``tensor``. Every rank of ``group`` must call it (and run the
    backward) in the same order.

    Reference: the gradient-carrying gather used for the global batch in CLIP
    training (Radford et al., 2021; Cherti et al., 2023, open_clip).

    Args:
        tensor: shape ``(n_r, *)``, any dtype; ``n_r`` may differ between ranks,
            the trailing dims and the dtype may not.
        group: the process group; ``None`` means the default group.
        sizes: the list ``[n_0, ..., n_{W-1}]`` if the caller already knows it;
            ``None`` gathers it (one small collective and a host synchronisation).

    Returns:
        Shape ``(sum(n_r), *)``, rank 0's rows first. Without a process group (or
        with world size 1) ``tensor`` itself is returned.

    Raises:
        TypeError: if ``tensor`` is not a tensor.
        ValueError: if ``tensor`` is 0-dim or ``sizes`` disagrees with the group.
    """
    _check_gatherable(tensor)
    if not is_distributed(group):
        return tensor
    resolved = _resolve_sizes(tensor, sizes, group)
    out: torch.Tensor = _AllGatherWithGrad.apply(tensor, resolved, group)  # type: ignore[no-untyped-call]
    return out


def all_gather_no_grad(
    tensor: torch.Tensor,
    group: ProcessGroup | None = None,
    *,
    sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, detached from autograd.

    Args:
        tensor: shape ``(n_r, *)``; ``n_r`` may differ between ranks.
        group: the process group; ``None`` means the default group.
        sizes: ``[n_0, ..., n_{W-1}]`` if known, else gathered.

    Returns:
        Shape ``(sum(n_r), *)``, detached. Without a process group, ``tensor.detach()``.

    Raises:
        TypeError: if ``tensor`` is not a tensor.
        ValueError: if ``tensor`` is 0-dim or ``sizes`` disagrees with the group.
    """
    _check_gatherable(tensor)
    if not is_distributed(group):
        return tensor.detach()
    resolved = _resolve_sizes(tensor, sizes, group)
    with torch.no_grad():
        return _gather(tensor.detach(), resolved, group)


class _AverageGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad / get_world_size(ctx.group), None


def average_gradient(tensor: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """Identity in the forward; the backward averages the gradient over ``group``.

    Losses use it on shared scalars (a learnable temperature or bias) that every
    rank holds identically: whether or not the parameter is also averaged by DDP
    (averaging equal values changes nothing), each rank ends up with the gradient of
    the global loss. Every rank must call it and run the backward.

    Args:
        tensor: any shape; typically a scalar parameter.
        group: the process group; ``None`` means the default group.

    Returns:
        ``tensor`` (a view). Without a process group, ``tensor`` itself.
    """
    check_tensor("tensor", tensor)
    if not is_distributed(group) or not tensor.requires_grad:
        return tensor
    out: torch.Tensor = _AverageGradient.apply(tensor, group)  # type: ignore[no-untyped-call]
    return out
