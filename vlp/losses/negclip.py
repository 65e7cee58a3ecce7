r"""NegCLIP's loss: CLIP with hard-negative captions appended to the image-to-text softmax.

Reference: Yuksekgonul et al., "When and Why Vision-Language Models Behave like Bags-of-Words,
and What to Do About It?", ICLR 2023 (section 4); the FSC-CLIP release's ``ClipLoss`` with
negatives is the parity target (Oh et al., EMNLP 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp._checks import check_bool
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.kernels.contrastive import DEFAULT_CHUNK, tiled_logsumexp
from vlp.losses._contrastive import as_scalar, logits_dtype
from vlp.losses._gather import allow_empty, start_gather, validated
from vlp.losses._hard_negative import (
    check_features,
    check_missing,
    check_negative_mask,
    check_same_dtype_device,
)
from vlp.losses._infonce import check_backend, check_chunk_size
from vlp.losses.scr import MissingNegatives

__all__ = ["negclip_loss"]


def negclip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    negative_mask: torch.Tensor | None,
    logit_scale: float | torch.Tensor,
    *,
    missing: MissingNegatives = "zero",
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    r"""CLIP loss whose image-to-text side also contrasts every hard negative (NegCLIP, sec. 4).

    With ``M`` images in the (global) batch and ``N`` negatives per caption, image ``i`` is
    scored against the ``M`` captions and all ``M * N`` negative captions of the batch,
    ``(M, M + M N)`` logits ``s * cos``, target its own caption; the text-to-image side
    is CLIP's ``(M, M)`` one. The loss is the mean of the two cross-entropies, each averaged
    over the batch. When every negative is missing and ``missing="mask"``, it equals
    :func:`~vlp.losses.clip_loss`.

    With ``missing="zero"`` (the default, FSC-CLIP's release, which zero-fills missing
    negatives) a missing negative is a column of logit exactly 0 for every image;
    ``missing="mask"`` leaves it out of the softmax. Missing slots are ignored and get no
    gradient.

    **Distributed**: as :func:`~vlp.losses.clip_loss` (``local_loss``, ``gather_with_grad``,
    uneven batch sizes, per-rank values that average to the global loss): images, captions,
    negatives and their masks are gathered from every rank, and every image meets every
    rank's negatives. All ranks must use the same ``N``.

    **Tiled path.** With ``chunk_size`` (or ``backend="triton"``) the log-sum-exps go through
    [`tiled_logsumexp`][vlp.kernels.contrastive.tiled_logsumexp] and the ``(M, M + M N)``
    logits are never formed; same value and gradients. With ``missing="mask"`` the missing
    negatives are dropped from the columns first (a boolean index: one host synchronisation).

    Args:
        image_features: ``(B, D)`` floating image embeddings (normalised here).
        text_features: ``(B, D)``, row ``i`` pairs with image ``i``.
        negative_features: ``(B, N, D)`` hard negatives of each caption, or ``(B, D)`` for one.
        negative_mask: ``(B, N)`` ``torch.bool``, ``True`` where the negative exists, or
            ``None``: all exist.
        logit_scale: positive multiplier of the cosines (already exponentiated).
        missing: ``"zero"`` (release) or ``"mask"``.
        local_loss: compute only this rank's rows (see :func:`~vlp.losses.clip_loss`).
        gather_with_grad: gather other ranks' features with gradient.
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        chunk_size: take the tiled path with column chunks of this size (see above).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path; ``"triton"``
            selects it even without ``chunk_size``.

    Returns:
        Scalar tensor (float32 or wider).

    Raises:
        ValueError: on mismatched shapes, an empty batch, NaN/inf features (checked on CPU
            tensors), a non-positive ``logit_scale`` or a bad ``missing``.
        TypeError: on non-floating features, differing dtypes or a non-bool mask.
    """
    empty_ok = allow_empty(group)
    with validated(group, "negclip_loss"):
        image_features = check_features(
            "image_features", image_features, ("B", "D"), allow_empty=empty_ok
        )
        batch, dim = image_features.shape
        text_features = check_features(
            "text_features", text_features, (batch, dim), allow_empty=empty_ok
        )
        if isinstance(negative_features, torch.Tensor) and negative_features.dim() == 2:
            negative_features = negative_features[:, None]  # one negative per caption
        negative_features = check_features(
            "negative_features", negative_features, (batch, "N", dim), allow_empty=empty_ok
        )
        check_same_dtype_device(
            ("image_features", image_features),
            ("text_features", text_features),
            ("negative_features", negative_features),
        )
        negatives = negative_features.shape[1]
        mask = (
            None
            if negative_mask is None
            else check_negative_mask(negative_mask, batch, negatives, image_features.device)
        )
        scale = as_scalar("logit_scale", logit_scale, image_features, positive=True)
        missing = check_missing(missing)
        check_bool("local_loss", local_loss)
        check_bool("gather_with_grad", gather_with_grad)
        check_chunk_size(chunk_size)
        check_backend(backend)

    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    negative = F.normalize(negative_features, dim=-1)
    if mask is not None:
        # Zero-filled like the release: a missing negative scores exactly 0, without gradient.
        negative = torch.where(mask[..., None], negative, torch.zeros_like(negative))
    facts = {
        "negatives N": negatives,
        "negative_mask given": mask is not None,
        "logit_scale requires grad": scale.requires_grad,
        "local_loss": local_loss,
        "gather_with_grad": gather_with_grad,
    }
    gather = start_gather(image, group, facts=facts, caller="negclip_loss")
    all_image, all_text, all_negative = (
        gather.everyone(t, with_grad=gather_with_grad, keep_local=not local_loss)
        for t in (image, text, negative)
    )
    all_mask = None if mask is None else gather.everyone(mask, with_grad=False)
    scale = gather.shared(scale)
    offset, world, total = gather.offset, gather.world, all_image.shape[0]

    if local_loss:
        row_image, row_text, row_offset, weight = image, text, offset, world / total
    else:
        row_image, row_text, row_offset, weight = all_image, all_text, 0, 1.0 / total

    negative_rows = all_negative.reshape(-1, dim)  # (M N, D)
    if chunk_size is not None or backend == "triton":
        if missing == "mask" and all_mask is not None:
            negative_rows = negative_rows[all_mask.reshape(-1)]  # -inf columns drop out
        columns = torch.cat([all_text, negative_rows])
        chunk = DEFAULT_CHUNK if chunk_size is None else chunk_size
        lse = tiled_logsumexp(
            row_image, columns, scale, None, row_weight=weight, chunk_size=chunk, backend=backend
        ) + tiled_logsumexp(
            row_text, all_image, scale, None, row_weight=weight, chunk_size=chunk, backend=backend
        )  # fmt: skip
        acc = lse.dtype
        rows = slice(row_offset, row_offset + row_image.shape[0])
        positive = (row_image.to(acc) * all_text[rows].to(acc)).sum() + (
            row_text.to(acc) * all_image[rows].to(acc)
        ).sum()
        loss: torch.Tensor = (lse - weight * scale.to(acc) * positive) / 2
        return loss

    dtype = logits_dtype(image.dtype)
    columns = torch.cat([all_text, negative_rows])  # (M + M N, D)
    logits_per_image = scale * (row_image @ columns.T).to(dtype)
    if missing == "mask" and all_mask is not None:
        keep = torch.cat([all_mask.new_ones(total), all_mask.reshape(-1)])
        logits_per_image = logits_per_image.masked_fill(~keep, float("-inf"))
    logits_per_text = scale * (row_text @ all_image.T).to(dtype)
    labels = torch.arange(row_offset, row_offset + row_image.shape[0], device=image.device)
    loss_i2t = F.cross_entropy(logits_per_image, labels, reduction="sum")
    loss_t2i = F.cross_entropy(logits_per_text, labels, reduction="sum")
    return weight * (loss_i2t + loss_t2i) / 2
