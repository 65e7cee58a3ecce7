"""vlp: composable vision-language pre-training components.

Subpackages are imported lazily so that ``import vlp`` stays cheap and never
imports Triton: ``vlp.losses``, ``vlp.masking``, ``vlp.heads``, ``vlp.augment``,
``vlp.negatives``, ``vlp.kernels``, ``vlp.distributed``, ``vlp.adapters``,
``vlp.data`` and ``vlp.eval``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0.dev0"

_SUBMODULES = (
    "adapters",
    "augment",
    "data",
    "distributed",
    "eval",
    "heads",
    "kernels",
    "losses",
    "masking",
    "negatives",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        module = importlib.import_module(f"vlp.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'vlp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
