"""vlp: composable vision-language pre-training components.

Subpackages are imported lazily so that ``import vlp`` stays cheap and imports none of
Triton, timm, open_clip, torchvision, webdataset or huggingface_hub: ``vlp.losses``,
``vlp.masking``, ``vlp.heads``, ``vlp.models``, ``vlp.augment``, ``vlp.negatives``,
``vlp.kernels``, ``vlp.distributed``, ``vlp.adapters``, ``vlp.data``, ``vlp.eval`` and
``vlp.optim``.
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
    "models",
    "negatives",
    "optim",
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
