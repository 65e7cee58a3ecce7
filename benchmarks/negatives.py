"""Throughput of the hard-negative caption generators, in captions per second per core.

    python -m benchmarks.negatives                    # 5,000 captions per corpus
    python -m benchmarks.negatives --preset cpu-small # 1,000 (quick)

Corpora (fixed seeds): ``coco`` -- COCO-like captions drawn from templates over the
shipped lexicon (10-15 words: people, animals, vehicles, food, furniture, places, verbs,
prepositions, colours, counts); ``shapes`` -- short captions of the embedded shapes data
set; ``descriptions`` -- its 3-6 sentence descriptions. Every generator (``swap``,
``replace``, ``shuffle``) and the batch ``hard_negatives`` (all three kinds, each caption
tagged once) runs single-threaded over each corpus.

Each row carries the harness's environment record and wall-time median/p20/p80 over the
repetitions, plus ``captions_per_s`` (wall clock) and ``captions_per_cpu_s`` (captions per
second of this process's CPU time). The generators are pure Python on one thread, so
``captions_per_cpu_s`` is the per-core figure; on an idle machine the two agree, on a
shared one the wall figure also counts time spent waiting for the CPU. CPU time on a
busy machine is inflated too (shared caches and cores), so ``captions_per_cpu_s_best``, the
fastest repetition, is also recorded.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import environment, peak_memory, write_rows
from vlp.data.shapes.captions import describe_scene, short_caption
from vlp.data.shapes.scene import SPLITS, sample_scene
from vlp.negatives import Lexicon, default_lexicon, hard_negatives, replace, shuffle, swap

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"cpu": 5000, "cpu-small": 1000, "cuda": 5000}

_TEMPLATES = (
    "{A} {adj} {person} {vi} {prep} {a} {thing}.",
    "{Num} {animals} are {vi} {prep} the {place}.",
    "{A} {person} {vt} {a} {thing} {prep} {a} {colour} {furniture}.",
    "There is {a} {size} {thing} {prep} the {furniture}.",
    "{A} {colour} {vehicle} parked {prep} {a} {place}.",
    "{A} {room} with {a} {furniture}, {a} {appliance} and {a} {colour} {furniture2}.",
    "{A} plate of {food} with {a} {fruit} and {a} {fruit2}.",
    "{A} close up of {a} {thing} on {a} {material} table.",
    "{Num} {people} {vi} {prep} {a} {colour} {vehicle} on the street.",
    "{A} {size} {animal} {vi} next to {a} {adj} {thing} in the {place}.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def coco_like(n: int, seed: int = 0, lexicon: Lexicon | None = None) -> list[str]:
    """``n`` COCO-like captions drawn from templates over the lexicon's categories."""
    lex = lexicon or default_lexicon()
    rng = random.Random(seed)

    def nouns(*cats: str, plural: bool = False) -> list[str]:
        out = []
        for c in cats:
            for sing, plur in lex.concepts[c]:
                if plural and plur:
                    out.append(plur)
                elif not plural and plur:
                    out.append(sing)
        return out

    def ing(*groups: str) -> list[str]:
        return [forms[3] for g in groups for forms in lex.verb_lemmas[g]]

    pools = {
        "person": nouns("person"),
        "people": nouns("person", plural=True),
        "animal": nouns("animal", "bird"),
        "animals": nouns("animal", "bird", plural=True),
        "thing": nouns("household object", "sports equipment", "tableware", "accessory"),
        "furniture": nouns("furniture"),
        "furniture2": nouns("furniture"),
        "appliance": nouns("appliance"),
        "vehicle": nouns("vehicle"),
        "room": nouns("room"),
        "place": nouns("outdoor place", "landscape", "room"),
        "food": [w for w, p in lex.concepts["food mass"]],
        "fruit": nouns("fruit"),
        "fruit2": nouns("fruit"),
        "vi": ing("posture", "motion", "sleep"),
        "vt": ing("handling", "eating", "looking", "preparing"),
        "prep": ["on", "in", "near", "under", "behind", "next to", "in front of", "beside"],
        "colour": ["red", "blue", "green", "white", "black", "yellow", "brown", "grey"],
        "size": ["small", "large", "big", "little", "tiny", "huge"],
        "adj": ["young", "old", "happy", "tall", "wet", "small", "large", "dirty"],
        "material": ["wooden", "metal", "glass", "plastic", "marble"],
    }
    out = []
    for _ in range(n):
        template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
        fields = {k: v[rng.randrange(len(v))] for k, v in pools.items()}
        fields["Num"] = ("Two", "Three", "Four", "Several", "Some")[rng.randrange(5)]
        first = template.split("}", 1)[0][1:]
        following = template.split("}", 2)[1].split("{", 1)[1] if template.startswith("{A}") else ""
        nxt = fields.get(following, "x")
        fields["A"] = _article(nxt).capitalize() if first == "A" else ""
        text = template
        # "{a} {word}": the article agrees with the word it precedes
        while "{a} {" in text:
            i = text.index("{a} {")
            key = text[i + 5 : text.index("}", i + 5)]
            text = text[:i] + _article(fields[key]) + text[i + 3 :]
        out.append(text.format(**fields))
    return out


