"""The three hard-negative generators of FSC-CLIP and their batch driver.

``swap`` (NegCLIP style), ``replace`` (SugarCrepe REPLACE as re-implemented by CLoVe) and
``shuffle`` (FSC-CLIP's n-gram shuffle), on the shipped lexicon instead of spaCy, WordNet
and a scene-graph parser. Each returns a caption different from its input, or ``None``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch

from vlp.negatives._lexicon import (
    ADJ,
    ADP,
    ADV,
    AUX,
    DET,
    NOUN,
    NUM,
    PUNCT,
    VERB,
    Lexicon,
    default_lexicon,
)
from vlp.negatives._text import Analysis, tokens

__all__ = ["KINDS", "HardNegatives", "Kind", "hard_negatives", "replace", "shuffle", "swap"]

Kind = Literal["swap", "replace", "shuffle"]
#: The generator kinds, in FSC-CLIP's order.
KINDS: tuple[str, ...] = ("swap", "replace", "shuffle")

Edit = tuple[int, int, str]

_AN_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")
_A_EXCEPTIONS = ("uni", "use", "usu", "uti", "uk", "eu", "ewe", "one", "once", "ubiq")
_COPULA_FLIP = {"is": "are", "are": "is", "was": "were", "were": "was"}
_MAX_SHUFFLES = 10


# -- validation ---------------------------------------------------------------------------


def _check_caption(caption: object, name: str = "caption") -> str:
    if not isinstance(caption, str):
        raise TypeError(f"{name} must be a str, got {type(caption).__name__}")
    return caption


def _check_rng(rng: object) -> random.Random:
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    return rng


def _check_lexicon(lexicon: Lexicon | None) -> Lexicon:
    if lexicon is None:
        return default_lexicon()
    if not isinstance(lexicon, Lexicon):
        raise TypeError(f"lexicon must be a vlp.negatives.Lexicon, got {type(lexicon).__name__}")
    return lexicon


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return n


def _check_relations(relations: object) -> str:
    if relations not in ("frequency", "opposite"):
        raise ValueError(f"relations must be 'frequency' or 'opposite', got {relations!r}")
    return str(relations)


# -- string helpers -----------------------------------------------------------------------


def _wants_an(word: str) -> bool:
    w = word.lower()
    if not w:
        return False
    if w[0].isdigit():
        return w.startswith(("8", "11", "18"))
    if w.startswith(_AN_EXCEPTIONS):
        return True
    return w[0] in "aeiou" and not w.startswith(_A_EXCEPTIONS)


def _recase(original: str, new: str, shouting: bool = True) -> str:
    """``new`` with the letter case of ``original`` (upper, capitalised or as is).

    An all-capitals word of up to three letters ("TV") is taken for an acronym, so its
    replacement is only capitalised, unless ``shouting`` (the whole caption is in capitals).
    """
    if len(original) > 1 and original.isupper() and (len(original) > 3 or shouting):
        return new.upper()
    if original[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _apply(text: str, edits: list[Edit]) -> str:
    edits.sort()
    out = []
    pos = 0
    for start, end, new in edits:
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _article_edit(an: Analysis, word: int, new_text: str, edited: set[int]) -> Edit | None:
    """Fix "a"/"an" before word index ``word`` whose text becomes ``new_text``."""
    j = word - 1
    if j < 0 or j in edited or an.lower[j] not in ("a", "an") or not an.tags[j] & DET:
        return None
    first = new_text.split(" ", 1)[0]
    want = "an" if _wants_an(first) else "a"
    if want == an.lower[j]:
        return None
    text, start, end = an.words[j]
    return (start, end, _recase(text, want))


def _weighted_index(cumulative: Sequence[float], rng: random.Random) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


# -- swap -----------------------------------------------------------------------------------


def _filter_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest non-overlapping spans (ties: the earlier), sorted by start (spaCy's rule)."""
    if len(spans) < 2:
        return spans
    kept: list[tuple[int, int]] = []
    taken: set[int] = set()
    for s, e in sorted(spans, key=lambda p: (p[0] - p[1], p[0])):
        if not any(k in taken for k in range(s, e)):
            kept.append((s, e))
            taken.update(range(s, e))
    kept.sort()
    return kept


