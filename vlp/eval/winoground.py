"""Winoground: reader for ``examples.jsonl`` and its text, image and group scores.

Thrush et al., "Winoground: Probing Vision and Language Models for Visio-Linguistic
Compositionality", CVPR 2022. Each example has two images and two captions made of the
same words in a different order; caption ``c`` describes image ``c``. Read from local
disk (the benchmark's ``data/examples.jsonl``; images ``data/images/<name>.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vlp.eval._common import check_scores
from vlp.eval._files import BenchmarkFileError, iter_jsonl, read_text, require

__all__ = ["WinogroundItem", "WinogroundScores", "read_winoground", "winoground_scores"]


@dataclass(frozen=True)
class WinogroundItem:
    """One Winoground example.

    Attributes:
        id: the example's id.
        caption_0, caption_1: the two captions (caption ``c`` describes image ``c``).
        image_0, image_1: the two image names (files ``images/<name>.png``).
        tag: the linguistic tag (e.g. ``"Noun"``, ``"Relation"``); ``""`` when absent.
        secondary_tag: the secondary tag(s); ``""`` when absent.
        num_main_preds: number of main predicates (0 when absent).
        collapsed_tag: ``"Object"``, ``"Relation"`` or ``"Both"``; ``""`` when absent.
    """

    id: int
    caption_0: str
    caption_1: str
    image_0: str
    image_1: str
    tag: str
    secondary_tag: str
    num_main_preds: int
    collapsed_tag: str


def read_winoground(path: str | Path) -> list[WinogroundItem]:
    """Read Winoground's ``examples.jsonl`` (one JSON object per line).

    Each line holds ``{"id", "caption_0", "caption_1", "image_0", "image_1", "tag",
    "secondary_tag", "num_main_preds", "collapsed_tag"}``; the tags may be absent.

    Reference: Thrush et al., CVPR 2022 (released data format).

    Args:
        path: the ``examples.jsonl`` file.

    Returns:
        The examples in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a malformed line or a repeated id (naming the file and line).
    """
    file, text = read_text(path)
    items = []
    seen: dict[int, int] = {}
    for line, entry in iter_jsonl(file, text):
        require(
            file,
            line,
            "example",
            entry,
            {"id": int, "caption_0": str, "caption_1": str, "image_0": str, "image_1": str},
        )
        if entry["id"] in seen:
            raise BenchmarkFileError(
                f"{file}:{line}: example id {entry['id']} repeats line {seen[entry['id']]}"
            )
        seen[entry["id"]] = line
        optional: dict[str, type | tuple[type, ...]] = {
            k: t
            for k, t in (
                ("tag", str),
                ("secondary_tag", str),
                ("num_main_preds", int),
                ("collapsed_tag", str),
            )
            if k in entry
        }
        require(file, line, "example", entry, optional)
        items.append(
            WinogroundItem(
                id=entry["id"],
                caption_0=entry["caption_0"],
                caption_1=entry["caption_1"],
                image_0=entry["image_0"],
                image_1=entry["image_1"],
                tag=entry.get("tag", ""),
                secondary_tag=entry.get("secondary_tag", ""),
                num_main_preds=entry.get("num_main_preds", 0),
                collapsed_tag=entry.get("collapsed_tag", ""),
            )
        )
    if not items:
        raise BenchmarkFileError(f"{file}:1: no examples in the file")
    return items


@dataclass(frozen=True)
class WinogroundScores:
    """Result of :func:`winoground_scores` (fractions of examples).

    Attributes:
        text: both images prefer their own caption.
        image: both captions prefer their own image.
        group: both of the above.
        per_tag: ``{tag: {"text", "image", "group"}}`` over the examples of each tag
            (when tags are given).
        counts: examples per tag, and all under ``"overall"``.
    """

    text: float
    image: float
    group: float
    per_tag: dict[str, dict[str, float]]
    counts: dict[str, int]


@torch.no_grad()
def winoground_scores(scores: torch.Tensor, tags: Sequence[str] | None = None) -> WinogroundScores:
    """Winoground's text, image and group scores.

    With ``s(c, i)`` the score of caption ``c`` with image ``i``: the **text** score counts
    an example when ``s(0, 0) > s(1, 0)`` and ``s(1, 1) > s(0, 1)`` (each image picks its
    caption), the **image** score when ``s(0, 0) > s(0, 1)`` and ``s(1, 1) > s(1, 0)`` (each
    caption picks its image), the **group** score when both hold. Comparisons are strict
    (a tie fails). Chance is 25 %, 25 % and 16.7 %.

    Reference: Thrush et al., CVPR 2022 (section 3.3).

    Args:
        scores: ``(N, 2, 2)`` floating, ``scores[n, c, i] = s(caption c, image i)`` of
            example ``n`` (e.g. cosine similarities from
            :func:`~vlp.eval.compositional.paired_similarity`).
        tags: optional ``N`` tags (e.g. each item's ``collapsed_tag``) for per-tag scores.

    Returns:
        A :class:`WinogroundScores`.

    Raises:
        ValueError: on a wrong shape, empty or non-finite scores, or ``tags`` of the wrong
            length.
        TypeError: on non-floating scores or non-str tags.
    """
    check_scores("scores", scores, dims=3)
    if scores.shape[1:] != (2, 2):
        raise ValueError(f"scores must have shape (N, 2, 2), got {tuple(scores.shape)}")
    n = scores.shape[0]
    c0i0, c0i1 = scores[:, 0, 0], scores[:, 0, 1]
    c1i0, c1i1 = scores[:, 1, 0], scores[:, 1, 1]
    text = (c0i0 > c1i0) & (c1i1 > c0i1)
    image = (c0i0 > c0i1) & (c1i1 > c1i0)
    group = text & image
    per_tag: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {"overall": n}
    if tags is not None:
        names = list(tags)
        if isinstance(tags, str) or len(names) != n:
            raise ValueError(f"tags must be a sequence of {n} names, got {tags!r}")
        if not all(isinstance(t, str) for t in names):
            raise TypeError(f"tags must hold str names, got {tags!r}")
        for name in dict.fromkeys(names):
            rows = torch.tensor([t == name for t in names], device=scores.device)
            count = int(rows.sum())
            per_tag[name] = {
                "text": float(text[rows].sum()) / count,
                "image": float(image[rows].sum()) / count,
                "group": float(group[rows].sum()) / count,
            }
            counts[name] = count
    return WinogroundScores(
        text=float(text.sum()) / n,
        image=float(image.sum()) / n,
        group=float(group.sum()) / n,
        per_tag=per_tag,
        counts=counts,
    )
