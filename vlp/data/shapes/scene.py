"""Scenes of the embedded shapes data set: vocabulary, scene sampling and rendering.

A scene holds one to three objects on a 3x3 grid. Every object has a shape, a colour,
a size, a texture and a grid cell (with a few pixels of jitter). Objects of a two- or
three-object scene share a grid row (``layout="row"``) or a grid column
(``layout="column"``), so that "left of" / "above" between any two of them is never
ambiguous. Two objects may be identical copies (same shape, colour, size and
texture), which is how counts ("two red circles") enter the captions; otherwise no two
objects share both shape and colour, so a phrase such as "the red circle" always names
exactly one group.

Rendering is plain numpy: one precomputed boolean mask per (shape, pixel size,
texture) pasted onto a grey canvas, several thousand images per second on one core.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
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
]

#: Object shapes (nouns in the captions).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
#: Plural of every shape noun.
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "star": "stars",
}
#: Colour names (adjectives in the captions).
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan")
#: RGB value drawn for every colour name.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 200),
    "orange": (250, 140, 20),
    "pink": (250, 140, 200),
    "cyan": (40, 220, 230),
}
#: Size adjectives, smallest first.
SIZES: tuple[str, ...] = ("small", "large")
#: Texture adjectives. ``plain`` objects are filled with their colour; ``striped`` and
#: ``dotted`` ones carry diagonal stripes or a grid of dots in a darker shade of it.
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
#: Names of the nine grid cells, indexed ``POSITIONS[row][col]`` (row 0 is the top).
POSITIONS: tuple[tuple[str, str, str], ...] = (
    ("top left corner", "top middle", "top right corner"),
    ("middle left", "centre", "middle right"),
    ("bottom left corner", "bottom middle", "bottom right corner"),
)
#: Scene layouts: one object, objects sharing a grid row, objects sharing a grid column.
LAYOUTS: tuple[str, ...] = ("single", "row", "column")
#: Data set splits. ``train`` and ``test`` never contain a held-out colour-shape pair;
#: every ``compositional`` image contains exactly one.
SPLITS: tuple[str, ...] = ("train", "test", "compositional")
#: Canvas colour.
BACKGROUND: tuple[int, int, int] = (96, 96, 96)

Split = Literal["train", "test", "compositional"]

_SHADE = 0.45  # texture pixels are drawn at this fraction of the colour


def default_held_out(
    colours: Sequence[str] = COLOURS, shapes: Sequence[str] = SHAPES
) -> frozenset[tuple[str, str]]:
    """The colour-shape pairs held out of training by default.

    Colour ``i`` is paired with shape ``i mod len(shapes)``, so every colour and every
    shape still appears in training with other partners (8 of the 48 pairs are held out).

    Args:
        colours: colour names, in order.
        shapes: shape names, in order.

    Returns:
        A frozen set of ``(colour, shape)`` pairs.
    """
    return frozenset((c, shapes[i % len(shapes)]) for i, c in enumerate(colours))


#: The held-out colour-shape pairs of the compositional split.
DEFAULT_HELD_OUT: frozenset[tuple[str, str]] = default_held_out()


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene.

    Attributes:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOURS`.
        size: one of :data:`SIZES`.
        texture: one of :data:`TEXTURES`.
        row: grid row, 0 (top) to 2.
        col: grid column, 0 (left) to 2.
        x: horizontal pixel coordinate of the object's centre.
        y: vertical pixel coordinate of the object's centre.
    """

    shape: str
    colour: str
    size: str
    texture: str
    row: int
    col: int
    x: int
    y: int

    @property
    def kind(self) -> tuple[str, str]:
        """The ``(colour, shape)`` pair that identifies the object's group."""
        return (self.colour, self.shape)

    @property
    def position(self) -> str:
        """The name of the object's grid cell, e.g. ``"top left corner"``."""
        return POSITIONS[self.row][self.col]


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image.

    Attributes:
        objects: the objects, ordered left to right (``row`` layout) or top to bottom
            (``column`` layout).
        layout: one of :data:`LAYOUTS`.
        image_size: side of the square image in pixels.
    """

    objects: tuple[ShapeObject, ...]
    layout: str
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the form stored in WebDataset shards)."""
        return {
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "texture": o.texture,
                    "row": o.row,
                    "col": o.col,
                    "x": o.x,
                    "y": o.y,
                }
                for o in self.objects
            ],
            "layout": self.layout,
            "image_size": self.image_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        """Rebuild a scene from :meth:`to_dict` output."""
        objects = tuple(ShapeObject(**o) for o in data["objects"])
        return cls(objects=objects, layout=str(data["layout"]), image_size=int(data["image_size"]))

    def groups(self) -> list[list[ShapeObject]]:
        """Objects grouped by ``(colour, shape)``, groups in order of first appearance."""
        out: dict[tuple[str, str], list[ShapeObject]] = {}
        for o in self.objects:
            out.setdefault(o.kind, []).append(o)
        return list(out.values())


