"""Distilling a frozen unimodal (image) teacher into both towers of a vision-language student.

Contrastive distillation against the teacher's embeddings plus a memory bank of past
teacher embeddings (S-SMKE), the plain feature-regression alternatives it replaced, and
the full S-SMKE objective ``L_KD + (ITC(intermediate) + ITC(output)) / 2``.

Reference: T. Cares, "Leveraging Pretrained Unimodal Models for Efficient
Vision-Language Pretraining" (S-SMKE, master's thesis and ``TimCares/EV-LP``), the
``KDClipMomentumMemoryBankLoss`` and ``ClipLoss`` of its reference code.
"""

from __future__ import annotations

import operator
from typing import Any, Literal, NamedTuple, overload

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import (
    check_bool,
    check_finite,
    check_float,
    check_floating,
    check_int,
    check_same_device,
    check_tensor,
    values_readable,
)
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.kernels.contrastive import DEFAULT_CHUNK, tiled_logsumexp
from vlp.losses._contrastive import as_scalar, check_matrix_rows, logits_dtype, promote
from vlp.losses._gather import allow_empty, start_gather, validated
from vlp.losses._infonce import check_backend, check_chunk_size
from vlp.losses._renamed import renamed_keywords
from vlp.losses.clip import clip_loss
from vlp.losses.logit_scale import LogitScale
from vlp.losses.memory_bank import TeacherMemoryBank

__all__ = [
    "ContrastiveDistillationLoss",
    "ContrastiveDistillationOutput",
    "SSMKELossOutput",
    "contrastive_distillation_loss",
    "feature_distillation_loss",
    "ssmke_loss",
]

FeatureDistillationKind = Literal["cosine", "smooth_l1", "mse"]


class ContrastiveDistillationOutput(NamedTuple):
    """The result of contrastive distillation: the total, both halves, logits and labels.

    Returned by
    [`contrastive_distillation_loss`][vlp.losses.distill.contrastive_distillation_loss].

    ``B`` is this rank's batch, ``C`` the number of candidate columns: the teacher
    targets (``B``, or the global batch ``M`` with ``local_targets=False``) followed by
    the ``G`` valid bank entries.

    Attributes:
        loss: scalar, ``(loss_image + loss_text) / 2`` (S-SMKE weights the halves 1:1).
        loss_image: scalar, image-to-teacher ("i2i") cross-entropy, mean over rows.
        loss_text: scalar, text-to-teacher ("t2i") cross-entropy, mean over rows.
        logits_image: ``(B, C)`` scaled logits of the student image rows.
        logits_text: ``(B, C)`` scaled logits of the student text rows.
        labels: ``(B,)`` int64, the column of each row's own teacher embedding.
    """

    loss: torch.Tensor
    loss_image: torch.Tensor
    loss_text: torch.Tensor
    logits_image: torch.Tensor
    logits_text: torch.Tensor
    labels: torch.Tensor


def _check_features(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher: torch.Tensor,
    *,
    allow_empty: bool = False,
) -> None:
    named = (("student_image", student_image), ("student_text", student_text), ("teacher", teacher))
    for name, value in named:
        check_matrix_rows(name, value, allow_empty=allow_empty)
    for name, value in named[1:]:
        if value.shape != student_image.shape:
            raise ValueError(
                f"{name} must have the shape of student_image {tuple(student_image.shape)}, "
                f"got {tuple(value.shape)}"
            )
    check_same_device(*named)
    if values_readable(student_image):
        for name, value in named:
            check_finite(name, value)


