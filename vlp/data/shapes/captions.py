"""Captions of the embedded shapes data set: a small grammar, a truth checker and hard negatives.

A short caption is a structured :class:`Caption` (noun phrases plus a relation, a
direction or a grid position) rendered to text by one of a few templates. The same
scene is captioned in many word orders ("a red circle to the left of a blue square",
"a blue square to the right of a red circle", "a blue square with a red circle to its
left", "from right to left, a blue square and a red circle"), so that word order alone
does not reveal which attribute belongs to which object.

:func:`caption_holds` evaluates a caption against a :class:`~vlp.data.shapes.scene.Scene`
(exact counts, geometric relations). Hard negatives are edited captions that
:func:`caption_holds` rejects, one per :data:`NEGATIVE_TYPES` entry, the edit types of
SugarCrepe (Hsieh et al., NeurIPS 2023) plus a count change.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from vlp.data.shapes.scene import (
    COLOURS,
    PLURALS,
    POSITIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    ShapeObject,
)

__all__ = [
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
]

#: Spatial relations. ``relation(a, b) == "left"`` reads "a is to the left of b".
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
#: The relation that holds with the two objects exchanged.
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
#: Surface forms of each relation in "{a} <phrase> {b}" captions.
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left side of"),
    "right": ("to the right of", "right of", "on the right side of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath"),
}
# "{b} with {a} <phrase>": the subject is named last.
_INVERTED_PHRASES: dict[str, str] = {
    "left": "to its left",
    "right": "to its right",
    "above": "above it",
    "below": "below it",
}
#: Surface form of a listing whose consecutive items stand in the given relation.
DIRECTION_PHRASES: dict[str, str] = {
    "left": "from left to right",
    "right": "from right to left",
    "above": "from top to bottom",
    "below": "from bottom to top",
}
#: Number words used for counts.
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
#: Caption structures: a plain listing, one relation between two phrases, a directed
#: listing, one phrase at a grid position.
CAPTION_KINDS: tuple[str, ...] = ("list", "relation", "sequence", "position")
#: Hard-negative types, each an edit of a true caption that makes it false.
NEGATIVE_TYPES: tuple[str, ...] = (
    "attribute_swap",
    "relation_swap",
    "object_replacement",
    "attribute_replacement",
    "count_change",
)

NegativeType = Literal[
    "attribute_swap",
    "relation_swap",
    "object_replacement",
    "attribute_replacement",
    "count_change",
]

_POSITION_CELL: dict[str, tuple[int, int]] = {
    name: (r, c) for r, row in enumerate(POSITIONS) for c, name in enumerate(row)
}
_TEMPLATES: dict[str, int] = {"list": 3, "relation": 4, "sequence": 2, "position": 2}


@dataclass(frozen=True)
class NounPhrase:
    """A counted noun phrase such as "two small striped red circles".

    Attributes:
        shape: one of :data:`~vlp.data.shapes.scene.SHAPES`.
        colour: one of :data:`~vlp.data.shapes.scene.COLOURS`.
        count: how many objects the phrase names (1 to 3); it is exact.
        size: a size adjective, or ``None`` to leave the size unsaid.
        texture: a texture adjective, or ``None`` to leave the texture unsaid.
    """

    shape: str
    colour: str
    count: int = 1
    size: str | None = None
    texture: str | None = None

    def words(self) -> str:
        """The phrase without its determiner: "small striped red circles"."""
        noun = self.shape if self.count == 1 else PLURALS[self.shape]
        return " ".join(w for w in (self.size, self.texture, self.colour, noun) if w)

    @property
    def text(self) -> str:
        """The phrase with an indefinite article or a number word."""
        words = self.words()
        if self.count == 1:
            return ("an " if words[0] in "aeiou" else "a ") + words
        return f"{COUNT_WORDS[self.count]} {words}"

    def matches(self, obj: ShapeObject) -> bool:
        """Whether ``obj`` fits the phrase's attributes (the count is not checked)."""
        return (
            obj.shape == self.shape
            and obj.colour == self.colour
            and (self.size is None or obj.size == self.size)
            and (self.texture is None or obj.texture == self.texture)
        )


