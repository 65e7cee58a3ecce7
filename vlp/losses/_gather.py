"""The one distributed gather of the losses: batch sizes once, then each tensor once.

Every loss that needs the global batch (CLIP, SigLIP, NegCLIP, COSMOS, contrastive
distillation) starts a :class:`Gather` on its first feature tensor and then asks it for
the global version of each tensor it needs. Without a process group (or with one rank)
everything is the identity and costs nothing.

Semantics shared by every loss (open_clip's ``gather_features``):

- ``with_grad=True``: the rows of every rank carry gradient back to their rank
  (:func:`~vlp.distributed.all_gather_with_grad`).
- ``with_grad=False``: other ranks' rows are constants; with ``keep_local=True`` this rank's
  own rows (and their autograd history) are put back into their slot.
- Shared scalars (a learnable scale or bias) go through :meth:`Gather.shared`, whose
  backward averages the gradient over the group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch

from vlp.distributed import (
    Fact,
    ProcessGroup,
    RankAgreementError,
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
)

__all__ = ["Gather", "allow_empty", "start_gather", "validated"]


class Gather(NamedTuple):
    """Where this rank's rows sit in the global batch, and how to gather more tensors.

    Attributes:
        group: the process group (``None``: the default group, if any).
        world: number of ranks ``W`` (1 without a process group).
        rank: this rank.
        sizes: rows held by each rank, in rank order.
        offset: index of this rank's first row in the global batch.
    """

    group: ProcessGroup | None
    world: int
    rank: int
    sizes: list[int]
    offset: int

    @property
    def rows(self) -> int:
        """Rows held by this rank."""
        return self.sizes[self.rank]

    @property
    def total(self) -> int:
        """Rows of the global batch, ``M = sum(sizes)``."""
        return sum(self.sizes)

    def everyone(
        self, tensor: torch.Tensor, *, with_grad: bool, keep_local: bool = False
    ) -> torch.Tensor:
        """``(M, *)``: ``tensor`` of every rank along dim 0, rank 0's rows first.

        ``tensor`` must hold this rank's rows along dim 0. A bool tensor is sent as
        ``uint8`` (not every backend gathers bools) and comes back as bool.
        """
        if self.world == 1:
            return tensor
        if with_grad:
            return all_gather_with_grad(tensor, self.group, sizes=self.sizes)
        if tensor.dtype == torch.bool:
            sent = all_gather_no_grad(tensor.to(torch.uint8), self.group, sizes=self.sizes)
            return sent.bool()
        out = all_gather_no_grad(tensor, self.group, sizes=self.sizes)
        if keep_local:
            out = torch.cat([out[: self.offset], tensor, out[self.offset + self.rows :]])
        return out

    def shared(self, scalar: torch.Tensor) -> torch.Tensor:
        """``scalar`` unchanged in the forward; its gradient averaged over the group."""
        if self.world == 1:
            return scalar
        return average_gradient(scalar, self.group)


def start_gather(
    like: torch.Tensor,
    group: ProcessGroup | None,
    *,
    facts: Mapping[str, Fact] | None = None,
    caller: str = "",
) -> Gather:
    """Exchange the batch sizes once (one small collective under a process group).

    The same exchange checks that the ranks agree (dtype and trailing dims of ``like``,
    the ``facts``, the ``caller``) and that no rank rejected its input (see
    [`validated`][vlp.losses._gather.validated]); a disagreement raises the same
    ``RankAgreementError`` (a ``ValueError``) on every rank. A rank may hold 0 rows; if
    every rank does, every rank raises.

    Args:
        like: a tensor holding this rank's rows along dim 0.
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone.
        facts: named values that must be equal on every rank (presence of optional
            tensors, numbers of negatives, whether a scale requires grad, ...).
        caller: the loss's name, for messages.
    """
    world = get_world_size(group)
    if world == 1:
        return Gather(group, 1, 0, [like.shape[0]], 0)
    rank = get_rank(group)
    sizes = all_gather_sizes(like, group, facts=facts, caller=caller)
    if sum(sizes) == 0:
        raise RankAgreementError(
            f"{caller + ': ' if caller else ''}every rank's batch is empty (0 rows on each "
            f"of the {world} ranks); at least one rank must hold a row"
        )
    return Gather(group, world, rank, sizes, sum(sizes[:rank]))


@contextlib.contextmanager
def validated(group: ProcessGroup | None, caller: str) -> Iterator[None]:
    """Run a loss's input checks so that a rejection reaches every rank, never a hang.

    Without a process group an error raised inside the block propagates as is. Under
    one, the rejecting rank first takes part in the size exchange with its failure
    flag set (the other ranks reach the same exchange in `start_gather`), so every rank
    raises the same ``RankAgreementError`` naming the rank and its message.
    """
    try:
        yield
    except RankAgreementError:
        raise  # already raised on every rank
    except (TypeError, ValueError) as err:
        if get_world_size(group) > 1:
            all_gather_sizes(None, group, failure=err, caller=caller)  # type: ignore[arg-type]
        raise


def allow_empty(group: ProcessGroup | None) -> bool:
    """Whether a rank may hold 0 rows: under a process group of several ranks."""
    return get_world_size(group) > 1
