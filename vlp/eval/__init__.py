"""Evaluation: retrieval recall@k, zero-shot classification, compositional accuracy."""

__all__: list[str] = []