def _bank_tensor(
    bank: torch.Tensor | TeacherMemoryBank | None, like: torch.Tensor
) -> torch.Tensor | None:
    if bank is None:
        return None
    if isinstance(bank, TeacherMemoryBank):
        bank = bank.negatives()
    check_tensor("bank", bank)
    if bank.dim() != 2 or bank.shape[1] != like.shape[1]:
        raise ValueError(
            f"bank must have shape (G, {like.shape[1]}) (G past teacher embeddings of the "
            f"features' width), got {tuple(bank.shape)}"
        )
    check_floating("bank", bank)
    if bank.device != like.device:
        raise ValueError(f"bank must be on the features' device {like.device}, got {bank.device}")
    if bank.shape[0] == 0:
        return None
    if values_readable(bank):
        check_finite("bank", bank)
    return bank.detach().to(like.dtype)


@overload
def contrastive_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    logit_scale: float | torch.Tensor,
    *,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    local_targets: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[False] = ...,
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> torch.Tensor: ...


@overload
def contrastive_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    logit_scale: float | torch.Tensor,
    *,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    local_targets: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[True],
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> ContrastiveDistillationOutput: ...


@renamed_keywords(gather_teacher=("local_targets", operator.not_))
def contrastive_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    logit_scale: float | torch.Tensor,
    *,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    local_targets: bool = True,
    group: ProcessGroup | None = None,
    return_details: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor | ContrastiveDistillationOutput:
    r"""InfoNCE of both student towers against frozen teacher embeddings and a bank (S-SMKE).

    With L2-normalised student rows $\hat s^v_i, \hat s^w_i$, teacher rows $t_i$ and the
    candidate matrix $C = [t_1; \dots; t_B; m_1; \dots; m_G]$ (the batch's teacher
    embeddings followed by the bank), the logits are $\lambda \hat s^v C^\top$ and
    $\lambda \hat s^w C^\top$, each ``(B, B + G)``; the target of row ``i`` is column
    ``i``, its own image's teacher embedding. The loss is

    $$\mathcal{L}_{KD} = \tfrac12\,\mathrm{CE}(\lambda \hat s^v C^\top, i)
    + \tfrac12\,\mathrm{CE}(\lambda \hat s^w C^\top, i),$$

    each cross-entropy averaged over the rows (``KDClipMomentumMemoryBankLoss`` of the
    reference). With ``B = 1`` and no bank the loss is 0; with the student equal to the
    teacher it goes to 0 as $\lambda$ grows; with random unit vectors at $\lambda = 1$ it
    is about $\ln(B + G)$.

    The student features and the teacher are L2-normalised here; the bank is used as
    given (a [`TeacherMemoryBank`][vlp.losses.memory_bank.TeacherMemoryBank] stores unit
    rows). Gradients flow into the student features and ``logit_scale``, and into
    ``teacher`` only if it requires grad (a frozen teacher does not); never into the bank.

    **Distributed.** By default (``local_targets=True``) the teacher targets are this
    rank's own (the reference training loss: positives and in-batch negatives are local)
    and nothing is gathered. With ``local_targets=False`` the targets of every rank are
    gathered, the labels are offset by the rows of the ranks before this one, and, as in
    [`clip_loss`][vlp.losses.clip.clip_loss], each rank returns ``W / M`` times its
    rows' summed cross-entropies: the per-rank values average to the single-process loss
    of the global batch, and DDP's gradient averaging reproduces its gradients. Then
    ``gather_with_grad`` says whether other ranks' targets carry gradient (only relevant
    for a teacher that is trained) and ``local_loss=False`` gathers the student rows too
    and computes the whole global loss on every rank (as ``clip_loss``).

    **Tiled path.** With ``chunk_size`` (or ``backend="triton"``) the log-sum-exps over
    the ``B + G`` candidates go through
    [`tiled_logsumexp`][vlp.kernels.contrastive.tiled_logsumexp]: the ``(B, B + G)``
    logits (``G`` = 65,536 in S-SMKE) are never formed. Same value and gradients; no
    details.

    Args:
        student_image: ``(B, D)`` floating, the KD projections of the images.
        student_text: ``(B, D)``, same device, the KD projections of the captions
            of the same images.
        teacher: ``(B, D)``, the frozen teacher's embedding of each image.
        bank: ``(G, D)`` past teacher embeddings (unit rows), a
            [`TeacherMemoryBank`][vlp.losses.memory_bank.TeacherMemoryBank] (its valid
            entries are used), or ``None``; ``None`` or ``G = 0`` uses only the batch.
        logit_scale: the multiplier $\lambda$ (already exponentiated): a positive float or
            a one-element tensor. S-SMKE keeps it at ``1 / 0.07``.
        local_loss: compute only this rank's rows (``False`` needs ``local_targets=False``).
        gather_with_grad: gather other ranks' features with gradient.
        local_targets: use only this rank's teacher targets (the reference); ``False``
            gathers them from every rank (``gather_teacher=True`` is its deprecated form).
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        return_details: return a
            [`ContrastiveDistillationOutput`][vlp.losses.distill.ContrastiveDistillationOutput]
            instead of the scalar (dense path only).
        chunk_size: take the tiled path with column chunks of this size (see above).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.

    Returns:
        The scalar loss (float32 or wider), or a
        [`ContrastiveDistillationOutput`][vlp.losses.distill.ContrastiveDistillationOutput].

    Raises:
        ValueError: on non-2-D, empty or mismatched shapes, a bank of another width or
            device, NaN/inf (checked on CPU tensors), or a non-positive ``logit_scale``.
        TypeError: on non-floating dtypes (mixed floating dtypes are promoted, as torch
            ops do: an fp32 frozen teacher against a bf16 student computes in fp32).
    """
    # Only local_targets=False communicates, so only then must a rejection reach every rank.
    # (A non-bool local_targets is rejected on this rank before it picks the group.)
    check_bool("local_targets", local_targets)
    exchange_group = False if local_targets else group
    with validated(exchange_group, "contrastive_distillation_loss"):
        _check_features(
            student_image, student_text, teacher, allow_empty=allow_empty(exchange_group)
        )
        student_image, student_text, teacher = promote(student_image, student_text, teacher)
        scale = as_scalar("logit_scale", logit_scale, student_image, positive=True)
        for name, flag in (
            ("local_loss", local_loss), ("gather_with_grad", gather_with_grad),
            ("local_targets", local_targets), ("return_details", return_details),
        ):  # fmt: skip
            check_bool(name, flag)
        if local_targets and not local_loss:
            raise ValueError(
                "local_loss=False scores every rank's rows against the gathered targets; "
                "it needs local_targets=False"
            )
        check_chunk_size(chunk_size)
        check_backend(backend)
        tiled = chunk_size is not None or backend == "triton"
        if tiled and return_details:
            raise ValueError(
                "return_details=True needs the logits, which the tiled path (chunk_size or "
                "backend='triton') never forms; use the dense path for details"
            )
        negatives = _bank_tensor(bank, student_image)

    image = F.normalize(student_image, dim=-1)
    text = F.normalize(student_text, dim=-1)
    targets = F.normalize(teacher, dim=-1)
    rows = image.shape[0]
    if local_targets:
        offset, weight = 0, 1.0 / rows
    else:
        facts = {
            "logit_scale requires grad": scale.requires_grad,
            "local_loss": local_loss,
            "gather_with_grad": gather_with_grad,
            "tiled": tiled,
        }
        gather = start_gather(targets, group, facts=facts, caller="contrastive_distillation_loss")
        targets = gather.everyone(targets, with_grad=gather_with_grad, keep_local=True)
        if local_loss:
            offset, weight = gather.offset, gather.world / gather.total
        else:
            image, text = (
                gather.everyone(t, with_grad=gather_with_grad, keep_local=True)
                for t in (image, text)
            )
            offset, rows, weight = 0, gather.total, 1.0 / gather.total
        scale = gather.shared(scale)
    columns = targets if negatives is None else torch.cat([targets, negatives])

    if tiled:
        chunk = DEFAULT_CHUNK if chunk_size is None else chunk_size
        lse = tiled_logsumexp(
            image, columns, scale, None, row_weight=weight, chunk_size=chunk, backend=backend
        ) + tiled_logsumexp(
            text, columns, scale, None, row_weight=weight, chunk_size=chunk, backend=backend
        )  # fmt: skip
        acc = lse.dtype
        own = targets[offset : offset + rows].to(acc)
        positive = ((image.to(acc) + text.to(acc)) * own).sum()
        loss: torch.Tensor = (lse - weight * scale.to(acc) * positive) / 2
        return loss

    dtype = logits_dtype(image.dtype)
    logits_image = scale * (image @ columns.T).to(dtype)
    logits_text = scale * (text @ columns.T).to(dtype)
    labels = torch.arange(offset, offset + rows, device=image.device)
    loss_image = weight * F.cross_entropy(logits_image, labels, reduction="sum")
    loss_text = weight * F.cross_entropy(logits_text, labels, reduction="sum")
    loss = (loss_image + loss_text) / 2
    if not return_details:
        return loss
    return ContrastiveDistillationOutput(
        loss, loss_image, loss_text, logits_image, logits_text, labels
    )


