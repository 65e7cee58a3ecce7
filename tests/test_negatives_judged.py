"""Hand-judged hard negatives: the strict generators stay grammatical and false.

``tests/data/negatives_judged.json`` holds 140 COCO-style captions written for this test
(none from an evaluation set) with the ``swap`` and ``replace`` negative of each for two
seeds, and a verdict given by reading every negative: ``grammatical_false``,
``ungrammatical``, ``possibly_true`` or ``none`` (no negative made). The rates are reported
in ``docs/negatives.md``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from vlp.negatives import hard_negatives, replace, swap

FIXTURE = Path(__file__).parent / "data" / "negatives_judged.json"
VERDICTS = {"grammatical_false", "ungrammatical", "possibly_true", "none"}
GENERATORS = {"swap": swap, "replace": replace}


@pytest.fixture(scope="module")
def judged() -> list[dict]:
    rows = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len({r["caption"] for r in rows}) >= 100
    for r in rows:
        assert set(r) == {"caption", "kind", "seed", "split", "negative", "verdict", "reason"}
        assert r["verdict"] in VERDICTS and r["reason"]
        assert (r["negative"] is None) == (r["verdict"] == "none")
    return rows


def test_generators_still_make_the_judged_negatives(judged):
    # a change to the rules or the lexicon must come with a new judgement of its outputs
    stale = [
        (r["caption"], r["kind"], r["seed"], r["negative"], out)
        for r in judged
        if (out := GENERATORS[r["kind"]](r["caption"], random.Random(r["seed"]))) != r["negative"]
    ]
    assert not stale, stale[:5]


@pytest.mark.parametrize("kind", ["swap", "replace"])
@pytest.mark.parametrize("split", ["tuning", "held-out"])
def test_at_least_90_percent_grammatical_and_false(judged, kind, split):
    made = [r for r in judged if r["kind"] == kind and r["split"] == split and r["negative"]]
    counts = Counter(r["verdict"] for r in made)
    assert len(made) >= 100
    assert counts["grammatical_false"] / len(made) >= 0.9, counts


def test_documented_rates_match_the_fixture(judged):
    docs = (Path(__file__).parent.parent / "docs" / "negatives.md").read_text(encoding="utf-8")
    for kind in ("swap", "replace"):
        for split, label in (("tuning", "`i` (rules tuned on these)"), ("held-out", "`1000 + i`")):
            made = [
                r for r in judged if r["kind"] == kind and r["split"] == split and r["negative"]
            ]
            good = sum(r["verdict"] == "grammatical_false" for r in made)
            rate = f"{100 * good / len(made):.1f}".removesuffix(".0")
            row = f"| {kind} | {label}"
            line = next(x for x in docs.splitlines() if x.startswith(row))
            assert f"| {len(made)} | {good} | {rate} % |" in line, (line, len(made), good, rate)


def test_batch_driver_uses_the_same_strict_rules(judged):
    captions = sorted({r["caption"] for r in judged})[:40]
    texts, mask = hard_negatives(captions, kinds=("swap", "replace"), rng=random.Random(0))
    loose, _ = hard_negatives(
        captions, kinds=("swap", "replace"), rng=random.Random(0), strict=False
    )
    rng = random.Random(0)
    expected = [[swap(c, rng) or "", replace(c, rng) or ""] for c in captions]
    assert texts == expected and mask.any()
    assert loose != texts
