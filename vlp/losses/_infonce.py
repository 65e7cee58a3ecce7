"""The symmetric InfoNCE core shared by CLIP and COSMOS: gather views once, score pairs.

Private: the public entry points ([`clip_loss`][vlp.losses.clip.clip_loss],
[`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss], ...) check their
arguments once and then call these helpers, which check nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vlp._checks import check_bool, check_int, check_probability
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.kernels.contrastive import DEFAULT_CHUNK, tiled_logsumexp
from vlp.losses._contrastive import as_scalar, logits_dtype
from vlp.losses._gather import start_gather

__all__ = [
    "InfoNCEBatch",
    "PairDetails",
    "View",
    "check_backend",
    "check_chunk_size",
    "check_infonce_options",
    "empty_rows_loss",
    "gather_views",
    "pair_loss",
]


class View(NamedTuple):
    """One L2-normalised feature matrix: this rank's ``(n, D)`` rows and all ``(M, D)`` rows."""

    local: torch.Tensor
    all: torch.Tensor


class InfoNCEBatch(NamedTuple):
    """What every pair of views gathered together by `gather_views` shares."""

    scale: torch.Tensor  # its gradient averaged over the group
    bias: torch.Tensor | None  # idem
    ids: torch.Tensor | None  # this rank's sample ids
    all_ids: torch.Tensor | None  # every rank's, in rank order
    offset: int  # index of this rank's first row in the global batch
    world: int
    local_loss: bool


class PairDetails(NamedTuple):
    """The parts of one pair's loss (the fields of ``ClipLossOutput``)."""

    loss: torch.Tensor
    loss_image_to_text: torch.Tensor
    loss_text_to_image: torch.Tensor
    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    targets: torch.Tensor


def check_backend(backend: object) -> None:
    """``backend`` is one of ``"auto"``, ``"torch"``, ``"triton"``."""
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be one of ('auto', 'torch', 'triton'), got {backend!r}")


def check_chunk_size(chunk_size: object) -> None:
    """``chunk_size`` is ``None`` or an int >= 1."""
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, low=1)


