r"""FSC-CLIP's local hard-negative loss: token-level scores of captions against patch tokens.

Reference: Oh et al., "Preserving Multi-Modal Capabilities of Pre-trained VLMs for Improving
Vision-Linguistic Compositionality", EMNLP 2024 (section 3.2; released ``Local_HNLoss``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from vlp._checks import check_bool, check_bool_mask, check_tensor, values_readable
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

__all__ = ["SimilarityNormalizer", "local_hard_negative_loss"]

#: How a text token's similarities to the patches become weights: ``"minmax"`` rescales
#: them to [0, 1] and divides by their sum (the paper's default), ``"softmax"`` takes a
#: softmax over the patches (no temperature).
SimilarityNormalizer = Literal["minmax", "softmax"]


def _patch_weights(
    similarity: torch.Tensor, normalizer: SimilarityNormalizer, sparsify: bool
) -> torch.Tensor:
    """``(R, T, P)`` weights over the patches of each text token (no gradient)."""
    if normalizer == "softmax":
        return torch.softmax(similarity, dim=-1)
    low = similarity.amin(dim=-1, keepdim=True)
    span = similarity.amax(dim=-1, keepdim=True) - low
    flat = span == 0
    # A token whose similarities are all equal has no min-max weights (the release divides
    # by zero and gets NaN); it gets uniform weights instead.
    weights = (similarity - low) / torch.where(flat, torch.ones_like(span), span)
    weights = torch.where(flat, torch.ones_like(weights), weights)
    if sparsify:
        weights = torch.where(
            weights < 1.0 / similarity.shape[-1], torch.zeros_like(weights), weights
        )
    return weights / weights.sum(dim=-1, keepdim=True)


def _local_scores(
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    image_tokens: torch.Tensor,
    owner: torch.Tensor | None,
    logit_scale: torch.Tensor,
    *,
    normalizer: SimilarityNormalizer = "minmax",
    sparsify: bool = False,
) -> torch.Tensor:
    r"""``(R,)`` token-level scores of ``R`` captions against the patches of their images.

    For caption ``r`` with tokens ``u_t`` and its image's patch tokens ``v_p``
    (Oh et al. 2024, sec. 3.2):

    1. ``S_tp = <u_t, v_p>`` on detached, un-normalised tokens; per-token weights
       ``w_tp`` from ``S`` (``normalizer``, optional ``sparsify``) are constants;
    2. the textual-grounded visual token ``v̄_t = sum_p w_tp v_p`` (gradients reach ``v``);
    3. ``c_t = s * cos(v̄_t, u_t)``;
    4. the score is ``log sum_t exp(c_t)`` over the tokens where ``text_mask`` is true.

    Tokens outside ``text_mask`` change neither the score nor any gradient. No checks
    (see :func:`local_hard_negative_loss`).

    Args:
        text_tokens: ``(R, T, D)`` floating, un-normalised projected text tokens.
        text_mask: ``(R, T)`` bool, the tokens that count (word tokens and EOT).
        image_tokens: ``(B, P, D)``, un-normalised projected patch tokens.
        owner: ``(R,)`` int64 index of each caption's image, or ``None`` for ``R = B``
            captions paired row by row.
        logit_scale: scalar tensor ``s``.
        normalizer: ``"minmax"`` or ``"softmax"``.
        sparsify: zero min-max weights below ``1 / P`` before normalising.

    Returns:
        ``(R,)`` scores in at least float32.
    """
    patches = image_tokens if owner is None else image_tokens[owner]  # (R, P, D)
    with torch.no_grad():
        similarity = torch.einsum("rtd,rpd->rtp", text_tokens, patches)
        weights = _patch_weights(similarity, normalizer, sparsify)
        # Tokens that do not count get uniform weights: finite whatever they hold.
        weights = torch.where(
            text_mask[..., None], weights, torch.full_like(weights, 1.0 / patches.shape[1])
        )
    grounded = F.normalize(torch.einsum("rtp,rpd->rtd", weights, patches), dim=-1)
    text = F.normalize(text_tokens, dim=-1)
    cosine = (grounded * text).sum(dim=-1).to(logits_dtype(text.dtype))  # (R, T)
    token_logits = logit_scale * cosine
    token_logits = token_logits.masked_fill(~text_mask, float("-inf"))
    return torch.logsumexp(token_logits, dim=-1)


def local_hard_negative_loss(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    negative_tokens: torch.Tensor,
    negative_token_mask: torch.Tensor,
    negative_mask: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    normalizer: SimilarityNormalizer = "minmax",
    sparsify: bool = False,
    gamma: float = 2.0,
    label_smoothing: float = 0.02,
    missing: MissingNegatives = "zero",
) -> torch.Tensor:
    r"""Local (token-level) hard-negative loss ``L^l_neg`` of FSC-CLIP (Oh et al. 2024, sec. 3.2).

    Every caption, the positive and each existing hard negative, is scored against the
    patch tokens ``v_p`` of its image. For each of its tokens ``u_t``:

    1. similarities ``S_tp = <u_t, v_p>`` (un-normalised, stop-gradient) become weights
       ``w_tp``: min-max rescaled to [0, 1] (optionally zeroed below ``1 / P``) and divided
       by their sum, or a softmax over the patches;
    2. the textual-grounded visual token is ``v̄_t = sum_p w_tp v_p`` (the weights are
       constants; gradients reach the patches through the sum);
    3. ``c_t = s * cos(v̄_t, u_t)``;

    and the caption's score is ``log sum_t exp(c_t)`` over its counted tokens. Image ``i``'s
    row of logits is ``[score(positive_i), score(negative_i1), ..., score(negative_iN)]``
    and the loss is :func:`~vlp.losses.scr_loss` of these rows (rows without a valid
    negative dropped). No in-batch negatives, nothing gathered across ranks.

    With ``missing="zero"`` (the release) a missing negative's score is exactly 0 and stays
    in the softmax; ``missing="mask"`` leaves it out. Missing negatives are never encoded
    here: their slots of ``negative_tokens`` are ignored and get no gradient, as are text
    tokens outside their masks.

    Deviation from the release: a text token whose similarities to all patches are equal
    gets uniform min-max weights (the release divides by zero and yields NaN).

    Args:
        image_tokens: ``(B, P, D)`` floating patch tokens, projected, not normalised
            (:func:`~vlp.adapters.open_clip_image_tokens`).
        text_tokens: ``(B, T, D)`` tokens of the positive captions, projected, not normalised
            (:func:`~vlp.adapters.open_clip_text_tokens`).
        text_mask: ``(B, T)`` bool, the tokens that count (word tokens and EOT; each
            caption needs at least one).
        negative_tokens: ``(B, N, T, D)``, tokens of hard negative ``j`` of caption ``b``.
        negative_token_mask: ``(B, N, T)`` bool token masks of the negatives (read only where
            ``negative_mask`` is true).
        negative_mask: ``(B, N)`` ``torch.bool``, ``True`` where the negative exists.
        logit_scale: positive multiplier ``s`` of the token cosines (the CLIP logit scale).
        normalizer: ``"minmax"`` (paper) or ``"softmax"``.
        sparsify: with ``"minmax"``, zero weights below ``1 / P`` (off in the paper).
        gamma: focal exponent of SCR (paper: 2).
        label_smoothing: SCR's smoothing (paper: 0.02).
        missing: ``"zero"`` (release) or ``"mask"``.

    Returns:
        Scalar tensor (float32 or wider). Multiply by ``lambda_l`` (paper: 0.2 for ViT-B/32)
        yourself, or use :class:`~vlp.losses.FSCCLIPLoss`.

    Raises:
        ValueError: on mismatched shapes, empty inputs, a caption without any counted token
            (checked on CPU tensors), NaN/inf (CPU), a non-positive ``logit_scale`` or bad
            options.
        TypeError: on non-floating tokens, differing dtypes or non-bool masks.
    """
    image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask = check_local_tokens(
        image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask
    )
    batch, negatives = negative_tokens.shape[:2]
    mask = check_negative_mask(negative_mask, batch, negatives, image_tokens.device)
    scale = as_scalar("logit_scale", logit_scale, image_tokens, positive=True)
    check_normalizer(normalizer)
    check_bool("sparsify", sparsify)
    gamma = check_gamma(gamma)
    eps = check_smoothing(label_smoothing)
    missing = check_missing(missing)
    return _local_hard_negative_loss(
        image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask, mask, scale,
        normalizer, sparsify, gamma, eps, missing,
    )  # fmt: skip


def check_normalizer(normalizer: object) -> None:
    """``normalizer`` is ``"minmax"`` or ``"softmax"``."""
    if normalizer not in ("minmax", "softmax"):
        raise ValueError(f"normalizer must be 'minmax' or 'softmax', got {normalizer!r}")


def check_local_tokens(
    image_tokens: object,
    text_tokens: object,
    text_mask: object,
    negative_tokens: object,
    negative_token_mask: object,
    *,
    batch: int | None = None,
    negatives: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the five token arguments of the local loss (``batch``/``negatives`` if known)."""
    image = check_features("image_tokens", image_tokens, (batch or "B", "P", "D"))
    batch, _, dim = image.shape
    text = check_features("text_tokens", text_tokens, (batch, "T", dim))
    length = text.shape[1]
    negative = check_features(
        "negative_tokens", negative_tokens, (batch, negatives or "N", length, dim)
    )
    negatives = negative.shape[1]
    check_same_dtype_device(
        ("image_tokens", image), ("text_tokens", text), ("negative_tokens", negative)
    )
    device = image.device
    check_bool_mask("text_mask", check_tensor("text_mask", text_mask), (batch, length))
    check_bool_mask(
        "negative_token_mask",
        check_tensor("negative_token_mask", negative_token_mask),
        (batch, negatives, length),
    )
    assert isinstance(text_mask, torch.Tensor) and isinstance(negative_token_mask, torch.Tensor)
    for name, value in (("text_mask", text_mask), ("negative_token_mask", negative_token_mask)):
        if value.device != device:
            raise ValueError(f"{name} must be on the tokens' device {device}, got {value.device}")
    return image, text, text_mask, negative, negative_token_mask


