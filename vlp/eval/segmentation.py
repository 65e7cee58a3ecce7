r"""Zero-shot semantic segmentation: sliding-window patch-text scores, per-pixel labels, mIoU.

The protocol is SCLIP's (Wang et al., "SCLIP: Rethinking Self-Attention for Dense
Vision-Language Inference", ECCV 2024), which the COSMOS release runs for its segmentation
results (Kim et al., CVPR 2025; spec section 8.3): the image is cut into overlapping windows,
every window's patch embeddings are compared with the class-name text embeddings by cosine
similarity, the window score maps are upsampled bilinearly to the window and averaged where
windows overlap; each pixel takes the class of its highest score. The scores are then scaled
(``logit_scale``, 40 in the release) and turned into probabilities so that a background
threshold can apply.

Nothing here knows a model: the dense patch embeddings come from a callable, for an open_clip
ViT :func:`vlp.adapters.open_clip_dense_features` (with SCLIP's correlative self-attention in
the last block, the release's ``--use-csa``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vlp._checks import (
    check_finite,
    check_float,
    check_floating,
    check_int,
    check_shape,
    check_tensor,
)
from vlp._patches import pair

__all__ = [
    "SegmentationScores",
    "chance_miou",
    "mean_iou",
    "segmentation_labels",
    "sliding_window_scores",
]

DenseFeatures = Callable[[torch.Tensor], torch.Tensor]


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: mmseg's slide rule, the last window flush with the edge."""
    count = max(size - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + window, size) - window, 0) for i in range(count)})


