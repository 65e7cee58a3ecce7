"""Data: the embedded synthetic compositional data set and WebDataset pipelines."""

__all__: list[str] = []
