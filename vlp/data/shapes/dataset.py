"""The shapes ``Dataset``: procedural image-caption pairs with known structure.

Every sample is generated on the fly from ``(seed, split, index)``, so a data set of any
size costs no disk and no download, and the same index always yields the same sample.
Images hold one to three objects with a shape (:data:`SHAPES`), a colour
(:data:`COLOURS`), a size (:data:`SIZES`), a texture (:data:`TEXTURES`) and a grid
position; captions come at two lengths (a short one-sentence caption and a 3-6
sentence description); every sample carries its ground-truth scene and hard-negative
captions of known type (:data:`NEGATIVE_TYPES`).

The ``compositional`` split is built from colour-shape pairs held out of ``train`` and
``test`` (:data:`DEFAULT_HELD_OUT`): its images each contain one unseen pair, and its
captions are always relational, so every image has all five negative types.

Write WebDataset shards with::

    python -m vlp.data.shapes write --out DIR --num N [--seed S] [--split train]
        [--shard-size 1000] [--image-size 64] [--num-captions 1] [--format png]

and read them back with :func:`vlp.data.shapes_from_shards`.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.shapes.captions import (
    NEGATIVE_TYPES,
    RELATIONS,
    describe_scene,
    scene_negatives,
    short_caption,
)
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
    Split,
    render_scene,
    sample_scene,
)

__all__ = [
    "COLOURS",
    "DEFAULT_HELD_OUT",
    "NEGATIVE_TYPES",
    "PLURALS",
    "POSITIONS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "ShapesDataset",
    "class_prompts",
    "collate_shapes",
    "generate_sample",
    "main",
]

_SPLIT_ID = {name: i for i, name in enumerate(SPLITS)}


#: Most distinct short captions per sample :func:`generate_sample` draws.
MAX_NUM_CAPTIONS = 64


def _sample_rng(index: int, split: str, seed: int) -> random.Random:
    # One generator per sample; distinct for every (seed, split, index < 2**40).
    return random.Random((seed * len(SPLITS) + _SPLIT_ID[split]) * 2**40 + int(index))


def generate_sample(
    index: int,
    *,
    split: Split = "train",
    seed: int = 0,
    image_size: int = 64,
    num_captions: int = 1,
    held_out: Iterable[tuple[str, str]] = DEFAULT_HELD_OUT,
    attribute_prob: float = 0.3,
) -> dict[str, Any]:
    """Generate one sample of the shapes data set.

    The sample depends only on the arguments: all its randomness comes from one
    ``random.Random`` seeded with ``(seed, split, index)``.

    Args:
        index: sample index (>= 0).
        split: one of :data:`SPLITS`.
        seed: data set seed (>= 0).
        image_size: side of the square image in pixels, in ``[24, 2048]``.
        num_captions: number of distinct short captions (the first is ``caption``), in
            ``[1, 64]`` (a scene has few distinct captions; beyond them they repeat).
        held_out: colour-shape pairs kept out of ``train``/``test`` and put into every
            ``compositional`` image.
        attribute_prob: probability that a short caption mentions an object's size (and,
            independently, its texture).

    Returns:
        A dict with ``image`` (``(3, H, W)`` uint8 tensor), ``caption`` (str),
        ``captions`` (list of ``num_captions`` str), ``description`` (str, 3-6
        sentences), ``negatives`` (``{type: str}`` hard negatives of ``caption``; all
        five types for the ``compositional`` split), ``scene`` (the JSON-able
        :meth:`Scene.to_dict`) and ``index``.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if split not in _SPLIT_ID:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(num_captions, bool) or not isinstance(num_captions, int):
        raise TypeError(f"num_captions must be an int, got {type(num_captions).__name__}")
    if not 1 <= num_captions <= MAX_NUM_CAPTIONS:
        # A scene has a few dozen distinct short captions; more only repeat them.
        raise ValueError(f"num_captions must lie in [1, {MAX_NUM_CAPTIONS}], got {num_captions!r}")
    if not 0.0 <= attribute_prob <= 1.0:
        raise ValueError(f"attribute_prob must lie in [0, 1], got {attribute_prob}")
    held = frozenset(held_out)
    rng = _sample_rng(index, split, seed)
    scene = sample_scene(rng, split=split, image_size=image_size, held_out=held)
    compositional = split == "compositional"
    focus = None
    if compositional:
        focus = next(o.kind for o in scene.objects if o.kind in held)
    caption = short_caption(
        scene, rng, relational=compositional, focus=focus, attribute_prob=attribute_prob
    )
    texts = [caption.text]
    for _ in range(8 * num_captions):
        if len(texts) == num_captions:
            break
        extra = short_caption(scene, rng, attribute_prob=attribute_prob).text
        if extra not in texts:
            texts.append(extra)
    while len(texts) < num_captions:  # a scene with few distinct captions repeats them
        texts.append(texts[len(texts) % max(1, len(texts))])
    negatives = scene_negatives(caption, scene, rng, exclude=() if compositional else held)
    image = torch.from_numpy(render_scene(scene)).permute(2, 0, 1).contiguous()
    return {
        "image": image,
        "caption": caption.text,
        "captions": texts,
        "description": describe_scene(scene, rng),
        "negatives": {k: v.text for k, v in negatives.items()},
        "scene": scene.to_dict(),
        "index": int(index),
    }