@dataclass(frozen=True)
class Caption:
    """A structured short caption.

    Attributes:
        kind: one of :data:`CAPTION_KINDS`.
        phrases: the noun phrases, in the order they are spoken.
        relation: for ``relation`` captions the relation of ``phrases[0]`` to
            ``phrases[1]``; for ``sequence`` captions the relation of every phrase to the
            next one; else ``None``.
        position: for ``position`` captions the grid cell name (one of
            :data:`~vlp.data.shapes.scene.POSITIONS`), else ``None``.
        template: which surface template renders the caption.
    """

    kind: str
    phrases: tuple[NounPhrase, ...]
    relation: str | None = None
    position: str | None = None
    template: int = 0

    @property
    def text(self) -> str:
        """The caption as a lower-case sentence without a full stop."""
        p = [ph.text for ph in self.phrases]
        listing = p[0] if len(p) == 1 else ", ".join(p[:-1]) + " and " + p[-1]
        t = self.template
        if self.kind == "list":
            return (listing, f"a picture of {listing}", f"{listing} on a grey background")[t]
        if self.kind == "relation":
            assert self.relation is not None
            if t < 3:
                return f"{p[0]} {RELATION_PHRASES[self.relation][t]} {p[1]}"
            return f"{p[1]} with {p[0]} {_INVERTED_PHRASES[self.relation]}"
        if self.kind == "sequence":
            assert self.relation is not None
            direction = DIRECTION_PHRASES[self.relation]
            return f"{listing} {direction}" if t == 0 else f"{direction}, {listing}"
        if self.kind == "position":
            return (
                f"{p[0]} in the {self.position}"
                if t == 0
                else f"there is {p[0]} in the {self.position}"
            )
        raise ValueError(f"kind must be one of {CAPTION_KINDS}, got {self.kind!r}")


def relation_between(a: ShapeObject, b: ShapeObject) -> str:
    """The dominant-axis spatial relation of ``a`` to ``b``.

    Args:
        a: the subject object.
        b: the reference object.

    Returns:
        ``"left"``, ``"right"``, ``"above"`` or ``"below"``: ``a`` is <relation> ``b``.
    """
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _group_relation(a: Sequence[ShapeObject], b: Sequence[ShapeObject]) -> str | None:
    rels = {relation_between(x, y) for x in a for y in b}
    return rels.pop() if len(rels) == 1 else None


def caption_holds(caption: Caption, scene: Scene) -> bool:
    """Whether a structured caption is true of a scene.

    A phrase with count ``k`` holds when exactly ``k`` objects fit it; a relation holds
    when it holds between every object of the first phrase and every object of the
    second; a sequence holds when every consecutive pair of phrases does; a position
    holds when all the phrase's objects are in that grid cell.

    Args:
        caption: the caption.
        scene: the ground truth.

    Returns:
        ``True`` when every claim of the caption is true.
    """
    groups = []
    for ph in caption.phrases:
        g = [o for o in scene.objects if ph.matches(o)]
        if len(g) != ph.count:
            return False
        groups.append(g)
    if caption.kind == "list":
        return True
    if caption.kind == "position":
        cell = _POSITION_CELL[str(caption.position)]
        return all((o.row, o.col) == cell for o in groups[0])
    if caption.kind in ("relation", "sequence"):
        return all(
            _group_relation(groups[i], groups[i + 1]) == caption.relation
            for i in range(len(groups) - 1)
        )
    raise ValueError(f"kind must be one of {CAPTION_KINDS}, got {caption.kind!r}")


def _phrases(scene: Scene, rng: random.Random, attribute_prob: float) -> list[NounPhrase]:
    out = []
    for g in scene.groups():
        o = g[0]
        size = o.size if rng.random() < attribute_prob else None
        texture = o.texture if rng.random() < attribute_prob else None
        out.append(NounPhrase(o.shape, o.colour, len(g), size, texture))
    return out


