"""Evaluation: retrieval recall@k, zero-shot classification and segmentation, composition.

Pure functions on embeddings or similarity matrices, and readers of the compositional
benchmarks' published files (SugarCrepe, ARO, VALSE, Winoground); nothing here trains,
loads a model or downloads. The recipes' evaluation table on the embedded shapes data
(:mod:`vlp.eval.shapes`: ``evaluate_shapes``, ``metrics_table``, ``SHAPES_METRICS``) is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vlp.eval.aro import ARO_TASKS, AROAccuracy, AROItem, aro_accuracy, read_aro
from vlp.eval.compositional import CompositionalAccuracy, compositional_accuracy, paired_similarity
from vlp.eval.retrieval import retrieval_recall, similarity_matrix
from vlp.eval.segmentation import (
    SegmentationScores,
    chance_miou,
    mean_iou,
    segmentation_labels,
    sliding_window_scores,
)
from vlp.eval.sugarcrepe import SugarCrepeItem, read_sugarcrepe, read_sugarcrepe_file
from vlp.eval.valse import ValseItem, read_valse, read_valse_file
from vlp.eval.winoground import (
    WinogroundItem,
    WinogroundScores,
    read_winoground,
    winoground_scores,
)
from vlp.eval.zero_shot import zero_shot_accuracy, zero_shot_classifier

if TYPE_CHECKING:
    from vlp.eval.shapes import (
        SHAPES_METRICS,
        evaluate_shapes,
        evaluate_shapes_segmentation,
        metrics_table,
    )

_LAZY = {"SHAPES_METRICS", "evaluate_shapes", "evaluate_shapes_segmentation", "metrics_table"}

__all__ = [
    "ARO_TASKS",
    "SHAPES_METRICS",
    "AROAccuracy",
    "AROItem",
    "CompositionalAccuracy",
    "SegmentationScores",
    "SugarCrepeItem",
    "ValseItem",
    "WinogroundItem",
    "WinogroundScores",
    "aro_accuracy",
    "chance_miou",
    "compositional_accuracy",
    "evaluate_shapes",
    "evaluate_shapes_segmentation",
    "mean_iou",
    "metrics_table",
    "paired_similarity",
    "read_aro",
    "read_sugarcrepe",
    "read_sugarcrepe_file",
    "read_valse",
    "read_valse_file",
    "read_winoground",
    "retrieval_recall",
    "segmentation_labels",
    "similarity_matrix",
    "sliding_window_scores",
    "winoground_scores",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module("vlp.eval.shapes"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlp.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
