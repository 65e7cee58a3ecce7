"""Rule-based hard-negative captions (swap, replace, shuffle) on a shipped lexicon.

FSC-CLIP's three negative kinds without spaCy, WordNet or any download: a regex
tokeniser, a lexicon-driven tagger and noun-phrase chunker, and the word tables of
``lexicon.json`` (package data). See ``docs/negatives.md``.
"""

from vlp.negatives._lexicon import Lexicon, default_lexicon, lexicon_data, load_lexicon
from vlp.negatives.generators import (
    KINDS,
    HardNegatives,
    Kind,
    hard_negatives,
    replace,
    shuffle,
    swap,
)

__all__ = [
    "KINDS",
    "HardNegatives",
    "Kind",
    "Lexicon",
    "default_lexicon",
    "hard_negatives",
    "lexicon_data",
    "load_lexicon",
    "replace",
    "shuffle",
    "swap",
]
