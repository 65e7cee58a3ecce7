from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlp.data import shapes_from_shards, write_shards
from vlp.data.shapes import (
    COLOURS,
    DEFAULT_HELD_OUT,
    NEGATIVE_TYPES,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    Caption,
    NounPhrase,
    Scene,
    ShapeObject,
    ShapesDataset,
    caption_holds,
    class_prompts,
    collate_shapes,
    generate_sample,
    render_scene,
    sample_scene,
    scene_negatives,
    short_caption,
)
from vlp.data.shapes.captions import relation_between
from vlp.data.shapes.dataset import main as shapes_main
from vlp.data.shapes.scene import COLOUR_RGB


def _row_scene() -> Scene:
    red_circle = ShapeObject("circle", "red", "small", "plain", 1, 0, 10, 32)
    blue_square = ShapeObject("square", "blue", "large", "striped", 1, 2, 53, 32)
    return Scene(objects=(red_circle, blue_square), layout="row", image_size=64)


def test_vocabulary_sizes() -> None:
    assert len(SHAPES) >= 6 and len(set(SHAPES)) == len(SHAPES)
    assert len(COLOURS) >= 8 and len(set(COLOURS)) == len(COLOURS)
    assert SIZES == ("small", "large")
    assert TEXTURES == ("plain", "striped", "dotted")
    assert set(RELATIONS) == {"left", "right", "above", "below"}
    assert len(NEGATIVE_TYPES) == 5
    assert set(COLOUR_RGB) == set(COLOURS)
    assert len(set(COLOUR_RGB.values())) == len(COLOURS)
    # Every colour and every shape is still seen in training with some other partner.
    assert {c for c, _ in DEFAULT_HELD_OUT} == set(COLOURS)
    for shape in SHAPES:
        assert any((c, shape) not in DEFAULT_HELD_OUT for c in COLOURS)


@pytest.mark.parametrize("split", ["train", "test", "compositional"])
def test_deterministic_from_seed(split: str) -> None:
    a = ShapesDataset(20, split=split, seed=3, num_captions=2)  # type: ignore[arg-type]
    b = ShapesDataset(20, split=split, seed=3, num_captions=2)  # type: ignore[arg-type]
    c = ShapesDataset(20, split=split, seed=4, num_captions=2)  # type: ignore[arg-type]
    for i in (0, 7, 19):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"])
        assert {k: v for k, v in sa.items() if k != "image"} == {
            k: v for k, v in sb.items() if k != "image"
        }
    assert any(a[i]["caption"] != c[i]["caption"] for i in range(20))
    # Access order does not matter (no hidden state).
    assert a[5]["caption"] == ShapesDataset(20, split=split, seed=3, num_captions=2)[5]["caption"]  # type: ignore[arg-type]


