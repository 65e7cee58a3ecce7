from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from vlp.eval import (
    SugarCrepeItem,
    compositional_accuracy,
    paired_similarity,
    read_sugarcrepe,
    read_sugarcrepe_file,
    retrieval_recall,
    similarity_matrix,
    zero_shot_accuracy,
    zero_shot_classifier,
)

# ----------------------------------------------------------------------------- retrieval


def test_retrieval_recall_hand_computed() -> None:
    caption_to_image = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.2],  # own best 0.9, no other caption above: rank 0
            [0.8, 0.7, 0.6, 0.1],  # own 0.6 is beaten by captions 0 and 1: rank 2
            [0.3, 0.2, 0.4, 0.35],  # own 0.35 is beaten by caption 2: rank 1
        ]
    )
    # Columns (text to image): ranks 0, 2, 0, 0.
    got = retrieval_recall(sim, caption_to_image, ks=(1, 2, 3))
    assert got == pytest.approx(
        {
            "image_to_text_R@1": 1 / 3,
            "image_to_text_R@2": 2 / 3,
            "image_to_text_R@3": 1.0,
            "text_to_image_R@1": 3 / 4,
            "text_to_image_R@2": 3 / 4,
            "text_to_image_R@3": 1.0,
        }
    )


def test_retrieval_perfect_and_constant() -> None:
    caption_to_image = torch.arange(4).repeat_interleave(2)
    perfect = (caption_to_image[None, :] == torch.arange(4)[:, None]).float()
    assert set(retrieval_recall(perfect, caption_to_image).values()) == {1.0}
    # Ties count against the query: a constant matrix ranks the 6 foreign captions
    # (or 3 foreign images) ahead of the right one.
    got = retrieval_recall(torch.zeros(4, 8), caption_to_image)
    assert got["image_to_text_R@1"] == got["image_to_text_R@5"] == 0.0
    assert got["image_to_text_R@10"] == 1.0
    assert got["text_to_image_R@1"] == 0.0
    assert got["text_to_image_R@5"] == 1.0


