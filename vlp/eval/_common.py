"""Argument checks shared by the evaluation metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlp._checks import check_finite, check_floating, check_tensor

__all__ = ["check_index", "check_ks", "check_readable", "check_scores"]


def check_scores(name: str, value: torch.Tensor, dims: int) -> None:
    """Check a floating, finite, non-empty score tensor with ``dims`` dimensions."""
    check_tensor(name, value)
    check_floating(name, value)
    check_readable(name, value)
    if value.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    check_finite(name, value)


def check_readable(name: str, value: torch.Tensor) -> None:
    # Metrics read values on the host: a meta tensor has none.
    if value.is_meta:
        raise ValueError(f"{name} must hold values (a metric reads them), got a meta tensor")


def check_index(name: str, value: torch.Tensor, length: int, high: int) -> None:
    """Check an integer ``(length,)`` tensor with entries in ``[0, high)``."""
    check_tensor(name, value)
    check_readable(name, value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
    if value.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(value.shape)}")
    if length and (int(value.min()) < 0 or int(value.max()) >= high):
        raise ValueError(
            f"{name} entries must lie in [0, {high}), got range "
            f"[{int(value.min())}, {int(value.max())}]"
        )


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Check a non-empty sequence of positive ints."""
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence):
        raise TypeError(f"ks must be a sequence of ints, got {type(ks).__name__}")
    out = tuple(ks)
    if not out or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in out):
        raise ValueError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    return out