def test_sample_format() -> None:
    ds = ShapesDataset(8, image_size=48, num_captions=3)
    s = ds[0]
    assert s["image"].shape == (3, 48, 48) and s["image"].dtype == torch.uint8
    assert isinstance(s["caption"], str) and s["captions"][0] == s["caption"]
    assert len(s["captions"]) == 3
    batch = collate_shapes([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 48, 48)
    assert len(batch["captions"]) == 4 and len(batch["scene"]) == 4


def test_descriptions_have_three_to_six_sentences() -> None:
    ds = ShapesDataset(200, seed=1)
    counts = set()
    for i in range(len(ds)):
        text = ds[i]["description"]
        n = len(re.findall(r"\.(?:\s|$)", text))
        assert 3 <= n <= 6, text
        counts.add(n)
    assert {3, 4, 5} <= counts


def test_captions_hold_and_objects_match_scene() -> None:
    ds = ShapesDataset(300, seed=2)
    layouts, sizes = set(), set()
    for i in range(len(ds)):
        s = ds[i]
        scene = Scene.from_dict(s["scene"])
        assert Scene.from_dict(scene.to_dict()) == scene
        assert ds.scene(i) == scene
        layouts.add(scene.layout)
        sizes.add(len(scene.objects))
        for obj in scene.objects:
            assert obj.shape in SHAPES and obj.colour in COLOURS
            assert obj.size in SIZES and obj.texture in TEXTURES
    assert layouts == {"single", "row", "column"} and sizes == {1, 2, 3}


def test_rendered_pixels_follow_scene() -> None:
    scene = _row_scene()
    image = render_scene(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[32, 10]) == COLOUR_RGB["red"]  # plain circle centre
    square = image[22:43, 43:64].reshape(-1, 3)
    colours = {tuple(int(v) for v in p) for p in square}
    shade = tuple(int(v * 0.45) for v in COLOUR_RGB["blue"])
    assert COLOUR_RGB["blue"] in colours and shade in colours  # stripes
    assert tuple(image[0, 0]) == (96, 96, 96)


def test_caption_holds_on_constructed_scene() -> None:
    scene = _row_scene()
    red = NounPhrase("circle", "red")
    blue = NounPhrase("square", "blue", size="large")
    assert relation_between(scene.objects[0], scene.objects[1]) == "left"
    assert caption_holds(Caption("relation", (red, blue), relation="left"), scene)
    assert caption_holds(Caption("relation", (blue, red), relation="right"), scene)
    assert not caption_holds(Caption("relation", (red, blue), relation="right"), scene)
    assert not caption_holds(Caption("relation", (red, blue), relation="above"), scene)
    assert caption_holds(Caption("sequence", (blue, red), relation="right"), scene)
    assert not caption_holds(Caption("list", (NounPhrase("circle", "red", count=2),)), scene)
    assert not caption_holds(Caption("list", (NounPhrase("circle", "red", size="large"),)), scene)
    text = Caption("relation", (red, blue), relation="left", template=3).text
    assert text == "a large blue square with a red circle to its left"


def test_held_out_pairs_never_in_train_or_test() -> None:
    for split in ("train", "test"):
        ds = ShapesDataset(400, split=split, seed=5)  # type: ignore[arg-type]
        for i in range(len(ds)):
            s = ds[i]
            for obj in s["scene"]["objects"]:
                assert (obj["colour"], obj["shape"]) not in DEFAULT_HELD_OUT
            texts = [*s["captions"], s["description"], *s["negatives"].values()]
            for colour, shape in DEFAULT_HELD_OUT:
                pattern = rf"\b{colour} ({shape}|{shape}s|{shape}es)\b"
                assert not any(re.search(pattern, t) for t in texts), (colour, shape, texts)


def test_compositional_split_has_one_held_out_object_and_all_negatives() -> None:
    ds = ShapesDataset(300, split="compositional", seed=0)
    for i in range(len(ds)):
        s = ds[i]
        kinds = [(o["colour"], o["shape"]) for o in s["scene"]["objects"]]
        assert sum(k in DEFAULT_HELD_OUT for k in kinds) == 1
        assert 2 <= len(kinds) <= 3
        assert set(s["negatives"]) == set(NEGATIVE_TYPES)
        held = next(k for k in kinds if k in DEFAULT_HELD_OUT)
        assert f"{held[0]} {held[1]}" in s["caption"]


def _phrase_diff(pos: Caption, neg: Caption) -> list[tuple[NounPhrase, NounPhrase]]:
    return [(a, b) for a, b in zip(pos.phrases, neg.phrases) if a != b]


def test_scene_negatives_are_false_and_of_their_type() -> None:
    rng = random.Random(0)
    seen: dict[str, int] = dict.fromkeys(NEGATIVE_TYPES, 0)
    for _ in range(300):
        scene = sample_scene(rng, split="compositional")
        pos = short_caption(scene, rng, relational=True)
        assert caption_holds(pos, scene)
        negs = scene_negatives(pos, scene, rng)
        for kind, neg in negs.items():
            seen[kind] += 1
            assert not caption_holds(neg, scene) and neg.text != pos.text
            assert neg.kind == pos.kind and len(neg.phrases) == len(pos.phrases)
            diff = _phrase_diff(pos, neg)
            if kind == "relation_swap":
                assert diff == [] and neg.relation != pos.relation
            else:
                assert neg.relation == pos.relation
            if kind == "attribute_swap":
                assert len(diff) == 2
                (a0, a1), (b0, b1) = diff
                assert (a0.shape, b0.shape) == (a1.shape, b1.shape)
                assert sorted([a0.colour, b0.colour]) == sorted([a1.colour, b1.colour])
            if kind == "object_replacement":
                assert len(diff) == 1 and diff[0][0].shape != diff[0][1].shape
                assert diff[0][0].colour == diff[0][1].colour
            if kind == "attribute_replacement":
                assert len(diff) == 1 and diff[0][0].shape == diff[0][1].shape
                assert diff[0][0].count == diff[0][1].count
            if kind == "count_change":
                (a, b), *rest = diff
                assert rest == [] and a.count != b.count
                assert (a.shape, a.colour) == (b.shape, b.colour)
    assert all(v == 300 for v in seen.values()), seen


def test_attribute_swap_example() -> None:
    scene = _row_scene()
    pos = Caption(
        "relation", (NounPhrase("circle", "red"), NounPhrase("square", "blue")), relation="left"
    )
    negs = scene_negatives(pos, scene, random.Random(0))
    assert negs["attribute_swap"].text == "a blue circle to the left of a red square"
    assert negs["relation_swap"].text == "a red circle to the right of a blue square"


def test_word_order_varies_for_the_same_relation() -> None:
    ds = ShapesDataset(400, split="compositional", seed=0)
    subject_first = subject_last = 0
    for i in range(len(ds)):
        scene = ds.scene(i)
        caption = ds[i]["caption"]
        left = min(scene.objects, key=lambda o: (o.x, o.y))
        first = caption.find(left.shape)
        # Which object is named first must not be a fixed function of its position.
        others = [caption.find(o.shape) for o in scene.objects if o is not left]
        if first >= 0 and all(f >= 0 for f in others):
            if first < min(others):
                subject_first += 1
            else:
                subject_last += 1
    assert subject_first > 50 and subject_last > 50


def test_class_prompts() -> None:
    shapes = class_prompts("shape")
    colours = class_prompts("colour")
    assert list(shapes) == list(SHAPES) and list(colours) == list(COLOURS)
    assert shapes["circle"][COLOURS.index("orange")] == "an orange circle"
    with pytest.raises(ValueError, match="attribute"):
        class_prompts("size")


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        ShapesDataset(0)
    with pytest.raises(ValueError, match="split"):
        ShapesDataset(4, split="val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(4, image_size=16)
    with pytest.raises(ValueError, match="num_captions"):
        ShapesDataset(4, num_captions=0)
    with pytest.raises(ValueError, match="seed"):
        generate_sample(0, seed=-1)
    with pytest.raises(ValueError, match="index"):
        generate_sample(-1)
    with pytest.raises(IndexError):
        ShapesDataset(4)[4]
    with pytest.raises(ValueError, match="batch"):
        collate_shapes([])
    with pytest.raises(ValueError, match="shard_size"):
        write_shards([], "/tmp/unused", shard_size=0)
    with pytest.raises(ValueError, match="image_format"):
        write_shards([], "/tmp/unused", image_format="gif")


def test_shards_round_trip(tmp_path: Path) -> None:
    ds = ShapesDataset(23, split="compositional", seed=1, num_captions=2)
    paths = write_shards((ds[i] for i in range(len(ds))), tmp_path, shard_size=10)
    assert [Path(p).name for p in paths] == [f"shapes-00000{k}.tar" for k in range(3)]
    got = list(shapes_from_shards(tmp_path))
    assert len(got) == len(ds)
    for i, sample in enumerate(got):
        want = ds[i]
        assert torch.equal(sample["image"], want["image"])  # png is lossless
        assert {k: v for k, v in sample.items() if k != "image"} == {
            k: v for k, v in want.items() if k != "image"
        }
    loader = torch.utils.data.DataLoader(
        shapes_from_shards(tmp_path, shuffle=8, seed=0), batch_size=5, collate_fn=collate_shapes
    )
    seen = sorted(i for batch in loader for i in batch["index"])
    assert seen == list(range(23))


def test_write_command(tmp_path: Path) -> None:
    # `python -m vlp.data.shapes write ...` runs `main` with the command line arguments.
    argv = ["write", "--out", str(tmp_path), "--num", "12", "--seed", "2", "--split", "test"]
    assert shapes_main([*argv, "--shard-size", "5"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        *(f"shapes-test-00000{k}.tar" for k in range(3)),
        "shapes-test-manifest.json",
    ]
    got = list(shapes_from_shards(str(tmp_path)))
    ds = ShapesDataset(12, split="test", seed=2)
    assert [s["caption"] for s in got] == [ds[i]["caption"] for i in range(12)]
    assert all(torch.equal(s["image"], ds[i]["image"]) for i, s in enumerate(got))
