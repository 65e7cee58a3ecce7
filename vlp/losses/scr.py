r"""Selective calibrated regularisation (SCR): FSC-CLIP's loss over hard-negative logits.

Reference: Oh et al., "Preserving Multi-Modal Capabilities of Pre-trained VLMs for Improving
Vision-Linguistic Compositionality", EMNLP 2024 (section 3.3; released ``_focal_loss_with_nsr``).
"""

from __future__ import annotations

import math

import torch

from vlp._checks import (
    check_bool_mask,
    check_finite,
    check_floating,
    check_shape,
    check_tensor,
    values_readable,
)
from vlp.losses._contrastive import logits_dtype
from vlp.losses._hard_negative import (
    MissingNegatives,
    check_gamma,
    check_missing,
    check_smoothing,
)
from vlp.losses._renamed import renamed_keywords

__all__ = ["MissingNegatives", "scr_loss"]


@renamed_keywords(valid="negative_mask")
def scr_loss(
    logits: torch.Tensor,
    negative_mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    label_smoothing: float = 0.02,
    missing: MissingNegatives = "zero",
) -> torch.Tensor:
    r"""Focal loss with smoothed targets over {positive, hard negatives} (Oh et al. 2024, sec. 3.3).

    Each row holds the logit of the positive caption (column 0) and of ``N`` hard-negative
    captions (columns ``1..N``), of which those with ``negative_mask`` true exist. With
    ``K = 1 + #valid`` and ``eps = label_smoothing``, the target puts ``1 - eps + eps / K``
    on the positive and ``eps / K`` on every valid negative (the *calibrated* part: a hard
    negative may be partly right), and the focal factor ``(1 - p_k)^gamma`` is applied to
    every class (the *selective* part: easy rows contribute little):

    $$\mathcal{L}_\mathrm{SCR} = \sum_{k=0}^{N} q_k\,(1 - p_k)^\gamma\,(-\log p_k),
    \qquad p = \mathrm{softmax}(\ell).$$

    Rows without any valid negative are dropped and the loss is the mean over the others,
    as in the release. ``gamma=0, label_smoothing=0`` gives the cross-entropy with class 0;
    ``label_smoothing=0`` gives the focal loss of the positive alone.

    **Missing negatives.** With ``missing="zero"`` (reference parity) a missing column stays
    in the softmax with the logit given, with no target mass: the release scores a zero-filled
    feature there, i.e. passes a logit of exactly 0, and so do
    :func:`~vlp.losses.hard_negative_loss` and :func:`~vlp.losses.local_hard_negative_loss`.
    ``missing="mask"`` leaves missing columns out of the softmax (their values are ignored
    and get no gradient).

    Deviation from the release: if no row has a valid negative, the release divides by zero
    (NaN, and its training loop stops); this returns a zero that keeps the graph.

    Args:
        logits: ``(B, 1 + N)`` floating: column 0 the positive, column ``j`` negative ``j``.
        negative_mask: ``(B, N)`` ``torch.bool``, ``True`` where negative ``j`` of row ``b``
            exists (``valid=`` is its deprecated name).
        gamma: focal exponent ``>= 0`` (paper: 2).
        label_smoothing: ``eps`` in ``[0, 1)`` (paper: 0.02).
        missing: ``"zero"`` (release) or ``"mask"`` (see above).

    Returns:
        Scalar tensor in ``logits``' dtype (float32 or wider).

    Raises:
        ValueError: on bad shapes, ``N = 0``, an empty batch, non-finite logits (checked on
            CPU tensors), or out-of-range ``gamma`` / ``label_smoothing`` / ``missing``.
        TypeError: on non-floating logits or a non-bool ``negative_mask``.
    """
    logits = check_tensor("logits", logits)
    check_shape("logits", logits, ("B", "1 + N"))
    check_floating("logits", logits)
    if logits.shape[0] == 0:
        raise ValueError(f"logits must not be empty, got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(
            "logits must have 1 + N columns with N >= 1 hard negatives, got shape "
            f"{tuple(logits.shape)}"
        )
    mask = negative_mask
    check_bool_mask("negative_mask", mask, (logits.shape[0], logits.shape[1] - 1))
    if mask.device != logits.device:
        raise ValueError(
            f"negative_mask must be on logits' device {logits.device}, got {mask.device}"
        )
    if values_readable(logits):
        check_finite("logits", logits)
    gamma = check_gamma(gamma)
    eps = check_smoothing(label_smoothing)
    missing = check_missing(missing)
    return _scr(logits, mask, gamma, eps, missing)


def _scr(
    logits: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    eps: float,
    missing: MissingNegatives,
) -> torch.Tensor:
    """:func:`scr_loss` on checked input (shared by the hard-negative losses)."""
    logits = logits.to(logits_dtype(logits.dtype))
    dtype = logits.dtype
    columns = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)  # (B, 1 + N)
    if missing == "mask":
        logits = logits.masked_fill(~columns, -math.inf)

    keep = valid.any(dim=1)  # rows with at least one valid negative
    count = columns.sum(dim=1, keepdim=True).to(dtype)  # K
    target = torch.where(columns, eps / count, torch.zeros((), dtype=dtype, device=logits.device))
    target[:, 0] += 1 - eps
    target = target * keep[:, None].to(dtype)  # dropped rows carry no target mass

    log_p = torch.log_softmax(logits, dim=1)
    # Masked columns have log p = -inf and zero target: keep 0 * inf out of the graph.
    log_p = torch.where(columns, log_p, torch.zeros_like(log_p))
    terms = -log_p
    if gamma != 0:
        # 1 - p, computed from log p without cancellation; floored so that the gradient of
        # x**gamma at x = 0 (gamma < 1) stays finite (the floor is below any reachable value).
        rest = (-torch.expm1(log_p)).clamp_min(torch.finfo(dtype).tiny)
        terms = rest.pow(gamma) * terms
    per_row = (target * terms).sum(dim=1)
    kept = keep.sum().clamp_min(1).to(dtype)
    return per_row.sum() / kept
