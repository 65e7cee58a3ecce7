"""vlp.eval.shapes: the recipes' evaluation table on the embedded shapes data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlp.data.shapes import NEGATIVE_TYPES, ShapesDataset
from vlp.eval import SHAPES_METRICS, evaluate_shapes, evaluate_shapes_segmentation, metrics_table


def _key(x: torch.Tensor) -> bytes:
    return x.contiguous().numpy().tobytes()


class Lookup(nn.Module):
    """A model that knows the evaluation data: every image gets a random unit vector, its
    captions (and the prompts) get the vector of the last image they belong to, and
    anything else (the hard negatives) an unrelated random vector."""

    def __init__(self, num: int, seed: int = 12345) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.images: dict[bytes, torch.Tensor] = {}
        self.texts: dict[str, torch.Tensor] = {}
        test = ShapesDataset(num, split="test", seed=seed, num_captions=5)
        comp = ShapesDataset(num, split="compositional", seed=seed)
        for sample in [*(test[i] for i in range(num)), *(comp[i] for i in range(num))]:
            v = F.normalize(torch.randn(16, generator=g), dim=0)
            self.images[_key(sample["image"].float().div(255))] = v
            for caption in [*sample["captions"], sample["caption"]]:
                self.texts[caption] = v
        self.g = g
        self.tokens: list[str] = []
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(("image", tuple(images.shape)))
        assert not self.training
        return torch.stack([self.images[_key(x)] for x in images])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        texts = [self.tokens[int(i)] for i in ids[:, 0]]
        return torch.stack(
            [
                self.texts.get(t, F.normalize(torch.randn(16, generator=self.g), dim=0))
                for t in texts
            ]
        )

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        start = len(self.tokens)
        self.tokens.extend(texts)
        return torch.arange(start, start + len(texts))[:, None]


def test_a_model_that_knows_the_data_scores_full_marks() -> None:
    model = Lookup(40).train()
    metrics = evaluate_shapes(model, model.tokenize, num_test=40, num_compositional=40)
    assert tuple(metrics) == SHAPES_METRICS
    # Each compositional image's caption has cosine 1, its negatives are random: all correct.
    for t in NEGATIVE_TYPES:
        assert metrics[f"comp {t}"] == 1.0
    assert metrics["comp mean"] == 1.0
    # An image's own captions have cosine 1; a few duplicated captions may tie, never 10.
    assert metrics["i2t R@10"] == 1.0
    assert 0.5 < metrics["t2i R@1"] <= 1.0
    assert model.training  # restored
    assert {shape for kind, shape in model.calls} == {(40, 3, 64, 64)}  # default preprocess


def test_a_collapsed_model_scores_zero() -> None:
    """Constant embeddings: ties count against the query everywhere."""

    class Constant(nn.Module):
        def encode_image(self, images: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(images), 8)

        def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(ids), 8)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), 4, dtype=torch.long)

    seen: list[torch.Tensor] = []

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        seen.append(images)
        return images.float()

    metrics = evaluate_shapes(
        Constant(), tokenize, preprocess=preprocess, num_test=30, num_compositional=20
    )
    assert metrics == dict.fromkeys(SHAPES_METRICS, 0.0)
    assert [x.dtype for x in seen] == [torch.uint8, torch.uint8]
    assert [len(x) for x in seen] == [30, 20]


def test_evaluate_shapes_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_test"):
        evaluate_shapes(nn.Identity(), lambda t: torch.zeros(len(t), 1), num_test=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="captions_per_image"):
        evaluate_shapes(nn.Identity(), lambda t: torch.zeros(len(t), 1), captions_per_image=1.5)  # type: ignore[arg-type]


def test_metrics_table_side_by_side() -> None:
    table = metrics_table({"clip": {"a": 0.5, "b": 0.25}, "negclip": {"a": 0.75}})
    assert table.splitlines() == [
        "metric    clip  negclip",
        "-----------------------",
        "a      50.0     75.0",
        "b      25.0        -",
    ]
    with pytest.raises(ValueError, match="runs"):
        metrics_table({})


@pytest.mark.parametrize(
    "runs", [None, "clip", [("clip", {"i2t R@1": 0.5})], {"clip": [0.5]}, {"clip": {"m": "x"}},
             {"clip": {1: 0.5}}, {2: {"m": 0.5}}, torch.ones(2)],
)  # fmt: skip
def test_metrics_table_bad_runs_named(runs: object) -> None:
    # Issue 17 fuzz findings: AttributeError / Python's own TypeError before.
    with pytest.raises(TypeError, match=r"\bruns\b"):
        metrics_table(runs)  # type: ignore[arg-type]


def _tok(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts), 3, dtype=torch.long)


@pytest.mark.parametrize(
    ("model", "tokenize", "name"),
    [
        (None, _tok, "model"),
        (torch.ones(2, 2), _tok, "model"),
        (nn.Linear(2, 2), _tok, "model"),  # no encode_image
        ("clip", _tok, "model"),
    ],
)
def test_evaluate_shapes_bad_model_or_tokenizer_named(
    model: object, tokenize: object, name: str
) -> None:
    # Issue 17 fuzz findings: AttributeError ('... has no attribute training') before.
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        evaluate_shapes(model, tokenize, num_test=2, num_compositional=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        evaluate_shapes_segmentation(lambda x: x, model, tokenize, num_images=1)  # type: ignore[arg-type]


class _Encoder(nn.Module):
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :4]

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return text.float()


@pytest.mark.parametrize(
    ("tokenize", "preprocess", "name"),
    [
        (None, None, "tokenize"),
        (torch.ones(3), None, "tokenize"),
        (nn.Linear(2, 2), None, "tokenize"),
        (lambda texts: [0] * len(texts), None, "tokenize"),  # returns no tensor
        (_tok, 3, "preprocess"),
        (_tok, lambda x: x.tolist(), "preprocess"),  # returns no tensor
    ],
)
def test_evaluate_shapes_bad_tokenize_preprocess_named(
    tokenize: object, preprocess: object, name: str
) -> None:
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        evaluate_shapes(
            _Encoder(),
            tokenize,
            preprocess=preprocess,
            num_test=2,
            num_compositional=2,  # type: ignore[arg-type]
        )


def test_evaluate_shapes_segmentation_bad_dense_features_named() -> None:
    with pytest.raises(TypeError, match=r"\bdense_features\b"):
        evaluate_shapes_segmentation(torch.ones(2), _Encoder(), _tok, num_images=1)  # type: ignore[arg-type]


def test_evaluate_shapes_encoder_output_shape_checked() -> None:
    class Bad(_Encoder):
        def encode_text(self, text: torch.Tensor) -> torch.Tensor:
            return text.float()[:1]  # one row for a batch of several

    with pytest.raises(TypeError, match=r"model\.encode_text"):
        evaluate_shapes(Bad(), _tok, num_test=2, num_compositional=2)
