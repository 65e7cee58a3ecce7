"""vlp.negatives: swap / replace / shuffle on constructed captions, the batch API, fuzzing."""

from __future__ import annotations

import random
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlp.data.captions import COUNT_WORDS, RELATION_PHRASES, describe_scene, short_caption
from vlp.data.scene import COLOURS, POSITIONS, SHAPES, SIZES, SPLITS, TEXTURES, sample_scene
from vlp.negatives import (
    KINDS,
    HardNegatives,
    Lexicon,
    default_lexicon,
    hard_negatives,
    lexicon_data,
    replace,
    shuffle,
    swap,
)

SEEDS = range(60)


def outputs(fn, caption, seeds=SEEDS, **kw):
    return {fn(caption, random.Random(s), **kw) for s in seeds}


def tiny_lexicon(**extra):
    """A lexicon small enough that every replacement is known in advance."""
    data = {
        "nouns": {"fruit": ["apple", "pear"], "shape": ["circle", "square", "cross/crosses"]},
        "colours": ["red", "blue"],
        "numbers": {"one": 1, "two": 2},
        "determiners": ["a", "an", "the"],
        "conjunctions": ["and"],
        "auxiliaries": ["is", "are"],
        "prepositions": {"on": 3, "under": 1},
    }
    data.update(extra)
    return Lexicon(data)


# -- swap -----------------------------------------------------------------------------------


def test_swap_attribute_noun_and_phrase():
    got = outputs(swap, "a red circle and a blue square")
    assert got == {
        "a blue circle and a red square",  # adjectives
        "a red square and a blue circle",  # nouns
        "a blue square and a red circle",  # noun phrases
    }


def test_swap_repairs_articles_and_first_word_case():
    got = outputs(swap, "A red car and an orange bus.")
    assert got == {
        "An orange car and a red bus.",
        "A red bus and an orange car.",
        "An orange bus and a red car.",
    }


def test_swap_keeps_number_pools_apart_and_verbs():
    # singular and plural nouns never swap with each other; verb phrases do
    got = outputs(swap, "a dog is chasing two cats")
    assert got == {None} or "a cats" not in " ".join(g for g in got if g)
    cap = "a man riding a horse and a woman walking a dog"
    got = outputs(swap, cap)
    assert "a man walking a horse and a woman riding a dog" in got
    for g in got:
        assert g is not None and sorted(g.split(" ")) == sorted(cap.split(" "))


def test_swap_spatial_relations_only_when_asked():
    cap = "a cat on a mat next to a dog"
    with_rel = outputs(swap, cap)
    assert "a cat next to a mat on a dog" in with_rel
    assert "a cat next to a mat on a dog" not in outputs(swap, cap, relations=False)


def test_swap_none_cases():
    for cap in ("", "a dog", "a dog and a dog", "...", "dog dog"):
        assert outputs(swap, cap, seeds=range(5)) == {None}, cap


# -- replace --------------------------------------------------------------------------------


def test_replace_known_answers_on_a_tiny_lexicon():
    lex = tiny_lexicon()
    got = outputs(replace, "An apple and a red circle", lexicon=lex)
    assert got == {
        "A pear and a red circle",  # object, article repaired (and case kept)
        "An apple and a blue circle",  # colour
        "An apple and a red square",  # co-hyponym
        "An apple and a red cross",
    }


def test_replace_keeps_plural_and_inflects_counts():
    lex = tiny_lexicon()
    got = outputs(replace, "Two crosses are on a square", lexicon=lex, seeds=range(200))
    assert "Two circles are on a square" in got  # plural kept
    assert "Two squares are on a square" in got
    assert "One cross is on a square" in got  # count crosses one: noun and copula follow
    assert "Two crosses are under a square" in got  # the preposition table
    assert "Two crosses are on a circle" in got
    assert all(g is not None and g != "Two crosses are on a square" for g in got)
    assert len(got) == 6


