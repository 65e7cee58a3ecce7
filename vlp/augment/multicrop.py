"""Multi-crop image views (DINO's ``DataAugmentationDINO`` as COSMOS configures it).

Reference: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021 (multi-crop, section 3.1); Kim et al., "COSMOS", CVPR 2025, whose training
defaults (as set in its released code) are this module's: 2 global 224 px crops of scale
(0.4, 1) and 6 local 96 px crops of scale (0.05, 0.4), bicubic, with flip, colour jitter,
grayscale, Gaussian blur and (second global view only) solarisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

from vlp._checks import check_float, check_int

__all__ = ["CLIP_MEAN", "CLIP_STD", "MultiCropTransform"]

#: OpenAI CLIP normalisation statistics (used by COSMOS).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pair(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats, got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return a, b


def _prob(name: str, value: float) -> float:
    return check_float(name, value, low=0.0, high=1.0)


def _size(name: str, value: int) -> int:
    return check_int(name, value, low=1)


class _Rng:
    """Every draw of one call, from a ``torch.Generator`` or torch's global RNG."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def chance(self, p: float) -> bool:
        return p >= 1.0 or float(torch.rand((), generator=self.generator)) < p

    def integer(self, low: int, high: int) -> int:  # in [low, high)
        return int(torch.randint(low, high, (), generator=self.generator))

    def permutation(self, n: int) -> list[int]:
        return [int(i) for i in torch.randperm(n, generator=self.generator)]


