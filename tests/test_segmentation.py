"""Zero-shot segmentation: CSA patch features, sliding-window scores, labels, mIoU, ground truth."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from vlp.adapters import open_clip_dense_features, open_clip_image_tokens
from vlp.data.shapes import SHAPES, render_class_map, render_scene, sample_scene
from vlp.eval import chance_miou, mean_iou, segmentation_labels, sliding_window_scores


def _clip(seed: int = 0, batch_first: bool = True) -> open_clip.CLIP:
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=8, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=4, layers=1),
    )
    if not batch_first:
        model.visual.transformer.batch_first = False
        for block in model.visual.transformer.resblocks:
            block.attn.batch_first = False
    return model.double().eval()


def _csa_reference(model: open_clip.CLIP, images: torch.Tensor) -> torch.Tensor:
    """CSA written as two SDPA calls: softmax(QQᵀ)V + softmax(KKᵀ)V (float64)."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = v.ln_pre(torch.cat([cls, x], 1) + v.positional_embedding)
    for block in v.transformer.resblocks[:-1]:
        x = block(x)
    block = v.transformer.resblocks[-1]
    attn = block.attn
    b, s, w = x.shape
    heads = attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(w)
    bq, bk, bv = attn.in_proj_bias.split(w)
    h = block.ln_1(x)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, s, heads, w // heads).transpose(1, 2)

    q, k, val = split(h @ wq.T + bq), split(h @ wk.T + bk), split(h @ wv.T + bv)
    o = F.scaled_dot_product_attention(q, q, val) + F.scaled_dot_product_attention(k, k, val)
    x = x + attn.out_proj(o.transpose(1, 2).reshape(b, s, w))
    x = x + block.mlp(block.ln_2(x))
    tokens = v.ln_post(x[:, 1:]) @ v.proj
    return tokens.view(b, 4, 4, -1)


@pytest.mark.parametrize("batch_first", [True, False])
def test_csa_features_match_two_attention_reference(batch_first: bool) -> None:
    model = _clip(batch_first=batch_first)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        got = open_clip_dense_features(model, images)
        want = _csa_reference(_clip(batch_first=True), images)
    assert got.shape == (2, 4, 4, 16)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_standard_attention_is_the_tower_unchanged() -> None:
    model = _clip()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        dense = open_clip_dense_features(model, images, attention="standard")
        tokens = open_clip_image_tokens(model, images).tokens
        csa = open_clip_dense_features(model, images)
    assert torch.equal(dense.reshape(3, 16, 16), tokens)
    assert (csa - dense).abs().max() > 1e-3  # CSA really changes the last block


def test_dense_features_errors() -> None:
    model = _clip()
    with pytest.raises(ValueError, match="attention"):
        open_clip_dense_features(model, torch.zeros(1, 3, 32, 32), attention="sclip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images"):
        open_clip_dense_features(model, torch.zeros(1, 4, 32, 32))
    with pytest.raises(TypeError, match="ViT"):
        open_clip_dense_features(torch.nn.Linear(2, 2), torch.zeros(1, 3, 32, 32))


def _pixel_features(crop: torch.Tensor) -> torch.Tensor:
    """A dense feature map with a closed form: 4x4 average pools of the RGB channels."""
    pooled = F.avg_pool2d(crop, 4)
    return pooled.permute(0, 2, 3, 1)


