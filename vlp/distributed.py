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

**Agreement between ranks.** The size exchange that precedes every gather also carries,
in the same small tensor, each rank's trailing shape and dtype, the facts a caller asks
to be compared (the presence of optional tensors, a number of negatives, whether a scale
requires grad, ...) and whether this rank's input failed validation. Every rank then sees
the same table and raises the same clear ``ValueError`` when the ranks disagree or one of
them rejected its input, instead of crashing in the collective, returning garbage or
waiting for the other rank forever. No extra collective is issued unless something failed.

**Local-only.** ``group=False`` means "this rank alone": the world size is 1, the gathers
return their input, and a loss computes on this rank's rows even when a default process
group exists (validation on one rank, a single-process reference inside a job).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist

from vlp._checks import check_tensor

__all__ = [
    "LOCAL",
    "Fact",
    "RankAgreementError",
    "all_gather_no_grad",
    "all_gather_sizes",
    "all_gather_with_grad",
    "average_gradient",
    "get_rank",
    "get_world_size",
    "is_distributed",
]

ProcessGroup = Any  # torch.distributed.ProcessGroup; kept loose so type-checking never needs dist

#: ``group=LOCAL`` (that is, ``group=False``): compute on this rank's rows alone, even
#: when a default process group is initialised.
LOCAL = False


class RankAgreementError(ValueError):
    """Raised on every rank when the ranks' inputs disagree or one rank rejected its input."""


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _check_group(group: object) -> None:
    if group is True:
        raise TypeError("group must be a process group, None (default group) or False (local)")


def get_rank(group: ProcessGroup | None = None) -> int:
    """Rank of this process within ``group``, or 0 when no process group is initialised.

    Args:
        group: the process group; ``None`` means the default group, ``False`` this
            process alone (rank 0).

    Returns:
        The rank in ``[0, get_world_size(group))``.
    """
    _check_group(group)
    if group is False or not _initialized():
        return 0
    return int(dist.get_rank(group))


def get_world_size(group: ProcessGroup | None = None) -> int:
    """Number of processes in ``group``, or 1 when no process group is initialised.

    Args:
        group: the process group; ``None`` means the default group, ``False`` this
            process alone (world size 1).

    Returns:
        The world size (at least 1).
    """
    _check_group(group)
    if group is False or not _initialized():
        return 1
    return int(dist.get_world_size(group))


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """Whether ``group`` spans more than one process (``False`` without a process group).

    Args:
        group: the process group; ``None`` means the default group.
    """
    return get_world_size(group) > 1


Fact = bool | int | torch.dtype | None

# Fixed layout of the exchanged header (same length on every rank, whatever the call):
# [rows, failed, call tag, dtype, ndim, trailing dims (8 slots), facts (16 slots)].
_DIM_SLOTS = 8
_FACT_SLOTS = 16
_HEADER = 5 + _DIM_SLOTS + _FACT_SLOTS
_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
]  # fmt: skip
_ABSENT = -(2**62)  # encodes a fact of None ("not given")


def _encode_dtype(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else 1000 + zlib.crc32(str(dtype).encode())


def _encode_fact(value: Fact) -> int:
    if value is None:
        return _ABSENT
    if isinstance(value, torch.dtype):
        return _encode_dtype(value)
    return int(value)


def _describe(value: Fact, code: int) -> str:
    if code == _ABSENT:
        return "not given"
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, bool):
        return str(bool(code))
    return str(code)


def _trailing(tensor: torch.Tensor) -> list[int]:
    dims = list(tensor.shape[1:])
    if len(dims) > _DIM_SLOTS:  # fold the rest into the last slot
        dims = [*dims[: _DIM_SLOTS - 1], zlib.crc32(str(dims[_DIM_SLOTS - 1 :]).encode())]
    return dims + [-1] * (_DIM_SLOTS - len(dims))