def _verb_phrases(tags: list[int]) -> list[tuple[int, int]]:
    """Matches of ``VERB? ADV* AUX* VERB+`` (the longest from each start)."""
    n = len(tags)
    out = []
    for i in range(n):
        if not tags[i] & (VERB | ADV | AUX):
            continue
        j = i + 1 if tags[i] == VERB else i
        k = j
        while k < n and tags[k] == ADV:
            k += 1
        while k < n and tags[k] == AUX:
            k += 1
        m = k
        while m < n and tags[m] == VERB:
            m += 1
        if m > k:
            out.append((i, m))
        elif tags[i] == VERB:
            m = i
            while m < n and tags[m] == VERB:
                m += 1
            out.append((i, m))
    return out


def _span_sources(an: Analysis, lexicon: Lexicon, relations: bool) -> list[list[tuple[int, int]]]:
    tags, numbers, lower = an.tags, an.numbers, an.lower
    nps = [
        (s, e)
        for s, e, _h in an.chunks
        if e - s > 2 or (e - s == 2 and (" " in lower[s] or " " in lower[s + 1]))
    ]
    singular: list[tuple[int, int]] = []
    plural: list[tuple[int, int]] = []
    adverbs: list[tuple[int, int]] = []
    adjectives: list[tuple[int, int]] = []
    spatial: list[tuple[int, int]] = []
    has_verb = False
    spatial_words = lexicon.spatial
    for i, t in enumerate(tags):
        if t == NOUN:
            (plural if numbers[i] == "pl" else singular).append((i, i + 1))
        elif t == ADJ:
            adjectives.append((i, i + 1))
        elif t == ADV:
            adverbs.append((i, i + 1))
        elif t == VERB:
            has_verb = True
        elif t == ADP and relations and lower[i] in spatial_words:
            spatial.append((i, i + 1))
    verbs = _filter_spans(_verb_phrases(tags)) if has_verb else []
    return [nps, verbs, singular, plural, adverbs, adjectives, spatial]


def _sentence_initial(an: Analysis, word: int) -> bool:
    """Whether word index ``word`` starts a sentence (first word, or after . ! ?)."""
    k = word - 1
    while k >= 0 and an.tags[k] == PUNCT and an.lower[k] not in ".!?":
        k -= 1
    return k < 0 or an.lower[k] in ".!?"


def _moved_case(an: Analysis, lexicon: Lexicon, src: int, dst: int, span: str) -> str:
    """Re-case a span moved from word ``src`` to word ``dst`` for its new position."""
    if not span:
        return span
    lead_src, lead_dst = _sentence_initial(an, src), _sentence_initial(an, dst)
    if lead_dst and not lead_src and an.words[dst][0][:1].isupper() and span[0].islower():
        return span[0].upper() + span[1:]
    if lead_src and not lead_dst and span[0].isupper():
        word = an.words[src][0]
        if (len(word) == 1 or word[1:].islower()) and an.lower[src] in lexicon.words:
            return span[0].lower() + span[1:]
    return span


def _swap_text(an: Analysis, a: tuple[int, int], b: tuple[int, int], lexicon: Lexicon) -> str:
    text, words = an.text, an.words
    a0, a1 = words[a[0]][1], words[a[1] - 1][2]
    b0, b1 = words[b[0]][1], words[b[1] - 1][2]
    new_a = _moved_case(an, lexicon, b[0], a[0], text[b0:b1])
    new_b = _moved_case(an, lexicon, a[0], b[0], text[a0:a1])
    edited = set(range(a[0], a[1])) | set(range(b[0], b[1]))
    edits: list[Edit] = [(a0, a1, new_a), (b0, b1, new_b)]
    for start, new in ((a[0], new_a), (b[0], new_b)):
        fix = _article_edit(an, start, new, edited)
        if fix is not None:
            edits.append(fix)
    return _apply(text, edits)


