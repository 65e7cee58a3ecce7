"""A learnable logit scale (inverse temperature) stored as its logarithm."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vlp._checks import check_bool, check_float
from vlp._hub import HubMixin
from vlp.losses._renamed import renamed_keywords

__all__ = ["LogitScale"]


class LogitScale(HubMixin, nn.Module):
    """Learnable multiplier of the similarity logits, parametrised as ``exp(log_scale)``.

    CLIP learns the temperature as a log-parametrised scalar initialised to 1/0.07 and
    clipped so that the scale never exceeds 100 (Radford et al., 2021, section 2.5).
    ``forward`` only reads the parameter; call `clamp_()` after each optimiser step
    to keep the scale in ``[min_scale, max_scale]`` (open_clip clamps at the same point).

    Args:
        init_scale: initial scale (the multiplier, not its log); must lie in
            ``[min_scale, max_scale]`` (``init=`` is its deprecated name).
        min_scale: lower bound applied by `clamp_()`.
        max_scale: upper bound applied by `clamp_()`.
        learnable_scale: whether the parameter requires grad (``learnable=`` is its
            deprecated name).
        device: device of the parameter.
        dtype: dtype of the parameter (default: torch's default dtype).

    Example:
        >>> scale = LogitScale()
        >>> round(float(scale()), 4)
        14.2857
    """

    @renamed_keywords(init="init_scale", learnable="learnable_scale")
    def __init__(
        self,
        init_scale: float = 1 / 0.07,
        *,
        min_scale: float = 1.0,
        max_scale: float = 100.0,
        learnable_scale: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        init = check_float("init_scale", init_scale, low=0, low_inclusive=False)
        self.min_scale = check_float("min_scale", min_scale, low=0, low_inclusive=False)
        self.max_scale = check_float("max_scale", max_scale, low=0, low_inclusive=False)
        check_bool("learnable_scale", learnable_scale)
        if self.min_scale > self.max_scale:
            raise ValueError(
                f"min_scale must be <= max_scale, got min_scale={min_scale}, max_scale={max_scale}"
            )
        if not self.min_scale <= init <= self.max_scale:
            raise ValueError(f"init_scale must lie in [{min_scale}, {max_scale}], got {init}")
        self.log_scale = nn.Parameter(
            torch.full((), math.log(init), device=device, dtype=dtype),
            requires_grad=learnable_scale,
        )

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
        # A NaN or infinite scale would turn every loss into NaN at the next step.
        value = state_dict.get(prefix + "log_scale")
        if (
            isinstance(value, torch.Tensor)
            and value.numel() == 1
            and not value.is_meta
            and not bool(torch.isfinite(value).all())
        ):
            error_msgs.append(f"{prefix}log_scale must be finite, got {float(value)}")
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self) -> torch.Tensor:
        """Return the scale ``exp(log_scale)``, a 0-dim tensor with the parameter's dtype."""
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the parameter in place so the scale lies in ``[min_scale, max_scale]``.

        The bounds are rounded inwards in the parameter's dtype, so that
        ``forward()`` never exceeds ``max_scale`` (nor falls below ``min_scale``)
        by a rounding error.
        """
        p = self.log_scale
        lo = torch.tensor(math.log(self.min_scale), dtype=p.dtype, device=p.device)
        hi = torch.tensor(math.log(self.max_scale), dtype=p.dtype, device=p.device)
        lo = torch.where(lo.exp() < self.min_scale, torch.nextafter(lo, hi + 1), lo)
        hi = torch.where(hi.exp() > self.max_scale, torch.nextafter(hi, lo - 1), hi)
        p.copy_(torch.minimum(torch.maximum(p, lo), hi))

    def extra_repr(self) -> str:
        """Show the current scale and its bounds."""
        if self.log_scale.is_meta:
            return f"min_scale={self.min_scale:g}, max_scale={self.max_scale:g}"
        return (
            f"scale={float(self.log_scale.detach().exp()):.4g}, "
            f"min_scale={self.min_scale:g}, max_scale={self.max_scale:g}"
        )
