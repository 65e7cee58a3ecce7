r"""FSC-CLIP's global hard-negative loss: each image against its caption and its hard negatives.

Reference: Oh et al., "Preserving Multi-Modal Capabilities of Pre-trained VLMs for Improving
Vision-Linguistic Compositionality", EMNLP 2024 (section 3.1; released ``Global_HNLoss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp.losses._contrastive import as_scalar, logits_dtype
from vlp.losses._hard_negative import (
    check_features,
    check_gamma,
    check_missing,
    check_negative_mask,
    check_same_dtype_device,
    check_smoothing,
)
from vlp.losses.scr import MissingNegatives, _scr

__all__ = ["hard_negative_loss"]


def _hard_negative_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """``(B, 1 + N)`` scaled cosines of each image with its caption and its ``N`` negatives.

    No argument checks (the public losses check); missing negatives are not filled here.
    """
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    negative = F.normalize(negative_features, dim=-1)
    dtype = logits_dtype(image.dtype)
    positive = (image * text).sum(dim=-1, keepdim=True)  # (B, 1)
    negatives = torch.einsum("bd,bnd->bn", image, negative)  # (B, N)
    return logit_scale * torch.cat([positive, negatives], dim=1).to(dtype)


def hard_negative_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    negative_mask: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    gamma: float = 2.0,
    label_smoothing: float = 0.02,
    missing: MissingNegatives = "zero",
) -> torch.Tensor:
    r"""Global hard-negative loss ``L^g_neg`` of FSC-CLIP (Oh et al. 2024, sec. 3.1).

    For image ``i`` the logits are the scaled cosines with its own caption and with the
    hard negatives generated from that caption,
    ``l_i = s * [<x_i, y_i>, <x_i, z_i1>, ..., <x_i, z_iN>]`` (features L2-normalised), and
    the loss is :func:`~vlp.losses.scr_loss` of these rows: class 0 is the target, the
    focal factor and label smoothing act over the valid negatives, rows without a valid
    negative are dropped. No other caption of the batch enters (the in-batch contrast is
    the CLIP loss's job), and nothing is gathered across ranks (as in the release).

    With the default ``missing="zero"`` a missing negative has logit exactly 0 and stays in
    the softmax, as the release's zero-filled features give; ``missing="mask"`` leaves it
    out. Missing slots of ``negative_features`` may hold anything finite: they are ignored
    and get no gradient.

    Args:
        image_features: ``(B, D)`` floating image embeddings (normalised here).
        text_features: ``(B, D)``, the positive caption of each image.
        negative_features: ``(B, N, D)``, hard negative ``j`` of caption ``b``.
        negative_mask: ``(B, N)`` ``torch.bool``, ``True`` where the negative exists.
        logit_scale: positive multiplier ``s`` of the cosines (already exponentiated), a
            float or a one-element tensor (its gradient flows).
        gamma: focal exponent of SCR (paper: 2).
        label_smoothing: SCR's smoothing over the valid negatives (paper: 0.02).
        missing: ``"zero"`` (release) or ``"mask"``.

    Returns:
        Scalar tensor (float32 or wider). Multiply by ``lambda_g`` (paper: 0.5) yourself, or
        use :class:`~vlp.losses.FSCCLIPLoss`.

    Raises:
        ValueError: on mismatched shapes, an empty batch, ``N = 0``, NaN/inf features
            (checked on CPU tensors), a non-positive ``logit_scale`` or bad options.
        TypeError: on non-floating features, differing dtypes or a non-bool mask.
    """
    image_features, text_features, negative_features, mask = check_hard_negative_inputs(
        image_features, text_features, negative_features, negative_mask
    )
    scale = as_scalar("logit_scale", logit_scale, image_features, positive=True)
    gamma = check_gamma(gamma)
    eps = check_smoothing(label_smoothing)
    missing = check_missing(missing)
    return _hard_negative_loss(
        image_features, text_features, negative_features, mask, scale, gamma, eps, missing
    )


def check_hard_negative_inputs(
    image_features: object,
    text_features: object,
    negative_features: object,
    negative_mask: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check ``(B, D)``, ``(B, D)``, ``(B, N, D)`` features and a ``(B, N)`` bool mask."""
    image = check_features("image_features", image_features, ("B", "D"))
    batch, dim = image.shape
    text = check_features("text_features", text_features, (batch, dim))
    negative = check_features("negative_features", negative_features, (batch, "N", dim))
    check_same_dtype_device(
        ("image_features", image), ("text_features", text), ("negative_features", negative)
    )
    mask = check_negative_mask(negative_mask, batch, negative.shape[1], image.device)
    return image, text, negative, mask


def _hard_negative_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    mask: torch.Tensor,
    scale: torch.Tensor,
    gamma: float,
    eps: float,
    missing: MissingNegatives,
) -> torch.Tensor:
    """`hard_negative_loss` on checked arguments (``scale`` a tensor)."""
    logits = _hard_negative_logits(image_features, text_features, negative_features, scale)
    # A missing negative scores exactly 0 (the release's zero-filled feature), without gradient.
    columns = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
    logits = torch.where(columns, logits, torch.zeros_like(logits))
    return _scr(logits, mask, gamma, eps, missing)