def _swap(an: Analysis, rng: random.Random, lexicon: Lexicon, relations: bool) -> str | None:
    text, words = an.text, an.words
    candidates = []
    for spans in _span_sources(an, lexicon, relations):
        if len(spans) < 2:
            continue
        pair = rng.sample(spans, 2) if len(spans) > 2 else spans
        a, b = sorted(pair)
        span_a = text[words[a[0]][1] : words[a[1] - 1][2]]
        span_b = text[words[b[0]][1] : words[b[1] - 1][2]]
        if span_a.lower() != span_b.lower():
            candidates.append((a, b))
    while candidates:
        k = rng.randrange(len(candidates)) if len(candidates) > 1 else 0
        out = _swap_text(an, *candidates[k], lexicon)
        if out != text:
            return out
        del candidates[k]
    return None


def swap(
    caption: str,
    rng: random.Random,
    *,
    relations: bool = True,
    lexicon: Lexicon | None = None,
) -> str | None:
    """Exchange two phrases of the same kind in a caption (NegCLIP-style swap).

    The span kinds are those of the FSC-CLIP/CLoVe ``negclip`` generator: noun phrases of
    more than two words, verb phrases (``VERB? ADV* AUX* VERB+``), singular nouns,
    plural nouns, adverbs and adjectives, plus (``relations=True``, an addition) spatial
    relations such as "on" / "next to". For each kind, two of its non-overlapping spans
    are drawn; a pair with different texts is a candidate, and one candidate is returned
    at random. Capitalisation of the first word and "a"/"an" before a moved span are
    repaired. Reference: Yuksekgonul et al., "When and why vision-language models behave
    like bags-of-words", ICLR 2023 (NegCLIP); Oh et al., FSC-CLIP, EMNLP 2024 (section 3).

    Args:
        caption: the caption.
        rng: the generator all randomness is drawn from.
        relations: also swap two spatial relations.
        lexicon: word tables (default: the shipped lexicon).

    Returns:
        The negative caption, or ``None`` when no two same-kind spans differ.

    Example:
        >>> swap("a red circle and a blue square", random.Random(0))  # doctest: +SKIP
        'a blue circle and a red square'
    """
    caption = _check_caption(caption)
    rng = _check_rng(rng)
    lex = _check_lexicon(lexicon)
    return _swap(Analysis(caption, lex), rng, lex, bool(relations))


# -- replace --------------------------------------------------------------------------------


def _count_options(
    an: Analysis, i: int, head: int, lexicon: Lexicon
) -> tuple[list[tuple[str, bool]], list[float]]:
    """Replacement numbers for the number word or digits at ``i`` (head noun ``head``)."""
    word = an.lower[i]
    info = an.infos[i]
    digits = info is None
    value = int(word) if digits else info.number  # type: ignore[union-attr]
    head_info = an.infos[head]
    inflectable = (
        head_info is not None
        and head_info.noun is not None
        and head_info.noun[2] in ("sg", "pl", "sgpl")
        and an.numbers[head] in ("sg", "pl")
    )
    if digits:
        values = [k for k in range(max(1, value - 3), value + 4) if k != value]
    else:
        values = [k for k in lexicon.number_words if k != value and k > 0]
    options: list[tuple[str, bool]] = []
    weights: list[float] = []
    for k in values:
        flips = (k == 1) != (value == 1)
        if flips and not inflectable:
            continue
        options.append((str(k) if digits else lexicon.number_words[k], flips))
        weights.append(1.0 / abs(k - value))
    return options, weights


