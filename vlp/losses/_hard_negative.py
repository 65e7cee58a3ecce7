"""Argument checks shared by the hard-negative losses (NegCLIP, FSC-CLIP global and local)."""

from __future__ import annotations

import torch

from vlp._checks import (
    check_bool_mask,
    check_finite,
    check_floating,
    check_nonempty,
    check_shape,
    check_tensor,
)

__all__ = ["check_features", "check_negative_mask", "check_same_dtype_device"]


def check_features(
    name: str, value: object, shape: tuple[int | str | None, ...], *, finite: bool = True
) -> torch.Tensor:
    """A non-empty floating tensor of the given shape pattern (finite if on the CPU)."""
    tensor = check_tensor(name, value)
    check_shape(name, tensor, shape)
    check_floating(name, tensor)
    check_nonempty(name, tensor)
    if finite and tensor.device.type == "cpu":
        check_finite(name, tensor)
    return tensor


def check_same_dtype_device(
    reference: tuple[str, torch.Tensor], *others: tuple[str, torch.Tensor]
) -> None:
    """Every tensor in ``others`` has the reference tensor's dtype and device."""
    ref_name, ref = reference
    for name, tensor in others:
        if tensor.dtype != ref.dtype:
            raise TypeError(
                f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {tensor.dtype}"
            )
        if tensor.device != ref.device:
            raise ValueError(
                f"{name} must be on the device of {ref_name} ({ref.device}), got {tensor.device}"
            )


def check_negative_mask(
    value: object, batch: int, negatives: int, device: torch.device, name: str = "negative_mask"
) -> torch.Tensor:
    """A ``(B, N)`` bool mask on ``device``."""
    mask = check_tensor(name, value)
    check_bool_mask(name, mask, (batch, negatives))
    if mask.device != device:
        raise ValueError(f"{name} must be on the features' device {device}, got {mask.device}")
    return mask