def _local_hard_negative_loss(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    negative_tokens: torch.Tensor,
    negative_token_mask: torch.Tensor,
    mask: torch.Tensor,
    scale: torch.Tensor,
    normalizer: SimilarityNormalizer,
    sparsify: bool,
    gamma: float,
    eps: float,
    missing: MissingNegatives,
) -> torch.Tensor:
    """`local_hard_negative_loss` on checked arguments (``scale`` a tensor)."""
    batch, negatives = mask.shape
    device = image_tokens.device
    if torch.compiler.is_compiling() or device.type == "meta":
        # mask.nonzero() has a value-dependent size: no static shape for a graph or meta.
        return _local_loss_static(
            image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask, mask,
            scale, normalizer, sparsify, gamma, eps, missing,
        )  # fmt: skip
    # Only existing negatives are scored (as the release's compact list); each knows its image.
    owner, slot = mask.nonzero(as_tuple=True)
    rows = torch.cat([text_tokens, negative_tokens[owner, slot]])
    rows_mask = torch.cat([text_mask, negative_token_mask[owner, slot]])
    if values_readable(rows_mask) and not bool(rows_mask.any(dim=1).all()):
        empty = int((~rows_mask.any(dim=1)).sum())
        raise ValueError(
            "every caption needs at least one counted token: text_mask (and negative_token_mask "
            f"where negative_mask is True) has {empty} all-False row(s)"
        )
    owners = torch.cat([torch.arange(batch, device=device), owner])
    scores = _local_scores(
        rows, rows_mask, image_tokens, owners, scale, normalizer=normalizer, sparsify=sparsify
    )
    positive, negative = scores[:batch], scores[batch:]
    grid = scores.new_zeros(batch, negatives).index_put((owner, slot), negative)
    logits = torch.cat([positive[:, None], grid], dim=1)
    return _scr(logits, mask, gamma, eps, missing)


