"""Zero-shot classification from class-prompt embeddings (prompt ensembling)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlp._checks import check_finite, check_floating, check_matrix, check_tensor
from vlp.eval._common import check_index, check_ks, check_readable

__all__ = ["zero_shot_accuracy", "zero_shot_classifier"]


def zero_shot_classifier(
    prompt_embeddings: torch.Tensor | Sequence[torch.Tensor],
) -> torch.Tensor:
    """One unit vector per class: the renormalised mean of its normalised prompt embeddings.

    Reference: CLIP's prompt ensembling (Radford et al., 2021, section 3.1.4).

    Args:
        prompt_embeddings: ``(C, P, D)`` floating (``P`` prompts for each of ``C``
            classes), or a sequence of ``C`` tensors of shape ``(P_c, D)`` when the
            classes have different numbers of prompts.

    Returns:
        ``(C, D)`` unit-norm class embeddings.

    Raises:
        ValueError: on wrong ranks, empty input, differing ``D`` or NaN/inf.
        TypeError: on non-floating input.
    """
    if isinstance(prompt_embeddings, torch.Tensor):
        check_floating("prompt_embeddings", prompt_embeddings)
        if prompt_embeddings.dim() != 3 or prompt_embeddings.numel() == 0:
            raise ValueError(
                "prompt_embeddings must be a non-empty (C, P, D) tensor, got shape "
                f"{tuple(prompt_embeddings.shape)}"
            )
        check_readable("prompt_embeddings", prompt_embeddings)
        check_finite("prompt_embeddings", prompt_embeddings)
        mean = F.normalize(prompt_embeddings, dim=-1).mean(dim=1)
        return F.normalize(mean, dim=-1)
    if not isinstance(prompt_embeddings, (list, tuple)):
        raise TypeError(
            "prompt_embeddings must be a (C, P, D) tensor or a sequence of (P_c, D) tensors, "
            f"got {type(prompt_embeddings).__name__}"
        )
    classes = list(prompt_embeddings)
    if not classes:
        raise ValueError("prompt_embeddings must hold at least one class, got an empty sequence")
    means = []
    for c, prompts in enumerate(classes):
        check_tensor(f"prompt_embeddings[{c}]", prompts)
        check_matrix(f"prompt_embeddings[{c}]", prompts)
        check_finite(f"prompt_embeddings[{c}]", prompts)
        if prompts.shape[1] != classes[0].shape[1]:
            raise ValueError(
                f"prompt_embeddings[{c}] must have D = {classes[0].shape[1]} like class 0, "
                f"got {prompts.shape[1]}"
            )
        means.append(F.normalize(prompts, dim=-1).mean(dim=0))
    return F.normalize(torch.stack(means), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    image_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = (1,),
) -> dict[str, float]:
    """Top-k accuracy of classifying images by cosine similarity to class embeddings.

    Ties count against the image: a wrong class scoring *equal* to the true class
    ranks ahead of it.

    Reference: zero-shot transfer in CLIP (Radford et al., 2021, section 3.1).

    Args:
        image_embeddings: ``(N, D)`` floating.
        class_embeddings: ``(C, D)`` class embeddings (e.g. from
            [`zero_shot_classifier`][vlp.eval.zero_shot.zero_shot_classifier]), or
            ``(C, P, D)`` prompt embeddings, which are ensembled by it first.
        labels: ``(N,)`` integer true class of each image, in ``[0, C)``.
        ks: the cut-offs ``k``.

    Returns:
        ``{"top{k}": accuracy}`` for every ``k``, fractions in ``[0, 1]``.

    Raises:
        ValueError: on wrong shapes, empty or non-finite input, labels out of range or bad ``ks``.
        TypeError: on non-floating embeddings or non-integer labels.
    """
    check_matrix("image_embeddings", image_embeddings)
    check_readable("image_embeddings", image_embeddings)
    check_finite("image_embeddings", image_embeddings)
    check_tensor("class_embeddings", class_embeddings)
    if class_embeddings.dim() == 3:
        class_embeddings = zero_shot_classifier(class_embeddings)
    check_matrix("class_embeddings", class_embeddings)
    check_readable("class_embeddings", class_embeddings)
    check_finite("class_embeddings", class_embeddings)
    if class_embeddings.shape[1] != image_embeddings.shape[1]:
        raise ValueError(
            f"class_embeddings must have D = {image_embeddings.shape[1]} like "
            f"image_embeddings, got {class_embeddings.shape[1]}"
        )
    num_classes = class_embeddings.shape[0]
    check_index("labels", labels, image_embeddings.shape[0], num_classes)
    ks = check_ks(ks)
    dtype = torch.promote_types(image_embeddings.dtype, class_embeddings.dtype)
    scores = (
        F.normalize(image_embeddings.to(dtype), dim=-1)
        @ F.normalize(class_embeddings.to(dtype), dim=-1).T
    )
    labels = labels.to(scores.device)
    true = scores.gather(1, labels[:, None])
    wrong = torch.ones_like(scores, dtype=torch.bool).scatter_(1, labels[:, None], False)
    rank = ((scores >= true) & wrong).sum(dim=1)
    return {f"top{k}": float((rank < k).double().mean()) for k in ks}
