"""ARO, VALSE and Winoground readers and scores, on small files written by the tests."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from vlp.eval import (
    ARO_TASKS,
    aro_accuracy,
    compositional_accuracy,
    paired_similarity,
    read_aro,
    read_valse,
    read_valse_file,
    read_winoground,
    winoground_scores,
)
from vlp.eval.aro import order_perturbations, pre_caption


def _vg_item(relation: str, true: str, false: str, **extra) -> dict:
    item = {
        "image_id": "2345",
        "image_path": "2345.jpg",
        "bbox_x": 10,
        "bbox_y": 20.5,
        "bbox_w": 100,
        "bbox_h": 50,
        "true_caption": true,
        "false_caption": false,
        "relation_name": relation,
    }
    item.update(extra)
    return item


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


# -- ARO --------------------------------------------------------------------------------------


def test_vg_relation_reader_and_macro_accuracy(tmp_path):
    path = _write(
        tmp_path / "visual_genome_relation.json",
        [
            _vg_item("on", "the cup is on the table", "the table is on the cup"),
            _vg_item("on", "the cat is on the mat", "the mat is on the cat"),
            _vg_item("wearing", "the man is wearing a hat", "the hat is wearing a man"),
        ],
    )
    items = read_aro(path, "vg_relation")
    assert [i.id for i in items] == ["0", "1", "2"]
    first = items[0]
    assert first.task == "vg_relation" and first.image == "2345.jpg"
    assert first.caption == "the cup is on the table"
    assert first.negatives == ("the table is on the cup",) and first.group == "on"
    assert first.bbox == (10.0, 20.5, 100.0, 50.0)
    pos = torch.tensor([0.9, 0.5, 0.7])
    neg = torch.tensor([[0.1], [0.5], [0.2]])  # item 1 ties: a tie is a failure
    acc = aro_accuracy(pos, neg, items)
    assert acc.per_group == {"on": 0.5, "wearing": 1.0}
    assert acc.overall == pytest.approx(2 / 3) and acc.macro == pytest.approx(0.75)
    assert acc.accuracy == acc.macro
    assert acc.counts == {"overall": 3, "on": 2, "wearing": 1}


def test_vg_attribution_keeps_pairs_with_25_items(tmp_path):
    rows = []
    for _ in range(26):
        rows.append(
            _vg_item(
                "",
                "the red apple and the green pear",
                "the green apple",
                attributes=["red", "green"],
            )
        )
    for _ in range(3):
        rows.append(
            _vg_item(
                "", "the big dog and the small cat", "the small dog", attributes=["big", "small"]
            )
        )
    for r in rows:
        del r["relation_name"]
    items = read_aro(_write(tmp_path / "vga.json", rows), "vg_attribution")
    assert {i.group for i in items} == {"red_green", "big_small"}
    pos = torch.ones(29)
    neg = torch.zeros(29, 1)
    neg[:13] = 2.0  # half the red/green items fail
    neg[26] = 2.0  # one of the big/small items fails (dropped: fewer than 25 items)
    acc = aro_accuracy(pos, neg, items)
    assert acc.per_group == {"red_green": 0.5} and acc.accuracy == 0.5
    assert acc.overall == pytest.approx(15 / 29)
    kept_all = aro_accuracy(pos, neg, items, min_count=1)
    assert kept_all.per_group == {"big_small": pytest.approx(2 / 3), "red_green": 0.5}
    with pytest.raises(ValueError, match="min_count=25"):
        aro_accuracy(pos[26:], neg[26:], items[26:])


def test_pre_caption_matches_its_definition():
    assert (
        pre_caption("A Man (riding) a horse.  On the beach!") == "a man riding a horse on the beach"
    )
    assert pre_caption("one two three four", max_words=2) == "one two"
    assert pre_caption("  trailing;  ") == "trailing"


def test_order_perturbations_are_the_four_aro_shuffles():
    caption = "a small brown dog chases a big white cat on the green grass"
    words = caption.split()
    for seed in range(20):
        nouns_adj, others, within, across = order_perturbations(caption, random.Random(seed))
        for out in (nouns_adj, others, within, across):
            assert sorted(out.split()) == sorted(words)
        a, b = nouns_adj.split(), others.split()
        content = {"small", "brown", "dog", "big", "white", "cat", "green", "grass"}
        # nouns and adjectives move only among their own positions; others stay put
        assert all((w in content) == (v in content) for w, v in zip(words, a))
        assert {w for w, v in zip(words, a) if w != v} <= content
        assert [w for w in a if w in {"dog", "cat", "grass"}] != [] and all(
            (v in {"dog", "cat", "grass"}) == (w in {"dog", "cat", "grass"})
            for w, v in zip(words, a)
        )
        # the other words move, nouns and adjectives keep their slots
        assert all(v == w for w, v in zip(words, b) if w in content)
        # inside each trigram / whole trigrams
        tri = [words[i : i + 3] for i in range(0, len(words), 3)]
        got = within.split()
        assert all(sorted(got[3 * k : 3 * k + 3]) == sorted(t) for k, t in enumerate(tri))
        assert _trigram_blocks(across.split(), tri), across
    assert order_perturbations(caption, random.Random(3)) == order_perturbations(
        caption, random.Random(3)
    )


def _trigram_blocks(words: list[str], trigrams: list[list[str]]) -> Counter:
    """Cut ``words`` into blocks of the trigrams' lengths in some order that fits."""
    # the shorter last trigram can land anywhere: try each start for it
    short = [t for t in trigrams if len(t) < 3]
    for start in range(0, len(words), 3) if short else [None]:
        blocks, i = [], 0
        while i < len(words):
            size = len(short[0]) if short and i == start else 3
            blocks.append(tuple(words[i : i + size]))
            i += size
        if Counter(blocks) == Counter(map(tuple, trigrams)):
            return Counter(blocks)
    return Counter()


