"""ARO (Attribution, Relation, Order): readers for its four tasks and their accuracy.

Yuksekgonul et al., "When and why vision-language models behave like bags-of-words, and
what to do about it?", ICLR 2023. The files are the benchmark's own, read from local disk
(nothing is downloaded): ``visual_genome_relation.json`` and
``visual_genome_attribution.json`` (VG-Relation, VG-Attribution), and the Karpathy test
annotations ``coco_karpathy_test.json`` / ``flickr30k_test.json`` from which COCO-Order and
Flickr30k-Order are built by perturbing every caption four ways.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from vlp._checks import check_int
from vlp.eval._common import check_scores
from vlp.eval._files import BenchmarkFileError, iter_json_entries, read_text, require

__all__ = [
    "ARO_TASKS",
    "AROAccuracy",
    "AROItem",
    "aro_accuracy",
    "order_perturbations",
    "pre_caption",
    "read_aro",
]

AROTask = Literal["vg_relation", "vg_attribution", "coco_order", "flickr30k_order"]
#: The four ARO tasks, in the paper's order.
ARO_TASKS: tuple[str, ...] = ("vg_relation", "vg_attribution", "coco_order", "flickr30k_order")
#: ARO leaves attribute pairs with fewer items than this out of VG-Attribution's records.
VG_ATTRIBUTION_MIN_COUNT = 25

_NUMBER = (int, float)
_STRIP = re.compile(r"""[.!"()*#:;~]""")
_SPACES = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class AROItem:
    """One ARO test case: an image (region), its true caption and false captions.

    Attributes:
        id: the entry's index in its file (``"i"``; ``"i.j"`` for caption ``j`` of image
            ``i`` in the order tasks).
        task: one of :data:`ARO_TASKS`.
        image: the image path as written in the file (VG: relative to the benchmark's
            ``images/`` directory; order tasks: relative to the COCO or Flickr30k root).
        caption: the true caption (order tasks: after :func:`pre_caption`).
        negatives: the false captions: one for the VG tasks; for the order tasks the four
            perturbations of :func:`order_perturbations` (a perturbation that leaves the
            caption unchanged is kept and counts as beaten, as ARO's arg-max does).
        group: the relation (VG-Relation), the attribute pair ``"a_b"``
            (VG-Attribution), or ``""`` (order tasks).
        bbox: ``(x, y, w, h)`` of the region to crop (VG tasks), else ``None``.
    """

    id: str
    task: str
    image: str
    caption: str
    negatives: tuple[str, ...]
    group: str
    bbox: tuple[float, float, float, float] | None


def pre_caption(caption: str, max_words: int = 30) -> str:
    """Lower-case a caption, drop ``.!"()*#:;~``, squeeze spaces, keep ``max_words`` words.

    The caption clean-up the ARO order tasks apply (BLIP's ``pre_caption``) to the true
    caption and to each perturbation.
    """
    text = _SPACES.sub(" ", _STRIP.sub(" ", caption.lower())).strip()
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def order_perturbations(caption: str, rng: random.Random) -> tuple[str, str, str, str]:
    """The four word-order perturbations of ARO's COCO-Order and Flickr30k-Order.

    In order: shuffle the nouns among themselves and the adjectives among themselves;
    shuffle every other word (nouns and adjectives stay); shuffle the words inside each
    trigram; shuffle the trigrams. Words and their classes come from the
    :mod:`vlp.negatives` tagger (multi-word lexicon units such as "hot dog" move as one
    word) instead of ARO's spaCy and NLTK; the outputs are not yet cleaned
    (:func:`read_aro` applies :func:`pre_caption`).

    Args:
        caption: the caption.
        rng: the generator every shuffle draws from.

    Returns:
        The four perturbed captions, words joined by single spaces.
    """
    from vlp.negatives import default_lexicon
    from vlp.negatives._lexicon import ADJ, NOUN, PROPN
    from vlp.negatives._text import Analysis

    an = Analysis(caption, default_lexicon())
    words = [w[0] for w in an.words]

    def permuted(positions: list[int], base: list[str]) -> list[str]:
        out = list(base)
        values = [base[i] for i in positions]
        rng.shuffle(values)
        for i, v in zip(positions, values):
            out[i] = v
        return out

    nouns = [i for i, t in enumerate(an.tags) if t & (NOUN | PROPN)]
    adjectives = [i for i, t in enumerate(an.tags) if t == ADJ]
    content = set(nouns) | set(adjectives)
    first = permuted(adjectives, permuted(nouns, words))
    second = permuted([i for i in range(len(words)) if i not in content], words)
    trigrams = [words[i : i + 3] for i in range(0, len(words), 3)]
    inside = []
    for tri in trigrams:
        tri = list(tri)
        rng.shuffle(tri)
        inside += tri
    order = list(range(len(trigrams)))
    rng.shuffle(order)
    across = [w for k in order for w in trigrams[k]]
    return (" ".join(first), " ".join(second), " ".join(inside), " ".join(across))


