"""Token masking: random patch dropout, cluster masking and token gather/scatter helpers."""

__all__: list[str] = []