def test_order_reader_and_tie_semantics(tmp_path):
    data = [
        {"image": "val2014/a.jpg", "caption": ["A dog runs on the grass.", "Dogs."], "image_id": 1},
        {"image": "val2014/b.jpg", "caption": ["Two cats sleep on a red couch."]},
    ]
    path = _write(tmp_path / "coco_karpathy_test.json", data)
    items = read_aro(path, "coco_order", seed=1)
    assert [i.id for i in items] == ["0.0", "0.1", "1.0"]
    assert items[0].caption == "a dog runs on the grass" and items[0].image == "val2014/a.jpg"
    assert len(items[0].negatives) == 4
    for item in items:
        for neg in item.negatives:
            assert sorted(neg.split()) == sorted(item.caption.split())
    assert read_aro(path, "coco_order", seed=1) == items
    assert read_aro(path, "flickr30k_order", seed=1)[0].task == "flickr30k_order"
    # "dogs" has no other word order: its perturbations equal it and do not count
    assert set(items[1].negatives) == {"dogs"}
    pos = torch.tensor([1.0, 0.3, 1.0])
    neg = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 2.0, 0.0]])
    acc = aro_accuracy(pos, neg, items)
    assert acc.accuracy == acc.overall == pytest.approx(2 / 3) and acc.per_group == {}


def test_aro_reader_errors_name_file_and_line(tmp_path):
    rows = [_vg_item("on", "a b", "b a"), _vg_item("on", "c d", "d c")]
    del rows[1]["false_caption"]
    path = _write(tmp_path / "vgr.json", rows)
    line = path.read_text().splitlines().index(" {", 2) + 1  # where item 1 starts
    with pytest.raises(
        ValueError, match=rf"vgr\.json:{line}: item 1 lacks field\(s\) \['false_caption'\]"
    ):
        read_aro(path, "vg_relation")
    rows[1]["false_caption"] = 3
    path = _write(tmp_path / "vgr.json", rows)
    with pytest.raises(
        ValueError, match=rf"vgr\.json:{line}: item 1 field 'false_caption' must be str"
    ):
        read_aro(path, "vg_relation")
    bad = tmp_path / "broken.json"
    bad.write_text('[\n {"image": "a.jpg",\n  "caption": ["x"]},\n {"image": }\n]')
    with pytest.raises(ValueError, match=r"broken\.json:4: not valid JSON"):
        read_aro(bad, "coco_order")
    with pytest.raises(ValueError, match=r"broken\.json:1: expected a JSON object or array"):
        bad.write_text('"just a string"')
        read_aro(bad, "coco_order")
    with pytest.raises(ValueError, match="task must be one of"):
        read_aro(path, "vg_relations")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_aro(tmp_path / "missing.json", "vg_relation")
    assert ARO_TASKS == ("vg_relation", "vg_attribution", "coco_order", "flickr30k_order")