class MultiCropTransform:
    """DINO/COSMOS multi-crop: one image in, ``2 + num_local`` normalised views out.

    Per view, in this order (as in the COSMOS reference implementation, the authors'
    released code):

    1. ``RandomResizedCrop`` to ``global_size`` (scale ``global_scale``) or ``local_size``
       (scale ``local_scale``), aspect ratio in ``ratio``, bicubic; then RGB.
    2. Horizontal flip with ``flip_p``.
    3. With ``jitter_p``: colour jitter (brightness, contrast, saturation, hue in a random
       order, as ``torchvision``'s ``ColorJitter``).
    4. Grayscale (3 channels) with ``grayscale_p``.
    5. Gaussian blur, radius uniform in ``blur_radius``, with probability ``blur_p[0]``
       (first global view), ``blur_p[1]`` (second) or ``local_blur_p`` (local views).
    6. Solarize at ``solarize_threshold`` (of 255) with ``solarize_p`` on the **second**
       global view only.
    7. To a float tensor in ``[0, 1]``, then ``Normalize(mean, std)``.

    Inputs are PIL images (any mode; converted to RGB after the crop) or ``(C, H, W)``
    tensors with ``C`` 1 or 3, ``uint8`` or float in ``[0, 1]``. The geometric and colour
    ops are ``torchvision.transforms.v2.functional`` on both. PIL inputs are blurred with
    PIL's ``ImageFilter.GaussianBlur(radius)`` exactly as the reference; tensors with
    ``gaussian_blur(sigma=radius, kernel_size=2 * ceil(3 * radius) + 1)``, a close but not
    bit-equal kernel.

    **Randomness.** Every random decision (crop box, flip, jitter order and factors,
    grayscale, blur radius, solarize) is drawn from the ``generator`` passed to the call, or
    from torch's global RNG when it is ``None`` (which ``torch.utils.data.DataLoader``
    seeds per worker). The same generator state replays the same views. (The reference
    draws blur and solarize from Python's ``random`` and the rest from torch.)

    Args:
        global_size: side of the global crops (COSMOS: 224).
        local_size: side of the local crops (COSMOS: 96).
        num_local: number of local crops (COSMOS: 6).
        global_scale: area fraction range of the global crops (COSMOS: (0.4, 1.0)).
        local_scale: area fraction range of the local crops (COSMOS: (0.05, 0.4)).
        ratio: aspect-ratio range of the crops (3/4, 4/3).
        flip_p: horizontal-flip probability.
        jitter_p: probability of applying colour jitter.
        brightness: brightness jitter strength (factor in ``[1 - b, 1 + b]``).
        contrast: contrast jitter strength.
        saturation: saturation jitter strength.
        hue: hue jitter, factor in ``[-hue, hue]`` (at most 0.5).
        grayscale_p: probability of converting to grayscale.
        blur_p: blur probabilities of the two global views (COSMOS: (1.0, 0.1)).
        local_blur_p: blur probability of the local views (COSMOS: 0.5).
        blur_radius: range of the blur radius (COSMOS: (0.1, 2.0)).
        solarize_p: solarize probability of the second global view (COSMOS: 0.2).
        solarize_threshold: solarize threshold on the 0-255 scale (COSMOS: 128).
        mean: per-channel normalisation mean (default: OpenAI CLIP's).
        std: per-channel normalisation std (default: OpenAI CLIP's).

    Example:
        >>> from PIL import Image
        >>> transform = MultiCropTransform()
        >>> generator = torch.Generator().manual_seed(0)
        >>> views = transform(Image.new("RGB", (320, 240)), generator=generator)
        >>> [tuple(v.shape) for v in views[1:3]]
        [(3, 224, 224), (3, 96, 96)]
    """

    def __init__(
        self,
        *,
        global_size: int = 224,
        local_size: int = 96,
        num_local: int = 6,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_p: float = 0.2,
        blur_p: Sequence[float] = (1.0, 0.1),
        local_blur_p: float = 0.5,
        blur_radius: Sequence[float] = (0.1, 2.0),
        solarize_p: float = 0.2,
        solarize_threshold: float = 128.0,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        self.global_size = _size("global_size", global_size)
        self.local_size = _size("local_size", local_size)
        self.num_local = check_int("num_local", num_local, low=0)
        self.global_scale = _pair("global_scale", global_scale, 0.0, 1.0)
        self.local_scale = _pair("local_scale", local_scale, 0.0, 1.0)
        self.ratio = _pair("ratio", ratio, 1e-6, math.inf)
        if min(self.global_scale) <= 0 or min(self.local_scale) <= 0:
            raise ValueError(
                f"crop scales must be > 0, got {self.global_scale} and {self.local_scale}"
            )
        self.flip_p = _prob("flip_p", flip_p)
        self.jitter_p = _prob("jitter_p", jitter_p)
        self.brightness = _prob("brightness", brightness)
        self.contrast = _prob("contrast", contrast)
        self.saturation = _prob("saturation", saturation)
        self.hue = _prob("hue", hue)
        if self.hue > 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue}")
        self.grayscale_p = _prob("grayscale_p", grayscale_p)
        if isinstance(blur_p, (str, bytes)) or not isinstance(blur_p, Sequence) or len(blur_p) != 2:
            raise TypeError(f"blur_p must be a pair of probabilities, got {blur_p!r}")
        self.blur_p = (_prob("blur_p[0]", blur_p[0]), _prob("blur_p[1]", blur_p[1]))
        self.local_blur_p = _prob("local_blur_p", local_blur_p)
        self.blur_radius = _pair("blur_radius", blur_radius, 1e-6, math.inf)
        self.solarize_p = _prob("solarize_p", solarize_p)
        check_float("solarize_threshold", solarize_threshold, low=0, high=255)
        self.solarize_threshold = float(solarize_threshold)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must hold 3 values, std > 0; got {mean!r}, {std!r}")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    # ------------------------------------------------------------------ one view

    def _crop_box(
        self, height: int, width: int, scale: tuple[float, float], rng: _Rng
    ) -> tuple[int, int, int, int]:
        """``RandomResizedCrop.get_params`` (torchvision's algorithm) on our generator."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return rng.integer(0, height - h + 1), rng.integer(0, width - w + 1), h, w
        in_ratio = width / height  # fallback: the central crop of the closest ratio
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def _view(
        self, image: Any, size: int, scale: tuple[float, float], blur_p: float, solarize: bool,
        rng: _Rng,
    ) -> torch.Tensor:  # fmt: skip
        is_pil = isinstance(image, Image.Image)
        height, width = (image.height, image.width) if is_pil else image.shape[-2:]
        top, left, h, w = self._crop_box(height, width, scale, rng)
        x = TF.resized_crop(
            image, top, left, h, w, [size, size], interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        )  # fmt: skip
        if is_pil:
            x = x.convert("RGB")
        elif x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        if rng.chance(self.flip_p):
            x = TF.horizontal_flip(x)
        if rng.chance(self.jitter_p):
            # torchvision's ColorJitter: a random order; a zero strength is skipped (no draw).
            jitters = [
                (TF.adjust_brightness, (1 - self.brightness, 1 + self.brightness)),
                (TF.adjust_contrast, (1 - self.contrast, 1 + self.contrast)),
                (TF.adjust_saturation, (1 - self.saturation, 1 + self.saturation)),
                (TF.adjust_hue, (-self.hue, self.hue)),
            ]
            order = rng.permutation(4)
            factors = [None if lo == hi else rng.uniform(lo, hi) for _, (lo, hi) in jitters]
            for index in order:
                factor = factors[index]
                if factor is not None:
                    x = jitters[index][0](x, factor)
        if rng.chance(self.grayscale_p):
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if rng.chance(blur_p):
            radius = rng.uniform(*self.blur_radius)
            if is_pil:
                x = x.filter(ImageFilter.GaussianBlur(radius=radius))
            else:
                k = 2 * math.ceil(3 * radius) + 1
                x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[radius, radius])
        if solarize and rng.chance(self.solarize_p):
            if is_pil:
                x = ImageOps.solarize(x, threshold=int(self.solarize_threshold))
            else:
                scale255 = 1.0 if not x.is_floating_point() else 1.0 / 255
                x = TF.solarize(x, threshold=self.solarize_threshold * scale255)
        tensor = TF.pil_to_tensor(x) if is_pil else x
        tensor = TF.to_dtype(tensor, torch.float32, scale=True)
        out: torch.Tensor = TF.normalize(tensor, mean=self.mean, std=self.std)
        return out

    def __call__(
        self, image: Any, *, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Make the views of one image.

        Args:
            image: a PIL image, or a ``(C, H, W)`` tensor (``C`` in {1, 3}; ``uint8``, or
                float in ``[0, 1]``).
            generator: source of every random draw (torch's global RNG if ``None``).

        Returns:
            ``[g1, g2, l1, .., l_num_local]``: float32 tensors ``(3, global_size,
            global_size)`` then ``(3, local_size, local_size)``.

        Raises:
            TypeError: on an input that is neither a PIL image nor a tensor, or a bad generator.
            ValueError: on a tensor of the wrong shape.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] not in (1, 3) or min(image.shape[1:]) == 0:
                raise ValueError(
                    f"image must have shape (C, H, W) with C in (1, 3), got {tuple(image.shape)}"
                )
            if image.dtype != torch.uint8 and not image.is_floating_point():
                raise TypeError(f"image must be uint8 or floating, got {image.dtype}")
        elif not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL image or a tensor, got {type(image).__name__}")
        rng = _Rng(generator)
        views = [
            self._view(image, self.global_size, self.global_scale, self.blur_p[0], False, rng),
            self._view(image, self.global_size, self.global_scale, self.blur_p[1], True, rng),
        ]
        views += [
            self._view(image, self.local_size, self.local_scale, self.local_blur_p, False, rng)
            for _ in range(self.num_local)
        ]
        return views

    def __repr__(self) -> str:
        """Show the view sizes and counts."""
        return (
            f"{type(self).__name__}(global_size={self.global_size}, local_size={self.local_size}, "
            f"num_local={self.num_local}, global_scale={self.global_scale}, "
            f"local_scale={self.local_scale})"
        )
