"""Drawing an image with its cluster mask (PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vlp._checks import check_int, check_shape, check_tensor
from vlp._patches import grid_size, pair

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["draw_mask"]


def _to_uint8(
    image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    check_shape("image", image, (3, "H", "W"))
    x = image.detach().cpu()
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"image must be uint8 or floating, got {x.dtype}")
    x = x.to(torch.float32)
    if std is not None:
        x = x * torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    if mean is not None:
        x = x + torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _patch_flags(name: str, value: torch.Tensor | None, num_patches: int) -> torch.Tensor:
    flags = torch.zeros(num_patches, dtype=torch.bool)
    if value is None:
        return flags
    value = check_tensor(name, value).detach().cpu()
    if value.dtype == torch.bool:
        check_shape(name, value, (num_patches,))
        return value
    check_shape(name, value, ("K",))
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= num_patches):
        raise ValueError(f"{name} must hold indices in [0, {num_patches}), got {value.tolist()}")
    return flags.index_fill(0, value.long(), True)


def draw_mask(
    image: torch.Tensor,
    masked: torch.Tensor,
    patch_size: int | tuple[int, int],
    *,
    anchors: torch.Tensor | None = None,
    dropped: torch.Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    colour: tuple[int, int, int] = (220, 0, 180),
    alpha: float = 0.65,
    scale: int = 1,
    grid: bool = True,
    path: str | Path | None = None,
) -> Image.Image:
    """Draw an image with its masked clusters tinted and its anchors outlined.

    Cluster-masked patches are blended with ``colour``; visible patches dropped only to
    meet the mask-ratio floor (``dropped``) are greyed; anchor patches get a white frame
    with a black border. Faint grid lines mark the patches (``grid=False`` hides them).

    Args:
        image: ``(3, H, W)`` uint8, or floating in ``[0, 1]`` after undoing ``mean``/``std``.
        masked: ``(L,)`` bool cluster mask of this image (``True`` = masked).
        patch_size: ``p`` or ``(ph, pw)``.
        anchors: optional ``(K,)`` anchor indices (or an ``(L,)`` bool flag).
        dropped: optional ``(L,)`` bool (or indices) of visible patches the floor dropped.
        mean: per-channel mean to add back to a normalised float image.
        std: per-channel std to multiply back.
        colour: RGB tint of masked patches.
        alpha: tint strength in ``[0, 1]``.
        scale: integer upscaling of the output (nearest neighbour).
        grid: draw the patch grid.
        path: if given, the picture is also saved there (format from the suffix, e.g. PNG).

    Returns:
        A ``PIL.Image.Image`` (RGB).
    """
    from PIL import Image, ImageDraw

    ph, pw = pair("patch_size", patch_size)
    pixels = _to_uint8(check_tensor("image", image), mean, std)
    gh, gw = grid_size((pixels.shape[1], pixels.shape[2]), (ph, pw))
    num_patches = gh * gw
    masked = check_tensor("masked", masked).detach().cpu()
    if masked.dtype != torch.bool:
        raise TypeError(f"masked must have dtype torch.bool, got {masked.dtype}")
    check_shape("masked", masked, (num_patches,))
    anchor = _patch_flags("anchors", anchors, num_patches)
    drop = _patch_flags("dropped", dropped, num_patches)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    check_int("scale", scale, low=1)

    x = pixels.to(torch.float32)
    cells = masked.view(gh, gw).repeat_interleave(ph, 0).repeat_interleave(pw, 1)
    tint = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
    x = torch.where(cells, (1 - alpha) * x + alpha * tint, x)
    grey = drop.view(gh, gw).repeat_interleave(ph, 0).repeat_interleave(pw, 1)
    x = torch.where(grey, 0.35 * x.mean(dim=0, keepdim=True) + 100, x)
    array = x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    picture = Image.fromarray(array, mode="RGB")
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    sh, sw = ph * scale, pw * scale
    if grid:
        overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        lines = ImageDraw.Draw(overlay)
        for r in range(1, gh):
            lines.line([(0, r * sh), (picture.width, r * sh)], fill=(255, 255, 255, 70))
        for c in range(1, gw):
            lines.line([(c * sw, 0), (c * sw, picture.height)], fill=(255, 255, 255, 70))
        picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    pen = ImageDraw.Draw(picture)
    for j in anchor.nonzero().flatten().tolist():
        r, c = divmod(j, gw)
        box = [c * sw, r * sh, (c + 1) * sw - 1, (r + 1) * sh - 1]
        pen.rectangle(box, outline=(0, 0, 0), width=max(1, scale))
        inner = [box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1]
        pen.rectangle(inner, outline=(255, 255, 255), width=max(1, scale))
    if path is not None:
        picture.save(path)
    return picture