class ShapesDataset(Dataset[dict[str, Any]]):
    """The shapes data set as a map-style ``torch.utils.data.Dataset``.

    Samples are generated on access (thousands per second on one core) by
    :func:`generate_sample`; see it for the keys of a sample. Images are ``(3, H, W)``
    ``torch.uint8`` in ``[0, 255]``; divide by 255 (or pass a ``transform``) for floats.

    Args:
        num_samples: number of samples (>= 1).
        split: ``"train"``, ``"test"`` (same distribution as train, other samples) or
            ``"compositional"`` (held-out colour-shape pairs, all five negative types).
        seed: data set seed; the same seed, split and index give the same sample.
        image_size: side of the square images in pixels (>= 24).
        num_captions: distinct short captions per sample (for retrieval with several
            captions per image).
        held_out: colour-shape pairs held out of ``train``/``test``.
        attribute_prob: probability that a caption mentions size (and texture).
        transform: optional callable applied to the ``(3, H, W)`` uint8 image tensor.

    Example:
        >>> ds = ShapesDataset(1000, split="train", seed=0)
        >>> sample = ds[0]
        >>> sample["image"].shape, sample["caption"]  # doctest: +SKIP
        (torch.Size([3, 64, 64]), 'a red circle to the left of a blue square')
    """

    def __init__(
        self,
        num_samples: int,
        *,
        split: Split = "train",
        seed: int = 0,
        image_size: int = 64,
        num_captions: int = 1,
        held_out: Iterable[tuple[str, str]] = DEFAULT_HELD_OUT,
        attribute_prob: float = 0.3,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        self.num_samples = num_samples
        self.kwargs: dict[str, Any] = {
            "split": split,
            "seed": seed,
            "image_size": image_size,
            "num_captions": num_captions,
            "held_out": frozenset(held_out),
            "attribute_prob": attribute_prob,
        }
        self.transform = transform
        generate_sample(0, **self.kwargs)  # validates the arguments once

    @property
    def split(self) -> str:
        """The split name."""
        return str(self.kwargs["split"])

    @property
    def held_out(self) -> frozenset[tuple[str, str]]:
        """The held-out colour-shape pairs."""
        held: frozenset[tuple[str, str]] = self.kwargs["held_out"]
        return held

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        sample = generate_sample(index % self.num_samples, **self.kwargs)
        if self.transform is not None:
            sample["image"] = self.transform(sample["image"])
        return sample

    def scene(self, index: int) -> Scene:
        """The ground-truth scene of sample ``index`` (without rendering or captioning it)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        k = self.kwargs
        rng = _sample_rng(index % self.num_samples, k["split"], k["seed"])
        return sample_scene(
            rng, split=k["split"], image_size=k["image_size"], held_out=k["held_out"]
        )


def collate_shapes(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate shapes samples into a batch.

    Args:
        batch: samples as returned by :class:`ShapesDataset` or
            :func:`vlp.data.shapes_from_shards`.

    Returns:
        A dict with ``image`` stacked to ``(B, 3, H, W)`` and every other key as a list
        of length ``B`` (``captions`` is a list of lists, ``negatives`` a list of dicts).
    """
    if len(batch) == 0:
        raise ValueError("batch must not be empty, got 0 samples")
    out: dict[str, Any] = {k: [s[k] for s in batch] for k in batch[0]}
    out["image"] = torch.stack(out["image"])
    return out


def class_prompts(attribute: str) -> dict[str, list[str]]:
    """Prompts for zero-shot classification of single objects by shape or by colour.

    A class is scored by the mean embedding of its prompts (prompt ensembling, as in
    CLIP, Radford et al., ICML 2021, section 3.1.4): for a shape, "a {colour} {shape}"
    over every colour; for a colour, the same over every shape.

    Args:
        attribute: ``"shape"`` or ``"colour"``.

    Returns:
        ``{class name: prompts}`` in the order of :data:`SHAPES` or :data:`COLOURS`.
    """

    def art(word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    if attribute == "shape":
        return {s: [f"{art(c)} {c} {s}" for c in COLOURS] for s in SHAPES}
    if attribute == "colour":
        return {c: [f"{art(c)} {c} {s}" for s in SHAPES] for c in COLOURS}
    raise ValueError(f"attribute must be 'shape' or 'colour', got {attribute!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m vlp.data.shapes write --out DIR --num N``."""
    parser = argparse.ArgumentParser(prog="python -m vlp.data.shapes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write WebDataset shards (image + json)")
    w.add_argument("--out", required=True, help="output directory")
    w.add_argument("--num", type=int, required=True, help="number of samples")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--split", choices=SPLITS, default="train")
    w.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    w.add_argument("--image-size", type=int, default=64)
    w.add_argument("--num-captions", type=int, default=1)
    w.add_argument("--format", choices=("png", "jpg"), default="png", help="image encoding")
    args = parser.parse_args(argv)

    from vlp.data.wds import write_shards

    dataset = ShapesDataset(
        args.num,
        split=args.split,
        seed=args.seed,
        image_size=args.image_size,
        num_captions=args.num_captions,
    )
    paths = write_shards(
        (dataset[i] for i in range(len(dataset))),
        args.out,
        shard_size=args.shard_size,
        image_format=args.format,
        prefix=f"shapes-{args.split}",
    )
    print(f"wrote {args.num} {args.split} samples to {len(paths)} shard(s) in {args.out}")
    return 0
