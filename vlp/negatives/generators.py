"""The three hard-negative generators of FSC-CLIP and their batch driver.

``swap`` (NegCLIP style), ``replace`` (SugarCrepe REPLACE as re-implemented by CLoVe) and
``shuffle`` (FSC-CLIP's n-gram shuffle), on the shipped lexicon instead of spaCy, WordNet
and a scene-graph parser. Each returns a caption different from its input, or ``None``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from vlp.negatives._lexicon import (
    ADJ,
    ADP,
    ADV,
    AUX,
    CONJ,
    DET,
    NOUN,
    NUM,
    POSS,
    PRON,
    PROPN,
    PUNCT,
    VERB,
    Lexicon,
    default_lexicon,
)
from vlp.negatives._text import Analysis, tokens

if TYPE_CHECKING:
    import torch

__all__ = ["KINDS", "HardNegatives", "Kind", "hard_negatives", "replace", "shuffle", "swap"]

Kind = Literal["swap", "replace", "shuffle"]
#: The generator kinds, in FSC-CLIP's order.
KINDS: tuple[str, ...] = ("swap", "replace", "shuffle")

Edit = tuple[int, int, str]

_AN_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")
_A_EXCEPTIONS = ("uni", "use", "usu", "uti", "uk", "eu", "ewe", "one", "once", "ubiq")
_COPULA_FLIP = {"is": "are", "are": "is", "was": "were", "were": "was"}
_MAX_SHUFFLES = 10
# Strict swaps: words that join coordinated items, relations under which two phrases can
# trade places without changing what is said, and adjectives that quantify rather than
# describe.
_COORDINATORS = frozenset((",", "and", "or", "&"))
_SYMMETRIC = frozenset(
    (
        *("with", "next to", "beside", "near", "by", "alongside", "close to", "across from"),
        *("opposite", "along with", "together with", "and", "or"),
    )
)
_QUANTIFYING = frozenset(
    (
        *("another", "other", "few", "many", "several", "same", "different", "extra"),
        *("single", "double", "various", "numerous", "multiple", "each", "every", "some"),
    )
)
_NP_START = DET | NUM | ADJ | NOUN | POSS | PRON | PROPN


# -- validation ---------------------------------------------------------------------------


#: Longest caption the generators take, in characters (about 130 times CLIP's 77 tokens).
#: (``swap`` grows faster than linearly: 20,000 characters took 8 s.)
MAX_CAPTION_CHARS = 10_000


def _check_caption(caption: object, name: str = "caption") -> str:
    if not isinstance(caption, str):
        raise TypeError(f"{name} must be a str, got {type(caption).__name__}")
    if len(caption) > MAX_CAPTION_CHARS:
        raise ValueError(
            f"{name} must have at most {MAX_CAPTION_CHARS} characters (hard negatives are "
            f"made for short captions; split long ones into sentences), got {len(caption)}"
        )
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
    starts: list[int] = []  # kept spans, sorted by start (they never overlap)
    ends: list[int] = []
    for s, e in sorted(spans, key=lambda p: (p[0] - p[1], p[0])):
        k = bisect.bisect_left(starts, s)
        if (k > 0 and ends[k - 1] > s) or (k < len(starts) and starts[k] < e):
            continue
        starts.insert(k, s)
        ends.insert(k, e)
    return list(zip(starts, ends))


def _run_lengths(tags: list[int], tag: int) -> list[int]:
    """``out[i]``: how many consecutive words from ``i`` on carry ``tag`` (one extra slot)."""
    out = [0] * (len(tags) + 1)
    for i in range(len(tags) - 1, -1, -1):
        if tags[i] == tag:
            out[i] = out[i + 1] + 1
    return out


def _verb_phrases(tags: list[int]) -> list[tuple[int, int]]:
    """Matches of ``VERB? ADV* AUX* VERB+`` (the longest from each start), in linear time."""
    verb, adv, aux = _run_lengths(tags, VERB), _run_lengths(tags, ADV), _run_lengths(tags, AUX)
    out = []
    for i, t in enumerate(tags):
        if not t & (VERB | ADV | AUX):
            continue
        j = i + 1 if t == VERB else i
        k = j + adv[j]
        k += aux[k]
        if verb[k]:
            out.append((i, k + verb[k]))
        elif t == VERB:
            out.append((i, i + verb[i]))
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


Span = tuple[int, int]


def _chunk_of(an: Analysis) -> list[int]:
    """Per word, the index of its noun phrase in ``an.chunks`` (``-1`` outside any)."""
    out = [-1] * len(an.words)
    for c, (s, e, _h) in enumerate(an.chunks):
        for k in range(s, e):
            out[k] = c
    return out


def _linked_chunks(an: Analysis) -> list[int]:
    """Per noun phrase, a group id: phrases of one coordinated list or symmetric relation.

    Two consecutive noun phrases are linked when only commas and "and"/"or" ("chicken,
    rice and broccoli") or one symmetric relation ("a cat next to a dog") stand between
    them.
    """
    group = list(range(len(an.chunks)))
    for c in range(1, len(an.chunks)):
        between = an.lower[an.chunks[c - 1][1] : an.chunks[c][0]]
        joined = " ".join(between)
        if between and (all(w in _COORDINATORS for w in between) or joined in _SYMMETRIC):
            group[c] = group[c - 1]
    return group


def _whole(an: Analysis, span: Span, chunk: int) -> bool:
    """Whether ``span`` is all of noun phrase ``chunk`` but its determiner."""
    s, e, _h = an.chunks[chunk]
    while s < e and an.tags[s] & (DET | POSS):
        s += 1
    return span[0] <= s and span[1] >= e


def _bare(an: Analysis, head: int, chunk: int) -> bool:
    """Whether a singular count noun stands without a determiner, number or possessive."""
    if an.numbers[head] != "sg" or chunk < 0:
        return False
    s = an.chunks[chunk][0]
    return not any(an.tags[k] & (DET | NUM | POSS) for k in range(s, head))


def _bare_object(an: Analysis, start: int) -> bool:
    """Whether the noun phrase starting at word ``start`` is a bare singular count noun."""
    for c, (s, _e, h) in enumerate(an.chunks):
        if s == start:
            return _bare(an, h, c)
    return False


def _set_phrase(an: Analysis, i: int, lexicon: Lexicon) -> bool:
    """Whether the preposition at ``i`` is part of a set phrase that another would break.

    "topped with", "covered with" (a participle's own preposition) and "on the side",
    "in the background" (a position noun without "of").
    """
    prev = an.tags[i - 1] if i > 0 else 0
    participle = bool(prev & (VERB | ADJ)) and (
        an.lower[i - 1].endswith("ed") or (prev == VERB and _verb_form(an, i - 1) in (2, 4))
    )
    if participle and an.lower[i] in ("with", "without"):
        return True
    for s, _e, h in an.chunks:
        if s == i + 1:
            info = an.infos[h]
            position = info is not None and info.noun is not None and info.noun[0] == "position"
            return position and an.lower[h + 1 : h + 2] != ["of"]
    return False


def _verb_form(an: Analysis, i: int) -> int:
    info = an.infos[i]
    if info is not None and info.verb is not None:
        return info.verb[2]
    w = an.lower[i]
    return 3 if w.endswith("ing") else 2 if w.endswith("ed") else 1 if w.endswith("s") else 0


def _strict_spans(an: Analysis, lexicon: Lexicon, relations: bool) -> list[list[list[Span]]]:
    """Span kinds for strict swaps, each a list of pools of mutually swappable spans."""
    tags, lower, infos = an.tags, an.lower, an.infos
    n = len(tags)
    chunk_of = _chunk_of(an)
    heads = {h for _s, _e, h in an.chunks}

    def swappable_noun(i: int) -> bool:
        info = infos[i]
        category = info.noun[0] if info is not None and info.noun is not None else ""
        return tags[i] == NOUN and category not in lexicon.swap_excluded

    def next_tag(i: int) -> int:
        return tags[i + 1] if i + 1 < n else 0

    nps = [
        (s, e)
        for s, e, h in an.chunks
        if swappable_noun(h) and (e - s > 2 or (e - s == 2 and " " in lower[s] + lower[s + 1]))
    ]
    nouns: dict[tuple[str, bool], list[Span]] = {}
    for i in sorted(heads):
        if swappable_noun(i):
            # a bare singular ("eating pizza") goes with the mass nouns; a container
            # ("a plate of") only trades places with another container
            number = "mass" if _bare(an, i, chunk_of[i]) else an.numbers[i]
            nouns.setdefault((number, lower[i + 1 : i + 2] == ["of"]), []).append((i, i + 1))
    adjectives = [
        (i, i + 1)
        for i, t in enumerate(tags)
        if t == ADJ and chunk_of[i] >= 0 and i < an.chunks[chunk_of[i]][2]
        if lower[i] not in _QUANTIFYING
    ]
    adverbs = [
        (i, i + 1)
        for i, t in enumerate(tags)
        if t == ADV and infos[i] is None and lower[i].endswith("ly")
    ]
    verbs: dict[tuple[str, int], list[Span]] = {}
    for i, t in enumerate(tags):
        if t != VERB or (i > 0 and tags[i - 1] == VERB) or next_tag(i) == VERB:
            continue
        nt = next_tag(i)
        if nt & _NP_START:
            frame, span = "object", (i, i + 1)
        elif nt == ADP and i + 2 < n and tags[i + 2] & _NP_START:
            frame, span = "preposition", (i, i + 2)
        elif nt & (PUNCT | CONJ) or i + 1 == n:
            frame, span = "none", (i, i + 1)
        else:
            continue
        verbs.setdefault((frame, _verb_form(an, i)), []).append(span)
    spatial = []
    if relations:
        spatial = [
            (i, i + 1)
            for i, t in enumerate(tags)
            if t == ADP and lower[i] in lexicon.spatial and next_tag(i) & _NP_START
        ]
    return [[nps], list(verbs.values()), list(nouns.values()), [adverbs], [adjectives], [spatial]]


def _strict_pair_ok(
    an: Analysis,
    a: Span,
    b: Span,
    chunk_of: list[int],
    group: list[int],
    lexicon: Lexicon,
) -> bool:
    ca, cb = chunk_of[a[0]], chunk_of[b[0]]
    if ca >= 0 and ca == cb:
        return False  # two words of one noun phrase ("a red large ball")
    if ca >= 0 and cb >= 0 and _whole(an, a, ca) and _whole(an, b, cb):
        if group[ca] == group[cb]:
            return False  # items of a list, or the two sides of "next to": same meaning
        before = an.chunks[cb][0] - 1
        if before >= 0 and an.lower[before] in _SYMMETRIC:
            return False  # "a tree on a sidewalk near a hydrant": the hydrant may be too
    wa, wb = an.lower[a[0]], an.lower[b[0]]
    if a[1] - a[0] == 1 and b[1] - b[0] == 1:
        pa, pb = lexicon.prep_cluster.get(wa), lexicon.prep_cluster.get(wb)
        if pa is not None and pa == pb:
            return False  # "near" and "beside"
        if wb in lexicon.adj_overlaps.get(wa, ()):
            return False  # "white" and "cream"
    return True


def _swap_strict(an: Analysis, rng: random.Random, lexicon: Lexicon, relations: bool) -> str | None:
    text, words = an.text, an.words
    chunk_of = _chunk_of(an)
    group = _linked_chunks(an)
    kinds = []
    for pools in _strict_spans(an, lexicon, relations):
        pairs = []
        for spans in pools:
            for x in range(len(spans)):
                for y in range(x + 1, len(spans)):
                    a, b = spans[x], spans[y]
                    if a[1] > b[0]:
                        continue
                    span_a = text[words[a[0]][1] : words[a[1] - 1][2]]
                    span_b = text[words[b[0]][1] : words[b[1] - 1][2]]
                    if span_a.lower() == span_b.lower():
                        continue
                    if _strict_pair_ok(an, a, b, chunk_of, group, lexicon):
                        pairs.append((a, b))
        if pairs:
            kinds.append(pairs)
    while kinds:
        k = rng.randrange(len(kinds))
        pairs = kinds[k]
        j = rng.randrange(len(pairs))
        out = _swap_text(an, *pairs[j], lexicon)
        if out != text:
            return out
        del pairs[j]
        if not pairs:
            del kinds[k]
    return None


def swap(
    caption: str,
    rng: random.Random,
    *,
    relations: bool = True,
    lexicon: Lexicon | None = None,
    strict: bool = True,
) -> str | None:
    """Exchange two phrases of the same kind in a caption (NegCLIP-style swap).

    The span kinds are those of the FSC-CLIP/CLoVe ``negclip`` generator: noun phrases of
    more than two words, verb phrases (``VERB? ADV* AUX* VERB+``), singular nouns,
    plural nouns, adverbs and adjectives, plus (``relations=True``, an addition) spatial
    relations such as "on" / "next to". For each kind, two of its non-overlapping spans
    are drawn; a pair whose texts differ (ignoring case) is a candidate, and one is returned
    at random. Capitalisation of the first word and "a"/"an" before a moved span are
    repaired. Reference: Yuksekgonul et al., "When and why vision-language models behave
    like bags-of-words", ICLR 2023 (NegCLIP); Oh et al., FSC-CLIP, EMNLP 2024 (section 3).

    Args:
        caption: the caption.
        rng: the generator all randomness is drawn from.
        relations: also swap two spatial relations.
        lexicon: word tables (default: the shipped lexicon).
        strict: keep only swaps that change the meaning and keep the grammar (see
            ``docs/negatives.md``): head nouns of the same number (singular, plural or
            mass), never two items of one coordinated list nor the two sides of a
            symmetric relation ("a dog and a cat", "a cat next to a dog"), never two
            words of one noun phrase, never grouping, position or picture nouns
            ("group", "side", "photo"); verbs only of the same form and the same frame
            (with an object, a preposition, which moves with the verb, or neither);
            descriptive adjectives only, manner adverbs only, and no two relations or
            adjectives that are near-synonyms. ``False`` gives the reference's unfiltered
            draw.

    Returns:
        The negative caption, or ``None`` when no two same-kind spans differ.

    Example:
        >>> swap("a red circle and a blue square", random.Random(0))
        'a blue circle and a red square'
    """
    caption = _check_caption(caption)
    rng = _check_rng(rng)
    lex = _check_lexicon(lexicon)
    an = Analysis(caption, lex)
    if strict:
        return _swap_strict(an, rng, lex, bool(relations))
    return _swap(an, rng, lex, bool(relations))


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


# A replaceable element: (kind, word index, options, weights or None, extra), where extra
# is the head noun's index for nouns and counts, and the usable option count for "table".
_Element = tuple[str, int, Sequence[Any], Sequence[float] | None, int]


def _adjective_options(an: Analysis, i: int, head: int, lexicon: Lexicon) -> tuple[str, ...]:
    """Strict replacements of the adjective at ``i`` modifying noun ``head`` (or -1)."""
    info = an.infos[i]
    assert info is not None
    overlaps = lexicon.adj_overlaps.get(an.lower[i], frozenset())
    head_info = an.infos[head] if head >= 0 else None
    if head_info is None or head_info.noun is None:
        banned = lexicon.animate_adjectives | lexicon.inanimate_adjectives
    elif head_info.noun[0] in lexicon.animate_categories:
        banned = lexicon.inanimate_adjectives
    else:
        banned = lexicon.animate_adjectives
    return tuple(c for c in info.adj_candidates if c not in overlaps and c not in banned)


def _elements(an: Analysis, lexicon: Lexicon, relations: str, strict: bool) -> list[_Element]:
    tags, infos, lower = an.tags, an.infos, an.lower
    entities: list[_Element] = []
    modifiers: list[_Element] = []
    relation_elements: list[_Element] = []
    noun_table = lexicon.noun_candidates_strict if strict else lexicon.noun_candidates
    verb_table = lexicon.verb_candidates_strict if strict else lexicon.verb_candidates
    head_of = [-1] * len(tags)
    for s, _e, h in an.chunks:
        for k in range(s, h):
            head_of[k] = h
    for c, (s, _e, h) in enumerate(an.chunks):
        info = infos[h]
        if tags[h] == NOUN and info is not None and info.noun is not None:
            nouns = noun_table[info.noun[:2]]
            if strict and lower[h + 1 : h + 2] == ["of"]:  # "a plate of", "the top of"
                concepts = lexicon.concepts[info.noun[0]]
                nouns = tuple(
                    x
                    for x in nouns
                    if info.noun[:2] in lexicon.partitive
                    and (info.noun[0], concepts.index(x)) in lexicon.partitive
                )
            elif strict and info.noun[0] == "position":  # "on the left", "in the background"
                poles = lexicon.position_opposites.get(lexicon.noun_forms[lower[h]][0], ())
                nouns = tuple(x for x in nouns if x[0] in poles)
            if nouns and not (strict and _bare(an, h, c)):
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
            adj = _adjective_options(an, i, head_of[i], lexicon) if strict else info.adj_candidates
            if adj:
                modifiers.append(("adj", i, adj, None, -1))
        elif t == VERB:
            if info.verb is not None:
                options = verb_table[info.verb[:2]]
                if strict:  # keep the frame: an object needs a transitive verb
                    has_object = i + 1 < len(tags) and bool(tags[i + 1] & _NP_START)
                    if has_object and _bare_object(an, i + 1):
                        options = ()  # "playing frisbee", "eating pizza": a set phrase
                    unfit = lexicon.intransitive if has_object else lexicon.transitive
                    options = tuple(f for f in options if f[0] not in unfit)
                if options:
                    relation_elements.append(("verb", i, options, None, -1))
        else:
            word = lower[i]
            opposite = info.prep
            if opposite and (relations == "opposite" or (" " in word and word not in prepositions)):
                relation_elements.append(("prep", i, opposite, None, -1))
            elif strict:  # another preposition of the same grammatical set
                if word in lexicon.prep_sets and not _set_phrase(an, i, lexicon):
                    set_options, set_weights = lexicon.prep_sets[word]
                    relation_elements.append(("set", i, set_options, set_weights, -1))
            else:  # the frequency table, less the preposition itself
                available = len(lexicon.prep_words) - (word in prepositions)
                if available > 0:
                    relation_elements.append(("table", i, lexicon.prep_words, None, available))
    return entities + modifiers + relation_elements


def _draw(element: _Element, lexicon: Lexicon, rng: random.Random, exclude: str) -> int:
    """Index of one option: one of ``min(2, n)`` weighted draws without replacement."""
    kind, _i, options, weights, extra = element
    if kind == "table":
        cum = lexicon.prep_cumulative
        words = lexicon.prep_words
        first = _weighted_index(cum, rng)
        while words[first] == exclude:
            first = _weighted_index(cum, rng)
        if extra > 1 and rng.random() < 0.5:
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
    an: Analysis,
    rng: random.Random,
    lexicon: Lexicon,
    relations: str,
    min_entities: int,
    strict: bool = True,
) -> str | None:
    if len(an.chunks) < min_entities:
        return None
    tags = an.tags
    has_relation = any(t & (ADP | VERB) for t in tags)
    has_modifier = any(tags[k] & (DET | NUM | ADJ) for s, _e, h in an.chunks for k in range(s, h))
    if not (has_relation or has_modifier):
        return None
    elements = _elements(an, lexicon, relations, strict)
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
    strict: bool = True,
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
        strict: keep the replacement false (see ``docs/negatives.md``): never a word
            that can describe the same thing (a hypernym or neutral word such as
            "person", "animal", "food"; overlapping nouns such as dog and puppy, street
            and road; verb synonyms such as holding and carrying; near colours such as
            white and cream), age adjectives by the head noun ("an old man" never "a
            new man"), and prepositions only within their grammatical set (locative by
            locative, "with" by "without"; others are left alone). ``False`` gives the
            reference's looser choice (any co-category word, the whole frequency table).

    Returns:
        The negative caption, or ``None`` when nothing replaceable is found.

    Example:
        >>> replace("a red circle and a blue square", random.Random(1))
        'a red circle and a blue star'
    """
    caption = _check_caption(caption)
    rng = _check_rng(rng)
    lex = _check_lexicon(lexicon)
    rel = _check_relations(relations)
    if isinstance(min_entities, bool) or not isinstance(min_entities, int) or min_entities < 0:
        raise ValueError(f"min_entities must be an int >= 0, got {min_entities!r}")
    return _replace(Analysis(caption, lex), rng, lex, rel, min_entities, bool(strict))


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
    joined = [_join_chunk(c) for c in chunks]
    k = len(chunks) - trailing
    order = list(range(k))
    for _ in range(_MAX_SHUFFLES):
        rng.shuffle(order)
        if trailing:
            r = rng.randint(0, k)
            flat = [w for j in order[:r] for w in chunks[j]] + chunks[-1]
            flat += [w for j in order[r:] for w in chunks[j]]
        else:
            flat = [w for j in order for w in chunks[j]]
        if _strip_punct(flat) == target:
            continue
        if not trailing:
            out = " ".join([joined[j] for j in order])
        elif r == 0:
            out = " ".join([joined[-1]] + [joined[j] for j in order])
        else:
            pieces = [joined[j] for j in order]
            pieces[r - 1] += joined[-1]
            out = " ".join(pieces)
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
    strict: bool = True,
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
        strict: ``swap`` and ``replace`` keep only negatives that are false and
            grammatical (see :func:`swap`, :func:`replace`); ``False`` gives the
            reference's looser rules.

    Returns:
        :class:`HardNegatives` ``(texts, mask)``: ``texts`` a ``list`` of ``B`` lists of
        ``N`` ``str`` (``""`` where a generator made none), ``mask`` a ``(B, N)``
        ``torch.bool`` tensor that is ``True`` exactly where ``texts`` holds a negative.

    Raises:
        TypeError: if ``captions`` is not a sequence of ``str`` or ``rng`` is not a
            ``random.Random``.
        ValueError: on an empty batch, no kinds or an unknown kind.

    Example:
        >>> texts, mask = hard_negatives(["a red circle and a blue square", "A dog runs."],
        ...                              rng=random.Random(0))
        >>> texts[1], mask.tolist()
        (['', '', 'runs. A dog'], [[True, True, True], [False, False, True]])
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
    import torch  # here, so that the string generators never import torch

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
                out = _swap_strict(an, rng, lex, True) if strict else _swap(an, rng, lex, True)
            elif kind == "replace":
                out = _replace(an, rng, lex, rel, min_entities, bool(strict))
            else:
                if words is None:
                    words = [t[0] for t in raw]
                out = _shuffle(caption, words, rng, n)
            row.append(out if out is not None else "")
            valid.append(out is not None)
        texts.append(row)
    mask = torch.tensor(valid, dtype=torch.bool).reshape(len(captions), len(kinds))
    return HardNegatives(texts, mask)
