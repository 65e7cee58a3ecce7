"""Evaluation: retrieval recall@k, zero-shot classification and segmentation, composition.

Pure functions on embeddings or similarity matrices; nothing here trains or loads a model.
"""

from vlp.eval.compositional import CompositionalAccuracy, compositional_accuracy, paired_similarity
from vlp.eval.retrieval import retrieval_recall, similarity_matrix
from vlp.eval.segmentation import (
    SegmentationScores,
    mean_iou,
    segmentation_labels,
    sliding_window_scores,
)
from vlp.eval.sugarcrepe import SugarCrepeItem, read_sugarcrepe, read_sugarcrepe_file
from vlp.eval.zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "CompositionalAccuracy",
    "SegmentationScores",
    "SugarCrepeItem",
    "compositional_accuracy",
    "mean_iou",
    "paired_similarity",
    "read_sugarcrepe",
    "read_sugarcrepe_file",
    "retrieval_recall",
    "segmentation_labels",
    "similarity_matrix",
    "sliding_window_scores",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
