"""The embedded shapes data set: procedural image-caption pairs with known structure.

Images of one to three coloured, textured shapes on a grid, captions at two lengths, and
hard-negative captions verified against the ground-truth scene, generated on the fly from
``(seed, split, index)``: any size, no disk, no download. See ``docs/data.md``.

- Vocabulary and scenes (:mod:`vlp.data.shapes.scene`): :data:`SHAPES`, :data:`COLOURS`,
  :data:`SIZES`, :data:`TEXTURES`, :data:`POSITIONS`, :class:`Scene`, :func:`sample_scene`,
  :func:`render_scene`.
- Captions (:mod:`vlp.data.shapes.captions`): :class:`Caption`, :func:`short_caption`,
  :func:`describe_scene`, :func:`caption_holds` and :func:`scene_negatives`.
- The data set (:mod:`vlp.data.shapes.dataset`): :class:`ShapesDataset`,
  :func:`generate_sample`, :func:`collate_shapes`, :func:`class_prompts`.

Write WebDataset shards with ``python -m vlp.data.shapes write --out DIR --num N`` and read
them back with :func:`vlp.data.shapes_from_shards`.
"""

from vlp._deprecated import deprecated_getattr
from vlp.data.shapes.captions import (
    NEGATIVE_TYPES,
    OPPOSITE,
    RELATION_PHRASES,
    RELATIONS,
    Caption,
    NegativeType,
    NounPhrase,
    caption_holds,
    describe_scene,
    scene_negatives,
    short_caption,
)
from vlp.data.shapes.dataset import ShapesDataset, class_prompts, collate_shapes, generate_sample
from vlp.data.shapes.scene import (
    COLOURS,
    DEFAULT_HELD_OUT,
    PLURALS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
    Scene,
    ShapeObject,
    Split,
    render_class_map,
    render_scene,
    sample_scene,
)

__all__ = [
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
    "NegativeType",
    "NounPhrase",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "Split",
    "caption_holds",
    "class_prompts",
    "collate_shapes",
    "describe_scene",
    "generate_sample",
    "render_class_map",
    "render_scene",
    "sample_scene",
    "scene_negatives",
    "short_caption",
]

# The command line's entry point was vlp.data.shapes.main when vlp.data.shapes was a module.
__getattr__ = deprecated_getattr(
    __name__, {"main": ("vlp.data.shapes.dataset:main", "vlp.data.shapes.dataset.main")}
)