def check_infonce_options(
    like: torch.Tensor,
    logit_scale: float | torch.Tensor,
    logit_bias: float | torch.Tensor | None,
    label_smoothing: float,
    local_loss: bool,
    gather_with_grad: bool,
    return_details: bool,
    chunk_size: int | None,
    backend: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the non-feature arguments of the InfoNCE losses; return scale and bias tensors."""
    scale = as_scalar("logit_scale", logit_scale, like, positive=True)
    bias = None if logit_bias is None else as_scalar("logit_bias", logit_bias, like, positive=False)
    check_probability("label_smoothing", label_smoothing, high_inclusive=True)
    check_bool("local_loss", local_loss)
    check_bool("gather_with_grad", gather_with_grad)
    check_bool("return_details", return_details)
    check_chunk_size(chunk_size)
    check_backend(backend)
    if (chunk_size is not None or backend == "triton") and return_details:
        raise ValueError(
            "return_details=True needs the logits, which the tiled path (chunk_size or "
            "backend='triton') never forms; use the dense path for details"
        )
    return scale, bias


def gather_views(
    views: list[torch.Tensor],
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    sample_ids: torch.Tensor | None,
    *,
    local_loss: bool,
    gather_with_grad: bool,
    group: ProcessGroup | None,
    caller: str = "",
) -> tuple[list[View], InfoNCEBatch]:
    """Normalise and gather each ``(n, D)`` view once, for any number of pairs of them.

    Under a process group this costs one exchange of the batch sizes, one all-gather per
    view (and one for ``sample_ids``); every view must have this rank's ``n`` rows. The
    size exchange also checks that every rank passes the same kind of call (see
    `start_gather`).
    """
    normalized = [F.normalize(view, dim=-1) for view in views]
    facts = {
        "number of feature tensors": len(views),
        "sample_ids given": sample_ids is not None,
        "logit_scale requires grad": scale.requires_grad,
        "logit_bias (requires grad)": None if bias is None else bias.requires_grad,
        "local_loss": local_loss,
        "gather_with_grad": gather_with_grad,
    }
    gather = start_gather(normalized[0], group, facts=facts, caller=caller)
    gathered = [
        View(
            view,
            gather.everyone(view, with_grad=gather_with_grad, keep_local=not local_loss),
        )
        for view in normalized
    ]
    all_ids = None if sample_ids is None else gather.everyone(sample_ids, with_grad=False)
    batch = InfoNCEBatch(
        gather.shared(scale),
        None if bias is None else gather.shared(bias),
        sample_ids,
        all_ids,
        gather.offset,
        gather.world,
        local_loss,
    )
    return gathered, batch


def pair_loss(
    image_view: View,
    text_view: View,
    batch: InfoNCEBatch,
    *,
    label_smoothing: float,
    return_details: bool,
    chunk_size: int | None,
    backend: Backend,
) -> torch.Tensor | PairDetails:
    """The symmetric InfoNCE of two views already gathered by `gather_views` (no checks)."""
    image, all_image = image_view
    text, all_text = text_view
    scale, bias, sample_ids, all_ids, offset, world, local_loss = batch
    total = all_image.shape[0]

    if local_loss:
        row_image, row_text, row_ids, row_offset = image, text, sample_ids, offset
        weight = world / total
    else:
        row_image, row_text, row_ids, row_offset = all_image, all_text, all_ids, 0
        weight = 1.0 / total

    if chunk_size is not None or backend == "triton":
        return _tiled_pair_loss(
            row_image, row_text, all_image, all_text, scale, bias, row_ids, all_ids,
            row_offset, local_loss, weight, label_smoothing,
            DEFAULT_CHUNK if chunk_size is None else chunk_size, backend,
        )  # fmt: skip

    dtype = logits_dtype(image.dtype)
    logits_per_image = scale * (row_image @ all_text.T).to(dtype)
    if local_loss:
        logits_per_text = scale * (row_text @ all_image.T).to(dtype)
    else:
        logits_per_text = logits_per_image.T
    if bias is not None:
        logits_per_image = logits_per_image + bias
        logits_per_text = logits_per_text + bias

    rows = row_image.shape[0]
    if row_ids is None or all_ids is None:
        labels = torch.arange(row_offset, row_offset + rows, device=image.device)
        targets = None
    else:
        labels = None
        positives = (row_ids[:, None] == all_ids[None, :]).to(logits_per_image.dtype)
        targets = positives / positives.sum(dim=1, keepdim=True)

    def directional(logits: torch.Tensor) -> torch.Tensor:
        target = targets if labels is None else labels
        assert target is not None
        ce = F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)
        return weight * ce

    loss_i2t = directional(logits_per_image)
    loss_t2i = directional(logits_per_text)
    loss = (loss_i2t + loss_t2i) / 2
    if not return_details:
        return loss
    if targets is None:
        assert labels is not None
        targets = F.one_hot(labels, total).to(logits_per_image.dtype)
    return PairDetails(loss, loss_i2t, loss_t2i, logits_per_image, logits_per_text, targets)


def _positive_targets(
    rows: int,
    row_offset: int,
    columns: torch.Tensor,
    row_ids: torch.Tensor | None,
    all_ids: torch.Tensor | None,
    label_smoothing: float,
) -> torch.Tensor:
    """``(R, D)``: the target-weighted mean of ``columns`` for each row, ``sum_j y_ij c_j``.

    The positive term of a soft-target cross-entropy is linear in the logits, so it is
    ``scale * <row, sum_j y_ij c_j> + bias``: O(M D) work instead of a logits matrix.
    """
    if row_ids is None or all_ids is None:
        target = columns[row_offset : row_offset + rows]
    else:
        _, inverse = torch.unique(all_ids, return_inverse=True)
        classes = int(inverse.max()) + 1
        sums = columns.new_zeros((classes, columns.shape[1])).index_add_(0, inverse, columns)
        counts = torch.bincount(inverse, minlength=classes).to(columns.dtype)
        mine = inverse[row_offset : row_offset + rows]
        target = sums[mine] / counts[mine, None]
    if label_smoothing:
        target = (1 - label_smoothing) * target + label_smoothing * columns.mean(dim=0)
    return target


def empty_rows_loss(*tensors: torch.Tensor | None) -> torch.Tensor:
    """The loss of a rank with no rows: 0, still connected to every gathered tensor.

    The backward of a gather (and of a shared scale) is a collective that every rank must
    run, so the zero must depend on those tensors, with zero gradient.
    """
    present = [t for t in tensors if t is not None]
    acc = logits_dtype(present[0].dtype)
    zero = present[0].new_zeros((), dtype=acc)
    for t in present:
        zero = zero + 0 * t.sum().to(acc)
    return zero


def _tiled_pair_loss(
    row_image: torch.Tensor,
    row_text: torch.Tensor,
    all_image: torch.Tensor,
    all_text: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    row_ids: torch.Tensor | None,
    all_ids: torch.Tensor | None,
    row_offset: int,
    local_loss: bool,
    weight: float,
    label_smoothing: float,
    chunk_size: int,
    backend: Backend,
) -> torch.Tensor:
    if row_image.shape[0] == 0:
        return empty_rows_loss(all_image, all_text, scale, bias)
    # CE of a row = logsumexp(row) - sum_j y_ij z_ij; the first term is tiled, the second
    # is linear in the logits and costs O(M D).
    if local_loss and row_image.shape[0] != all_image.shape[0]:
        lse = tiled_logsumexp(
            row_image, all_text, scale, bias, row_weight=weight, chunk_size=chunk_size,
            backend=backend,
        ) + tiled_logsumexp(
            row_text, all_image, scale, bias, row_weight=weight, chunk_size=chunk_size,
            backend=backend,
        )  # fmt: skip
    else:
        # Every row is local (no process group, or local_loss=False): one pass gives both
        # directions, since the column log-sum-exps of image @ text.T are the
        # text-to-image rows.
        lse = tiled_logsumexp(
            all_image, all_text, scale, bias, row_weight=weight, col_weight=weight,
            chunk_size=chunk_size, backend=backend,
        )  # fmt: skip
    rows = row_image.shape[0]
    acc = lse.dtype
    text_target = _positive_targets(rows, row_offset, all_text, row_ids, all_ids, label_smoothing)
    image_target = _positive_targets(rows, row_offset, all_image, row_ids, all_ids, label_smoothing)
    positive = (row_image.to(acc) * text_target.to(acc)).sum() + (
        row_text.to(acc) * image_target.to(acc)
    ).sum()
    positive = scale.to(acc) * positive
    if bias is not None:
        positive = positive + 2 * rows * bias.to(acc)
    return (lse - weight * positive) / 2