def _brute_force_recall(sim: torch.Tensor, owner: list[int], k: int) -> tuple[float, float]:
    num_images, num_texts = sim.shape
    i2t = 0
    for i in range(num_images):
        order = sorted(range(num_texts), key=lambda t: -float(sim[i, t]))[:k]
        i2t += any(owner[t] == i for t in order)
    t2i = 0
    for t in range(num_texts):
        order = sorted(range(num_images), key=lambda i: -float(sim[i, t]))[:k]
        t2i += owner[t] in order
    return i2t / num_images, t2i / num_texts


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_matches_brute_force_sorting(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_images = 9
    owner = torch.cat([torch.arange(num_images), torch.randint(0, num_images, (14,), generator=g)])
    owner = owner[torch.randperm(owner.numel(), generator=g)]
    sim = torch.randn(num_images, owner.numel(), generator=g, dtype=torch.float64)
    got = retrieval_recall(sim, owner, ks=(1, 3, 5))
    for k in (1, 3, 5):
        i2t, t2i = _brute_force_recall(sim, owner.tolist(), k)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert got[f"text_to_image_R@{k}"] == pytest.approx(t2i)


def test_similarity_matrix() -> None:
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    text = torch.tensor([[1.0, 1.0], [0.0, -5.0], [4.0, 0.0]])
    want = torch.tensor([[1 / math.sqrt(2), 0.0, 1.0], [1 / math.sqrt(2), -1.0, 0.0]])
    torch.testing.assert_close(similarity_matrix(image, text), want)
    with pytest.raises(ValueError, match="same D"):
        similarity_matrix(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(TypeError, match="floating"):
        similarity_matrix(torch.ones(2, 3, dtype=torch.long), torch.randn(2, 3))


@pytest.mark.parametrize(
    ("sim", "owner", "kwargs", "error", "match"),
    [
        (torch.randn(3), torch.tensor([0, 1, 2]), {}, ValueError, "2 dims"),
        (torch.randn(0, 3), torch.tensor([0, 0, 0]), {}, ValueError, "empty"),
        (torch.ones(2, 2, dtype=torch.long), torch.tensor([0, 1]), {}, TypeError, "floating"),
        (torch.full((2, 2), float("nan")), torch.tensor([0, 1]), {}, ValueError, "finite"),
        (torch.randn(2, 3), torch.tensor([0, 1]), {}, ValueError, r"shape \(3,\)"),
        (torch.randn(2, 2), torch.tensor([0.0, 1.0]), {}, TypeError, "integer"),
        (torch.randn(2, 2), torch.tensor([0, 2]), {}, ValueError, r"\[0, 2\)"),
        (torch.randn(3, 2), torch.tensor([0, 1]), {}, ValueError, r"images \[2\] own none"),
        (torch.randn(2, 2), torch.tensor([0, 1]), {"ks": (0,)}, ValueError, "ks"),
        (torch.randn(2, 2), torch.tensor([0, 1]), {"ks": ()}, ValueError, "ks"),
    ],
)
def test_retrieval_bad_input(
    sim: torch.Tensor, owner: torch.Tensor, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        retrieval_recall(sim, owner, **kwargs)


# ----------------------------------------------------------------------------- zero-shot


def test_zero_shot_classifier_averages_normalised_prompts() -> None:
    prompts = torch.tensor(
        [
            [[1.0, 1.0, 0.0], [10.0, -10.0, 0.0]],  # normalised mean points along x
            [[0.0, 3.0, 0.0], [0.0, 0.5, 0.0]],
            [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]],
        ]
    )
    got = zero_shot_classifier(prompts)
    c = 1 + 1 / math.sqrt(2)
    third = torch.tensor([0.0, 1 / math.sqrt(2), c]) / math.hypot(1 / math.sqrt(2), c)
    want = torch.stack([torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), third])
    torch.testing.assert_close(got, want)
    ragged = zero_shot_classifier([prompts[0], prompts[1, :1], prompts[2]])
    torch.testing.assert_close(ragged, want)


def test_zero_shot_accuracy_hand_computed() -> None:
    classes = torch.eye(3)
    images = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # class 0, rank 0
            [0.0, 2.0, 0.1],  # class 1, rank 0
            [0.1, 0.9, 0.5],  # class 0, ranked behind 1 and 2: rank 2
            [1.0, 1.0, 0.0],  # class 0, tied with class 1: the tie counts against, rank 1
        ]
    )
    labels = torch.tensor([0, 1, 0, 0])
    got = zero_shot_accuracy(images, classes, labels, ks=(1, 2, 3))
    assert got == pytest.approx({"top1": 0.5, "top2": 0.75, "top3": 1.0})
    # (C, P, D) prompts are ensembled first.
    prompts = torch.stack([classes, 3 * classes], dim=1)
    assert zero_shot_accuracy(images, prompts, labels, ks=(1, 2, 3)) == got


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.randn(2, 3), torch.randn(4, 2), torch.tensor([0, 1])), ValueError, "D = 3"),
        ((torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 4])), ValueError, r"\[0, 4\)"),
        ((torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0])), ValueError, r"shape \(2,\)"),
        ((torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0.0, 1])), TypeError, "integer"),
        ((torch.randn(0, 3), torch.randn(4, 3), torch.tensor([])), ValueError, "empty"),
        ((torch.randn(3), torch.randn(4, 3), torch.tensor([0])), ValueError, "image_embeddings"),
        (
            (torch.full((2, 3), float("nan")), torch.randn(4, 3), torch.tensor([0, 1])),
            ValueError,
            "finite",
        ),
    ],
)
def test_zero_shot_bad_input(args: tuple[Any, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        zero_shot_accuracy(*args)


def test_zero_shot_classifier_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(C, P, D\)"):
        zero_shot_classifier(torch.randn(3, 4))
    with pytest.raises(ValueError, match="empty sequence"):
        zero_shot_classifier([])
    with pytest.raises(ValueError, match="D = 3"):
        zero_shot_classifier([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(TypeError, match="floating"):
        zero_shot_classifier(torch.ones(2, 2, 2, dtype=torch.long))


# ------------------------------------------------------------------------- compositional


def test_compositional_accuracy_per_type() -> None:
    positive = torch.ones(4)
    negative = torch.tensor(
        [
            [0.5, 0.2, 0.9],  # beats all
            [1.2, 0.2, 0.1],  # loses a swap
            [0.3, 1.0, 1.5],  # ties a swap (a failure), loses the replace
            [0.1, float("nan"), 2.0],  # second swap missing (masked), loses the replace
        ]
    )
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[3, 1] = False
    got = compositional_accuracy(positive, negative, ["swap", "swap", "replace"], mask)
    assert got.overall == pytest.approx(1 / 4)
    assert got.per_type == pytest.approx({"swap": 2 / 4, "replace": 2 / 4})
    assert got.counts == {"overall": 4, "swap": 4, "replace": 4}


def test_compositional_accuracy_counts_only_images_with_that_type() -> None:
    positive = torch.tensor([1.0, 1.0, 1.0])
    negative = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, False], [True, True, False], [False, True, False]])
    got = compositional_accuracy(positive, negative, ["a", "b", "c"], mask)
    # a: images 0 (win) and 1 (win); b: images 1 (win) and 2 (win); c: no image has one.
    assert got.per_type == {"a": 1.0, "b": 1.0}
    assert got.counts == {"overall": 3, "a": 2, "b": 2}
    assert got.overall == 1.0


def test_sugarcrepe_style_single_negative() -> None:
    # One negative per image and type: the accuracy is mean(pos > neg).
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(50, generator=g), torch.randn(50, 1, generator=g)
    got = compositional_accuracy(pos, neg, ["replace_att"])
    assert got.per_type["replace_att"] == pytest.approx(float((pos > neg[:, 0]).float().mean()))


def test_paired_similarity() -> None:
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, -1.0]])
    torch.testing.assert_close(paired_similarity(a, b), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="same shape"):
        paired_similarity(a, b[:1])


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.ones(2), torch.ones(3, 1), ["a"]), ValueError, "one row per positive"),
        ((torch.ones(2), torch.ones(2, 2), ["a"]), ValueError, "2 type names"),
        ((torch.ones(2), torch.ones(2, 2), "ab"), ValueError, "type names"),
        ((torch.ones(2), torch.ones(2, 1), [3]), TypeError, "str"),
        ((torch.ones(2, 1), torch.ones(2, 1), ["a"]), ValueError, "1 dims"),
        ((torch.ones(2), torch.full((2, 1), float("nan")), ["a"]), ValueError, "finite"),
        (
            (torch.ones(2), torch.ones(2, 1), ["a"], torch.zeros(2, 1, dtype=torch.bool)),
            ValueError,
            "at least one negative",
        ),
        ((torch.ones(2), torch.ones(2, 1), ["a"], torch.ones(2, 1)), TypeError, "torch.bool"),
    ],
)
def test_compositional_bad_input(args: tuple[Any, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        compositional_accuracy(*args)


# ---------------------------------------------------------------------------- SugarCrepe


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_read_sugarcrepe(tmp_path: Path) -> None:
    _write(
        tmp_path / "replace_att.json",
        {
            "0": {"filename": "a.jpg", "caption": "a red car", "negative_caption": "a blue car"},
            "7": {"filename": "b.jpg", "caption": "x", "negative_caption": "y", "extra": 1},
        },
    )
    _write(
        tmp_path / "swap_obj.json",
        {"3": {"filename": "c.jpg", "caption": "dog on cat", "negative_caption": "cat on dog"}},
    )
    got = read_sugarcrepe(tmp_path)
    assert list(got) == ["replace_att", "swap_obj"]
    assert got["replace_att"][0] == SugarCrepeItem("0", "a.jpg", "a red car", "a blue car")
    assert [item.id for item in got["replace_att"]] == ["0", "7"]
    assert read_sugarcrepe(tmp_path / "swap_obj.json") == {"swap_obj": got["swap_obj"]}
    assert read_sugarcrepe([tmp_path / "swap_obj.json"]) == {"swap_obj": got["swap_obj"]}
    assert read_sugarcrepe_file(tmp_path / "swap_obj.json") == got["swap_obj"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2], "JSON object"),
        ({"0": "text"}, "must be an object"),
        ({"0": {"filename": "a.jpg", "caption": "x"}}, "lacks field"),
        ({"0": {"filename": 1, "caption": "x", "negative_caption": "y"}}, "must be strings"),
    ],
)
def test_read_sugarcrepe_malformed(tmp_path: Path, content: object, match: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(ValueError, match=match):
        read_sugarcrepe_file(path)


def test_read_sugarcrepe_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_sugarcrepe_file(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        read_sugarcrepe(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .json files"):
        read_sugarcrepe(empty)
    (tmp_path / "a").mkdir()
    one = _write(tmp_path / "t.json", {})
    two = _write(tmp_path / "a" / "t.json", {})
    with pytest.raises(ValueError, match="two files"):
        read_sugarcrepe([one, two])
