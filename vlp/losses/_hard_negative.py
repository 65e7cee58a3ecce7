"""Argument checks shared by the hard-negative losses (NegCLIP, FSC-CLIP global and local)."""

from __future__ import annotations

from typing import Literal

import torch

from vlp._checks import (
    check_bool_mask,
    check_finite,
    check_float,
    check_floating,
    check_nonempty,
    check_shape,
    check_tensor,
    values_readable,
)

__all__ = [
    "MissingNegatives",
    "check_features",
    "check_gamma",
    "check_missing",
    "check_negative_mask",
    "check_same_dtype_device",
    "check_smoothing",
]

#: How a missing hard negative (mask ``False``) enters the softmax: ``"zero"`` (the default)
#: reproduces the FSC-CLIP release, where the slot is zero-filled, so its logit is exactly 0
#: and it stays in the softmax with no target mass; ``"mask"`` is the cleaner variant that
#: leaves it out of the softmax (logit ``-inf``).
MissingNegatives = Literal["zero", "mask"]


def check_features(
    name: str,
    value: object,
    shape: tuple[int | str | None, ...],
    *,
    finite: bool = True,
    allow_empty: bool = False,
) -> torch.Tensor:
    """A non-empty floating tensor of the given shape pattern (finite if on the CPU).

    ``allow_empty`` lets 0 rows (dim 0) through, not 0 of any other dim.
    """
    tensor = check_tensor(name, value)
    check_shape(name, tensor, shape)
    check_floating(name, tensor)
    if allow_empty and tensor.dim() > 1:
        if 0 in tensor.shape[1:]:
            raise ValueError(f"{name} must not be empty, got shape {tuple(tensor.shape)}")
    else:
        check_nonempty(name, tensor)
    if finite and values_readable(tensor):
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


def check_missing(missing: object) -> MissingNegatives:
    """Validate the ``missing`` option of the hard-negative losses."""
    if missing not in ("zero", "mask"):
        raise ValueError(f"missing must be 'zero' or 'mask', got {missing!r}")
    return missing  # type: ignore[return-value]


def check_gamma(gamma: object) -> float:
    """Validate the focal exponent: a finite number >= 0."""
    return check_float("gamma", gamma, low=0)


def check_smoothing(label_smoothing: object, name: str = "label_smoothing") -> float:
    """Validate the hard-negative label smoothing: a number in ``[0, 1)``."""
    return check_float(name, label_smoothing, low=0, high=1, high_inclusive=False)