def test_replace_keeps_case_and_inflection_on_the_shipped_lexicon():
    cap = "Two DOGS are sitting next to the red bench."
    got = outputs(replace, cap, seeds=range(300))
    lex = default_lexicon()
    changed_noun = [g.split()[1] for g in got if g.split()[1] != "DOGS" and g.split()[0] == "Two"]
    assert changed_noun and all(w.isupper() for w in changed_noun)
    assert all(lex.words[w.lower()].noun[2] in ("pl", "sgpl") for w in changed_noun)
    verbs = {g.split()[3] for g in got if g.split()[3] != "sitting"}
    assert verbs and all(v.endswith("ing") for v in verbs)
    assert any(g.startswith("One DOG is sitting") for g in got)


def test_replace_spatial_opposites_and_frequency_table():
    cap = "a red circle to the left of a blue square"
    got = outputs(replace, cap, seeds=range(200))
    assert "a red circle to the right of a blue square" in got
    assert "a blue square above a red circle" not in got
    assert "a red circle below a blue square" in outputs(
        replace, "a red circle above a blue square", seeds=range(300), relations="opposite"
    )


def test_preposition_table_is_the_reference_integer_table():
    preps = default_lexicon().prepositions
    assert len(preps) == 75 and sum(preps.values()) == 26479
    assert preps["of"] == 6221 and preps["to"] == 4918 and preps["in"] == 3404
    assert preps["with"] == 1342 and preps["as"] == 1308 and preps["on"] == 1153
    assert preps["behind"] == 48 and preps["in front of"] == 17


def test_replace_prepositions_follow_the_frequency_table():
    # With only prepositions replaceable, the draw is one of two weighted draws without
    # replacement; "of" (weight 6221 of 26479) must dominate "behind" (48).
    data = lexicon_data()
    data["nouns"] = {"thing": ["cat", "mat"]}
    data["colours"] = data["materials"] = data["textures"] = data["antonyms"] = []
    data["sizes"] = []
    lex = Lexicon(data)
    counts: dict[str, int] = {}
    for s in range(2000):
        out = replace("the cat on the mat", random.Random(s), lexicon=lex)
        if out is not None and out.endswith("the mat") and "cat" in out:
            word = out[len("the cat ") : -len(" the mat")]
            counts[word] = counts.get(word, 0) + 1
    assert "on" not in counts
    assert max(counts, key=counts.__getitem__) == "of"
    assert counts.get("of", 0) > 10 * counts.get("behind", 0)


def test_replace_none_cases():
    # one entity (the reference's filter), nothing known, empty
    for cap in ("a dog", "", "zzz qqq", "!!!", "Dog"):
        assert outputs(replace, cap, seeds=range(5)) == {None}, cap
    assert outputs(replace, "a dog", seeds=range(5), min_entities=1) != {None}


# -- shuffle --------------------------------------------------------------------------------


def test_shuffle_spec_examples():
    assert outputs(shuffle, "A dog runs.") == {"runs. A dog"}
    assert outputs(shuffle, "A dog.") == {None}
    assert outputs(shuffle, "dog") == {None}
    assert outputs(shuffle, "") == {None}
    assert outputs(shuffle, "a dog a dog") == {None}  # every shuffle keeps the word order


def test_shuffle_is_a_permutation_of_bigrams():
    cap = "a man riding a horse on the beach at sunset ."
    words = cap.split()
    bigrams = sorted(" ".join(words[i : i + 2]) for i in range(0, len(words) - 1, 2))
    for s in SEEDS:
        out = shuffle(cap, random.Random(s))
        assert out is not None and out.split() != words
        toks = out.replace(".", " .").split()
        assert sorted(toks) == sorted(words)
        # every original bigram (punctuation aside) appears intact
        for b in bigrams:
            assert b in out.replace(" .", "").replace(".", "")


