"""COSMOS augmentations: sentence splitting and text crops (spec 11.6), multi-crop views."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter, ImageOps

from vlp.augment import CLIP_MEAN, CLIP_STD, MultiCropTransform, split_sentences, text_crop

# ------------------------------------------------------------------------------ text


def test_split_sentences_reference_rule() -> None:
    assert split_sentences("A dog.\nA cat</s>Sky 3.5") == ["A dog", "A cat", "Sky 3", "5"]
    assert split_sentences("  Mr. X.  ..\n\n") == ["Mr", "X"]
    assert split_sentences("") == []
    with pytest.raises(TypeError, match="text must be a str, got list"):
        split_sentences(["a"])  # type: ignore[arg-type]


POOL = [f"sentence {i}" for i in range(12)]


def test_text_crop_structure_and_replay() -> None:
    for seed in range(20):
        crops = text_crop(POOL, rng=random.Random(seed))
        assert len(crops) == 8 and all(isinstance(c, str) for c in crops)
        for caption in crops[:2]:
            parts = caption.split(". ")
            assert 1 <= len(parts) <= 5
            assert len(set(parts)) == len(parts) and set(parts) <= set(POOL)
        assert set(crops[2:]) <= set(POOL) and len(set(crops[2:])) == 6
        assert text_crop(POOL, rng=random.Random(seed)) == crops
    lengths = Counter(
        len(text_crop(POOL, num_local=0, rng=random.Random(s))[0].split(". ")) for s in range(400)
    )
    assert set(lengths) == {1, 2, 3, 4, 5}  # UniformInt{1..5}, inclusive
    assert all(60 < n < 105 for n in lengths.values())  # 80 expected each


def test_text_crop_follows_the_random_draws() -> None:
    # Reproduce the draws with a twin generator: globals (length, sample), then locals.
    rng, twin = random.Random(7), random.Random(7)
    crops = text_crop(POOL, num_global=2, num_local=3, max_global_sentences=4, rng=rng)
    expected = [". ".join(twin.sample(POOL, twin.randint(1, 4))) for _ in range(2)]
    assert crops == expected + twin.sample(POOL, 3)


def test_text_crop_short_pool() -> None:
    pool3 = ["a", "b", "c"]
    for seed in range(10):
        local = text_crop(pool3, rng=random.Random(seed))[2:]
        assert local[:3] == pool3 and local[3:] == pool3  # repeated twice, in order
        assert Counter(local) == {"a": 2, "b": 2, "c": 2}
    pool4 = ["a", "b", "c", "d"]
    for seed in range(10):
        local = text_crop(pool4, rng=random.Random(seed))[2:]
        assert local[:4] == pool4
        assert len(set(local[4:])) == 2 and set(local[4:]) <= set(pool4)
    single = text_crop(["only"], num_global=1, num_local=2, rng=random.Random(0))
    assert single[1:] == ["only", "only"] and set(single[0].split(". ")) == {"only"}


def test_text_crop_bad_input() -> None:
    rng = random.Random(0)
    with pytest.raises(TypeError, match="got a str"):
        text_crop("A dog. A cat.", rng=rng)
    with pytest.raises(ValueError, match="at least one sentence"):
        text_crop([], rng=rng)
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str"):
        text_crop(["a", 3], rng=rng)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"sentences\[0\] must not be empty"):
        text_crop(["  "], rng=rng)
    with pytest.raises(ValueError, match="max_global_sentences must be an int >= 1, got 0"):
        text_crop(["a"], max_global_sentences=0, rng=rng)
    with pytest.raises(TypeError, match="rng must be a random.Random"):
        text_crop(["a"], rng=torch.Generator())  # type: ignore[arg-type]


# ------------------------------------------------------------------------- multi-crop


def photo(width: int = 120, height: int = 90) -> Image.Image:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def test_cosmos_defaults_and_shapes() -> None:
    transform = MultiCropTransform()
    assert (transform.global_size, transform.local_size, transform.num_local) == (224, 96, 6)
    assert transform.global_scale == (0.4, 1.0) and transform.local_scale == (0.05, 0.4)
    assert transform.blur_p == (1.0, 0.1) and transform.local_blur_p == 0.5
    assert (transform.flip_p, transform.jitter_p, transform.grayscale_p) == (0.5, 0.8, 0.2)
    assert (transform.brightness, transform.contrast, transform.saturation, transform.hue) == (
        0.4, 0.4, 0.2, 0.1,
    )  # fmt: skip
    assert (transform.solarize_p, transform.solarize_threshold) == (0.2, 128.0)
    assert transform.blur_radius == (0.1, 2.0) and transform.mean == list(CLIP_MEAN)
    views = transform(photo(), generator=torch.Generator().manual_seed(1))
    assert [tuple(v.shape) for v in views] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 6
    assert all(v.dtype == torch.float32 for v in views)


def test_generator_replays_and_differs() -> None:
    transform = MultiCropTransform(global_size=32, local_size=16, num_local=2)
    for image in (photo(), TF.pil_to_tensor(photo())):
        a = transform(image, generator=torch.Generator().manual_seed(3))
        b = transform(image, generator=torch.Generator().manual_seed(3))
        c = transform(image, generator=torch.Generator().manual_seed(4))
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert any(not torch.equal(x, y) for x, y in zip(a, c))
        torch.manual_seed(5)  # generator=None: torch's global RNG
        d = transform(image)
        torch.manual_seed(5)
        assert all(torch.equal(x, y) for x, y in zip(d, transform(image)))


def normalise(t: torch.Tensor) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(t, torch.float32, scale=True), list(CLIP_MEAN), list(CLIP_STD))


def plain(**kwargs: object) -> MultiCropTransform:
    """Every random op off, crops of the whole image: only resize and normalise remain."""
    base: dict[str, object] = {
        "global_size": 40, "local_size": 20, "num_local": 1, "global_scale": (1.0, 1.0),
        "local_scale": (1.0, 1.0), "ratio": (4 / 3, 4 / 3), "flip_p": 0.0, "jitter_p": 0.0,
        "grayscale_p": 0.0, "blur_p": (0.0, 0.0), "local_blur_p": 0.0, "solarize_p": 0.0,
    }  # fmt: skip
    base.update(kwargs)
    return MultiCropTransform(**base)  # type: ignore[arg-type]


def test_deterministic_pipeline_equals_the_functional_ops() -> None:
    image = photo(120, 90)  # ratio 4/3 and scale 1: the crop is the whole image
    g = torch.Generator().manual_seed(0)
    views = plain()(image, generator=g)
    resized = image.resize((40, 40), Image.Resampling.BICUBIC)
    assert torch.equal(views[0], normalise(TF.pil_to_tensor(resized)))
    # Flip always; solarize always on the second global view only; grayscale always.
    views = plain(flip_p=1.0, solarize_p=1.0, grayscale_p=1.0)(image, generator=g)
    gray = TF.rgb_to_grayscale(resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 3)
    assert torch.equal(views[0], normalise(TF.pil_to_tensor(gray)))
    assert torch.equal(views[1], normalise(TF.pil_to_tensor(ImageOps.solarize(gray, 128))))
    # Blur always on the first global view: PIL's GaussianBlur with a radius in the range.
    views = plain(blur_p=(1.0, 0.0), blur_radius=(1.5, 1.5))(image, generator=g)
    blurred = resized.filter(ImageFilter.GaussianBlur(radius=1.5))
    assert torch.equal(views[0], normalise(TF.pil_to_tensor(blurred)))
    assert torch.equal(views[1], normalise(TF.pil_to_tensor(resized)))


def test_tensor_input_matches_pil_input_without_pil_only_ops() -> None:
    image = photo(120, 90)
    transform = plain(flip_p=0.5, jitter_p=1.0, grayscale_p=0.5, solarize_p=1.0)
    from_pil = transform(image, generator=torch.Generator().manual_seed(2))
    from_tensor = transform(TF.pil_to_tensor(image), generator=torch.Generator().manual_seed(2))
    for a, b in zip(from_pil, from_tensor):
        # Bicubic resizing of PIL and torch differ by a few grey levels; the random ops agree.
        assert (a - b).abs().mean() < 0.05
    grey = TF.pil_to_tensor(image)[:1].float() / 255  # (1, H, W) float input
    assert [tuple(v.shape) for v in transform(grey)] == [(3, 40, 40)] * 2 + [(3, 20, 20)]


def test_crop_scale_is_respected() -> None:
    # An image whose pixel value is its column index: a crop's value range bounds its width.
    cols = torch.arange(200, dtype=torch.float32).div(255).expand(1, 200, 200).clone()
    transform = plain(
        global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), ratio=(1.0, 1.0), num_local=4,
        mean=(0, 0, 0), std=(1, 1, 1),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        views = transform(cols, generator=g)
        for v, (lo, hi) in zip(views, [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 4):
            width = (v[0].max() - v[0].min()) * 255 + 1
            assert (lo * 200**2) ** 0.5 - 3 <= width <= (hi * 200**2) ** 0.5 + 1


def test_bad_input() -> None:
    transform = MultiCropTransform(global_size=16, local_size=8, num_local=1)
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        transform([[0]])
    with pytest.raises(ValueError, match=r"shape \(C, H, W\)"):
        transform(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match="uint8 or floating"):
        transform(torch.zeros(3, 8, 8, dtype=torch.int32))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        transform(photo(), generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="global_scale must satisfy"):
        MultiCropTransform(global_scale=(0.9, 0.4))
    with pytest.raises(ValueError, match="flip_p must be a finite number in"):
        MultiCropTransform(flip_p=1.5)
    with pytest.raises(ValueError, match="hue must lie in"):
        MultiCropTransform(hue=0.6)
    with pytest.raises(TypeError, match="num_local must be an int, got float"):
        MultiCropTransform(num_local=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_local must be an int >= 0, got -1"):
        MultiCropTransform(num_local=-1)
    with pytest.raises(TypeError, match="solarize_threshold must be a float, got str"):
        MultiCropTransform(solarize_threshold="128")  # type: ignore[arg-type]
