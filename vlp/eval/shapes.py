"""The evaluation table of the recipes, on the embedded shapes data set.

:func:`evaluate_shapes` encodes held-out shapes images and captions with any model that has
``encode_image`` and ``encode_text`` (an ``open_clip.CLIP``, or a wrapper) and scores
retrieval, zero-shot classification and compositional accuracy with the pure functions of
:mod:`vlp.eval`. :func:`metrics_table` prints several runs side by side.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import check_float, check_int
from vlp.eval.compositional import compositional_accuracy, paired_similarity
from vlp.eval.retrieval import retrieval_recall, similarity_matrix
from vlp.eval.segmentation import (
    chance_miou,
    mean_iou,
    segmentation_labels,
    sliding_window_scores,
)
from vlp.eval.zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = ["SHAPES_METRICS", "evaluate_shapes", "evaluate_shapes_segmentation", "metrics_table"]

#: The rows of the table, in order.
SHAPES_METRICS: tuple[str, ...] = (
    *(f"{d} R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)),
    "zero-shot shape",
    "zero-shot colour",
    "comp attribute_swap",
    "comp relation_swap",
    "comp object_replacement",
    "comp attribute_replacement",
    "comp count_change",
    "comp mean",
)


class DualEncoder(Protocol):
    """What :func:`evaluate_shapes` needs of a model."""

    training: bool

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> Any: ...


Tokenizer = Callable[[list[str]], torch.Tensor]


def _check_callables(
    model: object,
    methods: tuple[str, ...],
    tokenize: object,
    preprocess: object,
) -> None:
    """TypeError naming the argument for a model lacking a method or a non-callable."""
    for method in methods:
        if not callable(getattr(model, method, None)):
            raise TypeError(f"model must have a callable {method}(), got {type(model).__name__}")
    if not isinstance(getattr(model, "training", None), bool) or not callable(
        getattr(model, "train", None)
    ):
        raise TypeError(
            f"model must have a bool `training` and a train(mode) method (an nn.Module does), "
            f"got {type(model).__name__}"
        )
    if not callable(tokenize) or isinstance(tokenize, (torch.Tensor, nn.Module)):
        raise TypeError(
            f"tokenize must be a function list[str] -> token ids, got {type(tokenize).__name__}"
        )
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable or None, got {type(preprocess).__name__}")


def _encoded(name: str, value: object, rows: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] != rows:
        raise TypeError(
            f"model.{name} must return a ({rows}, D) tensor, got "
            f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
        )
    return value


def _encode_images(
    model: DualEncoder,
    images: torch.Tensor,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        x = preprocess(batch)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"preprocess must return a tensor, got {type(x).__name__}")
        out.append(_encoded("encode_image", model.encode_image(x), len(batch)).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)


def _encode_texts(
    model: DualEncoder,
    tokenize: Tokenizer,
    texts: Sequence[str],
    device: torch.device | str,
    batch_size: int,
) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        batch = list(texts[i : i + batch_size])
        ids = tokenize(batch)
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"tokenize must return a tensor of token ids, got {type(ids).__name__}")
        out.append(
            _encoded("encode_text", model.encode_text(ids.to(device)), len(batch)).float().cpu()
        )
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def evaluate_shapes(
    model: DualEncoder,
    tokenize: Tokenizer,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    num_test: int = 1000,
    num_compositional: int = 1000,
    captions_per_image: int = 5,
    image_size: int = 64,
    seed: int = 12345,
) -> dict[str, float]:
    """Retrieval, zero-shot and compositional accuracy on held-out shapes data.

    - ``i2t R@k`` / ``t2i R@k`` (k = 1, 5, 10): retrieval on ``num_test`` ``test``-split
      images with ``captions_per_image`` captions each
      ([`retrieval_recall`][vlp.eval.retrieval.retrieval_recall]; chance R@1
      ``1 / num_test``).
    - ``zero-shot shape`` / ``zero-shot colour``: the single-object images among them,
      classified against prompt-ensembled class embeddings (chance 1/6 and 1/8).
    - ``comp <type>`` for the five negative types and their mean ``comp mean``: the
      fraction of ``num_compositional`` ``compositional``-split images (each with a
      colour-shape pair held out of training) whose caption scores above its hard negative
      of that type (chance 1/2).

    The model is put in eval mode and restored. Embeddings are L2-normalised; images are
    encoded 500 and texts 1000 at a time. The data is fixed by ``seed``, which the training
    data should not use (the default 12345 is the recipes' choice).

    Args:
        model: has ``encode_image(images)`` and ``encode_text(token_ids)``, each returning
            ``(B, D)`` embeddings.
        tokenize: ``list[str] -> (B, L)`` token ids (e.g. an ``open_clip`` tokenizer).
        preprocess: maps a ``(B, 3, H, W)`` uint8 CPU batch to the model's input on
            ``device``; default: scale to ``[0, 1]`` float32 and move to ``device``. Pass
            the normalisation the model was trained with.
        device: where token ids (and, by default, images) go.
        num_test: test images for retrieval and zero-shot (``>= 1``).
        num_compositional: compositional images (``>= 1``).
        captions_per_image: captions per retrieval image (``>= 1``).
        image_size: side of the generated images.
        seed: seed of the evaluation data.

    Returns:
        ``{metric: fraction in [0, 1]}`` with the keys of ``SHAPES_METRICS``, in that order.
    """
    from vlp.data.shapes import (
        COLOURS,
        NEGATIVE_TYPES,
        SHAPES,
        ShapesDataset,
        class_prompts,
        collate_shapes,
    )

    check_int("num_test", num_test, low=1)
    check_int("num_compositional", num_compositional, low=1)
    check_int("captions_per_image", captions_per_image, low=1)
    _check_callables(model, ("encode_image", "encode_text"), tokenize, preprocess)
    if preprocess is None:

        def preprocess(images: torch.Tensor) -> torch.Tensor:
            return images.to(device).float().div_(255)

    def samples(dataset: ShapesDataset) -> dict[str, Any]:
        return collate_shapes([dataset[i] for i in range(len(dataset))])

    was_training = model.training
    model.train(False)
    metrics: dict[str, float] = {}

    test = samples(
        ShapesDataset(
            num_test,
            split="test",
            seed=seed,
            image_size=image_size,
            num_captions=captions_per_image,
        )
    )
    images = _encode_images(model, test["image"], preprocess, 500)
    captions = [c for caps in test["captions"] for c in caps]
    owner = torch.arange(num_test).repeat_interleave(captions_per_image)
    texts = _encode_texts(model, tokenize, captions, device, 1000)
    recall = retrieval_recall(similarity_matrix(images, texts), owner, ks=(1, 5, 10))
    for direction, key in (("i2t", "image_to_text"), ("t2i", "text_to_image")):
        for k in (1, 5, 10):
            metrics[f"{direction} R@{k}"] = recall[f"{key}_R@{k}"]

    single = [i for i, s in enumerate(test["scene"]) if len(s["objects"]) == 1]
    for attribute, classes in (("shape", SHAPES), ("colour", COLOURS)):
        prompts = class_prompts(attribute)
        emb = torch.stack(
            [_encode_texts(model, tokenize, prompts[c], device, 1000) for c in classes]
        )
        labels = torch.tensor(
            [classes.index(test["scene"][i]["objects"][0][attribute]) for i in single]
        )
        acc = zero_shot_accuracy(images[single], zero_shot_classifier(emb), labels)
        metrics[f"zero-shot {attribute}"] = acc["top1"]

    comp = samples(
        ShapesDataset(num_compositional, split="compositional", seed=seed, image_size=image_size)
    )
    comp_images = _encode_images(model, comp["image"], preprocess, 500)
    positive = paired_similarity(
        comp_images, _encode_texts(model, tokenize, comp["caption"], device, 1000)
    )
    negative = torch.stack(
        [
            paired_similarity(
                comp_images,
                _encode_texts(model, tokenize, [n[t] for n in comp["negatives"]], device, 1000),
            )
            for t in NEGATIVE_TYPES
        ],
        dim=1,
    )
    result = compositional_accuracy(positive, negative, list(NEGATIVE_TYPES))
    for t in NEGATIVE_TYPES:
        metrics[f"comp {t}"] = result.per_type[t]
    metrics["comp mean"] = sum(result.per_type.values()) / len(result.per_type)
    model.train(was_training)
    return metrics


@torch.no_grad()
def evaluate_shapes_segmentation(
    dense_features: Callable[[torch.Tensor], torch.Tensor],
    model: DualEncoder,
    tokenize: Tokenizer,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    num_images: int = 200,
    image_size: int = 64,
    scale: float = 1.5,
    seed: int = 12345,
) -> dict[str, float]:
    """Zero-shot semantic segmentation of held-out shapes images (COSMOS's protocol, scaled down).

    ``test``-split scenes are rendered at ``image_size``, preprocessed, resized bilinearly by
    ``scale`` (the release resizes to a 336 px short side for 224 px windows), scored with
    :func:`~vlp.eval.sliding_window_scores` in windows of ``image_size`` with stride half of it,
    resized back, and labelled by the most similar class (no background threshold). Classes
    are the six shapes, or the eight colours, each embedded as the mean of its prompts
    (``class_prompts``). Canvas pixels are ignored, as in the benchmarks without a background
    class (VOC20, Context59, ADE20K).

    Args:
        dense_features: ``(B, 3, s, s)`` crops to ``(B, g, g, D)`` patch embeddings, e.g.
            ``functools.partial(vlp.adapters.open_clip_dense_features, model)``.
        model: has ``encode_text(token_ids)`` returning ``(B, D)``; put in eval mode and
            restored.
        tokenize: ``list[str] -> (B, L)`` token ids.
        preprocess: ``(B, 3, H, W)`` uint8 CPU batch to the model's input on ``device``;
            default scale to ``[0, 1]``.
        device: where token ids (and, by default, images) go.
        num_images: scenes evaluated (``>= 1``).
        image_size: render size and window size (the model's input size).
        scale: resize factor before the windows (``>= 1``).
        seed: seed of the evaluation scenes.

    Returns:
        ``{"seg mIoU shape": ..., "seg mIoU colour": ..., "seg chance shape": ...,
        "seg chance colour": ...}`` as fractions; the chance rows are
        :func:`~vlp.eval.chance_miou` of the same targets.
    """
    from vlp.data.shapes import (
        COLOURS,
        SHAPES,
        Scene,
        ShapesDataset,
        class_prompts,
        render_class_map,
    )
    from vlp.eval.zero_shot import zero_shot_classifier

    check_int("num_images", num_images, low=1)
    check_int("image_size", image_size, low=1)
    check_float("scale", scale, low=1.0)
    if not callable(dense_features) or isinstance(dense_features, torch.Tensor):
        raise TypeError(
            f"dense_features must be a function (B, 3, s, s) -> (B, g, g, D), got "
            f"{type(dense_features).__name__}"
        )
    _check_callables(model, ("encode_text",), tokenize, preprocess)
    if preprocess is None:

        def preprocess(images: torch.Tensor) -> torch.Tensor:
            return images.to(device).float().div_(255)

    dataset = ShapesDataset(num_images, split="test", seed=seed, image_size=image_size)
    items = [dataset[i] for i in range(num_images)]
    scenes = [Scene.from_dict(item["scene"]) for item in items]
    images = torch.stack([torch.as_tensor(item["image"]) for item in items])
    size = round(image_size * scale)
    was_training = model.training
    model.train(False)
    metrics: dict[str, float] = {}
    attributes: tuple[tuple[Literal["shape", "colour"], tuple[str, ...]], ...] = (
        ("shape", SHAPES),
        ("colour", COLOURS),
    )
    for attribute, classes in attributes:
        prompts = class_prompts(attribute)
        emb = torch.stack(
            [_encode_texts(model, tokenize, prompts[c], device, 1000) for c in classes]
        )
        text = zero_shot_classifier(emb).to(device)
        targets = torch.stack([torch.from_numpy(render_class_map(s, by=attribute)) for s in scenes])
        labels = []
        for i in range(0, num_images, 50):
            x = preprocess(images[i : i + 50])
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            scores = sliding_window_scores(dense_features, x, text, window=image_size)
            scores = F.interpolate(scores, size=(image_size, image_size), mode="bilinear")
            labels.append(segmentation_labels(scores.float()).cpu() + 1)
        # Classes 1..C; the canvas (0) is ignored.
        pred = torch.cat(labels)
        metrics[f"seg mIoU {attribute}"] = mean_iou(
            pred, targets, len(classes) + 1, ignore_index=0
        ).miou
        metrics[f"seg chance {attribute}"] = chance_miou(targets - 1, len(classes), ignore_index=-1)
    model.train(was_training)
    return metrics


def metrics_table(runs: Mapping[str, Mapping[str, float]]) -> str:
    """Several runs' metrics side by side, in percent, one row per metric.

    Rows follow the first appearance of each metric; a run without a metric shows ``-``.

    Args:
        runs: ``{run name: {metric: fraction}}``, e.g. ``{"clip": evaluate_shapes(...)}``.

    Returns:
        The table, a header line, a rule and one line per metric (no trailing newline).

    Example:
        >>> print(metrics_table({"clip": {"i2t R@1": 0.5}, "negclip": {"i2t R@1": 0.625}}))
        metric       clip  negclip
        --------------------------
        i2t R@1      50.0     62.5
    """
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must be a mapping of run name to metrics, got {type(runs).__name__}")
    if not runs:
        raise ValueError("runs must name at least one run")
    for name, run in runs.items():
        if not isinstance(name, str):
            raise TypeError(f"runs must be keyed by run name (str), got {type(name).__name__}")
        if not isinstance(run, Mapping):
            raise TypeError(
                f"runs[{name!r}] must be a mapping of metric to value, got {type(run).__name__}"
            )
        for metric, value in run.items():
            if not isinstance(metric, str):
                raise TypeError(
                    f"runs[{name!r}] must be keyed by metric name (str), got "
                    f"{type(metric).__name__}"
                )
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"runs[{name!r}][{metric!r}] must be a number, got {type(value).__name__}"
                )
    names = list(runs)
    metrics = list(dict.fromkeys(m for r in runs.values() for m in r))
    if not metrics:
        raise ValueError("runs hold no metric")
    width = max(len(m) for m in metrics) + 2
    cols = [max(8, len(n) + 2) for n in names]
    lines = ["metric".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols))]
    lines.append("-" * len(lines[0]))
    for m in metrics:
        cells = [
            (f"{100 * runs[n][m]:.1f}" if m in runs[n] else "-").rjust(c)
            for n, c in zip(names, cols)
        ]
        lines.append(m.ljust(width) + "".join(cells))
    return "\n".join(lines)
