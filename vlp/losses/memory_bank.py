"""A FIFO memory bank of past frozen-teacher embeddings: the negatives of S-SMKE's distillation."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import check_floating, check_int, check_shape
from vlp.distributed import ProcessGroup, all_gather_no_grad, all_gather_sizes, is_distributed

__all__ = ["TeacherMemoryBank"]


#: Most values a bank holds (size x dim): 2**31, 8 GiB in float32.
MAX_BANK_ELEMENTS = 2**31


def _check_size(name: str, value: object) -> int:
    return check_int(name, value, low=1)


class TeacherMemoryBank(nn.Module):
    """Ring buffer of the last ``size`` teacher embeddings (S-SMKE).

    Slot ``k mod size`` holds the ``k``-th embedding ever enqueued (counting every rank's
    rows, rank 0's first, at each call), so after enqueues totalling ``N`` rows the bank
    holds the last ``min(N, size)`` of them and ``pointer == N % size``. Any batch size
    works: a batch that crosses the end of the buffer wraps around, and a batch larger
    than the buffer leaves only its last ``size`` rows (the reference requires ``size`` to
    be a multiple of the global batch and crashes on one device). Because the teacher is
    frozen, old entries stay consistent with new ones: no momentum encoder is needed.

    The bank, the pointer and the fill count are buffers: saved in ``state_dict``, moved
    by ``.to()``, never parameters (so never in an optimiser) and never part of autograd.

    Args:
        size: ``G``, the number of embeddings kept (65,536 in S-SMKE).
        dim: ``D``, the embedding width.
        init: ``"random_unit"`` fills the bank with uniform [0, 1) rows L2-normalised
            (the reference: positive-orthant junk negatives until it has been overwritten
            once); ``"empty"`` starts with no valid entries, so the bank contributes no
            negatives until filled.
        generator: generator for the random init.
        device: device of the buffers.
        dtype: dtype of the bank (default: torch's default dtype).

    Example:
        >>> bank = TeacherMemoryBank(4, 2, init="empty")
        >>> bank.enqueue(torch.eye(2)[[0, 1, 0]])
        >>> len(bank), int(bank.pointer)
        (3, 3)
        >>> bank.enqueue(torch.eye(2)[[1, 1]])
        >>> len(bank), int(bank.pointer)
        (4, 1)
    """

    bank: torch.Tensor
    pointer: torch.Tensor
    filled: torch.Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        init: Literal["random_unit", "empty"] = "random_unit",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.size = _check_size("size", size)
        self.dim = _check_size("dim", dim)
        if size * dim > MAX_BANK_ELEMENTS:
            # S-SMKE's bank is 65,536 x 768 = 5e7; 10**12 rows would try to allocate terabytes.
            raise ValueError(
                f"size * dim must be at most {MAX_BANK_ELEMENTS} (2**31 values), got size={size}, "
                f"dim={dim}"
            )
        if init not in ("random_unit", "empty"):
            raise ValueError(f"init must be 'random_unit' or 'empty', got {init!r}")
        self.init = init
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if init == "random_unit":
            gen_device = generator.device if generator is not None else "cpu"
            rows = torch.rand(size, dim, generator=generator, device=gen_device, dtype=dtype)
            bank = F.normalize(rows, dim=-1).to(device)
            filled = size
        else:
            bank = torch.zeros(size, dim, device=device, dtype=dtype)
            filled = 0
        self.register_buffer("bank", bank)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("filled", torch.full((), filled, dtype=torch.long, device=device))
        # Host mirror of filled (the length negatives() returns), so that enqueue and
        # negatives never sync a device. The pointer lives only on the device: a host
        # mirror would make torch.compile specialise (and recompile) on every step's value.
        self._filled = filled

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # All or nothing: the buffers and their host mirrors must never disagree, so every
        # entry is checked (one host read of pointer and filled, per load) before any copy.
        own = {"bank": self.bank, "pointer": self.pointer, "filled": self.filled}
        counters = {}
        for name, buffer in own.items():
            value = state_dict.get(prefix + name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.shape != buffer.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                error_msgs.append(
                    f"{prefix}{name} must have shape {tuple(buffer.shape)}, got {shape}"
                )
                return
            if name != "bank":
                counters[name] = int(value)
        pointer = counters.get("pointer", int(self.pointer))
        filled = counters.get("filled", self._filled)
        if not (0 <= pointer < self.size and 0 <= filled <= self.size):
            error_msgs.append(
                f"loaded TeacherMemoryBank state is inconsistent: pointer={pointer}, "
                f"filled={filled} for size={self.size}"
            )
            return
        errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if len(error_msgs) == errors:
            self._filled = filled

    def __len__(self) -> int:
        """Number of valid entries: ``size`` once the bank has been filled."""
        return self._filled

    @torch.no_grad()
    def enqueue(
        self,
        embeddings: torch.Tensor,
        *,
        gather: bool = True,
        group: ProcessGroup | None = None,
    ) -> None:
        """Write a batch of teacher embeddings at the pointer, wrapping around.

        Args:
            embeddings: ``(b, D)`` floating teacher embeddings of this rank (stored as
                given, cast to the bank's dtype: pass unit rows). ``b`` may be any size,
                including 0 and more than ``size``, and may differ between ranks.
            gather: first gather the embeddings of every rank of ``group`` (rank order),
                so that every rank keeps the same bank. Every rank must then call it.
                Without a process group it changes nothing.
            group: process group; ``None`` means the default group, ``False`` this rank
                alone (no gather).

        Raises:
            ValueError: if ``embeddings`` is not ``(b, D)``.
            TypeError: if it is not a floating tensor.
        """
        if gather and is_distributed(group):
            # A rank whose embeddings are rejected tells the others in the size exchange,
            # so that every rank raises instead of waiting in the gather.
            caller = "TeacherMemoryBank.enqueue"
            try:
                check_shape("embeddings", embeddings, ("b", self.dim))
                check_floating("embeddings", embeddings)
            except (TypeError, ValueError) as err:
                all_gather_sizes(embeddings, group, failure=err, caller=caller)
                raise
            sizes = all_gather_sizes(embeddings, group, caller=caller)
            rows = all_gather_no_grad(embeddings, group, sizes=sizes)
        else:
            check_shape("embeddings", embeddings, ("b", self.dim))
            check_floating("embeddings", embeddings)
            rows = embeddings.detach()
        n = rows.shape[0]
        if n == 0:
            return
        rows = rows.to(device=self.bank.device, dtype=self.bank.dtype)
        start = self.pointer
        if n > self.size:
            # Only the last `size` rows survive; they start at slot (start + n - size).
            start = (start + (n - self.size)) % self.size
            rows = rows[n - self.size :]
        slots = (start + torch.arange(rows.shape[0], device=self.bank.device)) % self.size
        self.bank.index_copy_(0, slots, rows)
        self.pointer.add_(n).remainder_(self.size)
        if self._filled < self.size:
            self._filled = min(self.size, self._filled + n)
            self.filled.fill_(self._filled)

    def negatives(self) -> torch.Tensor:
        """The valid entries, ``(G_valid, D)`` in slot order, detached.

        For an ``"empty"`` bank that has not wrapped yet these are the first slots,
        oldest first; otherwise every slot. The order does not matter to a softmax over
        negatives; use [`chronological`][vlp.losses.memory_bank.TeacherMemoryBank.chronological]
        for oldest-first order.
        """
        return self.bank[: self._filled].detach()

    def chronological(self) -> torch.Tensor:
        """The valid entries, ``(G_valid, D)``, oldest first (a copy)."""
        if self._filled < self.size:
            return self.bank[: self._filled].detach().clone()
        return torch.roll(self.bank.detach(), -int(self.pointer), dims=0)

    def reset(self) -> None:
        """Forget every entry (the bank becomes empty, whatever its ``init``)."""
        self.bank.zero_()
        self._filled = 0
        self.pointer.zero_()
        self.filled.zero_()

    def extra_repr(self) -> str:
        """Show size, width, init and fill state."""
        return f"size={self.size}, dim={self.dim}, init={self.init!r}, filled={self._filled}"
