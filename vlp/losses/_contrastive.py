"""Argument checks and small helpers shared by the contrastive losses (CLIP, SigLIP)."""

from __future__ import annotations

import math

import torch

from vlp._checks import (
    check_finite,
    check_matrix,
    check_same_device,
    check_same_shape,
    check_tensor,
)

__all__ = ["as_scalar", "check_pair", "check_sample_ids", "logits_dtype"]


def check_pair(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Check two paired (N, D) floating feature matrices of one dtype, device and shape.

    NaN/inf are looked for only on CPU tensors: on an accelerator the check would
    force a host synchronisation at every step.
    """
    check_matrix("image_features", image_features)
    check_matrix("text_features", text_features)
    check_same_shape("image_features", image_features, "text_features", text_features)
    if image_features.dtype != text_features.dtype:
        raise TypeError(
            "image_features and text_features must have the same dtype, got "
            f"{image_features.dtype} and {text_features.dtype}"
        )
    check_same_device(("image_features", image_features), ("text_features", text_features))
    if image_features.device.type == "cpu":
        check_finite("image_features", image_features)
        check_finite("text_features", text_features)


def as_scalar(
    name: str,
    value: float | torch.Tensor,
    like: torch.Tensor,
    *,
    positive: bool,
) -> torch.Tensor:
    """Return ``value`` as a 0-dim tensor on ``like``'s device, after checking it.

    A Python number becomes a tensor of ``like``'s dtype. A tensor must hold one
    element and be floating point; it keeps its dtype and autograd history. Its value
    is checked (finite, and > 0 if ``positive``) whenever that costs no device
    synchronisation, i.e. for Python numbers and CPU tensors.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar (one element), got shape {tuple(value.shape)}"
            )
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
        if value.device != like.device:
            raise ValueError(
                f"{name} must be on the features' device {like.device}, got {value.device}"
            )
        scalar = value.reshape(())
        v = float(scalar.detach()) if scalar.device.type == "cpu" else None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    else:
        v = float(value)
        scalar = torch.tensor(v, dtype=like.dtype, device=like.device)
    if v is not None:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if positive and v <= 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    return scalar


def check_sample_ids(sample_ids: torch.Tensor, n: int, like: torch.Tensor) -> None:
    """Check that ``sample_ids`` is an integer tensor of shape (n,) on ``like``'s device."""
    check_tensor("sample_ids", sample_ids)
    if sample_ids.is_floating_point() or sample_ids.is_complex() or sample_ids.dtype == torch.bool:
        raise TypeError(f"sample_ids must have an integer dtype, got {sample_ids.dtype}")
    if sample_ids.shape != (n,):
        raise ValueError(
            f"sample_ids must have shape ({n},) (one id per row of the features), "
            f"got {tuple(sample_ids.shape)}"
        )
    if sample_ids.device != like.device:
        raise ValueError(
            f"sample_ids must be on the features' device {like.device}, got {sample_ids.device}"
        )


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which logits are reduced: at least float32."""
    return dtype if torch.finfo(dtype).bits >= 32 else torch.float32