def _naive_scores(
    images: torch.Tensor, classes: torch.Tensor, window: int, stride: int
) -> torch.Tensor:
    """Every window in turn, float64: the protocol spelt out."""
    b, _, height, width = images.shape
    total = torch.zeros(b, classes.shape[0], height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    tops = list(range(0, height - window + 1, stride))
    lefts = list(range(0, width - window + 1, stride))
    if tops[-1] != height - window:
        tops.append(height - window)
    if lefts[-1] != width - window:
        lefts.append(width - window)
    for top in tops:
        for left in lefts:
            crop = images[:, :, top : top + window, left : left + window]
            f = F.normalize(_pixel_features(crop), dim=-1)
            sim = torch.einsum("bhwd,cd->bchw", f, F.normalize(classes, dim=-1))
            up = F.interpolate(sim, size=(window, window), mode="bilinear", align_corners=False)
            total[:, :, top : top + window, left : left + window] += up
            count[top : top + window, left : left + window] += 1
    return total / count


@pytest.mark.parametrize(("size", "window", "stride"), [(16, 16, 8), (20, 12, 5), (24, 8, 8)])
def test_sliding_windows_match_the_naive_loop(size: int, window: int, stride: int) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size + 4, generator=g, dtype=torch.float64)
    classes = torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = sliding_window_scores(_pixel_features, images, classes, window=window, stride=stride)
    want = _naive_scores(images, classes, window, stride)
    assert got.shape == (2, 5, size, size + 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.abs().max() <= 1 + 1e-12


def test_constant_features_give_the_cosine_everywhere() -> None:
    feature = torch.tensor([3.0, 4.0], dtype=torch.float64)
    classes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-4.0, -3.0]], dtype=torch.float64)

    def constant(crop: torch.Tensor) -> torch.Tensor:
        return feature.expand(crop.shape[0], crop.shape[2] // 4, crop.shape[3] // 4, 2)

    scores = sliding_window_scores(constant, torch.zeros(1, 3, 12, 12), classes, window=8, stride=2)
    want = torch.tensor([0.6, 0.8, -24 / 25], dtype=torch.float64)
    torch.testing.assert_close(scores[0], want.view(3, 1, 1).expand(3, 12, 12))


def test_sliding_window_errors() -> None:
    classes = torch.randn(2, 3)
    with pytest.raises(ValueError, match="window"):
        sliding_window_scores(_pixel_features, torch.zeros(1, 3, 8, 8), classes, window=16)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_scores(
            _pixel_features, torch.zeros(1, 3, 16, 16), classes, window=8, stride=9
        )
    with pytest.raises(ValueError, match="dense_features"):
        sliding_window_scores(_pixel_features, torch.zeros(1, 3, 8, 8), torch.randn(2, 4), window=8)
    with pytest.raises(TypeError, match="window"):
        sliding_window_scores(_pixel_features, torch.zeros(1, 3, 8, 8), classes, window=2.5)  # type: ignore[arg-type]


def test_labels_softmax_synonyms_and_background() -> None:
    # One pixel, three queries: the first two are synonyms of class 1, the last is class 2.
    scores = torch.tensor([0.30, 0.32, 0.31], dtype=torch.float64).view(1, 3, 1, 1)
    assert segmentation_labels(scores).item() == 1  # query index 1
    labels = segmentation_labels(scores, query_classes=[1, 1, 2])
    assert labels.item() == 1
    probs = torch.softmax(scores.flatten() * 40, 0)
    assert probs.max() < 0.5
    bg = segmentation_labels(
        scores, query_classes=[1, 1, 2], background_threshold=float(probs.max()) + 1e-6
    )
    assert bg.item() == 0
    kept = segmentation_labels(
        scores, query_classes=[1, 1, 2], background_threshold=float(probs.max()) - 1e-6
    )
    assert kept.item() == 1
    with pytest.raises(ValueError, match="query_classes"):
        segmentation_labels(scores, query_classes=[0, 1])
    with pytest.raises(ValueError, match="background_threshold"):
        segmentation_labels(scores, background_threshold=1.5)
    with pytest.raises(ValueError, match="logit_scale"):
        segmentation_labels(scores, logit_scale=0.0)


def test_mean_iou_closed_form() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 2]]])
    scores = mean_iou(pred, target, 4)
    # class 0: inter 1, union 3; class 1: inter 2, union 4; class 2: inter 1, union 3;
    # class 3: absent everywhere -> NaN, out of the mean. The ignored pixel does not count.
    assert scores.iou[:3].tolist() == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert math.isnan(scores.iou[3].item())
    assert scores.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 7)
    assert mean_iou(target.clamp_max(2), target.clamp_max(2), 3, ignore_index=None).miou == 1.0
    with pytest.raises(ValueError, match="predictions labels"):
        mean_iou(pred + 3, target, 4)
    with pytest.raises(TypeError, match="integer"):
        mean_iou(pred.float(), target, 4)
    with pytest.raises(ValueError, match="differ"):
        mean_iou(pred[:, :1], target, 4)