def _noun_form(an: Analysis, head: int, lexicon: Lexicon, plural: bool) -> str:
    sing, plur = lexicon.noun_forms[an.lower[head]]
    return _recase(an.words[head][0], plur if plural and plur else sing, an.text.isupper())


def _copula_edit(an: Analysis, j: int) -> Edit | None:
    if 0 <= j < len(an.words) and an.lower[j] in _COPULA_FLIP:
        text, start, end = an.words[j]
        return (start, end, _recase(text, _COPULA_FLIP[an.lower[j]]))
    return None


# A replaceable element: (kind, word index, options, weights or None, head word index).
_Element = tuple[str, int, Sequence[Any], Sequence[float] | None, int]


def _elements(an: Analysis, lexicon: Lexicon, relations: str) -> list[_Element]:
    tags, infos, lower = an.tags, an.infos, an.lower
    entities: list[_Element] = []
    modifiers: list[_Element] = []
    relation_elements: list[_Element] = []
    for s, _e, h in an.chunks:
        info = infos[h]
        if tags[h] == NOUN and info is not None and info.noun is not None:
            nouns = lexicon.noun_candidates[info.noun[:2]]
            if nouns:
                entities.append(("noun", h, nouns, None, h))
        for k in range(s, h):
            if tags[k] == NUM:
                opts, weights = _count_options(an, k, h, lexicon)
                if opts:
                    modifiers.append(("count", k, opts, weights, h))
    prepositions = lexicon.prepositions
    for i, t in enumerate(tags):
        if not t & (ADJ | VERB | ADP):
            continue
        info = infos[i]
        if info is None:
            continue
        if t == ADJ:
            if info.adj_candidates:
                modifiers.append(("adj", i, info.adj_candidates, None, -1))
        elif t == VERB:
            if info.verb is not None:
                options = lexicon.verb_candidates[info.verb[:2]]
                if options:
                    relation_elements.append(("verb", i, options, None, -1))
        else:
            word = lower[i]
            opposite = info.prep
            if opposite and (relations == "opposite" or (" " in word and word not in prepositions)):
                relation_elements.append(("prep", i, opposite, None, -1))
            else:  # the frequency table, less the preposition itself
                available = len(lexicon.prep_words) - (word in prepositions)
                if available > 0:
                    relation_elements.append(("table", i, lexicon.prep_words, None, available))
    return entities + modifiers + relation_elements


def _draw(element: _Element, lexicon: Lexicon, rng: random.Random, exclude: str) -> int:
    """Index of one option: one of ``min(2, n)`` weighted draws without replacement."""
    kind, _i, options, weights, _h = element  # _h: a table element's option count
    if kind == "table":
        cum = lexicon.prep_cumulative
        words = lexicon.prep_words
        first = _weighted_index(cum, rng)
        while words[first] == exclude:
            first = _weighted_index(cum, rng)
        if _h > 1 and rng.random() < 0.5:
            second = _weighted_index(cum, rng)
            while words[second] in (exclude, words[first]):
                second = _weighted_index(cum, rng)
            return second
        return first
    if weights is None:
        return rng.randrange(len(options))
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    first = _weighted_index(cumulative, rng)
    if len(options) > 1 and rng.random() < 0.5:
        second = first
        while second == first:
            second = _weighted_index(cumulative, rng)
        return second
    return first


def _realise(an: Analysis, element: _Element, choice: int, lexicon: Lexicon) -> str:
    kind, i, options, _weights, head = element
    original, start, end = an.words[i]
    option = options[choice]
    edits: list[Edit] = []
    edited = {i}
    if kind == "noun":
        sing, plur = option
        new = plur if an.numbers[i] == "pl" and plur else sing
    elif kind == "verb":
        info = an.infos[i]
        assert info is not None and info.verb is not None
        new = option[info.verb[2]]
    elif kind == "count":
        new, flips = option
        if flips:
            plural = an.numbers[head] != "pl"
            _, hs, he = an.words[head]
            edits.append((hs, he, _noun_form(an, head, lexicon, plural)))
            edited.add(head)
            chunk_end = next(e for _s, e, h in an.chunks if h == head)
            for fix in (_copula_edit(an, chunk_end), _copula_edit(an, i - 1)):
                if fix is not None:
                    edits.append(fix)
    else:
        new = str(option)
    new = _recase(original, new, an.text.isupper())
    edits.append((start, end, new))
    fix = _article_edit(an, i, new, edited)
    if fix is not None:
        edits.append(fix)
    return _apply(an.text, edits)