def _local_loss_static(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    negative_tokens: torch.Tensor,
    negative_token_mask: torch.Tensor,
    mask: torch.Tensor,
    scale: torch.Tensor,
    normalizer: SimilarityNormalizer,
    sparsify: bool,
    gamma: float,
    eps: float,
    missing: MissingNegatives,
) -> torch.Tensor:
    """The same loss with static shapes, for ``torch.compile`` and meta tensors.

    Every slot is scored.

    The eager path scores only the existing negatives (``mask.nonzero()``, whose size
    depends on the mask's values). Here a missing slot is scored on zero tokens with one
    counted token (a finite score, replaced by 0 before SCR, so neither its value nor
    any gradient reaches the result): the same loss and gradients, at the cost of
    scoring ``B * N`` captions instead of the existing ones.
    """
    batch, negatives = mask.shape
    flat = mask.reshape(-1)
    tokens = negative_tokens.flatten(0, 1)
    tokens = torch.where(flat[:, None, None], tokens, torch.zeros_like(tokens))
    token_mask = negative_token_mask.flatten(0, 1)
    first_only = torch.zeros_like(token_mask)
    first_only[:, 0] = True
    token_mask = torch.where(flat[:, None], token_mask, first_only)
    rows = torch.cat([text_tokens, tokens])
    rows_mask = torch.cat([text_mask, token_mask])
    images = torch.arange(batch, device=image_tokens.device)
    owners = torch.cat([images, images.repeat_interleave(negatives)])
    scores = _local_scores(
        rows, rows_mask, image_tokens, owners, scale, normalizer=normalizer, sparsify=sparsify
    )
    grid = scores[batch:].reshape(batch, negatives)
    grid = torch.where(mask, grid, torch.zeros_like(grid))
    logits = torch.cat([scores[:batch, None], grid], dim=1)
    return _scr(logits, mask, gamma, eps, missing)
