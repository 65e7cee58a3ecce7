"""CLIP's symmetric InfoNCE loss with distributed gathering and multi-positive targets.

Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021 (section 2.3 and Figure 3).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, overload

import torch
from torch import nn

from vlp._checks import check_bool, check_probability
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.losses._contrastive import check_pair, check_sample_ids, promote
from vlp.losses._gather import allow_empty, validated
from vlp.losses._infonce import (
    PairDetails,
    check_backend,
    check_chunk_size,
    check_infonce_options,
    gather_views,
    pair_loss,
)
from vlp.losses.logit_scale import LogitScale

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
        text_features: ``(N, D)``, same device; row ``i`` pairs with image ``i``. A
            different floating dtype is allowed: both are converted to the promoted one.
        logit_scale: positive multiplier of the cosine similarities (already
            exponentiated, as in open_clip): a float or a one-element tensor.
        logit_bias: optional scalar added to every logit.
        label_smoothing: in ``[0, 1]``, as in ``torch.nn.functional.cross_entropy``.
        sample_ids: optional ``(N,)`` integer tensor; equal ids mark positives. Ids are
            compared across ranks, so make them globally unique per sample (e.g. the
            data set index of the image).
        local_loss: compute only this rank's rows (see above).
        gather_with_grad: gather other ranks' features with gradient (see above).
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
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
        TypeError: on non-floating features or non-integer ``sample_ids``.
    """
    with validated(group, "clip_loss"):
        check_pair(image_features, text_features, allow_empty=allow_empty(group))
        image_features, text_features = promote(image_features, text_features)
        scale, bias = check_infonce_options(
            image_features, logit_scale, logit_bias, label_smoothing, local_loss,
            gather_with_grad, return_details, chunk_size, backend,
        )  # fmt: skip
        if sample_ids is not None:
            check_sample_ids(sample_ids, image_features.shape[0], image_features)
    return _clip_loss(
        image_features, text_features, scale, bias, sample_ids, label_smoothing=label_smoothing,
        local_loss=local_loss, gather_with_grad=gather_with_grad, group=group,
        return_details=return_details, chunk_size=chunk_size, backend=backend,
    )  # fmt: skip


def _clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    sample_ids: torch.Tensor | None,
    *,
    label_smoothing: float,
    local_loss: bool,
    gather_with_grad: bool,
    group: ProcessGroup | None,
    return_details: bool,
    chunk_size: int | None,
    backend: Backend,
    caller: str = "clip_loss",
) -> torch.Tensor | ClipLossOutput:
    """`clip_loss` on checked arguments (``scale`` and ``bias`` already tensors)."""
    (image, text), batch = gather_views(
        [image_features, text_features], scale, bias, sample_ids, local_loss=local_loss,
        gather_with_grad=gather_with_grad, group=group, caller=caller,
    )  # fmt: skip
    out = pair_loss(
        image, text, batch, label_smoothing=label_smoothing, return_details=return_details,
        chunk_size=chunk_size, backend=backend,
    )  # fmt: skip
    return ClipLossOutput(*out) if isinstance(out, PairDetails) else out


class ClipLoss(nn.Module):
    """CLIP loss with a learnable temperature (Radford et al., 2021, section 2.5).

    Calls [`clip_loss`][vlp.losses.clip.clip_loss] with the scale of a
    [`LogitScale`][vlp.losses.logit_scale.LogitScale].

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
        group: process group used for gathering; ``None`` means the default group,
            ``False`` this rank alone.
        chunk_size: see [`clip_loss`][vlp.losses.clip.clip_loss] (the tiled path).
        backend: see [`clip_loss`][vlp.losses.clip.clip_loss].
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
        chunk_size: int | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_probability("label_smoothing", label_smoothing, high_inclusive=True)
        check_chunk_size(chunk_size)
        check_backend(backend)
        self.chunk_size = chunk_size
        self.backend: Backend = backend
        self.logit_scale = LogitScale(
            init_scale,
            max_scale=max_scale,
            learnable_scale=learnable_scale,
            device=device,
            dtype=dtype,
        )
        self.label_smoothing = label_smoothing
        self.local_loss = check_bool("local_loss", local_loss)
        self.gather_with_grad = check_bool("gather_with_grad", gather_with_grad)
        self.group = group

    @overload
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        *,
        sample_ids: torch.Tensor | None = ...,
        return_details: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        *,
        sample_ids: torch.Tensor | None = ...,
        return_details: Literal[True],
    ) -> ClipLossOutput: ...

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        *,
        sample_ids: torch.Tensor | None = None,
        return_details: bool = False,
    ) -> torch.Tensor | ClipLossOutput:
        """Compute the loss.

        Args:
            image_features: ``(N, D)`` floating image embeddings.
            text_features: ``(N, D)`` text embeddings paired row by row.
            sample_ids: optional ``(N,)`` integer ids; equal ids are positives.
            return_details: return a [`ClipLossOutput`][vlp.losses.clip.ClipLossOutput].

        Returns:
            Scalar loss (see [`clip_loss`][vlp.losses.clip.clip_loss] for its distributed
            value), or a [`ClipLossOutput`][vlp.losses.clip.ClipLossOutput].
        """
        return clip_loss(  # type: ignore[call-overload, no-any-return]
            image_features,
            text_features,
            self.logit_scale(),
            label_smoothing=self.label_smoothing,
            sample_ids=sample_ids,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            group=self.group,
            return_details=return_details,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def clamp_(self) -> None:
        """Clamp the learnable scale into its bounds; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"label_smoothing={self.label_smoothing}, local_loss={self.local_loss}, "
            f"gather_with_grad={self.gather_with_grad}, chunk_size={self.chunk_size}, "
            f"backend={self.backend!r}"
        )
