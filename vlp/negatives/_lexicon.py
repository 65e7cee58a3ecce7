"""The lexicon behind the rule-based generators: word classes, inflections, replacements.

The shipped lexicon is ``lexicon.json`` (package data). :class:`Lexicon` compiles such a
mapping into flat lookup tables once, so that tagging a caption is one dict lookup per
token. The format of the mapping is documented in ``docs/negatives.md``; in short:

* ``nouns``: ``{category: [entry, ...]}``. An entry is one concept, synonyms separated by
  ``|``; each synonym is ``singular`` (regular plural), ``singular/plural`` (irregular) or
  ``singular/`` (a mass noun, no plural). Replacements stay within the category.
* ``colours``, ``materials``, ``textures``: lists of entries, synonyms separated by ``|``.
* ``sizes``: a list of scales, each two poles of near-synonyms; a size is replaced by a
  word of the other pole.
* ``antonyms``: pairs of adjectives, each replaced by the other.
* ``adjectives``: further adjectives (tagged, never replaced unless listed above).
* ``numbers``: number words and their values.
* ``verbs``: ``{group: [entry, ...]}``; an entry is a regular base form or the five forms
  ``base|3sg|past|ing|participle``. Replacements stay within the group, in the same form.
* ``prepositions``: ``{preposition: weight}``, the frequency table of replacements.
* ``spatial_relations``: lists ``[phrase, opposite...]`` of spatial phrases (opposites may
  be absent).
* ``determiners``, ``pronouns``, ``auxiliaries``, ``conjunctions``, ``adverbs``: closed
  word classes.

Optional keys that keep negatives false (``strict=True``, the default of the generators):

* ``general_nouns``: noun entries that are tagged but never replaced nor used as a
  replacement: hypernyms and gender- or age-neutral words ("person", "animal", "vehicle",
  "food", "child") whose substitution can keep a caption true.
* ``framing_nouns``: noun entries for groupings, parts and views ("group", "pair", "piece",
  "view"), never replaced and never swapped.
* ``swap_excluded_categories``: noun categories whose nouns are never swapped ("position",
  "picture").
* ``noun_overlaps``, ``verb_synonyms``, ``adjective_overlaps``: groups of words (verbs as
  base forms) that never replace one another, because one can describe the same thing as
  the other (dog and puppy, street and road, holding and carrying, white and cream).
* ``preposition_sets``: grammatical sets of prepositions, each a list of clusters
  ``"a|b"`` of near-synonyms; a preposition is replaced only by one of another cluster of
  its own set (locative by locative, "with" by "without").
* ``intransitive_verbs``, ``transitive_verbs``: base forms; a verb with a direct object
  is replaced only by one that can take it, one without only by one that needs none.
  Words these groups name that the lexicon does not list (as that word class) are
  ignored, so that a trimmed copy of the shipped lexicon still compiles.
* ``partitive_heads``: nouns that head "X of Y" (containers, "a plate of food", and
  positions, "the top of a hill"); a noun before "of" is replaced only when it is listed,
  and then only by another listed noun of its category.
* ``preposition_overlaps``: pairs ``["a|b", "c|d"]``: no word of one side replaces a word
  of the other ("near" is true of anything "on" or "under" something; "in" and "on" a
  street are the same place).
* ``position_opposites``: pairs of position nouns; a position noun not followed by "of"
  ("on the left", "in the background") is replaced only by its opposite.
* ``animate_categories``, ``animate_adjectives``, ``inanimate_adjectives``: an adjective
  of the first list only replaces a modifier of an animate head noun, one of the second
  only that of an inanimate head ("an old man" becomes "a young man", never "a new man").
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Lexicon", "default_lexicon", "lexicon_data", "load_lexicon"]

# Coarse tags, as bit flags so that a word's possible tags are one int.
NOUN = 1
ADJ = 2
VERB = 4
ADV = 8
ADP = 16
DET = 32
PRON = 64
AUX = 128
CONJ = 256
NUM = 512
PUNCT = 1024
POSS = 2048
PROPN = 4096
X = 8192
PART = 16384

#: Internal noun categories of ``general_nouns`` and ``framing_nouns`` (never replaced).
GENERAL = "(general)"
FRAMING = "(framing)"

_REQUIRED_LISTS = (
    "colours",
    "materials",
    "textures",
    "antonyms",
    "adjectives",
    "sizes",
    "spatial_relations",
    "determiners",
    "pronouns",
    "auxiliaries",
    "conjunctions",
    "adverbs",
)


def pluralise(noun: str) -> str:
    """The regular plural of a (possibly multi-word) noun: the last word is inflected."""
    head, sep, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return head + sep + last


def verb_forms(base: str) -> tuple[str, str, str, str, str]:
    """Base, third person singular, past, gerund and past participle of a regular verb."""
    if base.endswith(("s", "x", "z", "ch", "sh")):
        third = base + "es"
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "i", "o", "u"):
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    if base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "i", "o", "u"):
        past = base[:-1] + "ied"
    else:
        past = base + "ed"
    if base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        ing = base[:-1] + "ing"
    else:
        ing = base + "ing"
    return (base, third, past, ing, past)


class WordInfo:
    """Everything the lexicon knows about one lower-case surface form."""

    __slots__ = (
        "adj_candidates",
        "mask",
        "noun",
        "number",
        "prep",
        "verb",
    )

    def __init__(self) -> None:
        self.mask = 0
        #: (category, concept index, number) with number in {"sg", "pl", "mass", "sgpl"}.
        self.noun: tuple[str, int, str] | None = None
        #: Candidate replacements of an adjective, in a fixed order (uniform weights).
        self.adj_candidates: tuple[str, ...] = ()
        #: (group, lemma index, form index) of a verb form.
        self.verb: tuple[str, int, int] | None = None
        #: Value of a number word.
        self.number = 0
        #: Opposites of a spatial phrase (empty for plain prepositions).
        self.prep: tuple[str, ...] = ()


def _check_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"lexicon[{key!r}] must be a list, got {type(value).__name__}")
    return value


def _check_words(key: str, entries: Sequence[Any]) -> None:
    for e in entries:
        if not isinstance(e, str) or not e.strip():
            raise ValueError(f"lexicon[{key!r}] entries must be non-empty strings, got {e!r}")


class Lexicon:
    """Compiled word tables for :func:`~vlp.negatives.swap`, ``replace`` and ``shuffle``.

    Args:
        data: a mapping in the format of the shipped ``lexicon.json`` (see the module
            docstring and ``docs/negatives.md``). Start from :func:`lexicon_data` to extend
            the shipped one.

    Raises:
        ValueError: on a malformed mapping, naming the offending key and entry.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        self.words: dict[str, WordInfo] = {}
        #: First lower-case word -> word tuples of multi-word units, longest first.
        self.multiword: dict[str, tuple[tuple[str, ...], ...]] = {}
        #: category -> concepts, each (singular, plural) of the canonical synonym.
        self.concepts: dict[str, list[tuple[str, str | None]]] = {}
        #: (category, concept index) -> replacement concepts of the same countability.
        self.noun_candidates: dict[tuple[str, int], tuple[tuple[str, str | None], ...]] = {}
        #: verb group -> lemma form tuples.
        self.verb_lemmas: dict[str, list[tuple[str, ...]]] = {}
        #: noun surface form -> (singular, plural) of its synonym (plural None: mass noun).
        self.noun_forms: dict[str, tuple[str, str | None]] = {}
        #: preposition -> weight (the frequency table).
        self.prepositions: dict[str, int] = {}
        #: Phrases listed in ``spatial_relations`` (the relations ``swap`` exchanges).
        self.spatial: set[str] = set()
        #: Noun categories whose nouns ``swap`` never moves (strict mode).
        self.swap_excluded: frozenset[str] = frozenset()
        #: Strict replacements: noun candidates less overlapping concepts.
        self.noun_candidates_strict: dict[tuple[str, int], tuple[tuple[str, str | None], ...]] = {}
        #: Strict replacements: verb candidates less synonyms.
        self.verb_candidates_strict: dict[tuple[str, int], tuple[tuple[str, ...], ...]] = {}
        #: preposition -> (candidates, frequency-table weights) within its grammatical set.
        self.prep_sets: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        #: preposition -> (set index, cluster index); prepositions of one cluster are synonyms.
        self.prep_cluster: dict[str, tuple[int, int]] = {}
        #: adjective -> adjectives it never becomes (strict mode).
        self.adj_overlaps: dict[str, frozenset[str]] = {}
        #: Preposition pairs that never replace one another (strict mode).
        self.prep_apart: frozenset[tuple[str, str]] = frozenset()
        self.animate_categories: frozenset[str] = frozenset()
        self.animate_adjectives: frozenset[str] = frozenset()
        self.inanimate_adjectives: frozenset[str] = frozenset()
        #: Verb base forms that take no direct object, and those that need one.
        self.intransitive: frozenset[str] = frozenset()
        self.transitive: frozenset[str] = frozenset()
        #: Noun concepts that head "X of Y" ("a plate of", "the top of").
        self.partitive: frozenset[tuple[str, int]] = frozenset()
        self._partitive: list[str] = []
        #: position noun -> its opposites ("left" -> "right").
        self.position_opposites: dict[str, frozenset[str]] = {}
        self._noun_overlaps: list[list[str]] = []
        self._verb_synonyms: list[list[str]] = []
        self._multi: set[tuple[str, ...]] = set()
        self._build(data)
        self._finish()

    # -- construction ---------------------------------------------------------------------

    def _info(self, word: str) -> WordInfo:
        info = self.words.get(word)
        if info is None:
            info = self.words[word] = WordInfo()
            parts = tuple(word.split())
            if len(parts) > 1:
                self._multi.add(parts)
        return info

    def _build(self, data: Mapping[str, Any]) -> None:
        for key in _REQUIRED_LISTS:
            _check_list(data, key)
        nouns = data.get("nouns", {})
        if not isinstance(nouns, Mapping):
            raise ValueError(f"lexicon['nouns'] must be a mapping, got {type(nouns).__name__}")
        groups = [(str(c), e, f"nouns.{c}") for c, e in nouns.items()]
        groups += [(GENERAL, data.get("general_nouns", []), "general_nouns")]
        groups += [(FRAMING, data.get("framing_nouns", []), "framing_nouns")]
        for category, entries, key in groups:
            if not isinstance(entries, list):
                raise ValueError(f"lexicon[{key!r}] must be a list")
            _check_words(key, entries)
            concepts = self.concepts.setdefault(str(category), [])
            for entry in entries:
                forms: list[tuple[str, str | None]] = []
                for syn in entry.lower().split("|"):
                    sing, slash, plur = syn.strip().partition("/")
                    sing, plur = sing.strip(), plur.strip()
                    if not sing:
                        raise ValueError(f"lexicon noun entry {entry!r} has an empty synonym")
                    plural = (plur or None) if slash else pluralise(sing)
                    forms.append((sing, plural))
                if any(f[0] in self.words and self.words[f[0]].noun for f in forms):
                    continue  # a concept listed twice: the first listing wins
                index = len(concepts)
                concepts.append(forms[0])
                for sing, plural in forms:
                    self.noun_forms.setdefault(sing, (sing, plural))
                    if plural is not None:
                        self.noun_forms.setdefault(plural, (sing, plural))
                    if plural is None:
                        self._add_noun(sing, str(category), index, "mass")
                    elif plural == sing:
                        self._add_noun(sing, str(category), index, "sgpl")
                    else:
                        self._add_noun(sing, str(category), index, "sg")
                        self._add_noun(plural, str(category), index, "pl")
        for key in ("colours", "materials", "textures"):
            entries = _check_list(data, key)
            _check_words(key, entries)
            self._add_adjective_set(entries)
        for scale in _check_list(data, "sizes"):
            if not (isinstance(scale, list) and len(scale) == 2):
                raise ValueError(
                    f"lexicon['sizes'] items must be [small pole, large pole], got {scale!r}"
                )
            lo, hi = scale
            _check_words("sizes", [*lo, *hi])
            for word in lo:
                self._add_adj(word.lower(), hi)
            for word in hi:
                self._add_adj(word.lower(), lo)
        for pair in _check_list(data, "antonyms"):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(f"lexicon['antonyms'] items must be word pairs, got {pair!r}")
            _check_words("antonyms", pair)
            a, b = (w.lower() for w in pair)
            self._add_adj(a, [b])
            self._add_adj(b, [a])
        adjectives = _check_list(data, "adjectives")
        _check_words("adjectives", adjectives)
        for word in adjectives:
            self._add_adj(word.lower(), [])
        numbers = data.get("numbers", {})
        if not isinstance(numbers, Mapping):
            raise ValueError("lexicon['numbers'] must map number words to values")
        for word, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"lexicon['numbers'][{word!r}] must be an int >= 0, got {value!r}")
            info = self._info(str(word).lower())
            info.mask |= NUM
            info.number = value
        self.number_words = {int(v): str(k).lower() for k, v in numbers.items()}
        verbs = data.get("verbs", {})
        if not isinstance(verbs, Mapping):
            raise ValueError("lexicon['verbs'] must map groups to entry lists")
        for group, entries in verbs.items():
            if not isinstance(entries, list):
                raise ValueError(f"lexicon['verbs'][{group!r}] must be a list")
            _check_words(f"verbs.{group}", entries)
            lemmas = self.verb_lemmas.setdefault(str(group), [])
            for entry in entries:
                parts = [p.strip() for p in entry.lower().split("|")]
                if len(parts) == 1:
                    conjugation: tuple[str, ...] = verb_forms(parts[0])
                elif len(parts) == 5:
                    conjugation = tuple(parts)
                else:
                    raise ValueError(f"verb entry {entry!r} must be a base form or 5 forms")
                lemma = len(lemmas)
                lemmas.append(conjugation)
                for k, form in enumerate(conjugation):
                    info = self._info(form)
                    if info.verb is None:
                        info.verb = (str(group), lemma, k)
                    info.mask |= VERB
        preps = data.get("prepositions", {})
        if not isinstance(preps, Mapping):
            raise ValueError("lexicon['prepositions'] must map prepositions to weights")
        for word, weight in preps.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValueError(
                    f"lexicon['prepositions'][{word!r}] must be an int >= 1, got {weight!r}"
                )
            self.prepositions[str(word).lower()] = weight
            self._info(str(word).lower()).mask |= ADP
        for group in _check_list(data, "spatial_relations"):
            if not isinstance(group, list) or not group:
                raise ValueError(f"lexicon['spatial_relations'] items must be lists, got {group!r}")
            _check_words("spatial_relations", group)
            head, *opposites = (w.lower() for w in group)
            info = self._info(head)
            info.mask |= ADP
            self.spatial.add(head)
            for w in opposites:
                self._info(w).mask |= ADP
                self.spatial.add(w)
                for a, b in ((head, w), (w, head)):
                    ia = self.words[a]
                    if b not in ia.prep:
                        ia.prep = (*ia.prep, b)
        self._build_strict(data)
        for key, flag in (
            ("determiners", DET),
            ("pronouns", PRON),
            ("auxiliaries", AUX),
            ("conjunctions", CONJ),
            ("adverbs", ADV),
        ):
            entries = _check_list(data, key)
            _check_words(key, entries)
            for word in entries:
                self._info(word.lower()).mask |= flag

    def _build_strict(self, data: Mapping[str, Any]) -> None:
        def word_lists(key: str) -> list[list[str]]:
            groups = _check_list(data, key)
            for g in groups:
                if not isinstance(g, list):
                    raise ValueError(f"lexicon[{key!r}] items must be lists of words, got {g!r}")
                _check_words(key, g)
            return [[w.lower() for w in g] for g in groups]

        excluded = _check_list(data, "swap_excluded_categories")
        _check_words("swap_excluded_categories", excluded)
        self.swap_excluded = frozenset(map(str, excluded)) | {FRAMING}
        self._noun_overlaps = word_lists("noun_overlaps")
        self._verb_synonyms = word_lists("verb_synonyms")
        overlaps: dict[str, set[str]] = {}
        for group in word_lists("adjective_overlaps"):
            for w in group:
                overlaps.setdefault(w, set()).update(x for x in group if x != w)
        self.adj_overlaps = {w: frozenset(v) for w, v in overlaps.items()}
        for key in ("intransitive_verbs", "transitive_verbs", "partitive_heads"):
            _check_words(key, _check_list(data, key))
        self.intransitive = frozenset(w.lower() for w in data.get("intransitive_verbs", []))
        self.transitive = frozenset(w.lower() for w in data.get("transitive_verbs", []))
        self._partitive = [w.lower() for w in data.get("partitive_heads", [])]
        opposites: dict[str, set[str]] = {}
        for pair in _check_list(data, "position_opposites"):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(
                    f"lexicon['position_opposites'] items must be word pairs, got {pair!r}"
                )
            _check_words("position_opposites", pair)
            a, b = (w.lower() for w in pair)
            opposites.setdefault(a, set()).add(b)
            opposites.setdefault(b, set()).add(a)
        self.position_opposites = {k: frozenset(v) for k, v in opposites.items()}
        for key in ("animate_categories", "animate_adjectives", "inanimate_adjectives"):
            _check_words(key, _check_list(data, key))
        self.animate_categories = frozenset(data.get("animate_categories", []))
        self.animate_adjectives = frozenset(w.lower() for w in data.get("animate_adjectives", []))
        self.inanimate_adjectives = frozenset(
            w.lower() for w in data.get("inanimate_adjectives", [])
        )
        prep_apart: set[tuple[str, str]] = set()
        for pair in _check_list(data, "preposition_overlaps"):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(
                    f"lexicon['preposition_overlaps'] items must be two '|'-joined word lists, "
                    f"got {pair!r}"
                )
            _check_words("preposition_overlaps", pair)
            left, right = ([w.strip().lower() for w in side.split("|")] for side in pair)
            prep_apart.update((a, b) for a in left for b in right)
            prep_apart.update((b, a) for a in left for b in right)
        self.prep_apart = frozenset(prep_apart)
        for s, group in enumerate(_check_list(data, "preposition_sets")):
            if not isinstance(group, list) or len(group) < 2:
                raise ValueError(
                    "lexicon['preposition_sets'] items must be lists of >= 2 clusters, "
                    f"got {group!r}"
                )
            _check_words("preposition_sets", group)
            clusters = [[w.strip().lower() for w in c.split("|")] for c in group]
            for c, cluster in enumerate(clusters):
                for w in cluster:
                    self.prep_cluster[w] = (s, c)
                    self._info(w).mask |= ADP
            for c, cluster in enumerate(clusters):
                options = [
                    w
                    for k, other in enumerate(clusters)
                    if k != c
                    for w in other
                    if not any((x, w) in prep_apart for x in cluster)
                ]
                weights = tuple(float(self.prepositions.get(w, 1)) for w in options)
                for w in cluster:
                    self.prep_sets[w] = (tuple(options), weights)

    def _add_noun(self, word: str, category: str, index: int, number: str) -> None:
        info = self._info(word)
        info.mask |= NOUN
        if info.noun is None:
            info.noun = (category, index, number)

    def _add_adj(self, word: str, candidates: Sequence[str]) -> None:
        info = self._info(word)
        info.mask |= ADJ
        new = [
            c.lower()
            for c in candidates
            if c.lower() != word and c.lower() not in info.adj_candidates
        ]
        info.adj_candidates = (*info.adj_candidates, *new)

    def _add_adjective_set(self, entries: Sequence[str]) -> None:
        groups = [[w.strip() for w in e.lower().split("|")] for e in entries]
        for i, group in enumerate(groups):
            others = [g[0] for j, g in enumerate(groups) if j != i]
            for word in group:
                self._add_adj(word, [o for o in others if o not in group])

    def _finish(self) -> None:
        for category, concepts in self.concepts.items():
            for i, (_sing, plural) in enumerate(concepts):
                self.noun_candidates[(category, i)] = tuple(
                    c
                    for j, c in enumerate(concepts)
                    if j != i and (c[1] is None) == (plural is None)
                )
        for category in (GENERAL, FRAMING):
            for i in range(len(self.concepts.get(category, []))):
                self.noun_candidates[(category, i)] = ()
        apart: set[tuple[tuple[str, int], tuple[str, int]]] = set()
        for group in self._noun_overlaps:
            keys = []
            for w in group:
                info = self.words.get(w)
                if info is not None and info.noun is not None:  # absent words: no constraint
                    keys.append(info.noun[:2])
            apart.update((a, b) for a in keys for b in keys if a != b)
        partitive = set()
        for w in self._partitive:
            info = self.words.get(w)
            if info is not None and info.noun is not None:
                partitive.add(info.noun[:2])
        self.partitive = frozenset(partitive)
        for key, options in self.noun_candidates.items():
            concepts = self.concepts[key[0]]
            self.noun_candidates_strict[key] = tuple(
                c for c in options if (key, (key[0], concepts.index(c))) not in apart
            )
        by_first: dict[str, list[tuple[str, ...]]] = {}
        for parts in self._multi:
            by_first.setdefault(parts[0], []).append(parts)
        self.multiword = {
            k: tuple(sorted(v, key=lambda p: (-len(p), p))) for k, v in by_first.items()
        }
        self.multiword_firsts = frozenset(self.multiword)
        self.verb_candidates = {
            (group, i): tuple(f for j, f in enumerate(lemmas) if j != i)
            for group, lemmas in self.verb_lemmas.items()
            for i in range(len(lemmas))
        }
        synonyms: set[tuple[str, str]] = set()
        for cluster in self._verb_synonyms:
            synonyms.update((a, b) for a in cluster for b in cluster if a != b)
        for (verb_group, i), forms in self.verb_candidates.items():
            base = self.verb_lemmas[verb_group][i][0]
            self.verb_candidates_strict[(verb_group, i)] = tuple(
                f for f in forms if (base, f[0]) not in synonyms
            )
        prep_items = sorted(self.prepositions.items())
        self.prep_words = tuple(w for w, _ in prep_items)
        self.prep_weights = tuple(c for _, c in prep_items)
        cumulative, total = [], 0.0
        for c in self.prep_weights:
            total += c
            cumulative.append(total)
        self.prep_cumulative = tuple(cumulative)

    # -- queries --------------------------------------------------------------------------

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self.words

    def stats(self) -> dict[str, int]:
        """Counts of the lexicon's entries by kind (concepts, not surface forms)."""
        adj = sum(1 for i in self.words.values() if i.mask & ADJ)
        return {
            "noun_concepts": sum(len(c) for c in self.concepts.values()),
            "noun_categories": len(self.concepts),
            "adjectives": adj,
            "verbs": sum(len(v) for v in self.verb_lemmas.values()),
            "prepositions": len(self.prepositions),
            "spatial_phrases": sum(1 for i in self.words.values() if i.prep),
            "surface_forms": len(self.words),
        }


