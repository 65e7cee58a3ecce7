"""Evaluation: retrieval recall@k, zero-shot classification, compositional accuracy.

Pure functions on embeddings or similarity matrices; nothing here trains or loads a model.
"""

from vlp.eval.compositional import CompositionalAccuracy, compositional_accuracy, paired_similarity
from vlp.eval.retrieval import retrieval_recall, similarity_matrix
from vlp.eval.sugarcrepe import SugarCrepeItem, read_sugarcrepe, read_sugarcrepe_file
from vlp.eval.zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "CompositionalAccuracy",
    "SugarCrepeItem",
    "compositional_accuracy",
    "paired_similarity",
    "read_sugarcrepe",
    "read_sugarcrepe_file",
    "retrieval_recall",
    "similarity_matrix",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