def _exchange_device(tensor: object, group: ProcessGroup | None) -> torch.device:
    if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
        return tensor.device
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def all_gather_sizes(
    tensor: torch.Tensor,
    group: ProcessGroup | None = None,
    *,
    facts: Mapping[str, Fact] | None = None,
    failure: BaseException | None = None,
    caller: str = "",
) -> list[int]:
    """Gather the size of dim 0 of ``tensor`` from every rank, checking that the ranks agree.

    This is one small collective and a host synchronisation. The exchanged tensor also
    carries this rank's dtype and trailing shape, the ``facts`` and a flag for
    ``failure``, so every rank can check, without a further collective, that:

    - no rank rejected its input (``failure``): otherwise every rank raises (the rank
      that failed with its own message, gathered in one extra collective only then);
    - every rank calls the same ``caller`` with a tensor of the same dtype and the same
      trailing dims (only dim 0 may differ);
    - every fact (e.g. ``{"sample_ids": True, "scale requires grad": False}``) is equal.

    Args:
        tensor: a tensor of shape ``(n_r, *)`` on this rank (may be anything when
            ``failure`` is given).
        group: the process group; ``None`` means the default group, ``False`` this
            process alone.
        facts: at most 16 named values (bool, int, dtype, or ``None`` for "not given")
            that must be equal on every rank; the same names on every rank.
        failure: the exception this rank's input validation raised, if any. Without a
            group it is raised as is.
        caller: the name of the calling function, used in messages (and compared).

    Returns:
        ``[n_0, ..., n_{W-1}]`` in rank order; ``[tensor.shape[0]]`` without a group.

    Raises:
        RankAgreementError: (a ``ValueError``) on every rank, naming what differs and on
            which ranks, or which rank rejected its input and why.
    """
    if facts is not None and not isinstance(facts, Mapping):
        raise TypeError(f"facts must be a mapping of name to value, got {type(facts).__name__}")
    facts = dict(facts or {})
    for key, value in facts.items():
        if not isinstance(key, str):
            raise TypeError(f"facts must be keyed by str names, got {type(key).__name__}")
        if value is not None and not isinstance(value, (bool, int, torch.dtype)):
            raise TypeError(
                f"facts[{key!r}] must be a bool, int, torch.dtype or None, got "
                f"{type(value).__name__}"
            )
    if failure is not None and not isinstance(failure, BaseException):
        raise TypeError(f"failure must be an exception or None, got {type(failure).__name__}")
    if not isinstance(caller, str):
        raise TypeError(f"caller must be a str, got {type(caller).__name__}")
    if len(facts) > _FACT_SLOTS:
        raise ValueError(f"facts can hold at most {_FACT_SLOTS} entries, got {len(facts)}")
    world = get_world_size(group)
    if world == 1:
        if failure is not None:
            raise failure
        _check_gatherable(tensor)
        return [tensor.shape[0]]
    if failure is None:
        try:
            _check_gatherable(tensor)
        except (TypeError, ValueError) as err:
            failure = err
    header = [0] * _HEADER
    header[1] = int(failure is not None)
    header[2] = zlib.crc32(caller.encode())
    if failure is None:
        header[0] = tensor.shape[0]
        header[3] = _encode_dtype(tensor.dtype)
        header[4] = tensor.dim()
        header[5 : 5 + _DIM_SLOTS] = _trailing(tensor)
        codes = [_encode_fact(v) for v in facts.values()]
        header[5 + _DIM_SLOTS : 5 + _DIM_SLOTS + len(codes)] = codes
    device = _exchange_device(tensor, group)
    local = torch.tensor(header, dtype=torch.long, device=device)
    table = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(table, local, group=group)
    rows = torch.stack(table).cpu().tolist()
    where = f"{caller}: " if caller else ""

    failed = [r for r, row in enumerate(rows) if row[1]]
    if failed:
        messages: list[Any] = [None] * world
        mine = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(messages, mine, group=group)
        detail = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        rejected = RankAgreementError(f"{where}input rejected on {_ranks(failed)} ({detail})")
        raise rejected from failure

    problems = []

    def compare(what: str, column: list[int], describe: Any) -> None:
        if len(set(column)) > 1:
            by_value: dict[int, list[int]] = {}  # in the order of the first rank holding it
            for r, c in enumerate(column):
                by_value.setdefault(c, []).append(r)
            parts = [f"{_ranks(rs)} {describe(v)}" for v, rs in by_value.items()]
            problems.append(f"{what} differs: " + ", ".join(parts))

    if len({row[2] for row in rows}) > 1:
        raise RankAgreementError(
            "the ranks called different functions at the same collective (e.g. clip_loss "
            "on one rank and siglip_loss on another); every rank must make the same calls"
        )
    compare(
        "dtype",
        [row[3] for row in rows],
        lambda v: str(_DTYPES[v]).removeprefix("torch.") if 0 <= v < len(_DTYPES) else "other",
    )
    shapes = [(row[4], tuple(row[5 : 5 + _DIM_SLOTS])) for row in rows]

    def shape_text(r: int) -> str:
        ndim, dims = shapes[r]
        return "(n, " + ", ".join(str(d) for d in dims[: ndim - 1]) + ")"

    if len(set(shapes)) > 1:
        groups: dict[str, list[int]] = {}
        for r in range(world):
            groups.setdefault(shape_text(r), []).append(r)
        parts = [f"{_ranks(rs)} {text}" for text, rs in groups.items()]
        problems.append("shape (all dims but dim 0) differs: " + ", ".join(parts))
    for index, (name, value) in enumerate(facts.items()):
        column = [row[5 + _DIM_SLOTS + index] for row in rows]
        compare(name, column, lambda v, value=value: _describe(value, v))
    if problems:
        raise RankAgreementError(
            f"{where}the ranks disagree: " + "; ".join(problems) + " (every rank must pass "
            "the same kind of input; only the batch size may differ)"
        )
    return [row[0] for row in rows]


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