def feature_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: FeatureDistillationKind = "cosine",
    *,
    normalize: bool = False,
    beta: float = 1.0,
) -> torch.Tensor:
    r"""Regress the teacher's features with the student's (the baselines S-SMKE compares).

    - ``"cosine"``: mean over rows of $1 - \cos(s_i, t_i)$ (always scale-free).
    - ``"smooth_l1"``: ``torch.nn.functional.smooth_l1_loss(s, t, beta=beta)``, the mean
      over every element (Huber with threshold ``beta``, divided by ``beta``).
    - ``"mse"``: mean over every element of $(s - t)^2$; the regression of the teacher
      CLS that the S-SMKE thesis replaced by the contrastive form.

    Reference: S-SMKE thesis, "modality-invariant targets" (MSE vs contrastive), and the
    cosine / smooth-L1 feature regression of data2vec-style distillation.

    Args:
        student: ``(..., D)`` floating student features (any leading dims: ``(B, D)`` for
            a CLS embedding, ``(B, T, D)`` for tokens).
        teacher: same shape and device (any floating dtype: both are promoted); the
            targets (detach them if the teacher is not to be trained; a
            [`FrozenTeacher`][vlp.heads.frozen_teacher.FrozenTeacher] output already is).
        kind: ``"cosine"``, ``"smooth_l1"`` or ``"mse"``.
        normalize: L2-normalise both along ``D`` first (for ``"smooth_l1"`` and ``"mse"``;
            ``"cosine"`` is unaffected).
        beta: the smooth-L1 threshold, ``> 0``.

    Returns:
        A scalar tensor (float32 or wider).

    Raises:
        ValueError: on mismatched or empty shapes, 0-dim input, an unknown ``kind``,
            NaN/inf (CPU tensors) or a non-positive ``beta``.
        TypeError: on non-floating dtypes (mixed floating dtypes are promoted, as torch
            ops do: an fp32 frozen teacher against a bf16 student computes in fp32).
    """
    for name, value in (("student", student), ("teacher", teacher)):
        check_floating(name, value)
        if value.dim() == 0 or value.numel() == 0:
            raise ValueError(
                f"{name} must have shape (..., D) with at least one element, "
                f"got {tuple(value.shape)}"
            )
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    check_same_device(("student", student), ("teacher", teacher))
    if kind not in ("cosine", "smooth_l1", "mse"):
        raise ValueError(f"kind must be one of ('cosine', 'smooth_l1', 'mse'), got {kind!r}")
    beta = check_float("beta", beta, low=0, low_inclusive=False)
    check_bool("normalize", normalize)
    student, teacher = promote(student, teacher)
    if values_readable(student):
        check_finite("student", student)
        check_finite("teacher", teacher)

    dtype = logits_dtype(student.dtype)
    s, t = student.to(dtype), teacher.to(dtype)
    if kind == "cosine":
        cos = (F.normalize(s, dim=-1) * F.normalize(t, dim=-1)).sum(dim=-1)
        return (1 - cos).mean()
    if normalize:
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    if kind == "mse":
        return F.mse_loss(s, t)
    return F.smooth_l1_loss(s, t, beta=beta)


