"""Data: WebDataset shards (writing, reading, decoding) and the embedded shapes data set.

The generic part, for a user with their own image-text data, is here:
:func:`write_shards`, :func:`shard_urls`, :func:`shapes_from_shards` (an ordinary
``webdataset`` pipeline over ``.png``/``.jpg`` + ``.json`` shards, split by node and by
worker) and :func:`decode_shapes_sample`. The embedded synthetic data set (vocabulary,
scenes, captions, verified hard negatives, ``ShapesDataset``) is the subpackage
:mod:`vlp.data.shapes`.

Names are imported on first use: ``import vlp.data`` imports neither webdataset nor PIL.
The shapes names that ``vlp.data`` exported before 0.2 still resolve here for one release,
with a ``DeprecationWarning`` naming their ``vlp.data.shapes`` path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlp._deprecated import Target, deprecated_modules, moved
from vlp._lazy import lazy_getattr

if TYPE_CHECKING:
    from vlp.data.wds import (
        MANIFEST_SUFFIX,
        decode_shapes_sample,
        read_manifest,
        shapes_from_shards,
        shard_urls,
        write_shards,
    )

__all__ = [
    "MANIFEST_SUFFIX",
    "decode_shapes_sample",
    "read_manifest",
    "shapes_from_shards",
    "shard_urls",
    "write_shards",
]

# Moved in 0.2 (issue 12): the shapes data set to vlp.data.shapes.
_SCENE = (
    "BACKGROUND",
    "COLOURS",
    "COLOUR_RGB",
    "DEFAULT_HELD_OUT",
    "LAYOUTS",
    "PLURALS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "Scene",
    "ShapeObject",
    "Split",
    "default_held_out",
    "render_class_map",
    "render_scene",
    "sample_scene",
)
_CAPTIONS = (
    "CAPTION_KINDS",
    "COUNT_WORDS",
    "DIRECTION_PHRASES",
    "NEGATIVE_TYPES",
    "OPPOSITE",
    "RELATIONS",
    "RELATION_PHRASES",
    "Caption",
    "NegativeType",
    "NounPhrase",
    "caption_holds",
    "describe_scene",
    "relation_between",
    "scene_negatives",
    "short_caption",
)
_OLD_EXPORTS = (
    "COLOURS",
    "DEFAULT_HELD_OUT",
    "NEGATIVE_TYPES",
    "OPPOSITE",
    "PLURALS",
    "POSITIONS",
    "RELATIONS",
    "RELATION_PHRASES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "Caption",
    "NounPhrase",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "caption_holds",
    "class_prompts",
    "collate_shapes",
    "describe_scene",
    "generate_sample",
    "render_scene",
    "sample_scene",
    "short_caption",
)
# The data set's hard_negatives(types=...) is now scene_negatives(kinds=...): the old
# name returns a shim that still takes ``types``.
_HARD_NEGATIVES: Target = (
    "vlp.data.shapes.captions:_hard_negatives",
    "vlp.data.shapes.scene_negatives (with kinds= for types=)",
)

__getattr__, __dir__ = lazy_getattr(
    __name__,
    dict.fromkeys(__all__, "vlp.data.wds"),
    deprecated={
        **{name: (f"vlp.data.shapes:{name}", f"vlp.data.shapes.{name}") for name in _OLD_EXPORTS},
        "hard_negatives": _HARD_NEGATIVES,
    },
)
deprecated_modules(
    {
        "vlp.data.scene": moved(_SCENE, "vlp.data.shapes.scene"),
        "vlp.data.captions": {
            **moved(_CAPTIONS, "vlp.data.shapes.captions"),
            "hard_negatives": _HARD_NEGATIVES,
        },
    }
)