def lexicon_data() -> dict[str, Any]:
    """A fresh, editable copy of the shipped lexicon (``vlp/negatives/lexicon.json``).

    Returns:
        The JSON mapping; pass it (edited) to :class:`Lexicon`.
    """
    return copy.deepcopy(_shipped_data())


@functools.lru_cache(maxsize=1)
def _shipped_data() -> dict[str, Any]:
    text = resources.files("vlp.negatives").joinpath("lexicon.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The shipped lexicon, compiled once per process.

    Returns:
        A shared :class:`Lexicon` (treat it as read-only).
    """
    return Lexicon(_shipped_data())


def load_lexicon(path: str | Path) -> Lexicon:
    """Compile a lexicon from a JSON file in the format of the shipped one.

    Args:
        path: the ``.json`` file.

    Returns:
        The compiled :class:`Lexicon`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, when it is not UTF-8 JSON, not an object, has a
            top-level key the shipped lexicon does not have (a typo would otherwise drop a
            section silently) or none of its sections, or a section of the wrong shape.
        TypeError: naming the file, for a value of the wrong type.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of sections, got {type(data).__name__}")
    known = set(_shipped_data())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown lexicon section(s) {unknown}; known: {sorted(known)}")
    if not set(data) - {"version"}:
        raise ValueError(f"{path}: holds none of the lexicon's sections {sorted(known)}")
    try:
        return Lexicon(data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from err
