"""COSMOS: multi-view InfoNCE and cross-modality self-distillation.

Reference: Kim, Xiao, Georgescu, Alaniz and Akata, "COSMOS: Cross-Modality Self-Distillation
for Vision-Language Pre-training", CVPR 2025; the objective as the reference implementation
(the authors' released code) computes it: a CLIP term over global image crops x all
captions, plus a contrastive distillation of the student's cross-modal features onto the
EMA teacher's global image and text embeddings, each a mean of symmetric InfoNCE over pairs
of views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, overload

import torch
from torch import nn

from vlp._checks import check_bool, check_int
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.losses._contrastive import check_pair, promote
from vlp.losses._gather import allow_empty, validated
from vlp.losses._infonce import (
    InfoNCEBatch,
    View,
    check_backend,
    check_chunk_size,
    check_infonce_options,
    gather_views,
    pair_loss,
)
from vlp.losses.logit_scale import LogitScale

__all__ = ["COSMOSLoss", "COSMOSLossOutput", "cosmos_distillation_loss", "multiview_clip_loss"]


def _views(name: str, views: object) -> list[torch.Tensor]:
    if isinstance(views, torch.Tensor) or not isinstance(views, Sequence):
        raise TypeError(
            f"{name} must be a list of (N, D) tensors, one per view, got {type(views).__name__}"
        )
    if len(views) == 0:
        raise ValueError(f"{name} must hold at least one view, got an empty list")
    out = list(views)
    for index, view in enumerate(out):
        if not isinstance(view, torch.Tensor):
            raise TypeError(f"{name}[{index}] must be a torch.Tensor, got {type(view).__name__}")
        if view.dim() != 2:
            raise ValueError(f"{name}[{index}] must have shape (N, D), got {tuple(view.shape)}")
        if view.shape != out[0].shape:
            raise ValueError(
                f"every view of {name} must have the shape of {name}[0] "
                f"{tuple(out[0].shape)}, got {tuple(view.shape)} at index {index}"
            )
    return out


def _gather_groups(
    groups: list[list[torch.Tensor]],
    logit_scale: float | torch.Tensor,
    *,
    label_smoothing: float,
    local_loss: bool,
    gather_with_grad: bool,
    group: ProcessGroup | None,
    chunk_size: int | None,
    backend: Backend,
    caller: str,
) -> tuple[list[list[View]], InfoNCEBatch]:
    """Check every view, then normalise and gather each distinct tensor once.

    A tensor that appears in several lists (or twice in one) is gathered once: under a
    process group the call costs one size exchange plus one all-gather per distinct view
    in the forward, and one all-reduce per distinct view in the backward, however many
    pairs use it.
    """
    first = groups[0][0]
    # Identity by `is`, not by id(): torch.compile guards on the aliasing pattern (stable
    # from step to step) rather than on object ids (new tensors every step: a recompile).
    positions: list[list[int]] = []
    distinct: list[torch.Tensor] = []
    with validated(group, caller):
        for views in groups:
            slots = []
            for view in views:
                slot = next((j for j, seen in enumerate(distinct) if seen is view), None)
                if slot is None:
                    check_pair(first, view, allow_empty=allow_empty(group))
                    slot = len(distinct)
                    distinct.append(view)
                slots.append(slot)
            positions.append(slots)
        distinct = promote(*distinct)
        scale, _ = check_infonce_options(
            distinct[0], logit_scale, None, label_smoothing, local_loss, gather_with_grad, False,
            chunk_size, backend,
        )  # fmt: skip
    gathered, batch = gather_views(
        distinct, scale, None, None, local_loss=local_loss, gather_with_grad=gather_with_grad,
        group=group, caller=caller,
    )  # fmt: skip
    return [[gathered[j] for j in slots] for slots in positions], batch


def _mean_over_pairs(
    views_a: list[View],
    views_b: list[View],
    batch: InfoNCEBatch,
    *,
    label_smoothing: float,
    chunk_size: int | None,
    backend: Backend,
) -> torch.Tensor:
    """Mean of the pair losses of ``views_a x views_b``, on views already gathered."""
    total: torch.Tensor | None = None
    for x in views_a:
        for y in views_b:
            pair = pair_loss(
                x, y, batch, label_smoothing=label_smoothing, return_details=False,
                chunk_size=chunk_size, backend=backend,
            )  # fmt: skip
            assert isinstance(pair, torch.Tensor)
            total = pair if total is None else total + pair
    assert total is not None
    return total / (len(views_a) * len(views_b))


def multiview_clip_loss(
    views_a: Sequence[torch.Tensor],
    views_b: Sequence[torch.Tensor],
    logit_scale: float | torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    r"""Mean symmetric InfoNCE over every pair of views (COSMOS, Kim et al., CVPR 2025).

    $$\mathcal{L} = \frac{1}{|A|\,|B|}\sum_{a \in A}\sum_{b \in B} \ell_s(a, b),$$

    where $\ell_s$ is [`clip_loss`][vlp.losses.clip.clip_loss] (the symmetric InfoNCE of
    open_clip) and row ``i`` of every view is the same sample, so the positives of a pair
    are its diagonal. Every pair is computed as by ``clip_loss`` (features L2-normalised,
    gathered across ranks, optionally tiled), but each distinct view tensor is normalised and
    gathered once per call, not once per pair: under a process group the forward costs one
    batch-size exchange plus one all-gather per view (``V_a + V_b``, a tensor in both lists
    counted once) and the backward one all-reduce per gathered view that needs a gradient,
    plus one for the scale.
    The pairs are unweighted and not deduplicated: a view in both lists is paired with itself.

    Args:
        views_a: ``V_a`` tensors ``(N, D)``, floating, one per view (e.g. image crops).
        views_b: ``V_b`` tensors ``(N, D)``, same shape, dtype and device (e.g. captions).
        logit_scale: positive multiplier of the cosine similarities (already
            exponentiated): a float or a one-element tensor.
        label_smoothing: see [`clip_loss`][vlp.losses.clip.clip_loss].
        local_loss: see [`clip_loss`][vlp.losses.clip.clip_loss]. The COSMOS reference
            computes every rank's full global loss (``local_loss=False``); the default gives
            the same gradients after DDP averaging at a ``W``-th of the cost.
        gather_with_grad: see [`clip_loss`][vlp.losses.clip.clip_loss].
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        chunk_size: tile the logits in column chunks of this size (never forms the
            ``N x N`` matrix of any pair); see [`clip_loss`][vlp.losses.clip.clip_loss].
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.

    Returns:
        Scalar tensor (float32 or wider).

    Raises:
        TypeError: if a list is a bare tensor or holds a non-tensor, or as ``clip_loss``.
        ValueError: on an empty list, views of different shapes, or as ``clip_loss``.
    """
    with validated(group, "multiview_clip_loss"):
        a = _views("views_a", views_a)
        b = _views("views_b", views_b)
        if a[0].shape != b[0].shape:
            raise ValueError(
                f"views_a and views_b must hold views of one shape, got {tuple(a[0].shape)} "
                f"and {tuple(b[0].shape)}"
            )
    (a_views, b_views), batch = _gather_groups(
        [a, b], logit_scale, label_smoothing=label_smoothing, local_loss=local_loss,
        gather_with_grad=gather_with_grad, group=group, chunk_size=chunk_size, backend=backend,
        caller="multiview_clip_loss",
    )  # fmt: skip
    return _mean_over_pairs(
        a_views, b_views, batch, label_smoothing=label_smoothing, chunk_size=chunk_size,
        backend=backend,
    )  # fmt: skip


def cosmos_distillation_loss(
    student_image: Sequence[torch.Tensor],
    student_text: Sequence[torch.Tensor],
    teacher_image: Sequence[torch.Tensor],
    teacher_text: Sequence[torch.Tensor],
    logit_scale: float | torch.Tensor,
    *,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    r"""Cross-modality self-distillation term of COSMOS (Kim et al., CVPR 2025).

    The mean of four [`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss] groups,
    the teacher side detached (stop-gradient):

    $$\mathcal{L}_{\text{COSMOS}} = \tfrac14\big[\ell(I^x, \bar I) + \ell(I^x, \bar T)
    + \ell(T^x, \bar I) + \ell(T^x, \bar T)\big],$$

    each $\ell$ averaged over its Cartesian product of views. Same-view pairs (e.g. the
    student's cross-modal ``g1`` against the teacher's ``g1``) are included, as in the
    reference. As in [`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss], each
    distinct view tensor of the four lists is gathered once per call (COSMOS: 1 size
    exchange + 20 all-gathers instead of 3 per pair, i.e. 192).

    Args:
        student_image: ``V_i`` tensors ``(N, D)``: the student's cross-modal image features
            $I^x_v$ of every crop (COSMOS: 2 global + 6 local), e.g. from
            [`CrossAttentionPooler`][vlp.heads.cross_attention.CrossAttentionPooler].
        student_text: ``V_t`` tensors ``(N, D)``: cross-modal text features $T^x_c$ of
            every caption (COSMOS: 2 global + 6 local).
        teacher_image: ``U_i`` tensors ``(N, D)``: the EMA teacher's plain image embeddings
            of the global crops (COSMOS: 2). Detached here: never receive gradients.
        teacher_text: ``U_t`` tensors ``(N, D)``: the teacher's text embeddings of the
            global captions (COSMOS: 2). Detached here.
        logit_scale: the distillation scale $s_d$ (already exponentiated), float or
            one-element tensor.
        local_loss: see [`clip_loss`][vlp.losses.clip.clip_loss].
        gather_with_grad: see [`clip_loss`][vlp.losses.clip.clip_loss].
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        chunk_size: tiled path, see [`clip_loss`][vlp.losses.clip.clip_loss].
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.

    Returns:
        Scalar tensor (float32 or wider).

    Raises:
        TypeError: as [`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss].
        ValueError: as [`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss].
    """
    with validated(group, "cosmos_distillation_loss"):
        image_x = _views("student_image", student_image)
        text_x = _views("student_text", student_text)
        # Detach each teacher tensor once, so one passed as both teacher lists is gathered once.
        # (Identity by `is`, not id(): see _gather_groups.)
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def detach_once(t: torch.Tensor) -> torch.Tensor:
            for original, copy in seen:
                if original is t:
                    return copy
            seen.append((t, t.detach()))
            return seen[-1][1]

        targets = [
            [detach_once(t) for t in _views(name, views)]
            for name, views in (("teacher_image", teacher_image), ("teacher_text", teacher_text))
        ]
        for name, views in (
            ("student_text", text_x), ("teacher_image", targets[0]), ("teacher_text", targets[1])
        ):  # fmt: skip
            if views[0].shape != image_x[0].shape:
                raise ValueError(
                    f"{name} must hold views of the shape of student_image "
                    f"{tuple(image_x[0].shape)}, got {tuple(views[0].shape)}"
                )
    gathered, batch = _gather_groups(
        [image_x, text_x, *targets], logit_scale, label_smoothing=0.0, local_loss=local_loss,
        gather_with_grad=gather_with_grad, group=group, chunk_size=chunk_size, backend=backend,
        caller="cosmos_distillation_loss",
    )  # fmt: skip
    image_views, text_views, *target_views = gathered
    groups = [
        _mean_over_pairs(
            student, target, batch, label_smoothing=0.0, chunk_size=chunk_size, backend=backend
        )
        for student in (image_views, text_views)
        for target in target_views
    ]
    return (groups[0] + groups[1] + groups[2] + groups[3]) / 4


class COSMOSLossOutput(NamedTuple):
    """What [`COSMOSLoss`][vlp.losses.cosmos.COSMOSLoss] returns with ``return_details=True``.

    Attributes:
        loss: scalar, ``clip + distillation`` (both weights 1, as the reference).
        clip: scalar, the CLIP term ``L_CLIP``.
        distillation: scalar, the self-distillation term ``L_COSMOS``.
    """

    loss: torch.Tensor
    clip: torch.Tensor
    distillation: torch.Tensor


class COSMOSLoss(nn.Module):
    """The COSMOS objective with its two learnable temperatures (Kim et al., CVPR 2025).

    ``loss = L_CLIP + L_COSMOS`` where ``L_CLIP`` is
    [`multiview_clip_loss`][vlp.losses.cosmos.multiview_clip_loss] of the student's first
    ``clip_image_views`` plain image views (the global crops) against all its plain caption
    views at scale ``logit_scale``, and ``L_COSMOS`` is
    [`cosmos_distillation_loss`][vlp.losses.cosmos.cosmos_distillation_loss] at scale
    ``distill_logit_scale``. Local image crops are left out of the CLIP term on purpose (the
    reference notes they over-fit there). Both scales start at 1/0.07; call `clamp_()` after
    each optimizer step to keep them in ``[1, 100]`` (``[0, ln 100]`` in log space, as the
    reference does on the student and the teacher).

    Args:
        init_scale: initial value of both scales (the multiplier).
        max_scale: upper bound applied by `clamp_()`.
        clip_image_views: how many leading image views enter the CLIP term (2: ``g1, g2``).
        local_loss: see [`clip_loss`][vlp.losses.clip.clip_loss].
        gather_with_grad: see [`clip_loss`][vlp.losses.clip.clip_loss].
        group: process group for gathering; ``None`` means the default group,
            ``False`` this rank alone.
        chunk_size: tiled path for every pair, see [`clip_loss`][vlp.losses.clip.clip_loss].
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.
        device: device of the two scale parameters.
        dtype: dtype of the two scale parameters.

    Example:
        >>> loss_fn = COSMOSLoss()
        >>> views = [torch.randn(4, 8) for _ in range(8)]
        >>> teacher = [torch.randn(4, 8) for _ in range(2)]
        >>> loss = loss_fn(views, views, views, views, teacher, teacher)
        >>> loss.backward()
        >>> loss_fn.clamp_()  # after optimizer.step()
    """

    def __init__(
        self,
        init_scale: float = 1 / 0.07,
        *,
        max_scale: float = 100.0,
        clip_image_views: int = 2,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        group: ProcessGroup | None = None,
        chunk_size: int | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("clip_image_views", clip_image_views, low=1)
        check_bool("local_loss", local_loss)
        check_bool("gather_with_grad", gather_with_grad)
        check_chunk_size(chunk_size)
        check_backend(backend)
        self.logit_scale = LogitScale(init_scale, max_scale=max_scale, device=device, dtype=dtype)
        self.distill_logit_scale = LogitScale(
            init_scale, max_scale=max_scale, device=device, dtype=dtype
        )
        self.clip_image_views = clip_image_views
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.group = group
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    @overload
    def forward(
        self,
        image: Sequence[torch.Tensor],
        text: Sequence[torch.Tensor],
        cross_image: Sequence[torch.Tensor],
        cross_text: Sequence[torch.Tensor],
        teacher_image: Sequence[torch.Tensor],
        teacher_text: Sequence[torch.Tensor],
        *,
        return_details: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self,
        image: Sequence[torch.Tensor],
        text: Sequence[torch.Tensor],
        cross_image: Sequence[torch.Tensor],
        cross_text: Sequence[torch.Tensor],
        teacher_image: Sequence[torch.Tensor],
        teacher_text: Sequence[torch.Tensor],
        *,
        return_details: Literal[True],
    ) -> COSMOSLossOutput: ...

    def forward(
        self,
        image: Sequence[torch.Tensor],
        text: Sequence[torch.Tensor],
        cross_image: Sequence[torch.Tensor],
        cross_text: Sequence[torch.Tensor],
        teacher_image: Sequence[torch.Tensor],
        teacher_text: Sequence[torch.Tensor],
        *,
        return_details: bool = False,
    ) -> torch.Tensor | COSMOSLossOutput:
        """Compute both terms.

        Args:
            image: ``V_i`` student image embeddings ``(N, D)`` (plain pooled, not
                cross-modal), global crops first; only the first ``clip_image_views`` are used.
            text: ``V_t`` student caption embeddings ``(N, D)``, all caption views.
            cross_image: ``V_i`` cross-modal image features ``(N, D)``.
            cross_text: ``V_t`` cross-modal caption features ``(N, D)``.
            teacher_image: teacher image embeddings ``(N, D)`` of the global crops.
            teacher_text: teacher embeddings ``(N, D)`` of the global captions.
            return_details: return the two terms as well.

        Returns:
            The scalar ``clip + distillation``, or a
            [`COSMOSLossOutput`][vlp.losses.cosmos.COSMOSLossOutput] ``(loss, clip,
            distillation)``.
        """
        check_bool("return_details", return_details)
        image_views = _views("image", image)
        if len(image_views) < self.clip_image_views:
            raise ValueError(
                f"image must hold at least clip_image_views={self.clip_image_views} views, "
                f"got {len(image_views)}"
            )
        clip = multiview_clip_loss(
            image_views[: self.clip_image_views], text, self.logit_scale(),
            local_loss=self.local_loss, gather_with_grad=self.gather_with_grad, group=self.group,
            chunk_size=self.chunk_size, backend=self.backend,
        )  # fmt: skip
        distill = cosmos_distillation_loss(
            cross_image, cross_text, teacher_image, teacher_text, self.distill_logit_scale(),
            local_loss=self.local_loss, gather_with_grad=self.gather_with_grad, group=self.group,
            chunk_size=self.chunk_size, backend=self.backend,
        )  # fmt: skip
        if not return_details:
            return clip + distill
        return COSMOSLossOutput(clip + distill, clip, distill)

    def clamp_(self) -> None:
        """Clamp both scales into ``[1, max_scale]``; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()
        self.distill_logit_scale.clamp_()

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"clip_image_views={self.clip_image_views}, local_loss={self.local_loss}, "
            f"chunk_size={self.chunk_size}, backend={self.backend!r}"
        )