class SSMKELossOutput(NamedTuple):
    """What [`ssmke_loss`][vlp.losses.distill.ssmke_loss] returns.

    Attributes:
        loss: scalar, ``kd + (itc_intermediate + itc_output) / 2``.
        kd: scalar, the contrastive distillation loss (``ContrastiveDistillationOutput.loss``).
        itc_intermediate: scalar, CLIP loss on the shared block's MLP intermediates.
        itc_output: scalar, CLIP loss on the shared block's outputs.
        distillation: the full
            [`ContrastiveDistillationOutput`][vlp.losses.distill.ContrastiveDistillationOutput].
    """

    loss: torch.Tensor
    kd: torch.Tensor
    itc_intermediate: torch.Tensor
    itc_output: torch.Tensor
    distillation: ContrastiveDistillationOutput


@overload
def ssmke_loss(
    image: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    distill_logit_scale: float | torch.Tensor,
    logit_scale_intermediate: float | torch.Tensor,
    logit_scale_output: float | torch.Tensor,
    *,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    local_targets: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[False] = ...,
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> torch.Tensor: ...


@overload
def ssmke_loss(
    image: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    distill_logit_scale: float | torch.Tensor,
    logit_scale_intermediate: float | torch.Tensor,
    logit_scale_output: float | torch.Tensor,
    *,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    local_targets: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[True],
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> SSMKELossOutput: ...


@renamed_keywords(
    kd_scale="distill_logit_scale",
    itc_scale_intermediate="logit_scale_intermediate",
    itc_scale_output="logit_scale_output",
    gather_teacher=("local_targets", operator.not_),
)
def ssmke_loss(
    image: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: torch.Tensor,
    bank: torch.Tensor | TeacherMemoryBank | None,
    distill_logit_scale: float | torch.Tensor,
    logit_scale_intermediate: float | torch.Tensor,
    logit_scale_output: float | torch.Tensor,
    *,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    local_targets: bool = True,
    group: ProcessGroup | None = None,
    return_details: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor | SSMKELossOutput:
    r"""The S-SMKE objective: distillation plus the two image-text contrastive terms.

    $\mathcal{L} = \mathcal{L}_{KD} + \tfrac12(\mathrm{ITC}_{interm} + \mathrm{ITC}_{out})$.
    Expanded: $\tfrac12\mathrm{CE}_{i2i} + \tfrac12\mathrm{CE}_{t2i} + \tfrac14(\mathrm{CE}_{i2t}
    + \mathrm{CE}_{t2i})_{interm} + \tfrac14(\mathrm{CE}_{i2t} + \mathrm{CE}_{t2i})_{out}$.
    Both ITC terms are [`clip_loss`][vlp.losses.clip.clip_loss]; ``local_loss``,
    ``gather_with_grad``, ``group``, ``chunk_size`` and ``backend`` go to all three terms.

    Args:
        image: ``(x_interm (B, 4D'), x (B, D'), kd (B, E))`` of the images, e.g. an
            [`SSMKEOutput`][vlp.models.ssmke.SSMKEOutput].
        text: the same triple for the paired captions.
        teacher: ``(B, E)`` frozen teacher embeddings of the images.
        bank: the teacher memory bank (see
            [`contrastive_distillation_loss`][vlp.losses.distill.contrastive_distillation_loss]).
        distill_logit_scale: the distillation multiplier (fixed ``1 / 0.07`` in S-SMKE;
            ``kd_scale=`` is its deprecated name).
        logit_scale_intermediate: CLIP multiplier of the intermediate ITC (learnable in
            S-SMKE; ``itc_scale_intermediate=`` is its deprecated name).
        logit_scale_output: CLIP multiplier of the output ITC (``itc_scale_output=``).
        local_loss: see [`clip_loss`][vlp.losses.clip.clip_loss].
        gather_with_grad: see [`clip_loss`][vlp.losses.clip.clip_loss].
        local_targets: see
            [`contrastive_distillation_loss`][vlp.losses.distill.contrastive_distillation_loss]
            (``gather_teacher=True`` is its deprecated form, ``local_targets=False``).
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        return_details: return an [`SSMKELossOutput`][vlp.losses.distill.SSMKELossOutput]
            (dense path only).
        chunk_size: the tiled path of all three terms.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.

    Returns:
        The scalar loss, or an [`SSMKELossOutput`][vlp.losses.distill.SSMKELossOutput].
    """
    for name, value in (("image", image), ("text", text)):
        if not isinstance(value, tuple) or len(value) != 3:
            raise TypeError(
                f"{name} must be a tuple (x_interm, x, kd) of three tensors, "
                f"got {type(value).__name__}"
            )
    check_bool("return_details", return_details)
    common: dict[str, Any] = {
        "local_loss": local_loss,
        "gather_with_grad": gather_with_grad,
        "group": group,
        "chunk_size": chunk_size,
        "backend": backend,
    }
    kd: torch.Tensor | ContrastiveDistillationOutput = contrastive_distillation_loss(  # type: ignore[call-overload]
        image[2], text[2], teacher, bank, distill_logit_scale, local_targets=local_targets,
        return_details=return_details, **common,
    )  # fmt: skip
    itc_interm: torch.Tensor = clip_loss(image[0], text[0], logit_scale_intermediate, **common)
    itc_out: torch.Tensor = clip_loss(image[1], text[1], logit_scale_output, **common)
    if not isinstance(kd, ContrastiveDistillationOutput):
        return kd + (itc_interm + itc_out) / 2
    total = kd.loss + (itc_interm + itc_out) / 2
    return SSMKELossOutput(total, kd.loss, itc_interm, itc_out, kd)


class ContrastiveDistillationLoss(nn.Module):
    r"""Contrastive distillation with its teacher memory bank and temperature (S-SMKE).

    Holds a [`TeacherMemoryBank`][vlp.losses.memory_bank.TeacherMemoryBank] and a
    [`LogitScale`][vlp.losses.logit_scale.LogitScale]. ``forward`` computes
    [`contrastive_distillation_loss`][vlp.losses.distill.contrastive_distillation_loss]
    against the bank's valid entries and then, in training mode, enqueues the
    L2-normalised teacher embeddings (gathered from every rank), as the reference does
    after the loss.

    The reference never trains the temperature (its parameter is outside the optimised
    module), so the scale is fixed at ``1 / 0.07`` unless ``learnable_scale=True``.

    Args:
        bank_size: ``G``, the number of past teacher embeddings kept (65,536 in S-SMKE).
        dim: ``D``, the teacher embedding width.
        bank_init: ``"random_unit"`` (the reference: uniform [0, 1) rows, L2-normalised) or
            ``"empty"`` (no negatives until filled); ``init=`` is its deprecated name.
        init_scale: the multiplier $\lambda$.
        learnable_scale: train the scale (then call `clamp_()` after each step).
        max_scale: upper bound of the scale for `clamp_()`.
        local_loss: see
            [`contrastive_distillation_loss`][vlp.losses.distill.contrastive_distillation_loss].
        gather_with_grad: idem.
        local_targets: ``False`` gathers the current targets across ranks too (the thesis'
            formula; the reference uses local targets). ``gather_teacher=True`` is its
            deprecated form.
        group: process group for the gathers; ``False`` this rank alone.
        chunk_size: the tiled path (never forms the ``(B, B + G)`` logits).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the tiled path.
        generator: generator of the random bank init.
        device: device of the bank and the scale.
        dtype: dtype of the bank and the scale.

    Example:
        >>> loss_fn = ContrastiveDistillationLoss(bank_size=64, dim=8, bank_init="empty")
        >>> s_img, s_txt, t = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
        >>> out = loss_fn(s_img, s_txt, t, return_details=True)
        >>> tuple(out.logits_image.shape), len(loss_fn.bank)
        ((4, 4), 4)
    """

    @renamed_keywords(init="bank_init", gather_teacher=("local_targets", operator.not_))
    def __init__(
        self,
        bank_size: int = 65536,
        dim: int = 768,
        *,
        bank_init: Literal["random_unit", "empty"] = "random_unit",
        init_scale: float = 1 / 0.07,
        learnable_scale: bool = False,
        max_scale: float = 100.0,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        local_targets: bool = True,
        group: ProcessGroup | None = None,
        chunk_size: int | None = None,
        backend: Backend = "auto",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        # Named here as this class names them; the bank calls them `size` and `init`.
        check_int("bank_size", bank_size, low=1)
        if not isinstance(bank_init, str) or bank_init not in ("random_unit", "empty"):
            raise ValueError(f"bank_init must be 'random_unit' or 'empty', got {bank_init!r:.80}")
        self.bank = TeacherMemoryBank(
            bank_size, dim, init=bank_init, generator=generator, device=device, dtype=dtype
        )
        self.logit_scale = LogitScale(
            init_scale,
            max_scale=max_scale,
            learnable_scale=learnable_scale,
            device=device,
            dtype=dtype,
        )
        self.local_loss = check_bool("local_loss", local_loss)
        self.gather_with_grad = check_bool("gather_with_grad", gather_with_grad)
        self.local_targets = check_bool("local_targets", local_targets)
        if local_targets and not local_loss:
            raise ValueError("local_loss=False needs local_targets=False")
        check_chunk_size(chunk_size)
        check_backend(backend)
        self.group = group
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    @overload
    def forward(
        self,
        student_image: torch.Tensor,
        student_text: torch.Tensor,
        teacher: torch.Tensor,
        *,
        return_details: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self,
        student_image: torch.Tensor,
        student_text: torch.Tensor,
        teacher: torch.Tensor,
        *,
        return_details: Literal[True],
    ) -> ContrastiveDistillationOutput: ...

    def forward(
        self,
        student_image: torch.Tensor,
        student_text: torch.Tensor,
        teacher: torch.Tensor,
        *,
        return_details: bool = False,
    ) -> torch.Tensor | ContrastiveDistillationOutput:
        """Compute the loss, then (in training mode) enqueue the unit ``teacher`` rows.

        Args:
            student_image: ``(B, D)`` KD projections of the images.
            student_text: ``(B, D)`` KD projections of the captions.
            teacher: ``(B, D)`` teacher embeddings of the images.
            return_details: return a
                [`ContrastiveDistillationOutput`][vlp.losses.distill.ContrastiveDistillationOutput].

        Returns:
            The scalar loss, or a
            [`ContrastiveDistillationOutput`][vlp.losses.distill.ContrastiveDistillationOutput].
        """
        out = contrastive_distillation_loss(  # type: ignore[call-overload]
            student_image,
            student_text,
            teacher,
            self.bank,
            self.logit_scale(),
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            local_targets=self.local_targets,
            group=self.group,
            return_details=return_details,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        if self.training:
            # The bank holds the unit targets the loss used (the reference enqueues its
            # normalised teacher embeddings), whatever the scale of ``teacher``.
            self.bank.enqueue(F.normalize(teacher.detach(), dim=-1), group=self.group)
        return out  # type: ignore[no-any-return]

    def clamp_(self) -> None:
        """Clamp a learnable scale into its bounds; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()