def test_aro_accuracy_bad_input(tmp_path):
    items = read_aro(_write(tmp_path / "v.json", [_vg_item("on", "a b", "b a")]), "vg_relation")
    with pytest.raises(ValueError, match="same length"):
        aro_accuracy(torch.ones(2), torch.zeros(2, 1), items)
    with pytest.raises(ValueError, match="1 false captions"):
        aro_accuracy(torch.ones(1), torch.zeros(1, 4), items)
    with pytest.raises(ValueError, match="finite"):
        aro_accuracy(torch.tensor([float("nan")]), torch.zeros(1, 1), items)
    with pytest.raises(TypeError):
        aro_accuracy(torch.ones(1, dtype=torch.long), torch.zeros(1, 1), items)


# -- VALSE ------------------------------------------------------------------------------------


def _valse_entry(caption: str, foil: str, votes: int | None, **extra) -> dict:
    entry = {
        "dataset": "visual7w",
        "original_split": "test",
        "dataset_idx": "v7w_1.jpg",
        "linguistic_phenomena": "counting",
        "image_file": "v7w_1.jpg",
        "caption": caption,
        "foil": foil,
        "classes": "2",
        "classes_foil": "3",
    }
    if votes is not None:
        entry["mturk"] = {"foil": 3 - votes, "caption": votes, "other": 0}
    entry.update(extra)
    return entry