def _replace(
    an: Analysis, rng: random.Random, lexicon: Lexicon, relations: str, min_entities: int
) -> str | None:
    if len(an.chunks) < min_entities:
        return None
    tags = an.tags
    has_relation = any(t & (ADP | VERB) for t in tags)
    has_modifier = any(tags[k] & (DET | NUM | ADJ) for s, _e, h in an.chunks for k in range(s, h))
    if not (has_relation or has_modifier):
        return None
    elements = _elements(an, lexicon, relations)
    if not elements:
        return None
    sizes = [2 if (e[4] if e[0] == "table" else len(e[2])) > 1 else 1 for e in elements]
    r = rng.randrange(sum(sizes))
    pick = 0
    while r >= sizes[pick]:
        r -= sizes[pick]
        pick += 1
    element = elements[pick]
    choice = _draw(element, lexicon, rng, an.lower[element[1]])
    out = _realise(an, element, choice, lexicon)
    return out if out != an.text else None


def replace(
    caption: str,
    rng: random.Random,
    *,
    relations: Literal["frequency", "opposite"] = "frequency",
    min_entities: int = 2,
    lexicon: Lexicon | None = None,
) -> str | None:
    """Replace one object, attribute, count or relation by another of its kind.

    Nouns become co-hyponyms of their lexicon category (a dog a cat, a pizza a sandwich)
    in the same grammatical number; colours, materials and textures other ones; sizes the
    other pole of their scale ("small" to "large"); adjectives with an antonym their
    antonym; numbers nearby numbers (re-inflecting the noun and an adjacent "is"/"are"
    when the count crosses one); verbs others of their group in the same form
    ("sitting" to "standing"); prepositions another preposition drawn by corpus frequency
    (the reference's integer table), and multi-word spatial phrases without a table
    entry their opposite ("to the left of" to "to the right of"). One element is drawn
    with weight ``min(2, candidates)`` and one of up to two weighted draws of its
    candidates is used, as in the reference. Case and "a"/"an" are repaired. As in the
    reference, captions with fewer than ``min_entities`` noun phrases, or without any
    relation or modifier, get no negative. Reference: Hsieh et al., SugarCrepe, NeurIPS
    2023 (REPLACE); CLoVe (Castro et al., 2024) and FSC-CLIP (Oh et al., EMNLP 2024).

    Args:
        caption: the caption.
        rng: the generator all randomness is drawn from.
        relations: ``"frequency"`` (the reference) replaces a single-word or tabled
            preposition by the frequency table; ``"opposite"`` uses a spatial
            relation's opposite whenever it has one ("above" to "below").
        min_entities: fewest noun phrases a caption needs (the reference's 2).
        lexicon: word tables (default: the shipped lexicon).

    Returns:
        The negative caption, or ``None`` when nothing replaceable is found.
    """
    caption = _check_caption(caption)
    rng = _check_rng(rng)
    lex = _check_lexicon(lexicon)
    rel = _check_relations(relations)
    if isinstance(min_entities, bool) or not isinstance(min_entities, int) or min_entities < 0:
        raise ValueError(f"min_entities must be an int >= 0, got {min_entities!r}")
    return _replace(Analysis(caption, lex), rng, lex, rel, min_entities)


# -- shuffle --------------------------------------------------------------------------------


