"""Fused Triton kernels and the dispatch rule that chooses them.

Every kernel lives in its own module beside a torch reference. Triton is imported
lazily: importing :mod:`vlp.kernels` never imports it.
"""

from vlp.kernels import _ops  # noqa: F401  (registers the vlp:: custom ops; no Triton import)
from vlp.kernels._dispatch import (
    ENV_VAR,
    Backend,
    ResolvedBackend,
    TritonUnavailableError,
    import_triton,
    interpreter_active,
    resolve_backend,
    triton_available,
    triton_interpret_upcast,
)

__all__ = [
    "ENV_VAR",
    "Backend",
    "ResolvedBackend",
    "TritonUnavailableError",
    "import_triton",
    "interpreter_active",
    "resolve_backend",
    "triton_available",
    "triton_interpret_upcast",
]