def _vg_items(path: Path, text: str, task: str) -> list[AROItem]:
    fields: dict[str, type | tuple[type, ...]] = {
        "image_path": str,
        "bbox_x": _NUMBER,
        "bbox_y": _NUMBER,
        "bbox_w": _NUMBER,
        "bbox_h": _NUMBER,
        "true_caption": str,
        "false_caption": str,
    }
    fields["relation_name" if task == "vg_relation" else "attributes"] = (
        str if task == "vg_relation" else list
    )
    items = []
    for key, entry, line in iter_json_entries(path, text):
        require(path, line, f"item {key}", entry, fields)
        if task == "vg_relation":
            group = entry["relation_name"]
        else:
            attributes = entry["attributes"]
            if len(attributes) != 2 or not all(isinstance(a, str) for a in attributes):
                raise BenchmarkFileError(
                    f"{path}:{line}: item {key} field 'attributes' must be two strings, "
                    f"got {attributes!r}"
                )
            group = f"{attributes[0]}_{attributes[1]}"
        bbox = tuple(float(entry[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        items.append(
            AROItem(
                id=key,
                task=task,
                image=entry["image_path"],
                caption=entry["true_caption"],
                negatives=(entry["false_caption"],),
                group=group,
                bbox=bbox,  # type: ignore[arg-type]
            )
        )
    return items


def _order_items(
    path: Path, text: str, task: str, rng: random.Random, max_words: int
) -> list[AROItem]:
    items = []
    for key, entry, line in iter_json_entries(path, text):
        require(path, line, f"image entry {key}", entry, {"image": str, "caption": (list, str)})
        captions = entry["caption"]
        captions = [captions] if isinstance(captions, str) else captions
        if not captions or not all(isinstance(c, str) for c in captions):
            raise BenchmarkFileError(
                f"{path}:{line}: image entry {key} field 'caption' must be a string or a "
                f"non-empty list of strings, got {captions!r}"
            )
        for j, caption in enumerate(captions):
            perturbed = order_perturbations(caption, rng)
            items.append(
                AROItem(
                    id=f"{key}.{j}",
                    task=task,
                    image=entry["image"],
                    caption=pre_caption(caption, max_words),
                    negatives=tuple(pre_caption(p, max_words) for p in perturbed),
                    group="",
                    bbox=None,
                )
            )
    return items


def read_aro(
    path: str | Path, task: AROTask, *, seed: int = 0, max_words: int = 30
) -> list[AROItem]:
    """Read one ARO task from its published annotation file.

    * ``"vg_relation"``: ``visual_genome_relation.json``, a list of
      ``{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "relation_name",
      "true_caption", "false_caption", ...}``;
    * ``"vg_attribution"``: ``visual_genome_attribution.json``, the same with
      ``"attributes": [a, b]`` instead of ``"relation_name"``;
    * ``"coco_order"`` / ``"flickr30k_order"``: the Karpathy test split
      ``coco_karpathy_test.json`` / ``flickr30k_test.json``, a list of
      ``{"image", "caption": [...]}``; each caption becomes one item whose negatives are
      its four :func:`order_perturbations` (drawn from ``random.Random(seed)``, so a seed
      replays them), all passed through :func:`pre_caption`.

    Further keys are ignored. Reference: Yuksekgonul et al., ICLR 2023 (ARO).

    Args:
        path: the annotation file.
        task: one of :data:`ARO_TASKS`.
        seed: seed of the order perturbations.
        max_words: words kept by :func:`pre_caption` (order tasks; ARO's 30).

    Returns:
        The items in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on an unknown task, or a malformed file (the message names the file
            and the line of the offending entry).
    """
    if task not in ARO_TASKS:
        raise ValueError(f"task must be one of {ARO_TASKS}, got {task!r}")
    check_int("max_words", max_words, low=1)
    file, text = read_text(path)
    if task in ("vg_relation", "vg_attribution"):
        return _vg_items(file, text, task)
    return _order_items(file, text, task, random.Random(seed), max_words)


@dataclass(frozen=True)
class AROAccuracy:
    """Result of :func:`aro_accuracy`.

    Attributes:
        accuracy: the figure ARO reports for the task: the mean of the per-group
            accuracies for the VG tasks (per relation; per attribute pair with at least
            25 items), the accuracy over all items for the order tasks.
        overall: accuracy over all items.
        macro: mean of ``per_group`` (``overall`` for the order tasks).
        per_group: accuracy of each group kept (relation or attribute pair).
        counts: items per group, and all items under ``"overall"``.
    """

    accuracy: float
    overall: float
    macro: float
    per_group: dict[str, float]
    counts: dict[str, int]


@torch.no_grad()
def aro_accuracy(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor,
    items: Sequence[AROItem],
    *,
    min_count: int | None = None,
) -> AROAccuracy:
    """ARO accuracy: the true caption must score above each of its false captions.

    An item is correct when its true caption scores **strictly** above every false caption
    (a tie counts against it, as ARO's arg-max over ``[false, true]`` does), except that a
    false caption identical to the true one (an order perturbation that changed nothing)
    is skipped, as ARO's arg-max over ``[true, perturbations...]`` then picks the true one.
    Score with the same interface as SugarCrepe: ``positive_scores = paired_similarity(
    images, captions)`` and one column of ``negative_scores`` per false caption.

    Reference: Yuksekgonul et al., ICLR 2023 (ARO), ``evaluate_scores`` of its datasets.

    Args:
        positive_scores: ``(N,)`` score of each item's image with its true caption.
        negative_scores: ``(N, K)`` scores with its ``K`` false captions (``K = 1`` for
            the VG tasks, 4 for the order tasks).
        items: the ``N`` items, all of one task.
        min_count: fewest items a group needs to be kept (default: ARO's, 25 for
            VG-Attribution and 1 for VG-Relation).

    Returns:
        An :class:`AROAccuracy`.

    Raises:
        ValueError: on wrong shapes, non-finite scores, items of several tasks, items
            whose number of false captions is not ``K``, or (VG tasks) no group with
            ``min_count`` items.
        TypeError: on non-floating scores.
    """
    check_scores("positive_scores", positive_scores, dims=1)
    check_scores("negative_scores", negative_scores, dims=2)
    if min_count is not None:
        check_int("min_count", min_count, low=1)
    n, k = negative_scores.shape
    if positive_scores.shape[0] != n or len(items) != n:
        raise ValueError(
            f"positive_scores, negative_scores and items must have the same length, got "
            f"{positive_scores.shape[0]}, {n} and {len(items)}"
        )
    tasks = {item.task for item in items}
    if len(tasks) != 1:
        raise ValueError(f"items must all be of one ARO task, got {sorted(tasks)}")
    (task,) = tasks
    wrong = next((item for item in items if len(item.negatives) != k), None)
    if wrong is not None:
        raise ValueError(
            f"negative_scores has {k} columns but item {wrong.id!r} has "
            f"{len(wrong.negatives)} false captions"
        )
    valid = torch.tensor(
        [[neg != item.caption for neg in item.negatives] for item in items],
        dtype=torch.bool,
        device=negative_scores.device,
    )
    beaten = (positive_scores[:, None] > negative_scores) | ~valid
    correct = beaten.all(dim=1).cpu().tolist()
    overall = sum(correct) / n
    counts: dict[str, int] = {"overall": n}
    if task in ("coco_order", "flickr30k_order"):
        return AROAccuracy(overall, overall, overall, {}, counts)
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for item, ok in zip(items, correct):
        totals[item.group] = totals.get(item.group, 0) + 1
        hits[item.group] = hits.get(item.group, 0) + int(ok)
    if min_count is None:
        min_count = VG_ATTRIBUTION_MIN_COUNT if task == "vg_attribution" else 1
    per_group = {g: hits[g] / totals[g] for g in sorted(totals) if totals[g] >= min_count}
    if not per_group:
        raise ValueError(
            f"no {task} group has min_count={min_count} items (largest: "
            f"{max(totals.values())}); pass a smaller min_count"
        )
    counts.update({g: totals[g] for g in per_group})
    macro = sum(per_group.values()) / len(per_group)
    return AROAccuracy(macro, overall, macro, per_group, counts)