def test_class_map_matches_the_rendered_objects() -> None:
    import random

    for seed in range(20):
        scene = sample_scene(random.Random(seed), image_size=64)
        image = render_scene(scene)
        labels = render_class_map(scene)
        assert labels.shape == (64, 64) and labels.dtype == np.int64
        background = (image == np.array([96, 96, 96], dtype=np.uint8)).all(-1)
        # Every non-canvas pixel belongs to an object and vice versa.
        np.testing.assert_array_equal(labels == 0, background)
        assert set(np.unique(labels)) - {0} <= {1 + SHAPES.index(o.shape) for o in scene.objects}
        colours = render_class_map(scene, by="colour")
        np.testing.assert_array_equal(colours == 0, labels == 0)
    with pytest.raises(ValueError, match="by"):
        render_class_map(scene, by="size")  # type: ignore[arg-type]


def test_chance_miou_closed_form() -> None:
    # 6 pixels of class 0, 2 of class 1, C = 2: uniform labels give
    # IoU_0 = 3 / (6 + 4 - 3) = 3/7 and IoU_1 = 1 / (2 + 4 - 1) = 1/5.
    targets = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1, 255]]])
    assert chance_miou(targets, 2) == pytest.approx((3 / 7 + 1 / 5) / 2)
    # Matches the empirical mIoU of many random labellings (ratio of expectations).
    g = torch.Generator().manual_seed(0)
    big = torch.randint(0, 3, (1, 200, 200), generator=g)
    random_labels = torch.randint(0, 3, big.shape, generator=g)
    assert mean_iou(random_labels, big, 3).miou == pytest.approx(chance_miou(big, 3), abs=0.01)
    with pytest.raises(ValueError, match="targets"):
        chance_miou(targets, 1)


def test_shapes_segmentation_oracle_beats_chance() -> None:
    from vlp.data.shapes import COLOURS
    from vlp.data.shapes.scene import COLOUR_RGB
    from vlp.eval import evaluate_shapes_segmentation

    palette = F.normalize(
        torch.tensor([COLOUR_RGB[c] for c in COLOURS], dtype=torch.float32), dim=1
    )
    grey = torch.tensor([96.0, 96.0, 96.0]) / 255

    def tokenize(texts: list[str]) -> torch.Tensor:  # a caption -> the one-hot of its colour
        return torch.stack(
            [
                F.one_hot(torch.tensor(next(i for i, c in enumerate(COLOURS) if c in t)), 8).float()
                for t in texts
            ]
        )

    class Text(torch.nn.Module):
        def encode_text(self, x: torch.Tensor) -> torch.Tensor:
            return x

    def oracle(crop: torch.Tensor) -> torch.Tensor:  # 4 px patches -> nearest colour direction
        rgb = F.avg_pool2d(crop, 4).permute(0, 2, 3, 1) - grey
        return F.one_hot((F.normalize(rgb, dim=-1) @ palette.T).argmax(-1), 8).float() + 1e-3

    def constant(crop: torch.Tensor) -> torch.Tensor:
        return torch.ones(crop.shape[0], crop.shape[2] // 4, crop.shape[3] // 4, 8)

    good = evaluate_shapes_segmentation(oracle, Text(), tokenize, num_images=20)
    bad = evaluate_shapes_segmentation(constant, Text(), tokenize, num_images=20)
    assert set(good) == {
        "seg mIoU shape",
        "seg mIoU colour",
        "seg chance shape",
        "seg chance colour",
    }
    assert good["seg chance colour"] == bad["seg chance colour"] < 0.15
    # Measured 0.711 (patch edges mix the canvas in); a constant labelling stays below chance.
    assert good["seg mIoU colour"] > 0.65 > 0.15 > bad["seg mIoU colour"]


def test_shapes_segmentation_through_the_open_clip_adapter() -> None:
    import functools

    from vlp.eval import evaluate_shapes_segmentation

    model = _clip().float()
    model.visual.image_size = (32, 32)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[1 + (sum(map(ord, t)) + k) % 60 for k in range(8)] for t in texts])

    dense = functools.partial(open_clip_dense_features, model)
    out = evaluate_shapes_segmentation(dense, model, tokenize, num_images=4, image_size=32)
    for value in out.values():
        assert 0.0 <= value <= 1.0
