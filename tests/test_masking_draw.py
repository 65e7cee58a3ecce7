"""vlp.masking.draw_mask: pixel-exact tint, greying and anchor frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vlp.masking import draw_mask


def _image() -> torch.Tensor:
    img = torch.zeros(3, 16, 24, dtype=torch.uint8)
    img[0] = 200
    img[1] = 100
    return img  # 2 x 3 patches of 8


def test_draw_mask_tints_masked_patches_and_frames_anchors(tmp_path: Path) -> None:
    masked = torch.tensor([True, False, False, False, True, False])
    path = tmp_path / "mask.png"
    pic = draw_mask(
        _image(), masked, 8, anchors=torch.tensor([4]), dropped=torch.tensor([2]),
        colour=(0, 0, 255), alpha=0.5, path=path,
    )  # fmt: skip
    assert pic.size == (24, 16) and pic.mode == "RGB"
    px = pic.load()
    assert px[3, 3] == (100, 50, 128)  # masked: half-way to blue
    assert px[11, 3] == (200, 100, 0)  # visible, untouched
    grey = round(0.35 * 100 + 100)  # mean of (200, 100, 0) is 100
    assert px[19, 3] == (grey, grey, grey)  # dropped by the floor
    assert px[8, 8] == (0, 0, 0) and px[9, 9] == (255, 255, 255)  # anchor 4 = cell (1, 1)
    assert px[12, 12] == (100, 50, 128)  # inside the anchor: masked tint
    saved = Image.open(path)
    assert saved.size == (24, 16) and saved.convert("RGB").load()[3, 3] == (100, 50, 128)


def test_draw_mask_undoes_normalisation_and_scales() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (torch.full((3, 8, 8), 0.75) - 0.5) / 0.25
    pic = draw_mask(x, torch.zeros(1, dtype=torch.bool), 8, mean=mean, std=std, scale=3)
    assert pic.size == (24, 24) and pic.load()[4, 4] == (191, 191, 191)


def test_draw_mask_bad_input() -> None:
    with pytest.raises(ValueError, match="masked must have shape"):
        draw_mask(_image(), torch.zeros(5, dtype=torch.bool), 8)
    with pytest.raises(TypeError, match="masked must have dtype torch.bool"):
        draw_mask(_image(), torch.zeros(6), 8)
    with pytest.raises(ValueError, match="anchors must hold indices"):
        draw_mask(_image(), torch.zeros(6, dtype=torch.bool), 8, anchors=torch.tensor([6]))
    with pytest.raises(ValueError, match="image must have shape"):
        draw_mask(_image()[:1], torch.zeros(6, dtype=torch.bool), 8)
    with pytest.raises(ValueError, match="alpha"):
        draw_mask(_image(), torch.zeros(6, dtype=torch.bool), 8, alpha=2.0)
