"""CLIP's symmetric InfoNCE loss with distributed gathering and multi-positive targets.

Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021 (section 2.3 and Figure 3).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, overload

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import check_probability
from vlp.distributed import (
    ProcessGroup,
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
)
from vlp.heads.logit_scale import LogitScale
from vlp.kernels import Backend
from vlp.kernels.contrastive import DEFAULT_CHUNK, tiled_logsumexp
from vlp.losses._contrastive import as_scalar, check_pair, check_sample_ids, logits_dtype

__all__ = ["ClipLoss", "ClipLossOutput", "clip_loss"]


class ClipLossOutput(NamedTuple):
    """What [`clip_loss`][vlp.losses.clip.clip_loss] returns with ``return_details=True``.

    ``R`` is the number of rows this rank computed (its local batch with
    ``local_loss=True``, the global batch otherwise) and ``M`` the global batch.

    Attributes:
        loss: scalar, the value [`clip_loss`][vlp.losses.clip.clip_loss] returns.
        loss_image_to_text: scalar, the image-to-text half (same weighting as ``loss``).
        loss_text_to_image: scalar, the text-to-image half.
        logits_per_image: ``(R, M)``, image rows against every text (scaled, biased).
        logits_per_text: ``(R, M)``, text rows against every image.
        targets: ``(R, M)`` target distribution of each row before label smoothing
            (one-hot, or uniform over the row's positives with ``sample_ids``).
    """

    loss: torch.Tensor
    loss_image_to_text: torch.Tensor
    loss_text_to_image: torch.Tensor
    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    targets: torch.Tensor


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


@overload
def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    logit_bias: float | torch.Tensor | None = ...,
    label_smoothing: float = ...,
    sample_ids: torch.Tensor | None = ...,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[False] = ...,
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> torch.Tensor: ...


@overload
def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    logit_bias: float | torch.Tensor | None = ...,
    label_smoothing: float = ...,
    sample_ids: torch.Tensor | None = ...,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[True],
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> ClipLossOutput: ...


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    logit_bias: float | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    sample_ids: torch.Tensor | None = None,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    return_details: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor | ClipLossOutput:
    r"""Symmetric InfoNCE between paired image and text features (Radford et al. 2021, Fig. 3).

    Features are L2-normalised along ``D``; the logits are
    ``logit_scale * image @ text.T + logit_bias``. The loss is the mean of the
    image-to-text and text-to-image cross-entropies, each averaged over the global
    batch:

    $$\mathcal{L} = \tfrac12\Big(\tfrac1M\sum_i \mathrm{CE}(z_{i,:}, y_i)
    + \tfrac1M\sum_j \mathrm{CE}(z_{:,j}, y_j)\Big).$$

    **Targets.** Without ``sample_ids``, pair ``i`` is the only positive of row ``i``.
    With ``sample_ids``, every pair whose ids are equal is a positive and the target
    of a row is the uniform distribution over its positives,
    ``y_ij = [id_i = id_j] / #{k: id_k = id_i}`` (a soft-target cross-entropy; with
    distinct ids it is exactly the one-hot loss). ``label_smoothing`` then mixes each
    target with the uniform distribution over the ``M`` columns, as
    ``torch.nn.functional.cross_entropy`` does: ``(1 - eps) * y + eps / M``.

    **Distributed** (a process group of ``W > 1`` ranks, rank ``r`` holding ``n_r``
    rows, ``M = sum(n_r)``; batch sizes may differ). Features are gathered from every
    rank. With the defaults ``local_loss=True, gather_with_grad=True`` each rank
    computes only its own rows against all columns and returns
    ``W / M * (its rows' summed cross-entropies) / 2``: the per-rank values sum to
    ``W`` times the global loss, so after DDP averages gradients over ranks every
    parameter receives exactly the single-process gradient of the global batch, and
    the mean of the per-rank values is the global loss. (With equal batch sizes
    ``W / M = 1 / n``: open_clip's local loss.) The gradients of ``logit_scale`` and
    ``logit_bias`` are averaged over the group in the backward, so they are right
    whether or not they are DDP parameters. Other settings:

    - ``local_loss=False, gather_with_grad=True``: every rank computes the full
      ``M x M`` loss (value = global loss on every rank, same gradients, ``W`` times
      the compute).
    - ``gather_with_grad=False``: other ranks' features carry no gradient (open_clip's
      default). With ``local_loss=False`` the local features are put back into their
      slot, and the gradient after DDP averaging is the global one divided by ``W``;
      with ``local_loss=True`` the column terms of the gradient are dropped.

    Args:
        image_features: ``(N, D)`` floating, this rank's image embeddings.
        text_features: ``(N, D)``, same dtype and device; row ``i`` pairs with image ``i``.
        logit_scale: positive multiplier of the cosine similarities (already
            exponentiated, as in open_clip): a float or a one-element tensor.
        logit_bias: optional scalar added to every logit.
        label_smoothing: in ``[0, 1]``, as in ``torch.nn.functional.cross_entropy``.
        sample_ids: optional ``(N,)`` integer tensor; equal ids mark positives. Ids are
            compared across ranks, so make them globally unique per sample (e.g. the
            data set index of the image).
        local_loss: compute only this rank's rows (see above).
        gather_with_grad: gather other ranks' features with gradient (see above).
        group: process group; ``None`` means the default group if one is initialised.
        return_details: return a [`ClipLossOutput`][vlp.losses.clip.ClipLossOutput]
            instead of the scalar (dense path only: the tiled path never forms the logits).
        chunk_size: take the memory-efficient tiled path, which never forms the
            ``R x M`` logits
            ([`tiled_logsumexp`][vlp.kernels.contrastive.tiled_logsumexp]): the torch
            path walks column chunks of this size, the Triton path tiles in SRAM. Same
            value and gradients as the dense path, every option included.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path (see
            [`vlp.kernels`][vlp.kernels]); ``"triton"`` selects the tiled path even without
            ``chunk_size``. The dense path (the default) is plain torch.

    Returns:
        A scalar tensor (float32 or wider), or a [`ClipLossOutput`][vlp.losses.clip.ClipLossOutput].

    Raises:
        ValueError: on mismatched or non-2-D shapes, an empty batch, NaN/inf features
            (checked on CPU tensors), a non-positive or non-finite ``logit_scale``, or
            ``label_smoothing`` outside ``[0, 1]``.
        TypeError: on non-floating features, differing dtypes, or non-integer ``sample_ids``.
    """
    check_pair(image_features, text_features)
    scale, bias = _check_options(
        image_features, logit_scale, logit_bias, label_smoothing, local_loss, gather_with_grad,
        return_details, chunk_size, backend,
    )  # fmt: skip
    if sample_ids is not None:
        check_sample_ids(sample_ids, image_features.shape[0], image_features)
    (image, text), batch = _gather_views(
        [image_features, text_features], scale, bias, sample_ids, local_loss=local_loss,
        gather_with_grad=gather_with_grad, group=group,
    )  # fmt: skip
    return _pair_loss(
        image, text, batch, label_smoothing=label_smoothing, return_details=return_details,
        chunk_size=chunk_size, backend=backend,
    )  # fmt: skip


def _check_options(
    like: torch.Tensor,
    logit_scale: float | torch.Tensor,
    logit_bias: float | torch.Tensor | None,
    label_smoothing: float,
    local_loss: bool,
    gather_with_grad: bool,
    return_details: bool,
    chunk_size: int | None,
    backend: Backend,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the non-feature arguments of `clip_loss`; return the scale and bias tensors."""
    scale = as_scalar("logit_scale", logit_scale, like, positive=True)
    bias = None if logit_bias is None else as_scalar("logit_bias", logit_bias, like, positive=False)
    check_probability("label_smoothing", label_smoothing, high_inclusive=True)
    _check_flag("local_loss", local_loss)
    _check_flag("gather_with_grad", gather_with_grad)
    if (chunk_size is not None or backend == "triton") and return_details:
        raise ValueError(
            "return_details=True needs the logits, which the tiled path (chunk_size or "
            "backend='triton') never forms; use the dense path for details"
        )
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be one of ('auto', 'torch', 'triton'), got {backend!r}")
    return scale, bias


class _View(NamedTuple):
    """One L2-normalised feature matrix: this rank's ``(n, D)`` rows and all ``(M, D)`` rows."""

    local: torch.Tensor
    all: torch.Tensor


class _Batch(NamedTuple):
    """What every pair of views gathered together by `_gather_views` shares."""

    scale: torch.Tensor  # its gradient averaged over the group
    bias: torch.Tensor | None  # idem
    ids: torch.Tensor | None  # this rank's sample ids
    all_ids: torch.Tensor | None  # every rank's, in rank order
    offset: int  # index of this rank's first row in the global batch
    world: int
    local_loss: bool


def _gather_views(
    views: list[torch.Tensor],
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    sample_ids: torch.Tensor | None,
    *,
    local_loss: bool,
    gather_with_grad: bool,
    group: ProcessGroup | None,
) -> tuple[list[_View], _Batch]:
    """Normalise and gather each ``(n, D)`` view once, for any number of pairs of them.

    Under a process group this costs one exchange of the batch sizes, one all-gather per
    view (and one for ``sample_ids``); every view must have this rank's ``n`` rows.
    """
    normalized = [F.normalize(view, dim=-1) for view in views]
    world = get_world_size(group)
    if world == 1:
        batch = _Batch(scale, bias, sample_ids, sample_ids, 0, 1, local_loss)
        return [_View(view, view) for view in normalized], batch
    n = normalized[0].shape[0]
    sizes = all_gather_sizes(normalized[0], group)
    offset = sum(sizes[: get_rank(group)])
    gather = all_gather_with_grad if gather_with_grad else all_gather_no_grad
    gathered = []
    for view in normalized:
        everyone = gather(view, group, sizes=sizes)
        if not gather_with_grad and not local_loss:
            # Put this rank's features (with their gradient) back into their slot.
            everyone = torch.cat([everyone[:offset], view, everyone[offset + n :]])
        gathered.append(_View(view, everyone))
    all_ids = None if sample_ids is None else all_gather_no_grad(sample_ids, group, sizes=sizes)
    scale = average_gradient(scale, group)
    bias = None if bias is None else average_gradient(bias, group)
    return gathered, _Batch(scale, bias, sample_ids, all_ids, offset, world, local_loss)


def _pair_loss(
    image_view: _View,
    text_view: _View,
    batch: _Batch,
    *,
    label_smoothing: float,
    return_details: bool,
    chunk_size: int | None,
    backend: Backend,
) -> torch.Tensor | ClipLossOutput:
    """`clip_loss` of two views already gathered by `_gather_views` (arguments checked)."""
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
        return _tiled_clip_loss(
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
        positives = (row_ids[:, None] == all_ids[None, :]).to(logits_per_image.dtype)
        targets = positives / positives.sum(dim=1, keepdim=True)

    def directional(logits: torch.Tensor) -> torch.Tensor:
        target = labels if targets is None else targets
        ce = F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)
        return weight * ce

    loss_i2t = directional(logits_per_image)
    loss_t2i = directional(logits_per_text)
    loss = (loss_i2t + loss_t2i) / 2
    if not return_details:
        return loss
    if targets is None:
        targets = F.one_hot(labels, total).to(logits_per_image.dtype)
    return ClipLossOutput(loss, loss_i2t, loss_t2i, logits_per_image, logits_per_text, targets)


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


def _tiled_clip_loss(
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


class ClipLoss(nn.Module):
    """CLIP loss with a learnable temperature (Radford et al., 2021, section 2.5).

    Calls [`clip_loss`][vlp.losses.clip.clip_loss] with the scale of a
    [`LogitScale`][vlp.heads.logit_scale.LogitScale].

    The scale starts at ``init_scale`` (1/0.07) and is clamped to
    ``[1, max_scale]`` only when you call `clamp_()` after the optimiser step;
    ``forward`` never mutates it (Radford et al., 2021, section 2.5).

    Args:
        init_scale: initial logit scale (the multiplier).
        max_scale: upper bound applied by `clamp_()`.
        learnable_scale: whether the scale is a trained parameter.
        label_smoothing: see [`clip_loss`][vlp.losses.clip.clip_loss].
        local_loss: see [`clip_loss`][vlp.losses.clip.clip_loss].
        gather_with_grad: see [`clip_loss`][vlp.losses.clip.clip_loss].
        group: process group used for gathering; ``None`` means the default group.
        device: device of the scale parameter.
        dtype: dtype of the scale parameter.

    Example:
        >>> loss_fn = ClipLoss()
        >>> image, text = torch.randn(8, 32), torch.randn(8, 32)
        >>> loss = loss_fn(image, text)
        >>> loss.backward()
        >>> loss_fn.clamp_()  # after optimizer.step()
    """

    def __init__(
        self,
        init_scale: float = 1 / 0.07,
        *,
        max_scale: float = 100.0,
        learnable_scale: bool = True,
        label_smoothing: float = 0.0,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        group: ProcessGroup | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_probability("label_smoothing", label_smoothing, high_inclusive=True)
        self.logit_scale = LogitScale(
            init_scale, max_scale=max_scale, learnable=learnable_scale, device=device, dtype=dtype
        )
        self.label_smoothing = label_smoothing
        self.local_loss = _check_flag("local_loss", local_loss)
        self.gather_with_grad = _check_flag("gather_with_grad", gather_with_grad)
        self.group = group

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        *,
        sample_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            image_features: ``(N, D)`` floating image embeddings.
            text_features: ``(N, D)`` text embeddings paired row by row.
            sample_ids: optional ``(N,)`` integer ids; equal ids are positives.

        Returns:
            Scalar loss (see [`clip_loss`][vlp.losses.clip.clip_loss] for its distributed value).
        """
        return clip_loss(
            image_features,
            text_features,
            self.logit_scale(),
            label_smoothing=self.label_smoothing,
            sample_ids=sample_ids,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            group=self.group,
        )

    def clamp_(self) -> None:
        """Clamp the learnable scale into its bounds; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"label_smoothing={self.label_smoothing}, local_loss={self.local_loss}, "
            f"gather_with_grad={self.gather_with_grad}"
        )
