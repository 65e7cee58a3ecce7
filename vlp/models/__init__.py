"""Whole models: the few a method defines, built from vlp's parts.

Everything else in vlp is a part for the user's own model; a model lives here only when
a method's recipe needs one that no library provides. S-SMKE's student
(:func:`build_ssmke`, :class:`SSMKE`) is the one so far. Submodules are imported when a
name is first used, so ``import vlp.models`` does not import timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlp._lazy import lazy_getattr

if TYPE_CHECKING:
    from vlp.models.ssmke import (
        IMAGE_TYPE,
        SSMKE,
        TEXT_TYPE,
        PostLNBlock,
        SharedBlock,
        SSMKEHead,
        SSMKEOutput,
        TokenTypeEmbedding,
        build_ssmke,
    )

__all__ = [
    "IMAGE_TYPE",
    "SSMKE",
    "TEXT_TYPE",
    "PostLNBlock",
    "SSMKEHead",
    "SSMKEOutput",
    "SharedBlock",
    "TokenTypeEmbedding",
    "build_ssmke",
]

__getattr__, __dir__ = lazy_getattr(__name__, dict.fromkeys(__all__, "vlp.models.ssmke"))