def _is_punct(token: str) -> bool:
    return len(token) == 1 and not token.isalnum()


def _strip_punct(words: list[str]) -> list[str]:
    lo, hi = 0, len(words)
    while lo < hi and _is_punct(words[lo]):
        lo += 1
    while hi > lo and _is_punct(words[hi - 1]):
        hi -= 1
    return words[lo:hi]


def _join_chunk(chunk: list[str]) -> str:
    out = chunk[0]
    for w in chunk[1:]:
        out += w if _is_punct(w) else " " + w
    return out


def _shuffle(text: str, words: list[str], rng: random.Random, n: int) -> str | None:
    chunks = [words[i : i + n] for i in range(0, len(words), n)]
    if len(chunks) < 2:
        return None
    trailing = len(chunks[-1]) == 1 and _is_punct(chunks[-1][0])
    if trailing and len(chunks) == 2:
        return None
    target = _strip_punct(words)
    for _ in range(_MAX_SHUFFLES):
        if trailing:
            order = chunks[:-1]
            rng.shuffle(order)
            r = rng.randint(0, len(order))
            mark = chunks[-1]
            if r == 0:
                order.insert(0, mark)
            else:
                order[r - 1] = order[r - 1] + mark
        else:
            order = chunks[:]
            rng.shuffle(order)
        flat = [w for c in order for w in c]
        if _strip_punct(flat) != target:
            out = " ".join(_join_chunk(c) for c in order)
            if out != text:
                return out
    return None


def shuffle(caption: str, rng: random.Random, n: int = 2) -> str | None:
    """Shuffle a caption's consecutive n-grams (FSC-CLIP's n-gram shuffle, n=2 there).

    The words are cut into consecutive non-overlapping n-grams from the left (the last
    may be shorter). A final lone punctuation mark is held out, the other n-grams are
    shuffled and the mark is put back after a random n-gram (or in front). A shuffle
    whose words, ignoring leading and trailing punctuation, are in the original order is
    drawn again, at most 10 times. Words inside an n-gram are joined by a space (none
    before punctuation), n-grams by a space; letter case is kept as it was. Reference:
    Oh et al., FSC-CLIP, EMNLP 2024 (``ngram_shuffler``).

    Args:
        caption: the caption.
        rng: the generator all randomness is drawn from.
        n: the n-gram length (>= 1).

    Returns:
        The negative caption, or ``None`` for a single n-gram, two n-grams the second of
        which is a lone punctuation mark, or when 10 shuffles all keep the word order.

    Example:
        >>> shuffle("A dog runs.", random.Random(0))
        'runs. A dog'
    """
    caption = _check_caption(caption)
    rng = _check_rng(rng)
    n = _check_n(n)
    return _shuffle(caption, [t[0] for t in tokens(caption)], rng, n)


# -- batch ----------------------------------------------------------------------------------


