"""Draw the cluster-masking figures of docs/cluster_masking.md from skimage.data photographs.

    python docs/make_mask_figures.py            # writes docs/assets/cluster_mask_*.png

Each photograph is resized to a multiple of 16 px, CLIP-normalised and cut into 16 x 16
patches (ViT-B/16). Left: cluster masking with 3% anchors and the threshold calibrated
to a 50% mask ratio on that image. Right: random patch dropout at the same ratio. A
footer states the ratio and threshold. Needs scikit-image (a dev extra), not matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage import data

from vlp.masking import (
    calibrate_threshold,
    cluster_scores,
    draw_mask,
    num_anchors,
    random_patch_mask,
    sample_anchors,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PHOTOS = {"astronaut": (224, 224), "coffee": (224, 336), "chelsea": (224, 336)}
OUT = Path(__file__).resolve().parent / "assets"


def load(name: str, size: tuple[int, int]) -> torch.Tensor:
    """``(3, H, W)`` uint8 photograph resized (bicubic) to ``size``."""
    pil = Image.fromarray(getattr(data, name)()).convert("RGB")
    pil = pil.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def normalise(image: torch.Tensor) -> torch.Tensor:
    x = image.float().div(255).unsqueeze(0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def figure(name: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    image = load(name, size)
    x = normalise(image)
    num = (size[0] // 16) * (size[1] // 16)
    g = torch.Generator().manual_seed(seed)
    anchors = sample_anchors(1, num, num_anchors(num), generator=g)
    scores = cluster_scores(x, anchors, 16)
    cal = calibrate_threshold(scores, 0.5)
    masked = scores[0] > cal.threshold
    ratio = float(masked.float().mean())
    random = random_patch_mask(1, num, ratio, generator=g)[0]
    left = draw_mask(image, masked, 16, anchors=anchors[0])
    right = draw_mask(image, random, 16, colour=(40, 120, 255))
    gap, footer = 8, 22
    canvas = Image.new("RGB", (2 * left.width + gap, left.height + footer), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    pen = ImageDraw.Draw(canvas)
    pen.text(
        (4, left.height + 5),
        f"cluster: {int(masked.sum())}/{num} masked, {anchors.shape[1]} anchors, "
        f"tau={float(cal.threshold):.3f}",
        fill=(0, 0, 0),
    )
    pen.text((left.width + gap + 4, left.height + 5), "random, same ratio", fill=(0, 0, 0))
    return canvas


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, size in PHOTOS.items():
        path = OUT / f"cluster_mask_{name}.png"
        # An adaptive palette keeps each file well under 200 KB.
        figure(name, size).quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
