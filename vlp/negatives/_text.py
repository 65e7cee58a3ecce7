"""Regex tokenisation, lexicon tagging and noun-phrase chunking of captions.

No statistical model: a token's tag comes from the lexicon, and ambiguous words
("orange", "square", "ski") are resolved from their neighbours by a handful of rules
(a word that can be an adjective or a noun is an adjective before a noun or adjective; a
word that can be a noun or a verb is a noun after a determiner, adjective, number or
preposition). Unknown words are guessed from their shape and position.
"""

from __future__ import annotations

import re

from vlp.negatives._lexicon import (
    ADJ,
    ADP,
    ADV,
    AUX,
    CONJ,
    DET,
    NOUN,
    NUM,
    PART,
    POSS,
    PRON,
    PROPN,
    PUNCT,
    VERB,
    Lexicon,
    WordInfo,
    X,
)

#: A word (letters and digits, with inner hyphens or apostrophes) or one other character.
TOKEN_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|\S")
_DIGITS_RE = re.compile(r"\d{1,4}")

_NOMINAL = NOUN | ADJ | NUM | PROPN
_BEFORE_NOUN = DET | ADJ | NUM | POSS
_PLURAL_DETS = frozenset(
    {
        *("these", "those", "many", "several", "some", "few", "both", "all", "various"),
        *("numerous", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
        *("eleven", "twelve"),
    }
)
_PLURAL_AUX = frozenset(("are", "were", "have"))


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Split a caption into ``(token, start, end)`` character spans."""
    return [(m.group(), m.start(), m.end()) for m in TOKEN_RE.finditer(text)]


class Analysis:
    """A tagged, chunked caption.

    Attributes:
        text: the caption.
        raw: regex tokens ``(text, start, end)`` (one word each; for shuffling).
        words: tokens after merging multi-word lexicon units (``"in front of"``,
            ``"hot dog"``), as ``(text, start, end)``.
        lower: lower-case text of each of ``words``.
        tags: one tag flag per word.
        infos: the lexicon entry of each word, or ``None``.
        numbers: per word, ``"sg"``/``"pl"``/``"mass"`` for nouns, else ``""``.
        chunks: noun phrases as ``(start word, end word exclusive, head word)``.
    """

    __slots__ = ("chunks", "infos", "lower", "numbers", "raw", "tags", "text", "words")

    def __init__(self, text: str, lexicon: Lexicon) -> None:
        self.text = text
        self.raw = raw = tokens(text)
        if text.isascii():  # lower-casing keeps offsets: one call for the whole caption
            low_text = text.lower()
            raw_lower = [low_text[s:e] for _, s, e in raw]
        else:
            raw_lower = [t[0].lower() for t in raw]
        multi = lexicon.multiword
        if lexicon.multiword_firsts.isdisjoint(raw_lower):
            words, lower = raw, raw_lower
        else:
            words, lower = _merge(text, raw, raw_lower, multi)
        self.words = words
        self.lower = lower
        lex_words = lexicon.words
        infos = [lex_words.get(w) for w in lower]
        self.infos = infos
        masks = [
            info.mask if info is not None else _mask(words[j], lower[j], j)
            for j, info in enumerate(infos)
        ]
        self.tags = tags = _resolve(lower, masks)
        self.numbers = _numbers(lower, tags, infos)
        self.chunks = _chunks(lower, tags)


def _merge(
    text: str,
    raw: list[tuple[str, int, int]],
    raw_lower: list[str],
    multi: dict[str, tuple[tuple[str, ...], ...]],
) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Merge multi-word lexicon units (longest first) into single words."""
    words: list[tuple[str, int, int]] = []
    lower: list[str] = []
    n = len(raw)
    i = 0
    while i < n:
        low = raw_lower[i]
        cands = multi.get(low)
        if cands is not None:
            for parts in cands:
                k = len(parts)
                if i + k <= n and tuple(raw_lower[i : i + k]) == parts:
                    start, end = raw[i][1], raw[i + k - 1][2]
                    words.append((text[start:end], start, end))
                    lower.append(" ".join(parts))
                    i += k
                    break
            else:
                words.append(raw[i])
                lower.append(low)
                i += 1
        else:
            words.append(raw[i])
            lower.append(low)
            i += 1
    return words, lower


def _mask(word: tuple[str, int, int], low: str, index: int) -> int:
    """The possible tags of a word the lexicon does not know."""
    text = word[0]
    if len(text) == 1 and not text.isalnum():
        return PUNCT
    if _DIGITS_RE.fullmatch(text):
        return NUM
    if not text[0].isalpha():
        return X
    if low.endswith(("'s", "’s")) and len(low) > 2:
        return POSS
    if index > 0 and text[0].isupper() and not text.isupper():
        return PROPN
    if len(low) >= 5 and low.endswith("ing"):
        return VERB | NOUN
    if len(low) >= 4 and low.endswith("ly"):
        return ADV | NOUN
    if len(low) >= 4 and low.endswith("ed"):
        return VERB | ADJ
    return NOUN | ADJ | X


def _resolve(lower: list[str], masks: list[int]) -> list[int]:
    """One tag per word, left to right, looking one word ahead."""
    n = len(masks)
    tags = [0] * n
    prev = 0
    for i, m in enumerate(masks):
        nxt = masks[i + 1] if i + 1 < n else 0
        if m & (m - 1) == 0:  # a single possible tag
            tag = m
        elif m & PUNCT:
            tag = PUNCT
        elif m & DET:
            tag = DET if (nxt & _NOMINAL) or not m & PRON else PRON
        elif m & NUM:
            tag = NUM
        elif m & (AUX | CONJ):
            tag = AUX if m & AUX else CONJ
        elif m & ADP:
            tag = ADP
        elif m & PRON:
            tag = PRON
        elif m & X:  # an unknown word: an adjective or a noun inside a noun phrase
            if prev & (_BEFORE_NOUN | ADP) or i == 0:
                tag = ADJ if nxt & NOUN and not nxt & (DET | ADP | VERB) else NOUN
            else:
                tag = X
        elif m & NOUN and m & ADJ and nxt & (NOUN | ADJ) and not nxt & (DET | ADP):
            tag = ADJ
        elif m & NOUN and m & (VERB | ADV):
            tag = NOUN if prev & (_BEFORE_NOUN | ADP) else (VERB if m & VERB else ADV)
        elif m & NOUN:
            tag = NOUN
        elif m & VERB and m & ADJ:
            before_noun = nxt & NOUN and not nxt & (DET | ADP)
            predicative = prev & AUX and not nxt & ~(PUNCT | CONJ)
            tag = ADJ if before_noun or predicative else VERB
        elif m & VERB:
            tag = VERB
        elif m & ADV:
            tag = ADV
        elif m & ADJ:
            tag = ADJ
        else:
            tag = X
        if tag == ADP and lower[i] == "to" and nxt & VERB and not nxt & (NOUN | DET):
            tag = PART
        tags[i] = tag
        prev = tag
    return tags


def _numbers(lower: list[str], tags: list[int], infos: list[WordInfo | None]) -> list[str]:
    """Grammatical number of every noun (``"sg"``, ``"pl"`` or ``"mass"``)."""
    out = [""] * len(tags)
    for i, tag in enumerate(tags):
        if tag != NOUN:
            continue
        info = infos[i]
        number = info.noun[2] if info is not None and info.noun is not None else ""
        if number == "sgpl" or not number:
            plural = False
            for j in range(i - 1, -1, -1):  # look back through the noun phrase
                t = tags[j]
                if t & (DET | NUM):
                    w = lower[j]
                    info_j = infos[j]
                    plural = w in _PLURAL_DETS or (
                        t == NUM and not (info_j is not None and info_j.number == 1) and w != "1"
                    )
                    break
                if not t & (ADJ | NOUN | ADV):
                    break
            if number == "sgpl":
                nxt = lower[i + 1] if i + 1 < len(lower) else ""
                number = "pl" if plural or nxt in _PLURAL_AUX else "sg"
            else:  # an unknown noun: guess from its ending
                w = lower[i]
                number = (
                    "pl"
                    if plural
                    or (len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")))
                    else "sg"
                )
        out[i] = number
    return out


def _chunks(lower: list[str], tags: list[int]) -> list[tuple[int, int, int]]:
    """Noun phrases: an optional determiner, numbers and adjectives, then nouns."""
    chunks: list[tuple[int, int, int]] = []
    n = len(tags)
    i = 0
    while i < n:
        t = tags[i]
        if t & (NOUN | PROPN):
            j = i
            while j + 1 < n and tags[j + 1] & (NOUN | PROPN):
                j += 1
            start = i
            k = i - 1
            while k >= 0:
                tk = tags[k]
                after_adj = k > 0 and tags[k - 1] == ADJ
                if (
                    tk & (ADJ | NUM)
                    or (tk == ADV and k + 1 < n and tags[k + 1] == ADJ)
                    or (tk == CONJ and lower[k] in ("and", "or") and after_adj)
                    or (tk == PUNCT and lower[k] == "," and after_adj)
                ):
                    start = k
                elif tk & (DET | POSS):
                    start = k
                    break
                else:
                    break
                k -= 1
            if start < i and tags[start] & (CONJ | PUNCT):
                start += 1
            chunks.append((start, j + 1, j))
            i = j + 1
        elif t == PRON:
            chunks.append((i, i + 1, i))
            i += 1
        else:
            i += 1
    return chunks


__all__ = ["TOKEN_RE", "Analysis", "tokens"]

# Re-exported tag flags for the generators.
TAGS = {
    "NOUN": NOUN,
    "ADJ": ADJ,
    "VERB": VERB,
    "ADV": ADV,
    "ADP": ADP,
    "DET": DET,
    "PRON": PRON,
    "AUX": AUX,
    "CONJ": CONJ,
    "NUM": NUM,
    "PUNCT": PUNCT,
    "POSS": POSS,
    "PROPN": PROPN,
    "X": X,
    "PART": PART,
}