class HardNegatives(NamedTuple):
    """Hard negatives of a batch: a ``(B, N)`` grid of captions and its validity mask.

    Unpacks as ``texts, mask = hard_negatives(...)``.

    Attributes:
        texts: ``B`` lists of ``N`` strings; ``texts[i][j]`` is the negative of kind
            ``kinds[j]`` of caption ``i``, or ``""`` when that generator made none.
        mask: ``(B, N)`` ``torch.bool`` tensor, ``True`` where ``texts[i][j]`` is a
            negative.
    """

    texts: list[list[str]]
    mask: torch.Tensor

    def type_major(self) -> tuple[list[str], torch.Tensor]:
        """The reference's flat layout: valid negatives kind-major, and an ``(N*B,)`` mask.

        Returns:
            ``(negatives, mask)``: the valid negatives ordered by kind, then by caption
            (index ``j*B + i`` of the mask is caption ``i``'s kind ``j``), and the mask as
            an ``(N*B,)`` ``torch.long`` tensor of 0/1, so that
            ``len(negatives) == int(mask.sum())``.
        """
        flat_mask = self.mask.t().reshape(-1)
        b = self.mask.shape[0]
        texts = [self.texts[k % b][k // b] for k in flat_mask.nonzero().flatten().tolist()]
        return texts, flat_mask.long()


def hard_negatives(
    captions: Sequence[str],
    kinds: Sequence[str] = KINDS,
    rng: random.Random | None = None,
    *,
    shuffle_n: int = 2,
    relations: Literal["frequency", "opposite"] = "frequency",
    min_entities: int = 2,
    lexicon: Lexicon | None = None,
) -> HardNegatives:
    """Up to one negative of each kind for every caption of a batch.

    FSC-CLIP's ``fsc-clip`` negatives are ``kinds=("swap", "replace", "shuffle")``. The
    captions are visited in order and, for each, the kinds in order, all drawing from
    ``rng`` (so the result is a deterministic function of the rng's state). Each caption
    is tokenised and tagged once for all kinds. Reference: Oh et al., FSC-CLIP, EMNLP
    2024 (``add_random_text_hard_negatives``).

    Args:
        captions: ``B`` captions.
        kinds: ``N`` generator names, each ``"swap"``, ``"replace"`` or ``"shuffle"``.
        rng: the generator all randomness is drawn from (default: a fresh
            ``random.Random()`` seeded by the OS; pass one for reproducible negatives).
        shuffle_n: n-gram length of ``shuffle``.
        relations: ``replace``'s preposition mode (see :func:`replace`).
        min_entities: ``replace``'s noun-phrase minimum (see :func:`replace`).
        lexicon: word tables (default: the shipped lexicon).

    Returns:
        :class:`HardNegatives` ``(texts, mask)``: ``texts`` a ``list`` of ``B`` lists of
        ``N`` ``str`` (``""`` where a generator made none), ``mask`` a ``(B, N)``
        ``torch.bool`` tensor that is ``True`` exactly where ``texts`` holds a negative.

    Raises:
        TypeError: if ``captions`` is not a sequence of ``str`` or ``rng`` is not a
            ``random.Random``.
        ValueError: on an empty batch, no kinds or an unknown kind.
    """
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError(f"captions must be a sequence of str, got {type(captions).__name__}")
    if len(captions) == 0:
        raise ValueError("captions must not be empty, got 0 captions")
    for i, c in enumerate(captions):
        _check_caption(c, f"captions[{i}]")
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise TypeError(f"kinds must be a sequence of kind names, got {type(kinds).__name__}")
    if len(kinds) == 0:
        raise ValueError(f"kinds must name at least one of {KINDS}, got ()")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds must be drawn from {KINDS}, got {k!r}")
    rng = random.Random() if rng is None else _check_rng(rng)
    lex = _check_lexicon(lexicon)
    n = _check_n(shuffle_n)
    rel = _check_relations(relations)
    if isinstance(min_entities, bool) or not isinstance(min_entities, int) or min_entities < 0:
        raise ValueError(f"min_entities must be an int >= 0, got {min_entities!r}")
    tagged = any(k != "shuffle" for k in kinds)
    texts: list[list[str]] = []
    valid: list[bool] = []
    for caption in captions:
        if tagged:
            an = Analysis(caption, lex)
            raw = an.raw
        else:
            raw = tokens(caption)
        words: list[str] | None = None
        row = []
        for kind in kinds:
            if kind == "swap":
                out = _swap(an, rng, lex, True)
            elif kind == "replace":
                out = _replace(an, rng, lex, rel, min_entities)
            else:
                if words is None:
                    words = [t[0] for t in raw]
                out = _shuffle(caption, words, rng, n)
            row.append(out if out is not None else "")
            valid.append(out is not None)
        texts.append(row)
    mask = torch.tensor(valid, dtype=torch.bool).reshape(len(captions), len(kinds))
    return HardNegatives(texts, mask)