def test_shuffle_trailing_punctuation_placement():
    got = outputs(shuffle, "a b c d e f.", seeds=range(300))
    # the full stop is held out and re-attached after some bigram, or put first
    assert any(g.startswith(". ") for g in got)
    assert any(g.endswith(".") for g in got)
    assert all(g.count(".") == 1 for g in got)


def test_shuffle_n_and_validation():
    assert shuffle("a b c", random.Random(0), n=1) in {"a c b", "b a c", "b c a", "c a b", "c b a"}
    assert shuffle("a b c", random.Random(0), n=3) is None
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        shuffle("a b", random.Random(0), n=0)


# -- batch API ------------------------------------------------------------------------------


def test_hard_negatives_grid_mask_and_type_major():
    caps = ["a red circle and a blue square", "A dog.", "a dog runs", ""]
    result = hard_negatives(caps, rng=random.Random(0))
    assert isinstance(result, HardNegatives)
    texts, mask = result
    assert mask.dtype == torch.bool and mask.shape == (4, 3)
    assert len(texts) == 4 and all(len(row) == 3 for row in texts)
    for i, row in enumerate(texts):
        for j, t in enumerate(row):
            assert bool(mask[i, j]) == (t != "")
            assert not mask[i, j] or t != caps[i]
    assert mask[0].all() and not mask[1].any() and not mask[3].any()
    assert texts[2] == ["", "", "runs a dog"]
    flat, flat_mask = result.type_major()
    assert flat_mask.dtype == torch.long and flat_mask.shape == (12,)
    assert len(flat) == int(flat_mask.sum())
    expected = [texts[i][j] for j in range(3) for i in range(4) if mask[i, j]]
    assert flat == expected


def test_hard_negatives_determinism_and_order():
    caps = ["a man riding a horse on the beach", "two red apples on a wooden table"] * 5
    a = hard_negatives(caps, rng=random.Random(7))
    b = hard_negatives(caps, rng=random.Random(7))
    assert a.texts == b.texts and torch.equal(a.mask, b.mask)
    c = hard_negatives(caps, rng=random.Random(8))
    assert c.texts != a.texts
    # the same draws as calling the generators in turn, caption by caption, kind by kind
    rng = random.Random(7)
    manual = [[swap(x, rng) or "", replace(x, rng) or "", shuffle(x, rng) or ""] for x in caps]
    assert manual == a.texts
    one = hard_negatives(caps, kinds=("shuffle",), rng=random.Random(3))
    assert one.mask.shape == (10, 1)
    assert [r[0] for r in one.texts] == [shuffle(x, r) for r in [random.Random(3)] for x in caps]