def shapes_captions(n: int, seed: int = 0, *, descriptions: bool = False) -> list[str]:
    """``n`` short captions (or descriptions) of the embedded shapes data set."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        scene = sample_scene(rng, split=SPLITS[i % len(SPLITS)])
        out.append(describe_scene(scene, rng) if descriptions else short_caption(scene, rng).text)
    return out


def _kind_fn(kind: str, captions: list[str]) -> Callable[[], Any]:
    rng = random.Random(0)
    if kind == "hard_negatives":
        return lambda: hard_negatives(captions, rng=rng)
    fn = {"swap": swap, "replace": replace, "shuffle": shuffle}[kind]
    return lambda: [fn(c, rng) for c in captions]


def measure(kind: str, corpus: str, captions: list[str], reps: int) -> dict[str, Any]:
    """One benchmark row: ``kind`` over ``captions``."""
    fn = _kind_fn(kind, captions)
    fn()  # warm-up: compiles the lexicon and the regexes
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    wall_ms = sorted(t * 1e3 for t in wall)
    q = statistics.quantiles(wall_ms, n=5) if len(wall_ms) > 1 else [wall_ms[0]] * 4
    n = len(captions)
    words = sum(len(c.split()) for c in captions) / n
    return {
        **environment("cpu"),
        "op": "negatives",
        "impl": kind,
        "corpus": corpus,
        "n": n,
        "mean_words": round(words, 2),
        "dtype": "str",
        "direction": "fwd",
        "t_median_ms": statistics.median(wall_ms),
        "t_p20_ms": q[0],
        "t_p80_ms": q[3],
        "captions_per_s": n / (statistics.median(wall) or 1e-12),
        "captions_per_cpu_s": n / (statistics.median(cpu) or 1e-12),
        "captions_per_cpu_s_best": n / (min(cpu) or 1e-12),
        "peak_mem_bytes": peak_memory(fn, "cpu"),
    }


def main() -> None:
    """Run every generator over every corpus and write the JSON rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    n = PRESETS[args.preset]
    corpora = {
        "coco": coco_like(n),
        "shapes": shapes_captions(n),
        "descriptions": shapes_captions(max(1, n // 5), descriptions=True),
    }
    rows = []
    for corpus, captions in corpora.items():
        for kind in ("swap", "replace", "shuffle", "hard_negatives"):
            row = measure(kind, corpus, captions, args.reps)
            rows.append(row)
            print(
                f"{corpus:>12} {kind:>14}: {row['captions_per_cpu_s']:>9.0f} captions/s per core "
                f"(wall {row['captions_per_s']:.0f}/s, {row['n']} captions, "
                f"{row['mean_words']} words each)",
                flush=True,
            )
    out = args.out or ROOT / "benchmarks" / "results" / f"negatives_{args.preset}.json"
    write_rows(rows, out)


if __name__ == "__main__":
    main()
