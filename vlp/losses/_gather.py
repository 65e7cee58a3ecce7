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

from typing import NamedTuple

import torch

from vlp.distributed import (
    ProcessGroup,
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
)

__all__ = ["Gather", "start_gather"]


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


def start_gather(like: torch.Tensor, group: ProcessGroup | None) -> Gather:
    """Exchange the batch sizes once (one small collective under a process group).

    Args:
        like: a tensor holding this rank's rows along dim 0.
        group: process group; ``None`` means the default group if one is initialised.
    """
    world = get_world_size(group)
    if world == 1:
        return Gather(group, 1, 0, [like.shape[0]], 0)
    rank = get_rank(group)
    sizes = all_gather_sizes(like, group)
    return Gather(group, world, rank, sizes, sum(sizes[:rank]))
