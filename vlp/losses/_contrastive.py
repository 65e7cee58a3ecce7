"""Argument checks and small helpers shared by the contrastive losses (CLIP, SigLIP)."""

from __future__ import annotations

import math

import torch

from vlp._checks import (
    check_finite,
    check_floating,
    check_matrix,
    check_same_device,
    check_same_shape,
    check_shape,
    check_tensor,
    values_readable,
)

__all__ = [
    "as_scalar",
    "check_matrix_rows",
    "check_pair",
    "check_sample_ids",
    "logits_dtype",
    "promote",
]


def check_matrix_rows(name: str, value: object, *, allow_empty: bool) -> torch.Tensor:
    """An ``(N, D)`` floating matrix with ``D > 0``; ``N = 0`` only if ``allow_empty``."""
    tensor = check_tensor(name, value)
    if not allow_empty:
        check_matrix(name, tensor)
        return tensor
    check_shape(name, tensor, ("N", "D"))
    check_floating(name, tensor)
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} must have D > 0 columns, got shape {tuple(tensor.shape)}")
    return tensor


def check_pair(
    image_features: torch.Tensor, text_features: torch.Tensor, *, allow_empty: bool = False
) -> None:
    """Check two paired (N, D) floating feature matrices of one device and shape.

    ``allow_empty`` lets ``N = 0`` through (a rank of a process group with no rows).

    Their dtypes may differ (autocast output against an fp32 tensor): the losses
    compute in the promoted dtype (see `promote`). NaN/inf are looked for only on CPU
    tensors and only in eager mode: on an accelerator the check would force a host
    synchronisation at every step, and a compiled graph cannot branch on values.
    """
    check_matrix_rows("image_features", image_features, allow_empty=allow_empty)
    check_matrix_rows("text_features", text_features, allow_empty=allow_empty)
    check_same_shape("image_features", image_features, "text_features", text_features)
    check_same_device(("image_features", image_features), ("text_features", text_features))
    if values_readable(image_features):
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

    The losses form their logits in ``logits_dtype(like.dtype)`` (float32 for
    half-precision features), so a Python number becomes a tensor of that dtype, not of
    ``like``'s: ``logit_scale=7e4`` or ``logit_bias=1e5`` stay finite with fp16 features.
    A tensor must hold one element and be floating point; it keeps its dtype and autograd
    history (the losses convert it to the logits' dtype where they use it).

    The value is checked (finite in the logits' dtype, and > 0 if ``positive``) whenever
    that costs no device synchronisation: for Python numbers and CPU tensors, in eager
    mode. Under ``torch.compile`` tensor values are not read (a compiled run skips the
    check; Python numbers are still checked while tracing).
    """
    compute = logits_dtype(like.dtype)
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
        v = float(scalar.detach()) if values_readable(scalar) else None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    else:
        v = float(value)
        scalar = torch.tensor(v, dtype=compute, device=like.device)
    if v is not None:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if abs(v) > torch.finfo(compute).max:
            raise ValueError(
                f"{name} must be finite in {compute} (the dtype the logits are formed in), got {v}"
            )
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


def promote(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """``tensors`` converted to their promoted floating dtype, as a torch op would compute.

    An fp32 frozen teacher against a bf16 student computes in fp32; tensors already of
    that dtype are returned as they are (no copy).
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which logits are reduced: at least float32."""
    return dtype if torch.finfo(dtype).bits >= 32 else torch.float32