def test_valse_reader_validity_and_sugarcrepe_style_score(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _write(
        root / "counting-hard.json",
        {
            "counting-hard_0": _valse_entry("There are 2 dogs.", "There are 3 dogs.", 3),
            "counting-hard_1": _valse_entry("There are 4 cups.", "There are 1 cups.", 1),
            "counting-hard_2": _valse_entry("There are 5 cars.", "There are 6 cars.", 2),
        },
    )
    _write(root / "existence.json", {"e0": _valse_entry("There is a dog.", "There is no dog.", 2)})
    data = read_valse(root)
    assert list(data) == ["counting-hard", "existence"]
    items = data["counting-hard"]
    assert [i.id for i in items] == ["counting-hard_0", "counting-hard_2"]  # 1 vote: invalid
    assert items[0].piece == "counting-hard" and items[0].dataset == "visual7w"
    assert items[0].image_file == "v7w_1.jpg" and items[0].phenomenon == "counting"
    assert items[0].valid and items[0].foil == "There are 3 dogs."
    every = read_valse_file(root / "counting-hard.json", valid_only=False)
    assert [i.valid for i in every] == [True, False, True]
    # scored exactly like SugarCrepe: caption against foil
    g = torch.Generator().manual_seed(0)
    images, captions, foils = (torch.randn(2, 8, generator=g) for _ in range(3))
    foils[1] = captions[1]  # a tie: counted as a failure
    pos = paired_similarity(images, captions)
    neg = paired_similarity(images, foils)
    result = compositional_accuracy(pos, neg[:, None], ["counting-hard"])
    expected = float(pos[0] > neg[0]) / 2
    assert result.overall == expected and result.counts["counting-hard"] == 2


def test_valse_reader_errors(tmp_path):
    path = _write(tmp_path / "plurals.json", {"p0": _valse_entry("a", "b", None)})
    with pytest.raises(ValueError, match=r"plurals\.json:2: item 'p0' lacks 'mturk' votes"):
        read_valse_file(path)
    assert read_valse_file(path, valid_only=False)[0].valid is False
    entry = _valse_entry("a", "b", 2)
    del entry["foil"]
    path = _write(tmp_path / "plurals.json", {"p0": _valse_entry("a", "b", 2), "p1": entry})
    with pytest.raises(
        ValueError, match=r"plurals\.json:\d+: item 'p1' lacks field\(s\) \['foil'\]"
    ):
        read_valse_file(path)
    with pytest.raises(ValueError, match="holds no"):
        (tmp_path / "empty").mkdir()
        read_valse(tmp_path / "empty")


# -- Winoground -------------------------------------------------------------------------------


def _wino_line(i: int, tag: str = "Object") -> str:
    return json.dumps(
        {
            "id": i,
            "caption_0": f"a cat on a dog {i}",
            "caption_1": f"a dog on a cat {i}",
            "image_0": f"ex_{i}_img_0",
            "image_1": f"ex_{i}_img_1",
            "tag": "Noun",
            "secondary_tag": "",
            "num_main_preds": 1,
            "collapsed_tag": tag,
        }
    )


def test_winoground_reader_and_scores(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join([_wino_line(0), _wino_line(1, "Relation"), "", _wino_line(2)]) + "\n")
    items = read_winoground(path)
    assert [i.id for i in items] == [0, 1, 2]
    assert items[1].collapsed_tag == "Relation" and items[0].image_1 == "ex_0_img_1"
    assert items[0].num_main_preds == 1 and items[0].tag == "Noun"
    # scores[n, c, i]: caption c with image i
    scores = torch.tensor(
        [
            [[0.9, 0.1], [0.2, 0.8]],  # text and image right: group
            [[0.9, 0.95], [0.2, 0.99]],  # text right (0.9>0.2, 0.99>0.95), image wrong
            [[0.5, 0.5], [0.5, 0.5]],  # all ties: nothing
        ]
    )
    result = winoground_scores(scores, [i.collapsed_tag for i in items])
    assert result.text == pytest.approx(2 / 3) and result.image == pytest.approx(1 / 3)
    assert result.group == pytest.approx(1 / 3)
    assert result.per_tag["Object"] == {"text": 0.5, "image": 0.5, "group": 0.5}
    assert result.per_tag["Relation"] == {"text": 1.0, "image": 0.0, "group": 0.0}
    assert result.counts == {"overall": 3, "Object": 2, "Relation": 1}
    # the closed form of chance: random scores give about 1/4, 1/4, 1/6
    g = torch.Generator().manual_seed(0)
    chance = winoground_scores(torch.rand(20000, 2, 2, generator=g))
    assert abs(chance.text - 0.25) < 0.01 and abs(chance.image - 0.25) < 0.01
    assert abs(chance.group - 1 / 6) < 0.01


def test_winoground_errors_name_file_and_line(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text(_wino_line(0) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"examples\.jsonl:2: not valid JSON"):
        read_winoground(path)
    path.write_text(_wino_line(0) + "\n" + _wino_line(0) + "\n")
    with pytest.raises(ValueError, match=r"examples\.jsonl:2: example id 0 repeats line 1"):
        read_winoground(path)
    entry = json.loads(_wino_line(3))
    del entry["caption_1"]
    path.write_text(_wino_line(0) + "\n\n" + json.dumps(entry) + "\n")
    with pytest.raises(
        ValueError, match=r"examples\.jsonl:3: example lacks field\(s\) \['caption_1'\]"
    ):
        read_winoground(path)
    entry = json.loads(_wino_line(3))
    entry["num_main_preds"] = "one"
    path.write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match="'num_main_preds' must be int"):
        read_winoground(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no examples"):
        read_winoground(path)
    with pytest.raises(ValueError, match=r"shape \(N, 2, 2\)"):
        winoground_scores(torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match="3 names"):
        winoground_scores(torch.zeros(3, 2, 2), ["a"])
    with pytest.raises(TypeError):
        winoground_scores(torch.zeros(3, 2, 2, dtype=torch.long))


def test_order_negatives_are_mostly_new_word_orders(tmp_path):
    # every perturbation of a caption of several content words changes the order
    data = [{"image": "x.jpg", "caption": ["A man riding a brown horse next to a white fence."]}]
    items = read_aro(_write(tmp_path / "f.json", data), "flickr30k_order", seed=0)
    counts = Counter(neg != items[0].caption for neg in items[0].negatives)
    assert counts[True] == 4