def sliding_window_scores(
    dense_features: DenseFeatures,
    images: torch.Tensor,
    class_embeddings: torch.Tensor,
    *,
    window: int | Sequence[int] = 224,
    stride: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-pixel cosine similarity between patch embeddings and class embeddings.

    Every ``window`` crop (offsets every ``stride`` pixels, the last one flush with the
    border, as in mmseg's ``slide_inference``) is encoded by ``dense_features``; its patch
    embeddings and ``class_embeddings`` are L2-normalised and compared, the ``(C, g_h, g_w)``
    map is upsampled bilinearly (``align_corners=False``) to the window, and each pixel
    averages the windows that cover it (SCLIP, Wang et al., ECCV 2024; COSMOS spec 8.3).

    Args:
        dense_features: maps a ``(B, 3, h, w)`` crop to its ``(B, g_h, g_w, D)`` patch
            embeddings (projected to the text space), e.g.
            ``functools.partial(vlp.adapters.open_clip_dense_features, model)``.
        images: ``(B, 3, H, W)`` float, preprocessed for the model; ``H, W >= window``.
        class_embeddings: ``(C, D)`` float text embeddings, one row per query (class name or
            synonym; average templates beforehand).
        window: crop size ``(h, w)`` or an int; the model's input size.
        stride: step between crops ``(h, w)`` or an int; default half the window (the
            release's 224 / 112).

    Returns:
        ``(B, C, H, W)`` cosine similarities in ``[-1, 1]``, in ``class_embeddings``' dtype
        promoted with the features'.

    Raises:
        TypeError: on non-tensor or non-float inputs, or bad window sizes.
        ValueError: on bad shapes, images smaller than the window, a stride larger than the
            window (pixels no window covers), or features of another width than the classes.
    """
    images = check_tensor("images", images)
    check_shape("images", images, ("B", 3, "H", "W"))
    check_floating("images", images)
    class_embeddings = check_tensor("class_embeddings", class_embeddings)
    check_shape("class_embeddings", class_embeddings, ("C", "D"))
    check_floating("class_embeddings", class_embeddings)
    if images.shape[0] == 0 or class_embeddings.shape[0] == 0:
        raise ValueError(
            f"images and class_embeddings must not be empty, got {tuple(images.shape)} and "
            f"{tuple(class_embeddings.shape)}"
        )
    check_finite("class_embeddings", class_embeddings)
    win = pair("window", window)
    half = (max(win[0] // 2, 1), max(win[1] // 2, 1))
    step = half if stride is None else pair("stride", stride)
    height, width = int(images.shape[2]), int(images.shape[3])
    if height < win[0] or width < win[1]:
        raise ValueError(
            f"images must be at least the window {win}, got {(height, width)}; resize them first"
        )
    if step[0] > win[0] or step[1] > win[1]:
        raise ValueError(f"stride {step} must not exceed window {win}: some pixels get no score")

    text = F.normalize(class_embeddings, dim=-1)
    total: torch.Tensor | None = None
    count = torch.zeros(height, width, device=images.device)
    for top in _starts(height, win[0], step[0]):
        for left in _starts(width, win[1], step[1]):
            crop = images[:, :, top : top + win[0], left : left + win[1]]
            feats = dense_features(crop)
            if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
                raise ValueError(
                    "dense_features must return a (B, g_h, g_w, D) tensor, got "
                    f"{getattr(feats, 'shape', type(feats).__name__)}"
                )
            if feats.shape[0] != images.shape[0] or feats.shape[3] != text.shape[1]:
                raise ValueError(
                    f"dense_features returned {tuple(feats.shape)} for {images.shape[0]} crops; "
                    f"expected (B={images.shape[0]}, g_h, g_w, D={text.shape[1]})"
                )
            dtype = torch.promote_types(feats.dtype, text.dtype)
            sim = torch.einsum(
                "bhwd,cd->bchw", F.normalize(feats.to(dtype), dim=-1), text.to(dtype)
            )
            sim = F.interpolate(sim, size=win, mode="bilinear", align_corners=False)
            if total is None:
                total = sim.new_zeros(images.shape[0], text.shape[0], height, width)
            total[:, :, top : top + win[0], left : left + win[1]] += sim
            count[top : top + win[0], left : left + win[1]] += 1
    assert total is not None
    return total / count.to(total.dtype)


def segmentation_labels(
    scores: torch.Tensor,
    *,
    logit_scale: float = 40.0,
    query_classes: Sequence[int] | None = None,
    background_threshold: float | None = None,
    background_class: int = 0,
) -> torch.Tensor:
    """Per-pixel class labels from :func:`sliding_window_scores`.

    Scores are multiplied by ``logit_scale`` and soft-maxed over the queries; queries that
    name one class (synonyms) are max-pooled into it (``query_classes``); each pixel takes
    the most probable class, and, with ``background_threshold``, pixels whose top probability
    is below it become ``background_class`` (SCLIP's ``prob_thd``; the COSMOS release uses
    0.1 on benchmarks with a background class).

    Args:
        scores: ``(B, Q, H, W)`` float query scores.
        logit_scale: the softmax temperature's inverse (release default 40).
        query_classes: class index of every query, length ``Q``; default ``range(Q)``.
        background_threshold: probability in ``(0, 1)`` below which a pixel is background.
        background_class: the label given to background pixels.

    Returns:
        ``(B, H, W)`` int64 labels.

    Raises:
        TypeError / ValueError: on a bad shape, scale, threshold or query map.
    """
    scores = check_tensor("scores", scores)
    check_shape("scores", scores, ("B", "Q", "H", "W"))
    check_floating("scores", scores)
    scale = check_float("logit_scale", logit_scale, low=0.0, low_inclusive=False)
    num_queries = int(scores.shape[1])
    if num_queries == 0:
        raise ValueError("scores must hold at least one query, got Q = 0")
    probs = torch.softmax(scores * scale, dim=1)
    if query_classes is not None:
        if len(query_classes) != num_queries:
            raise ValueError(
                f"query_classes must give one class per query ({num_queries}), got "
                f"{len(query_classes)}"
            )
        classes = [check_int("query_classes", c, low=0) for c in query_classes]
        index = torch.tensor(classes, device=scores.device)
        num_classes = max(classes) + 1
        pooled = probs.new_full((probs.shape[0], num_classes, *probs.shape[2:]), -1.0)
        gather = index.view(1, -1, 1, 1).expand_as(probs)
        probs = pooled.scatter_reduce(1, gather, probs, reduce="amax", include_self=True)
    top, labels = probs.max(dim=1)
    if background_threshold is not None:
        thd = check_float(
            "background_threshold",
            background_threshold,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        bg = check_int("background_class", background_class, low=0)
        labels = torch.where(top < thd, torch.full_like(labels, bg), labels)
    return labels


class SegmentationScores(NamedTuple):
    """Result of :func:`mean_iou`.

    Attributes:
        miou: mean IoU over the classes that occur in the targets or predictions.
        iou: ``(num_classes,)`` per-class IoU, NaN for a class absent from both.
        pixel_accuracy: fraction of counted pixels labelled correctly.
    """

    miou: float
    iou: torch.Tensor
    pixel_accuracy: float


def mean_iou(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
) -> SegmentationScores:
    """Mean intersection over union, accumulated over every pixel of every image.

    ``IoU_c = |pred = c and target = c| / |pred = c or target = c|`` with the sums taken over
    the whole set (mmseg's ``IoUMetric``); a class that occurs in neither has NaN IoU and is
    left out of the mean. Pixels whose target is ``ignore_index`` are not counted.

    Args:
        predictions: ``(B, H, W)`` integer labels in ``[0, num_classes)``.
        targets: ``(B, H, W)`` integer labels in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes (background included when it is a class).
        ignore_index: target value to skip, or ``None``.

    Returns:
        :class:`SegmentationScores`.

    Raises:
        TypeError / ValueError: on shape or dtype mismatch, or labels out of range.
    """
    # The confusion matrix is num_classes**2 counts: 65,536 classes is 4 G of them already.
    n = check_int("num_classes", num_classes, low=1, high=65536)
    for name, value in (("predictions", predictions), ("targets", targets)):
        check_tensor(name, value)
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
        check_shape(name, value, ("B", "H", "W"))
        if value.is_meta:
            raise ValueError(f"{name} must hold values (a metric reads them), got a meta tensor")
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ"
        )
    pred = predictions.reshape(-1).long()
    target = targets.reshape(-1).long()
    if ignore_index is not None:
        keep = target != check_int("ignore_index", ignore_index)
        pred, target = pred[keep], target[keep]
    if target.numel() == 0:
        raise ValueError("targets must hold at least one counted pixel")
    for name, value in (("predictions", pred), ("targets", target)):
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= n:
            raise ValueError(
                f"{name} labels must lie in [0, {n}), got range [{low}, {high}]"
                + (" (ignored pixels excluded)" if name == "targets" else "")
            )
    joint = torch.bincount(target * n + pred, minlength=n * n).view(n, n).double()
    intersection = joint.diagonal()
    union = joint.sum(0) + joint.sum(1) - intersection
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.nan)
    present = ~torch.isnan(iou)
    miou = float(iou[present].mean())
    accuracy = float(intersection.sum() / joint.sum())
    return SegmentationScores(miou=miou, iou=iou, pixel_accuracy=accuracy)


def chance_miou(
    targets: torch.Tensor, num_classes: int, *, ignore_index: int | None = 255
) -> float:
    """The mIoU that uniformly random labels score on ``targets``, in expectation.

    A pixel is labelled ``c`` with probability ``1 / C``, so for a class with ``n_c`` target
    pixels among ``N`` the expected intersection is ``n_c / C`` and the expected union
    ``n_c + N / C - n_c / C``; their ratio, averaged over the classes that occur, is the
    chance level beside which :func:`mean_iou` is read (every class is predicted somewhere,
    so absent classes count as in :func:`mean_iou`, with IoU 0).

    Args:
        targets: ``(B, H, W)`` integer labels in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: ``C``.
        ignore_index: target value to skip, or ``None``.

    Returns:
        The expected mIoU (ratio of expectations), in ``[0, 1]``.
    """
    n = check_int("num_classes", num_classes, low=1)
    check_tensor("targets", targets)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must have an integer dtype, got {targets.dtype}")
    target = targets.reshape(-1).long()
    if ignore_index is not None:
        target = target[target != check_int("ignore_index", ignore_index)]
    if target.numel() == 0:
        raise ValueError("targets must hold at least one counted pixel")
    if int(target.min()) < 0 or int(target.max()) >= n:
        raise ValueError(f"targets labels must lie in [0, {n}) (ignored pixels excluded)")
    counts = torch.bincount(target, minlength=n).double()
    total = counts.sum()
    iou = (counts / n) / (counts + total / n - counts / n)
    # Every class is predicted on about N / C pixels, so every class has a union > 0.
    return float(iou.mean())