def short_caption(
    scene: Scene,
    rng: random.Random,
    *,
    relational: bool = False,
    focus: tuple[str, str] | None = None,
    attribute_prob: float = 0.3,
) -> Caption:
    """Draw a true one-sentence caption of a scene.

    Multi-object scenes are mostly captioned with a relation or a directed listing, in
    either direction and with the subject first or last; the rest are plain listings.
    Size and texture are each mentioned with probability ``attribute_prob``.

    Args:
        scene: the scene to caption.
        rng: the generator all randomness is drawn from.
        relational: force a ``relation`` or ``sequence`` caption (multi-object scenes).
        focus: a ``(colour, shape)`` pair that a relational caption must mention.
        attribute_prob: probability of mentioning each of size and texture.

    Returns:
        A :class:`Caption` for which :func:`caption_holds` is true.
    """
    phrases = _phrases(scene, rng, attribute_prob)
    groups = scene.groups()
    n = len(groups)
    pairs = []
    for i in range(n):
        for j in range(n):
            rel = _group_relation(groups[i], groups[j]) if i != j else None
            kinds = ((phrases[i].colour, phrases[i].shape), (phrases[j].colour, phrases[j].shape))
            if rel is not None and (focus is None or focus in kinds):
                pairs.append((i, j, rel))
    can_sequence = n >= 2 and all(p.count == 1 for p in phrases)
    if n >= 2 and (relational or rng.random() < 0.75) and (pairs or can_sequence):
        if pairs and (not can_sequence or rng.random() < 0.7):
            i, j, rel = pairs[rng.randrange(len(pairs))]
            t = rng.randrange(_TEMPLATES["relation"])
            return Caption("relation", (phrases[i], phrases[j]), relation=rel, template=t)
        # Groups follow the scene's object order, which runs along the layout's axis.
        forward = "left" if scene.layout == "row" else "above"
        ordered = phrases if rng.random() < 0.5 else phrases[::-1]
        rel = forward if ordered is phrases else OPPOSITE[forward]
        t = rng.randrange(_TEMPLATES["sequence"])
        return Caption("sequence", tuple(ordered), relation=rel, template=t)
    if n == 1 and phrases[0].count == 1 and rng.random() < 0.6:
        t = rng.randrange(_TEMPLATES["position"])
        return Caption("position", (phrases[0],), position=scene.objects[0].position, template=t)
    order = rng.sample(range(n), n)
    t = rng.randrange(_TEMPLATES["list"])
    return Caption("list", tuple(phrases[int(k)] for k in order), template=t)


def _mirror(position: str) -> list[str]:
    r, c = _POSITION_CELL[position]
    cells = {(2 - r, c), (r, 2 - c), (2 - r, 2 - c)} - {(r, c)}
    return [POSITIONS[a][b] for a, b in sorted(cells)]


def _with_phrase(caption: Caption, i: int, phrase: NounPhrase) -> Caption:
    phrases = list(caption.phrases)
    phrases[i] = phrase
    return replace(caption, phrases=tuple(phrases))


def _edits(caption: Caption, kind: str) -> list[tuple[int, str, Any]]:
    """Candidate edits of one type, as ``(phrase index, field, new value)`` triples."""
    ph = caption.phrases
    out: list[tuple[int, str, Any]] = []
    if kind == "attribute_swap":
        for i in range(len(ph)):
            for j in range(i + 1, len(ph)):
                for attr in ("colour", "size", "texture"):
                    a, b = getattr(ph[i], attr), getattr(ph[j], attr)
                    if a is not None and b is not None and a != b:
                        out.append((i, attr, j))  # swap ``attr`` between phrases i and j
    elif kind == "relation_swap":
        if caption.kind in ("relation", "sequence"):
            assert caption.relation is not None
            out.append((-1, "relation", OPPOSITE[caption.relation]))
        elif caption.kind == "position":
            out += [(-1, "position", p) for p in _mirror(str(caption.position))]
    elif kind == "object_replacement":
        out += [(i, "shape", s) for i, p in enumerate(ph) for s in SHAPES if s != p.shape]
    elif kind == "attribute_replacement":
        for i, p in enumerate(ph):
            out += [(i, "colour", c) for c in COLOURS if c != p.colour]
            for attr, values in (("size", SIZES), ("texture", TEXTURES)):
                cur = getattr(p, attr)
                if cur is not None:
                    out += [(i, attr, v) for v in values if v != cur]
    elif kind == "count_change":
        out += [(i, "count", k) for i, p in enumerate(ph) for k in (1, 2, 3) if k != p.count]
    else:
        raise ValueError(f"negative type must be one of {NEGATIVE_TYPES}, got {kind!r}")
    return out


def _apply(caption: Caption, kind: str, edit: tuple[int, str, Any]) -> Caption:
    i, field, value = edit
    if i < 0:
        return replace(caption, **{field: value})
    if kind == "attribute_swap":
        assert isinstance(value, int)
        a, b = caption.phrases[i], caption.phrases[value]
        c = _with_phrase(caption, i, replace(a, **{field: getattr(b, field)}))
        return _with_phrase(c, value, replace(b, **{field: getattr(a, field)}))
    return _with_phrase(caption, i, replace(caption.phrases[i], **{field: value}))


