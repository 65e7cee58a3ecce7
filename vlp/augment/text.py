"""COSMOS text cropping: long captions split into sentences, sampled into global and local captions.

Reference: Kim et al., "COSMOS", CVPR 2025, whose released data pipeline (shared with FLAIR)
pre-splits every caption field into sentences and samples ``[G1, G2, L1..L6]`` per image: a
global caption joins 1 to 5 random sentences with ``". "``, a local caption is one sentence.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from vlp._checks import check_int

__all__ = ["split_sentences", "text_crop"]

_SPLIT = re.compile(r"\n|</s>|\.")


def split_sentences(text: str) -> list[str]:
    r"""Split a caption into sentences the way the COSMOS/FLAIR pre-splitter does.

    Splits on newlines, ``</s>`` and **every** ``.``, strips whitespace and drops empty
    pieces, as FLAIR's released pre-processing script does. This is deliberately naive, for
    parity: ``"3.5"`` and ``"Mr. X"`` are split too.

    Args:
        text: the caption.

    Returns:
        The list of sentences, without their full stops.

    Raises:
        TypeError: if ``text`` is not a ``str``.

    Example:
        >>> split_sentences("A dog.\nA cat</s>Sky 3.5")
        ['A dog', 'A cat', 'Sky 3', '5']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [piece.strip() for piece in _SPLIT.split(text) if piece.strip()]


def _draw(pool: list[str], k: int, rng: random.Random) -> list[str]:
    """``k`` sentences without replacement; a pool smaller than ``k`` is repeated first."""
    if k <= len(pool):
        return rng.sample(pool, k)
    return pool * (k // len(pool)) + rng.sample(pool, k % len(pool))


def _count(name: str, value: object, minimum: int) -> int:
    return check_int(name, value, low=minimum)


def text_crop(
    sentences: Sequence[str],
    *,
    num_global: int = 2,
    num_local: int = 6,
    max_global_sentences: int = 5,
    rng: random.Random,
) -> list[str]:
    """Sample COSMOS's global and local captions from a pool of sentences, as its code does.

    - **Global captions** (``num_global``): for each, ``n ~ UniformInt{1..max_global_sentences}``
      sentences drawn without replacement, in the drawn order, joined with ``". "`` (no
      trailing full stop).
    - **Local captions** (``num_local``): single sentences drawn without replacement from
      the same pool, independently of the global draws (a sentence may appear in both).
    - **Short pool**: when ``k`` sentences are requested from a pool of ``n < k``, the whole
      pool is repeated ``k // n`` times in its order, then ``k % n`` distinct random
      sentences are appended. The reference states this for the local draw; here a global
      draw longer than the pool follows the same rule.

    Draw order: the globals (length, then sentences) in turn, then the locals, all from
    ``rng``, so a seeded ``random.Random`` replays the crop.

    Args:
        sentences: the pool, a list of sentences (e.g. the concatenation of
            [`split_sentences`][vlp.augment.text.split_sentences] of every caption field of
            an image). A plain ``str`` is rejected: the reference would silently sample its
            characters.
        num_global: number of global captions (COSMOS: 2).
        num_local: number of local captions (COSMOS: 6).
        max_global_sentences: the most sentences in a global caption (COSMOS: 5).
        rng: the random source.

    Returns:
        ``num_global + num_local`` strings: ``[G1, .., L1, ..]``.

    Raises:
        TypeError: if ``sentences`` is a ``str`` or holds a non-string, if ``rng`` is not a
            ``random.Random``, or on non-integer counts.
        ValueError: on an empty pool, an empty sentence or counts out of range.
    """
    if isinstance(sentences, str):
        raise TypeError(
            "sentences must be a list of sentences, got a str (split it first with "
            "split_sentences; sampling a str would draw its characters)"
        )
    if not isinstance(sentences, Sequence):
        raise TypeError(f"sentences must be a list of str, got {type(sentences).__name__}")
    pool = list(sentences)
    if not pool:
        raise ValueError("sentences must hold at least one sentence, got an empty list")
    for index, sentence in enumerate(pool):
        if not isinstance(sentence, str):
            raise TypeError(f"sentences[{index}] must be a str, got {type(sentence).__name__}")
        if not sentence.strip():
            raise ValueError(f"sentences[{index}] must not be empty, got {sentence!r}")
    num_global = _count("num_global", num_global, 0)
    num_local = _count("num_local", num_local, 0)
    max_global_sentences = _count("max_global_sentences", max_global_sentences, 1)
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    crops = [
        ". ".join(_draw(pool, rng.randint(1, max_global_sentences), rng)) for _ in range(num_global)
    ]
    return crops + _draw(pool, num_local, rng)
