"""Compositional accuracy (SugarCrepe style): the true caption must beat each hard negative."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlp._checks import (
    check_bool_mask,
    check_finite,
    check_matrix,
    check_same_device,
    check_same_shape,
)
from vlp.eval._common import check_scores

__all__ = ["CompositionalAccuracy", "compositional_accuracy", "paired_similarity"]


def paired_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``a`` with the same row of ``b``.

    Reference: the image-caption score used by SugarCrepe (Hsieh et al., 2023).

    Args:
        a: ``(N, D)`` floating, e.g. image embeddings.
        b: ``(N, D)`` floating, e.g. the embeddings of one caption per image.

    Returns:
        ``(N,)`` similarities.

    Raises:
        ValueError: on non-2-D, empty or mismatched shapes.
        TypeError: on non-floating input.
    """
    check_matrix("a", a)
    check_matrix("b", b)
    check_same_shape("a", a, "b", b)
    check_same_device(("a", a), ("b", b))
    if a.device.type == "cpu" and not torch.compiler.is_compiling():
        check_finite("a", a)
        check_finite("b", b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return (F.normalize(a.to(dtype), dim=-1) * F.normalize(b.to(dtype), dim=-1)).sum(dim=-1)


@dataclass(frozen=True)
class CompositionalAccuracy:
    """Result of [`compositional_accuracy`][vlp.eval.compositional.compositional_accuracy].

    Attributes:
        overall: fraction of images whose true caption beats *every* one of their
            hard negatives (over images that have at least one).
        per_type: for each negative type, the fraction of images (having negatives
            of that type) whose true caption beats every negative of that type.
        counts: number of images counted for each type (and under ``"overall"``).
    """

    overall: float
    per_type: dict[str, float]
    counts: dict[str, int]


@torch.no_grad()
def compositional_accuracy(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor,
    negative_types: Sequence[str],
    negative_mask: torch.Tensor | None = None,
) -> CompositionalAccuracy:
    """Accuracy of preferring the true caption over hard negatives, per negative type.

    Image ``i`` is correct for a type when its true caption scores **strictly** above
    every one of its negatives of that type (a tie is a failure). SugarCrepe has one
    negative per image and type, where this is its accuracy; with several negatives
    per type the image must beat each of them.

    Reference: Hsieh et al., "SugarCrepe: Fixing Hackable Benchmarks for
    Vision-Language Compositionality", NeurIPS 2023 (section 4).

    Args:
        positive_scores: ``(N,)`` score of each image with its true caption.
        negative_scores: ``(N, K)`` score of each image with its ``K`` hard negatives.
        negative_types: ``K`` type names, the type of each column (columns may share
            a type).
        negative_mask: optional ``(N, K)`` bool, ``True`` where the negative exists
            (for images with fewer negatives); masked-out scores are ignored.

    Returns:
        A [`CompositionalAccuracy`][vlp.eval.compositional.CompositionalAccuracy]. A type
        none of whose negatives exists is left out.

    Raises:
        ValueError: on wrong shapes, empty or non-finite scores (valid entries), a
            ``negative_types`` of the wrong length, or no valid negative at all.
        TypeError: on non-floating scores, a non-bool mask or non-str type names.
    """
    check_scores("positive_scores", positive_scores, dims=1)
    if negative_mask is not None:
        check_bool_mask("negative_mask", negative_mask, ("N", "K"))
        check_same_shape("negative_scores", negative_scores, "negative_mask", negative_mask)
        negative_scores = negative_scores.masked_fill(~negative_mask, 0.0)
    check_scores("negative_scores", negative_scores, dims=2)
    n, k = negative_scores.shape
    if positive_scores.shape[0] != n:
        raise ValueError(
            f"negative_scores must have one row per positive score ({positive_scores.shape[0]}), "
            f"got shape {tuple(negative_scores.shape)}"
        )
    if not isinstance(negative_types, Sequence):
        raise TypeError(
            f"negative_types must be a sequence of type names, got {type(negative_types).__name__}"
        )
    types = list(negative_types)
    if isinstance(negative_types, str) or len(types) != k:
        raise ValueError(
            f"negative_types must be a sequence of {k} type names (one per column), "
            f"got {negative_types!r}"
        )
    if not all(isinstance(t, str) for t in types):
        raise TypeError(f"negative_types must hold str names, got {negative_types!r}")
    valid = (
        torch.ones_like(negative_scores, dtype=torch.bool)
        if negative_mask is None
        else negative_mask.to(negative_scores.device)
    )
    if not bool(valid.any()):
        raise ValueError("negative_mask must mark at least one negative as present")
    beaten = (positive_scores[:, None] > negative_scores) | ~valid

    def accuracy(columns: list[int]) -> tuple[float, int]:
        has = valid[:, columns].any(dim=1)
        correct = beaten[:, columns].all(dim=1) & has
        count = int(has.sum())
        return float(correct.sum()) / max(count, 1), count

    overall, total = accuracy(list(range(k)))
    per_type: dict[str, float] = {}
    counts: dict[str, int] = {"overall": total}
    for name in dict.fromkeys(types):
        acc, count = accuracy([c for c, t in enumerate(types) if t == name])
        if count:
            per_type[name], counts[name] = acc, count
    return CompositionalAccuracy(overall=overall, per_type=per_type, counts=counts)