def scene_negatives(
    caption: Caption,
    scene: Scene,
    rng: random.Random,
    *,
    kinds: Iterable[str] = NEGATIVE_TYPES,
    exclude: Iterable[tuple[str, str]] = (),
) -> dict[str, Caption]:
    """One false edit of a true caption per hard-negative type, verified against its scene.

    Unlike the rule-based :func:`vlp.negatives.hard_negatives`, which edits any caption
    text, these edits are checked against the ground-truth scene, so every negative is
    known to be false. (Named ``vlp.data.hard_negatives(types=...)`` before 0.2.)

    Types (SugarCrepe's edits, Hsieh et al., NeurIPS 2023, plus a count change):
    ``attribute_swap`` exchanges an attribute between two phrases, ``relation_swap``
    reverses the relation or direction (or mirrors the position), ``object_replacement``
    changes one phrase's shape, ``attribute_replacement`` changes one phrase's colour,
    size or texture, ``count_change`` changes one phrase's count. The candidate edits of
    a type are tried in random order and the first that :func:`caption_holds` rejects
    (with a text different from the caption's) is kept.

    Args:
        caption: a caption that holds for ``scene``.
        scene: the ground truth.
        rng: the generator that orders the candidate edits.
        kinds: the negative types to produce (entries of :data:`NEGATIVE_TYPES`).
        exclude: ``(colour, shape)`` pairs a negative must not mention (the training
            split passes the held-out pairs).

    Returns:
        ``{type: negative}`` for every requested type that has a valid edit; a type
        without one (e.g. ``relation_swap`` of a plain listing) is left out.
    """
    banned = frozenset(exclude)
    text = caption.text
    out: dict[str, Caption] = {}
    for kind in kinds:
        edits = _edits(caption, kind)
        for k in rng.sample(range(len(edits)), len(edits)):
            c = _apply(caption, kind, edits[int(k)])
            if (
                not any((p.colour, p.shape) in banned for p in c.phrases)
                and not caption_holds(c, scene)
                and c.text != text
            ):
                out[kind] = c
                break
    return out


def _hard_negatives(
    caption: Caption,
    scene: Scene,
    rng: random.Random,
    *,
    types: Iterable[str] = NEGATIVE_TYPES,
    exclude: Iterable[tuple[str, str]] = (),
) -> dict[str, Caption]:
    """The pre-0.2 ``vlp.data.hard_negatives``: :func:`scene_negatives` with ``types=``."""
    return scene_negatives(caption, scene, rng, kinds=types, exclude=exclude)


def _object_words(o: ShapeObject) -> str:
    return f"{o.size} {o.texture} {o.colour} {o.shape}"


def describe_scene(scene: Scene, rng: random.Random) -> str:
    """A long description of a scene: three to six sentences.

    The first sentence counts the objects, one sentence per object gives all its
    attributes and its grid cell (objects in random order), and the last one or two
    sentences state relations between neighbouring objects (or the count of identical
    objects).

    Args:
        scene: the scene to describe.
        rng: the generator all randomness is drawn from.

    Returns:
        The description, sentences separated by single spaces.
    """
    n = len(scene.objects)
    if rng.random() < 0.5:
        verb, noun = ("is", "object") if n == 1 else ("are", "objects")
        count = f"There {verb} {COUNT_WORDS[n]} {noun} in the image."
    else:
        count = f"The image shows {COUNT_WORDS[n]} shape{'s' * (n > 1)}."
    sentences = [count]
    seen: set[tuple[str, str]] = set()
    for k in rng.sample(range(n), n):
        o = scene.objects[int(k)]
        article = "Another" if o.kind in seen else ("An" if o.size[0] in "aeiou" else "A")
        seen.add(o.kind)
        if rng.random() < 0.5:
            sentences.append(f"{article} {_object_words(o)} is in the {o.position}.")
        else:
            sentences.append(f"In the {o.position} there is {article.lower()} {_object_words(o)}.")
    if n == 1:
        sentences.append("It is the only shape in the picture.")
        return " ".join(sentences)
    groups = scene.groups()
    sizes = {g[0].kind: len(g) for g in groups}
    relations = []
    for a, b in zip(scene.objects, scene.objects[1:]):
        if a.kind == b.kind:
            axis = "side by side" if scene.layout == "row" else "one above the other"
            relations.append(f"The two {a.colour} {PLURALS[a.shape]} are {axis}.")
        elif sizes[a.kind] == 1 and sizes[b.kind] == 1:
            if rng.random() < 0.5:
                a, b = b, a
            phrase = RELATION_PHRASES[relation_between(a, b)][0]
            relations.append(f"The {a.colour} {a.shape} is {phrase} the {b.colour} {b.shape}.")
    for kind, k in sizes.items():
        if k > 1 and not any(r.startswith("The two") for r in relations):
            relations.append(f"There are {COUNT_WORDS[k]} {kind[0]} {PLURALS[kind[1]]}.")
    if len(relations) > 1 and rng.random() < 0.5:
        relations = relations[:1]
    return " ".join(sentences + relations)
