r"""FSC-CLIP's objective: CLIP + global hard-negative loss + local hard-negative loss.

Reference: Oh et al., "Preserving Multi-Modal Capabilities of Pre-trained VLMs for Improving
Vision-Linguistic Compositionality", EMNLP 2024 (section 3, eq. for the total loss;
released ``Local_HNLoss`` / ``Global_HNLoss``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, overload

import torch
from torch import nn

from vlp._checks import check_bool, check_float
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.losses._contrastive import as_scalar
from vlp.losses._gather import validated
from vlp.losses._hard_negative import check_gamma, check_missing, check_smoothing
from vlp.losses._infonce import check_backend, check_chunk_size
from vlp.losses._renamed import renamed_keywords
from vlp.losses.clip import _clip_loss
from vlp.losses.hard_negative import _hard_negative_loss, check_hard_negative_inputs
from vlp.losses.local_hard_negative import (
    SimilarityNormalizer,
    _local_hard_negative_loss,
    check_local_tokens,
    check_normalizer,
)
from vlp.losses.logit_scale import LogitScale
from vlp.losses.scr import MissingNegatives

__all__ = ["FSCCLIPLoss", "FSCCLIPLossOutput", "fsc_clip_loss"]


class FSCCLIPLossOutput(NamedTuple):
    """What [`fsc_clip_loss`][vlp.losses.fsc_clip.fsc_clip_loss] returns with ``return_details``.

    Attributes:
        loss: scalar total, ``clip + lambda_global * global_negative +
            lambda_local * local_negative``.
        clip: scalar CLIP loss of the positive pairs.
        global_negative: scalar global hard-negative loss, unweighted.
        local_negative: scalar local hard-negative loss, unweighted (0 when
            ``lambda_local == 0``: it is not computed).
    """

    loss: torch.Tensor
    clip: torch.Tensor
    global_negative: torch.Tensor
    local_negative: torch.Tensor


def _check_weight(name: str, value: object) -> float:
    return check_float(name, value, low=0)


@overload
def fsc_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    negative_mask: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    image_tokens: torch.Tensor | None = ...,
    text_tokens: torch.Tensor | None = ...,
    text_mask: torch.Tensor | None = ...,
    negative_tokens: torch.Tensor | None = ...,
    negative_token_mask: torch.Tensor | None = ...,
    lambda_global: float = ...,
    lambda_local: float = ...,
    gamma: float = ...,
    scr_label_smoothing: float = ...,
    normalizer: SimilarityNormalizer = ...,
    sparsify: bool = ...,
    missing: MissingNegatives = ...,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[False] = ...,
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> torch.Tensor: ...


@overload
def fsc_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    negative_mask: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    image_tokens: torch.Tensor | None = ...,
    text_tokens: torch.Tensor | None = ...,
    text_mask: torch.Tensor | None = ...,
    negative_tokens: torch.Tensor | None = ...,
    negative_token_mask: torch.Tensor | None = ...,
    lambda_global: float = ...,
    lambda_local: float = ...,
    gamma: float = ...,
    scr_label_smoothing: float = ...,
    normalizer: SimilarityNormalizer = ...,
    sparsify: bool = ...,
    missing: MissingNegatives = ...,
    local_loss: bool = ...,
    gather_with_grad: bool = ...,
    group: ProcessGroup | None = ...,
    return_details: Literal[True],
    chunk_size: int | None = ...,
    backend: Backend = ...,
) -> FSCCLIPLossOutput: ...


@renamed_keywords(label_smoothing="scr_label_smoothing")
def fsc_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_features: torch.Tensor,
    negative_mask: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    image_tokens: torch.Tensor | None = None,
    text_tokens: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    negative_tokens: torch.Tensor | None = None,
    negative_token_mask: torch.Tensor | None = None,
    lambda_global: float = 0.5,
    lambda_local: float = 0.2,
    gamma: float = 2.0,
    scr_label_smoothing: float = 0.02,
    normalizer: SimilarityNormalizer = "minmax",
    sparsify: bool = False,
    missing: MissingNegatives = "zero",
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    return_details: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor | FSCCLIPLossOutput:
    r"""FSC-CLIP's training loss (Oh et al. 2024, sec. 3): ``L_clip + λ_g L^g_neg + λ_l L^l_neg``.

    - ``L_clip``: :func:`~vlp.losses.clip_loss` on the positive pairs only (hard negatives
      never enter it), with its distributed gathering;
    - ``L^g_neg``: :func:`~vlp.losses.hard_negative_loss`, each image against its caption
      and that caption's hard negatives;
    - ``L^l_neg``: :func:`~vlp.losses.local_hard_negative_loss` on patch and text tokens;
      computed only when ``lambda_local > 0``, and then the five token arguments are needed.

    Both hard-negative terms use selective calibrated regularisation
    (:func:`~vlp.losses.scr_loss`) with the same ``gamma`` and ``scr_label_smoothing`` and are
    computed on this rank's batch. Defaults are the paper's ViT-B/32 settings: λ_g = 0.5,
    λ_l = 0.2, γ = 2, ε = 0.02, min-max weights, no sparsification (the release uses
    λ_l = 0.5 for ViT-B/16 and ViT-L/14, λ_g = 1.0 on CC-3M).

    Args:
        image_features: ``(B, D)`` floating pooled image embeddings.
        text_features: ``(B, D)`` pooled embeddings of the positive captions.
        negative_features: ``(B, N, D)`` pooled embeddings of the hard negatives.
        negative_mask: ``(B, N)`` ``torch.bool``, ``True`` where the negative exists.
        logit_scale: positive multiplier (already exponentiated), shared by all terms.
        image_tokens: ``(B, P, D)`` projected patch tokens (local term).
        text_tokens: ``(B, T, D)`` projected tokens of the positive captions (local term).
        text_mask: ``(B, T)`` bool token mask of the positives (local term).
        negative_tokens: ``(B, N, T, D)`` projected tokens of the negatives (local term).
        negative_token_mask: ``(B, N, T)`` bool token masks of the negatives (local term).
        lambda_global: weight ``λ_g >= 0`` of the global hard-negative loss.
        lambda_local: weight ``λ_l >= 0`` of the local hard-negative loss.
        gamma: SCR focal exponent.
        scr_label_smoothing: SCR label smoothing of both hard-negative terms (the CLIP term
            has none); ``label_smoothing=`` is its deprecated name.
        normalizer: local patch weights, ``"minmax"`` or ``"softmax"``.
        sparsify: zero min-max weights below ``1 / P``.
        missing: ``"zero"`` (release: a missing negative scores 0 inside the softmax) or
            ``"mask"`` (left out).
        local_loss: the CLIP term's ``local_loss`` (see :func:`~vlp.losses.clip_loss`).
        gather_with_grad: the CLIP term's ``gather_with_grad``.
        group: the CLIP term's process group (``False``: this rank alone).
        return_details: return a [`FSCCLIPLossOutput`][vlp.losses.fsc_clip.FSCCLIPLossOutput].
        chunk_size: the CLIP term's tiled path (see :func:`~vlp.losses.clip_loss`).
        backend: the CLIP term's backend (see :func:`~vlp.losses.clip_loss`).

    Returns:
        The scalar total (float32 or wider), or a
        [`FSCCLIPLossOutput`][vlp.losses.fsc_clip.FSCCLIPLossOutput].

    Raises:
        ValueError: as the three losses, on a negative weight, or when ``lambda_local > 0``
            and a token argument is missing.
        TypeError: as the three losses.
    """
    # Every argument is checked once here; the three terms run on the checked tensors.
    with validated(group, "fsc_clip_loss"):
        image, text, negative, mask = check_hard_negative_inputs(
            image_features, text_features, negative_features, negative_mask
        )
        scale = as_scalar("logit_scale", logit_scale, image, positive=True)
        lambda_global = _check_weight("lambda_global", lambda_global)
        lambda_local = _check_weight("lambda_local", lambda_local)
        gamma = check_gamma(gamma)
        label_smoothing = check_smoothing(scr_label_smoothing, "scr_label_smoothing")
        check_normalizer(normalizer)
        check_bool("sparsify", sparsify)
        missing = check_missing(missing)
        check_bool("local_loss", local_loss)
        check_bool("gather_with_grad", gather_with_grad)
        check_bool("return_details", return_details)
        check_chunk_size(chunk_size)
        check_backend(backend)
        if lambda_local > 0:
            tokens = {
                "image_tokens": image_tokens,
                "text_tokens": text_tokens,
                "text_mask": text_mask,
                "negative_tokens": negative_tokens,
                "negative_token_mask": negative_token_mask,
            }
            absent = [name for name, value in tokens.items() if value is None]
            if absent:
                raise ValueError(
                    f"lambda_local = {lambda_local} > 0 needs the token arguments; missing: "
                    f"{', '.join(absent)} (pass them, or lambda_local=0 for the global loss only)"
                )
            # Tied to the pooled features, so that a mismatch names the tokens, not the mask.
            token_args = check_local_tokens(
                image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask,
                batch=image.shape[0], negatives=negative.shape[1],
            )  # fmt: skip

    clip = _clip_loss(
        image, text, scale, None, None, label_smoothing=0.0, local_loss=local_loss,
        gather_with_grad=gather_with_grad, group=group, return_details=False,
        chunk_size=chunk_size, backend=backend, caller="fsc_clip_loss",
    )  # fmt: skip
    assert isinstance(clip, torch.Tensor)
    global_negative = _hard_negative_loss(
        image, text, negative, mask, scale, gamma, label_smoothing, missing
    )
    total = clip + lambda_global * global_negative
    if lambda_local > 0:
        local_negative = _local_hard_negative_loss(
            *token_args, mask, scale, normalizer, sparsify, gamma, label_smoothing, missing
        )
        total = total + lambda_local * local_negative
    else:
        local_negative = torch.zeros_like(global_negative)
    if not return_details:
        return total
    return FSCCLIPLossOutput(total, clip, global_negative, local_negative)


class FSCCLIPLoss(nn.Module):
    """FSC-CLIP's loss with a learnable temperature (Oh et al., EMNLP 2024, sec. 3).

    Holds the configuration and a [`LogitScale`][vlp.losses.logit_scale.LogitScale] (as
    [`ClipLoss`][vlp.losses.clip.ClipLoss] does) and calls
    [`fsc_clip_loss`][vlp.losses.fsc_clip.fsc_clip_loss]. FSC-CLIP fine-tunes a pretrained
    CLIP, whose scale (about 100 for OpenAI's) sets the sharpness of the SCR and local
    terms, so there is no default scale: build the loss with
    [`from_model`][vlp.losses.fsc_clip.FSCCLIPLoss.from_model] (reads the model's
    ``logit_scale``) or pass ``init_scale``. Call `clamp_()` after each optimiser step.
    Other defaults are the paper's (ViT-B/32).

    Args:
        init_scale: initial logit scale (the multiplier, at most ``max_scale``; OpenAI
            CLIP ends at 100). Required: ``None`` raises a ``ValueError``.
        max_scale: upper bound applied by `clamp_()`.
        learnable_scale: whether the scale is trained.
        lambda_global: weight of the global hard-negative loss (paper: 0.5).
        lambda_local: weight of the local hard-negative loss (paper: 0.2 for ViT-B/32).
        gamma: SCR focal exponent (paper: 2).
        scr_label_smoothing: SCR label smoothing (paper: 0.02); ``label_smoothing=`` is its
            deprecated name.
        normalizer: local patch weights, ``"minmax"`` (paper) or ``"softmax"``.
        sparsify: zero min-max weights below ``1 / P`` (paper: off).
        missing: ``"zero"`` (release) or ``"mask"``; see
            [`scr_loss`][vlp.losses.scr.scr_loss].
        local_loss: CLIP term's ``local_loss``.
        gather_with_grad: CLIP term's ``gather_with_grad``.
        group: CLIP term's process group (``False``: this rank alone).
        chunk_size: CLIP term's tiled path (see [`clip_loss`][vlp.losses.clip.clip_loss]).
        backend: CLIP term's backend.
        device: device of the scale parameter.
        dtype: dtype of the scale parameter.

    Example:
        >>> loss_fn = FSCCLIPLoss(100.0, lambda_local=0.0)
        >>> image, text = torch.randn(4, 16), torch.randn(4, 16)
        >>> negatives, mask = torch.randn(4, 3, 16), torch.ones(4, 3, dtype=torch.bool)
        >>> loss_fn(image, text, negatives, mask).backward()
    """

    @renamed_keywords(label_smoothing="scr_label_smoothing")
    def __init__(
        self,
        init_scale: float | None = None,
        *,
        max_scale: float = 100.0,
        learnable_scale: bool = True,
        lambda_global: float = 0.5,
        lambda_local: float = 0.2,
        gamma: float = 2.0,
        scr_label_smoothing: float = 0.02,
        normalizer: SimilarityNormalizer = "minmax",
        sparsify: bool = False,
        missing: MissingNegatives = "zero",
        local_loss: bool = True,
        gather_with_grad: bool = True,
        group: ProcessGroup | None = None,
        chunk_size: int | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if init_scale is None:
            raise ValueError(
                "init_scale is required: FSC-CLIP fine-tunes a pretrained CLIP, whose logit "
                "scale (about 100 for OpenAI's) sets the sharpness of the SCR and local terms; "
                "use FSCCLIPLoss.from_model(model, ...) to read it from the model, or pass "
                "init_scale (1 / 0.07 ~ 14.3 is CLIP's from-scratch value)"
            )
        self.logit_scale = LogitScale(
            init_scale,
            max_scale=max_scale,
            learnable_scale=learnable_scale,
            device=device,
            dtype=dtype,
        )
        self.lambda_global = _check_weight("lambda_global", lambda_global)
        self.lambda_local = _check_weight("lambda_local", lambda_local)
        self.gamma = check_gamma(gamma)
        self.scr_label_smoothing = check_smoothing(scr_label_smoothing, "scr_label_smoothing")
        if normalizer not in ("minmax", "softmax"):
            raise ValueError(f"normalizer must be 'minmax' or 'softmax', got {normalizer!r}")
        self.normalizer: SimilarityNormalizer = normalizer
        self.sparsify = check_bool("sparsify", sparsify)
        self.missing: MissingNegatives = check_missing(missing)
        self.local_loss = check_bool("local_loss", local_loss)
        self.gather_with_grad = check_bool("gather_with_grad", gather_with_grad)
        self.group = group
        check_chunk_size(chunk_size)
        check_backend(backend)
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    @classmethod
    def from_model(
        cls, model: nn.Module, *, max_scale: float = 100.0, **kwargs: Any
    ) -> FSCCLIPLoss:
        """Build the loss with the logit scale of the model being fine-tuned.

        Reads ``model.logit_scale``: open_clip's ``CLIP`` / ``CustomTextCLIP`` parameter
        (the log of the scale), a [`LogitScale`][vlp.heads.logit_scale.LogitScale] held
        there, or ``model`` itself when it is a ``LogitScale``. The value is copied (the
        loss trains its own copy; freeze or ignore the model's). A scale above
        ``max_scale`` by less than 0.1 % (OpenAI checkpoints store ln 100 rounded up, a
        scale of 100.0004) is clipped to ``max_scale``; a larger one is an error. The
        scale parameter takes the device and dtype of the model's unless ``device`` or
        ``dtype`` is passed.

        Args:
            model: the model (or its ``LogitScale``).
            max_scale: upper bound of the scale (as in the constructor).
            **kwargs: the constructor's other arguments (``lambda_global``, ...).

        Returns:
            The loss module.

        Raises:
            TypeError: if the model has no scalar ``logit_scale``, or ``init_scale`` is
                passed.
            ValueError: if the scale is not finite and positive, or exceeds ``max_scale``
                by more than 0.1 %.
        """
        if "init_scale" in kwargs:
            raise TypeError("from_model reads init_scale from the model; do not pass it")
        source = model if isinstance(model, LogitScale) else getattr(model, "logit_scale", None)
        param: torch.Tensor
        if isinstance(source, LogitScale):
            param = source.log_scale
        elif isinstance(source, torch.Tensor) and source.numel() == 1:
            param = source
        else:
            raise TypeError(
                "model must have a scalar logit_scale (open_clip's log-scale parameter or a "
                f"vlp LogitScale), got {type(model).__name__} with logit_scale="
                f"{type(source).__name__}"
            )
        scale = math.exp(float(param.detach().double().reshape(())))
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"model.logit_scale gives a scale of {scale}, not finite and > 0")
        if scale > max_scale:
            if scale > max_scale * 1.001:
                raise ValueError(
                    f"model.logit_scale gives a scale of {scale:.6g} > max_scale={max_scale}; "
                    "pass a larger max_scale"
                )
            scale = float(max_scale)
        kwargs.setdefault("device", param.device)
        kwargs.setdefault("dtype", param.dtype)
        loss = cls(scale, max_scale=max_scale, **kwargs)
        loss.logit_scale.clamp_()  # ln(max_scale) in float32 may round above max_scale
        return loss

    @overload
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        negative_features: torch.Tensor,
        negative_mask: torch.Tensor,
        *,
        image_tokens: torch.Tensor | None = ...,
        text_tokens: torch.Tensor | None = ...,
        text_mask: torch.Tensor | None = ...,
        negative_tokens: torch.Tensor | None = ...,
        negative_token_mask: torch.Tensor | None = ...,
        return_details: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        negative_features: torch.Tensor,
        negative_mask: torch.Tensor,
        *,
        image_tokens: torch.Tensor | None = ...,
        text_tokens: torch.Tensor | None = ...,
        text_mask: torch.Tensor | None = ...,
        negative_tokens: torch.Tensor | None = ...,
        negative_token_mask: torch.Tensor | None = ...,
        return_details: Literal[True],
    ) -> FSCCLIPLossOutput: ...

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        negative_features: torch.Tensor,
        negative_mask: torch.Tensor,
        *,
        image_tokens: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        negative_tokens: torch.Tensor | None = None,
        negative_token_mask: torch.Tensor | None = None,
        return_details: bool = False,
    ) -> torch.Tensor | FSCCLIPLossOutput:
        """Compute the loss; arguments as [`fsc_clip_loss`][vlp.losses.fsc_clip.fsc_clip_loss].

        Args:
            image_features: ``(B, D)`` pooled image embeddings.
            text_features: ``(B, D)`` pooled embeddings of the positive captions.
            negative_features: ``(B, N, D)`` pooled embeddings of the hard negatives.
            negative_mask: ``(B, N)`` bool, ``True`` where the negative exists.
            image_tokens: ``(B, P, D)`` patch tokens (needed when ``lambda_local > 0``).
            text_tokens: ``(B, T, D)`` tokens of the positives.
            text_mask: ``(B, T)`` bool token mask of the positives.
            negative_tokens: ``(B, N, T, D)`` tokens of the negatives.
            negative_token_mask: ``(B, N, T)`` bool token masks of the negatives.
            return_details: return the parts as well.

        Returns:
            Scalar total loss, or a
            [`FSCCLIPLossOutput`][vlp.losses.fsc_clip.FSCCLIPLossOutput].
        """
        out = fsc_clip_loss(
            image_features,
            text_features,
            negative_features,
            negative_mask,
            self.logit_scale(),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            text_mask=text_mask,
            negative_tokens=negative_tokens,
            negative_token_mask=negative_token_mask,
            lambda_global=self.lambda_global,
            lambda_local=self.lambda_local,
            gamma=self.gamma,
            scr_label_smoothing=self.scr_label_smoothing,
            normalizer=self.normalizer,
            sparsify=self.sparsify,
            missing=self.missing,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            group=self.group,
            return_details=True,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return out if return_details else out.loss

    def clamp_(self) -> None:
        """Clamp the learnable scale into its bounds; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"lambda_global={self.lambda_global}, lambda_local={self.lambda_local}, "
            f"gamma={self.gamma}, scr_label_smoothing={self.scr_label_smoothing}, "
            f"normalizer={self.normalizer!r}, sparsify={self.sparsify}, missing={self.missing!r}"
        )
