"""Input validation shared by every public function.

Each check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message
names the argument, what was expected and what was received, so that bad input
never turns into a silent broadcast or a NaN further down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "check_bool",
    "check_bool_mask",
    "check_finite",
    "check_float",
    "check_floating",
    "check_input_like",
    "check_int",
    "check_matrix",
    "check_nonempty",
    "check_positive",
    "check_probability",
    "check_same_device",
    "check_same_shape",
    "check_shape",
    "check_state_dict",
    "check_tensor",
    "values_readable",
]


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a tensor, else raise ``TypeError``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, value: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``value`` has a floating-point dtype."""
    check_tensor(name, value)
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")


def check_shape(name: str, value: torch.Tensor, shape: Sequence[int | str | None]) -> None:
    """Check ``value.shape`` against a pattern.

    Args:
        name: argument name used in the error message.
        value: the tensor to check.
        shape: expected shape; an ``int`` entry must match exactly, a ``str`` or
            ``None`` entry matches any size (the string only documents the axis).
    """
    check_tensor(name, value)
    pattern = "(" + ", ".join(str(s) if s is not None else "*" for s in shape) + ")"
    if value.dim() != len(shape):
        raise ValueError(
            f"{name} must have shape {pattern} ({len(shape)} dims), got {tuple(value.shape)}"
        )
    for axis, (want, got) in enumerate(zip(shape, value.shape)):
        if isinstance(want, int) and want != got:
            raise ValueError(
                f"{name} must have shape {pattern}, got {tuple(value.shape)} (axis {axis})"
            )


def check_matrix(name: str, value: torch.Tensor, *, floating: bool = True) -> None:
    """Check that ``value`` is a non-empty 2-D (N, D) tensor, floating by default."""
    check_shape(name, value, ("N", "D"))
    if floating:
        check_floating(name, value)
    check_nonempty(name, value)


def check_nonempty(name: str, value: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``value`` has no elements."""
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_device(*named: tuple[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless all tensors live on one device."""
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        desc = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ValueError(f"all tensors must be on the same device, got {desc}")


def values_readable(value: torch.Tensor) -> bool:
    """Whether a check may read ``value``'s elements on the host.

    True for CPU tensors in eager mode. False on an accelerator (the read would
    synchronise the device at every step) and under ``torch.compile`` (a graph cannot
    branch on tensor values; a compiled run skips these checks).
    """
    return value.device.type == "cpu" and not torch.compiler.is_compiling()


def check_finite(name: str, value: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``value`` holds NaN or inf.

    This synchronises with the device; call it only on inputs, never in a loop. Under
    ``torch.compile`` it does nothing (see `values_readable`).
    """
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s)")


def _as_float(name: str, value: float | torch.Tensor) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        if value.requires_grad or not values_readable(value):
            # Avoid a host sync on the hot path; learnable values are checked by their module.
            return None
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value: float | torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0.

    A scalar tensor that requires grad or lives on a GPU is not read (that would
    sync the device); its shape is still checked.
    """
    v = _as_float(name, value)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def check_probability(
    name: str, value: float, *, low_inclusive: bool = True, high_inclusive: bool = False
) -> None:
    """Raise ``ValueError`` unless ``value`` lies in [0, 1) (bounds configurable)."""
    v = _as_float(name, value)
    if v is None:
        return
    lo_ok = v >= 0 if low_inclusive else v > 0
    hi_ok = v <= 1 if high_inclusive else v < 1
    if not (lo_ok and hi_ok and math.isfinite(v)):
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in {lo}0, 1{hi}, got {v}")


def check_bool_mask(name: str, value: torch.Tensor, shape: Sequence[int | str | None]) -> None:
    """Check that ``value`` is a ``torch.bool`` tensor of the given shape pattern."""
    check_tensor(name, value)
    if value.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {value.dtype}")
    check_shape(name, value, shape)


def check_int(
    name: str,
    value: object,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) in ``[low, high]``.

    Raises ``TypeError`` for a non-int (``True`` is not an int here) and ``ValueError``
    naming the bounds for one outside them; ``None`` leaves a bound open.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int{_bounds(low, high, True, True)}, got {value}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite ``float`` within the given bounds.

    Accepts Python ints and floats (not bools). Raises ``TypeError`` for anything else,
    ``ValueError`` for NaN, inf or a value outside the bounds (``None`` leaves one open).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v)
    if low is not None:
        ok = ok and (v >= low if low_inclusive else v > low)
    if high is not None:
        ok = ok and (v <= high if high_inclusive else v < high)
    if not ok:
        raise ValueError(
            f"{name} must be a finite number{_bounds(low, high, low_inclusive, high_inclusive)}"
            f", got {value}"
        )
    return v


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _bounds(
    low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool
) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" >= {low}" if low_inclusive else f" > {low}"
    if low is None:
        return f" <= {high}" if high_inclusive else f" < {high}"
    lo = "[" if low_inclusive else "("
    hi = "]" if high_inclusive else ")"
    return f" in {lo}{low}, {high}{hi}"


def check_state_dict(
    owner: str,
    expected: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    *,
    strict: bool = True,
    optional: Sequence[str] = (),
) -> None:
    """Check a state dict against a module's own before anything is copied.

    ``torch.nn.Module.load_state_dict`` copies every entry it can and raises at the end,
    leaving a module half loaded; a stateful vlp module calls this first, so that a load
    that fails changes nothing. Raises ``RuntimeError`` (what torch raises) listing every
    missing or unexpected key (when ``strict``) and every tensor whose shape differs.

    Args:
        owner: the module's class name, for the message.
        expected: the module's own entries (``module.state_dict(keep_vars=True)``).
        state_dict: the entries to load.
        strict: also require the same keys.
        optional: keys that may be missing even when ``strict``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    errors = []
    if strict:
        missing = [k for k in expected if k not in state_dict and k not in optional]
        unexpected = [k for k in state_dict if k not in expected]
        if missing:
            errors.append(f"missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            more = " ..." if len(unexpected) > 5 else ""
            errors.append(f"unexpected key(s) {unexpected[:5]}{more}")
    for key, own in expected.items():
        if key not in state_dict or not isinstance(own, torch.Tensor):
            continue
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            errors.append(f"{key} must be a tensor, got {type(value).__name__}")
        elif value.shape != own.shape:
            errors.append(f"{key} must have shape {tuple(own.shape)}, got {tuple(value.shape)}")
    if errors:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {owner} (nothing was loaded): " + "; ".join(errors)
        )


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # e.g. "meta": autocast has no dispatch key for it
        return False


def check_input_like(name: str, value: torch.Tensor, parameter: torch.Tensor) -> None:
    """Check a module input against one of the module's parameters, before torch does.

    The input must live on the parameter's device (a mask on the ``meta`` device would
    otherwise be read as uninitialised memory) and, outside ``torch.autocast``, be
    floating with the parameter's dtype; torch's own errors ("mat1 and mat2 must have
    the same dtype") name neither the argument nor the fix.
    """
    check_tensor(name, value)
    if value.device != parameter.device:
        raise ValueError(
            f"{name} must be on the module's device {parameter.device}, got {value.device}"
        )
    floating = value.is_floating_point() and parameter.is_floating_point()
    if floating and value.dtype != parameter.dtype and not _autocast_on(value.device.type):
        raise TypeError(
            f"{name} must have the dtype of the module's parameters ({parameter.dtype}) "
            f"outside autocast, got {value.dtype}; convert the module (.to({value.dtype})) "
            "or run under torch.autocast"
        )