#: Largest image side the renderer accepts, in pixels.
MAX_IMAGE_SIZE = 2048


def _pixel_sizes(image_size: int) -> dict[str, int]:
    return {"small": max(3, round(0.2 * image_size)), "large": max(5, round(0.3 * image_size))}


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"image_size must be an int, got {type(image_size).__name__}")
    if not 24 <= image_size <= MAX_IMAGE_SIZE:
        # A 10**5 px side would render a 30 GB image.
        raise ValueError(f"image_size must lie in [24, {MAX_IMAGE_SIZE}] pixels, got {image_size}")


def _pick(rng: random.Random, items: Sequence[str]) -> str:
    return items[rng.randrange(len(items))]


def sample_scene(
    rng: random.Random,
    *,
    split: Split = "train",
    image_size: int = 64,
    held_out: Iterable[tuple[str, str]] = DEFAULT_HELD_OUT,
    num_objects_probs: Sequence[float] = (0.2, 0.45, 0.35),
    duplicate_prob: float = 0.2,
) -> Scene:
    """Draw a random scene.

    ``train``/``test`` scenes avoid every held-out ``(colour, shape)`` pair. A
    ``compositional`` scene has two or three objects, exactly one of them a held-out
    pair, all of different colours and no duplicates (so that every hard-negative type
    applies to it).

    Args:
        rng: the generator all randomness is drawn from.
        split: one of :data:`SPLITS`.
        image_size: side of the square image in pixels (>= 24).
        held_out: the ``(colour, shape)`` pairs held out of ``train``/``test``.
        num_objects_probs: probabilities of one, two and three objects (train/test).
        duplicate_prob: probability that a multi-object train/test scene holds two
            identical objects.

    Returns:
        The sampled :class:`Scene`.

    Raises:
        ValueError: on an unknown split, a too small image or bad probabilities.
    """
    _check_image_size(image_size)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(num_objects_probs) != 3 or any(p < 0 for p in num_objects_probs):
        raise ValueError(
            f"num_objects_probs must be 3 non-negative numbers, got {tuple(num_objects_probs)}"
        )
    if not 0.0 <= duplicate_prob <= 1.0:
        raise ValueError(f"duplicate_prob must lie in [0, 1], got {duplicate_prob}")
    held = frozenset(held_out)
    compositional = split == "compositional"

    if compositional:
        n = 2 + int(rng.random() < 0.4)
    else:
        n = rng.choices((1, 2, 3), weights=num_objects_probs)[0]
    layout = "single" if n == 1 else ("row" if rng.random() < 0.5 else "column")

    # Attributes: (colour, shape) pairs, distinct unless a duplicate is requested.
    kinds: list[tuple[str, str]] = []
    novel_slot = rng.randrange(n) if compositional else -1
    held_sorted = sorted(held)
    for i in range(n):
        while True:
            if i == novel_slot:
                kind = held_sorted[rng.randrange(len(held_sorted))]
            else:
                kind = (_pick(rng, COLOURS), _pick(rng, SHAPES))
                if kind in held:
                    continue
            if kind in kinds:
                continue
            if compositional and kind[0] in {k[0] for k in kinds}:
                continue
            break
        kinds.append(kind)
    looks = [(_pick(rng, SIZES), _pick(rng, TEXTURES)) for _ in range(n)]
    if not compositional and n >= 2 and rng.random() < duplicate_prob:
        src, dst = (0, 1) if n == 2 else rng.sample(range(3), 2)
        kinds[dst] = kinds[src]
        looks[dst] = looks[src]

    # Cells: one line of the grid (row or column), positions sorted along it.
    line = rng.randrange(3)
    slots = sorted(rng.sample(range(3), n))
    if layout == "single":
        cells = [(rng.randrange(3), rng.randrange(3))]
    elif layout == "row":
        cells = [(line, s) for s in slots]
    else:
        cells = [(s, line) for s in slots]

    cell = image_size / 3
    px = _pixel_sizes(image_size)
    objects = []
    for (colour, shape), (size, texture), (row, col) in zip(kinds, looks, cells):
        slack = max(0, int(cell - px[size]) // 2 - 1)
        jx, jy = rng.randint(-slack, slack), rng.randint(-slack, slack)
        x = int((col + 0.5) * cell) + jx
        y = int((row + 0.5) * cell) + jy
        objects.append(ShapeObject(shape, colour, size, texture, row, col, x, y))
    return Scene(objects=tuple(objects), layout=layout, image_size=image_size)


@functools.lru_cache(maxsize=512)
def _masks(
    shape: str, px: int, texture: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Fill mask and shaded-texture mask of one object, each (px, px) bool."""
    c = (np.arange(px) + 0.5) / px * 2 - 1  # pixel centres in [-1, 1]
    v, u = np.meshgrid(c, c, indexing="ij")  # v grows downwards
    if shape == "circle":
        fill = u**2 + v**2 <= 1.0
    elif shape == "square":
        fill = (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    elif shape == "triangle":
        fill = (v <= 0.85) & (np.abs(u) <= (v + 0.95) / 1.8 * 1.0)
    elif shape == "diamond":
        fill = np.abs(u) + np.abs(v) <= 1.0
    elif shape == "cross":
        fill = ((np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)) & (np.maximum(np.abs(u), np.abs(v)) <= 1)
    elif shape == "star":
        r = np.hypot(u, v)
        theta = np.arctan2(u, -v)  # 0 points up
        fill = r <= 0.45 + 0.55 * ((1 + np.cos(5 * theta)) / 2) ** 2
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    yy, xx = np.meshgrid(np.arange(px), np.arange(px), indexing="ij")
    if texture == "plain":
        shade = np.zeros_like(fill)
    elif texture == "striped":
        shade = ((xx + yy) // 2) % 2 == 1
    elif texture == "dotted":
        shade = (xx % 4 >= 2) & (yy % 4 >= 2)
    else:
        raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")
    return fill, fill & shade


def render_scene(scene: Scene) -> npt.NDArray[np.uint8]:
    """Draw a scene.

    Args:
        scene: the scene to draw.

    Returns:
        The image, a ``(H, W, 3)`` uint8 array with ``H = W = scene.image_size``.
    """
    s = scene.image_size
    image = np.empty((s, s, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    px = _pixel_sizes(s)
    for o in scene.objects:
        size = px[o.size]
        fill, shade = _masks(o.shape, size, o.texture)
        y0, x0 = o.y - size // 2, o.x - size // 2
        y1, x1 = y0 + size, x0 + size
        # Clip to the canvas (only matters for unusual image sizes).
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, s), min(x1, s)
        view = image[cy0:cy1, cx0:cx1]
        f = fill[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        sh = shade[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        rgb = np.asarray(COLOUR_RGB[o.colour], dtype=np.float64)
        view[f] = rgb.astype(np.uint8)
        view[sh] = (rgb * _SHADE).astype(np.uint8)
    return image


def render_class_map(
    scene: Scene, *, by: Literal["shape", "colour"] = "shape"
) -> npt.NDArray[np.int64]:
    """Per-pixel ground truth of a scene for semantic segmentation.

    Every pixel an object covers in :func:`render_scene` (its texture included) gets the
    object's class, the canvas gets 0. Objects are drawn in the same order as in the image,
    so where two overlap the later one wins in both.

    Args:
        scene: the scene.
        by: ``"shape"`` (class ``1 + SHAPES.index(shape)``) or ``"colour"``
            (``1 + COLOURS.index(colour)``).

    Returns:
        ``(H, W)`` int64 array with ``H = W = scene.image_size``; 0 is the background.
    """
    if by not in ("shape", "colour"):
        raise ValueError(f"by must be 'shape' or 'colour', got {by!r}")
    s = scene.image_size
    labels = np.zeros((s, s), dtype=np.int64)
    px = _pixel_sizes(s)
    for o in scene.objects:
        size = px[o.size]
        fill, _ = _masks(o.shape, size, o.texture)
        y0, x0 = o.y - size // 2, o.x - size // 2
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y0 + size, s), min(x0 + size, s)
        f = fill[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        value = 1 + (SHAPES.index(o.shape) if by == "shape" else COLOURS.index(o.colour))
        labels[cy0:cy1, cx0:cx1][f] = value
    return labels