def test_hard_negatives_bad_input():
    rng = random.Random(0)
    with pytest.raises(TypeError, match="captions must be a sequence of str"):
        hard_negatives("a dog", rng=rng)
    with pytest.raises(TypeError, match=r"captions\[1\] must be a str"):
        hard_negatives(["a dog", 3], rng=rng)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="captions must not be empty"):
        hard_negatives([], rng=rng)
    with pytest.raises(ValueError, match="kinds must be drawn from"):
        hard_negatives(["a dog"], kinds=("swap", "negate"), rng=rng)
    with pytest.raises(ValueError, match="kinds must name at least one"):
        hard_negatives(["a dog"], kinds=(), rng=rng)
    with pytest.raises(TypeError, match="kinds must be a sequence"):
        hard_negatives(["a dog"], kinds="swap", rng=rng)
    with pytest.raises(TypeError, match="rng must be a random.Random"):
        hard_negatives(["a dog"], rng=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng must be a random.Random"):
        swap("a dog", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="caption must be a str"):
        replace(b"a dog", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="relations must be"):
        replace("a dog", rng, relations="spatial")  # type: ignore[arg-type]
    assert KINDS == ("swap", "replace", "shuffle")


# -- the embedded data set ------------------------------------------------------------------


def test_every_shapes_caption_gets_a_negative():
    rng = random.Random(0)
    caps = []
    for split in SPLITS:
        for _ in range(150):
            scene = sample_scene(rng, split=split)
            caps.append(short_caption(scene, rng, relational=split == "compositional").text)
            caps.append(short_caption(scene, rng, attribute_prob=1.0).text)
        caps.append(describe_scene(scene, rng))
    texts, mask = hard_negatives(caps, rng=random.Random(1))
    assert mask.any(dim=1).all(), [c for c, m in zip(caps, mask) if not m.any()]
    assert all(t != c for c, row in zip(caps, texts) for t in row if t)
    # swap and replace apply to nearly every caption of the data set
    assert mask[:, 0].float().mean() > 0.8 and mask[:, 1].float().mean() > 0.9


def test_lexicon_covers_the_embedded_vocabulary():
    lex = default_lexicon()
    vocab = [*SHAPES, *COLOURS, *SIZES, *TEXTURES, *COUNT_WORDS.values()]
    vocab += [w for row in POSITIONS for cell in row for w in cell.split()]
    vocab += [p for phrases in RELATION_PHRASES.values() for p in phrases]
    vocab += ["to its left", "to its right", "above it", "below it", "from left to right"]
    missing = [w for w in vocab if w not in lex]
    assert not missing
    assert all(lex.words[s].noun[0] == "shape" for s in SHAPES)
    stats = lex.stats()
    assert stats["noun_concepts"] >= 500 and stats["noun_categories"] >= 30
    assert stats["verbs"] >= 100 and stats["adjectives"] >= 200


def test_lexicon_validation():
    with pytest.raises(TypeError, match="data must be a mapping"):
        Lexicon([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"lexicon\['colours'\] must be a list"):
        Lexicon({"colours": "red"})
    with pytest.raises(ValueError, match="must be a base form or 5 forms"):
        Lexicon({"verbs": {"motion": ["run|runs"]}})
    with pytest.raises(ValueError, match=r"lexicon\['prepositions'\]\['on'\] must be an int"):
        Lexicon({"prepositions": {"on": 0.5}})
    lex = tiny_lexicon()
    assert "apple" in lex and "pears" in lex and "banana" not in lex


# -- fuzzing --------------------------------------------------------------------------------

_WORDS = sorted(w for w in default_lexicon().words if w.isascii())
_caption_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=string.punctuation + " ", max_size=30),
    st.lists(st.sampled_from([*_WORDS, ",", ".", "A", "The", "2"]), max_size=25).map(" ".join),
    # very long captions: a short random word list repeated (cheap to generate)
    st.lists(st.sampled_from(_WORDS), min_size=3, max_size=12).map(lambda w: " ".join(w * 40)),
)


@settings(max_examples=100, deadline=None)
@given(caption=_caption_text, seed=st.integers(0, 2**32 - 1))
def test_fuzz_never_raises_never_returns_the_input(caption, seed):
    for fn in (swap, replace, shuffle):
        out = fn(caption, random.Random(seed))
        assert out is None or (isinstance(out, str) and out != caption)
    texts, mask = hard_negatives([caption, caption.upper()], rng=random.Random(seed))
    for src, row, valid in zip([caption, caption.upper()], texts, mask.tolist()):
        for t, v in zip(row, valid):
            assert (t != "") == v and (not v or t != src)


def test_swap_recases_sentence_initial_spans_in_descriptions():
    cap = "A red circle is above a blue square. The square is small."
    got = outputs(swap, cap, seeds=range(200))
    assert "A blue square is above a red circle. The square is small." in got
    for g in got:
        for sentence in g.split(". "):
            assert sentence[:1].isupper(), g


def test_replace_acronyms_are_not_shouted():
    got = outputs(replace, "An empty room with a couch and a TV", seeds=range(300))
    tv = {g.split(" and ")[1].split(" ", 1)[1] for g in got if not g.endswith(" TV")}
    assert tv and all(w[0].isupper() and not w[1:].isupper() for w in tv), tv
    assert "Computer" in tv
