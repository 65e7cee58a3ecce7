"""Positional-embedding interpolation for images whose patch grid differs from training.

COSMOS (Kim et al., CVPR 2025; multi-crop views) feeds 96 px local crops to a ViT trained
at 224 px. Its reference code resamples the 14x14 grid of positional embeddings bicubically
with ``scale_factor = (g + 0.1) / sqrt(N)`` (the DINO "+0.1" trick) rather than with
``size = g``; the two give different values, so parity needs the former.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from vlp._checks import check_floating, check_int, check_shape
from vlp._patches import pair

__all__ = ["PosInterpolation", "interpolate_pos_embed"]

#: ``"reference"``: COSMOS/DINO rule, bicubic with ``scale_factor=(g + 0.1) / sqrt(N)``;
#: ``"size"``: bicubic with ``size=g`` (exact grid alignment, non-square grids allowed).
PosInterpolation = Literal["reference", "size"]

#: The new patch grid may be at most this many times the old one per side.
MAX_GRID_SCALE = 16


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    image_size: int | tuple[int, int],
    patch_size: int | tuple[int, int],
    *,
    rule: PosInterpolation = "reference",
    num_prefix_tokens: int = 1,
    grid_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample a ViT's positional embedding to the patch grid of another image size.

    The prefix rows (the CLS token's) are kept unchanged; the patch rows are reshaped to
    their grid and resampled bicubically (``align_corners=False``, no antialias), the way
    the COSMOS reference implementation (the authors' released code) does for its 96 px
    local crops (Kim et al., CVPR 2025). New grid:
    ``(H // patch_h, W // patch_w)``.

    With ``rule="reference"`` the result matches the reference bit for bit: if the new
    image is square and has as many patches as the old grid, ``pos_embed`` is returned as
    is; otherwise the old square grid of side ``s = sqrt(N)`` is resampled with
    ``scale_factor=((g_h + 0.1) / s, (g_w + 0.1) / s)``. With ``rule="size"`` the grid is
    resampled with ``size=(g_h, g_w)`` (returned as is when the grid is unchanged), which
    also handles a non-square old grid given by ``grid_size``.

    Half-precision embeddings are resampled in float32 and cast back.

    Args:
        pos_embed: ``(P + N, C)`` float, ``P = num_prefix_tokens`` prefix rows followed by
            the ``N`` patch rows in row-major grid order (open_clip's
            ``visual.positional_embedding``).
        image_size: the new image's ``(H, W)`` in pixels (an int means square).
        patch_size: the ViT's patch size ``(patch_h, patch_w)`` (an int means square).
        rule: ``"reference"`` (default, COSMOS parity) or ``"size"``.
        num_prefix_tokens: number of leading rows not on the grid (1 for open_clip).
        grid_size: the old grid ``(rows, cols)``; defaults to the square ``(s, s)``.

    Returns:
        ``(P + g_h * g_w, C)`` tensor with ``pos_embed``'s dtype and device.

    Raises:
        ValueError: on a bad shape, an image smaller than one patch or whose grid side is
            more than ``MAX_GRID_SCALE = 16`` times the old one, a grid that does not
            match ``N``, a non-square old grid under ``rule="reference"``, or an unknown rule.
        TypeError: on a non-floating ``pos_embed`` or non-integer sizes.
    """
    check_shape("pos_embed", pos_embed, ("T", "C"))
    check_floating("pos_embed", pos_embed)
    if rule not in ("reference", "size"):
        raise ValueError(f"rule must be 'reference' or 'size', got {rule!r}")
    check_int("num_prefix_tokens", num_prefix_tokens)
    num_patches = pos_embed.shape[0] - num_prefix_tokens
    if num_prefix_tokens < 0 or num_patches <= 0:
        raise ValueError(
            f"num_prefix_tokens must lie in [0, {pos_embed.shape[0] - 1}] for pos_embed of "
            f"shape {tuple(pos_embed.shape)}, got {num_prefix_tokens}"
        )
    height, width = pair("image_size", image_size)
    patch_h, patch_w = pair("patch_size", patch_size)
    new_grid = (height // patch_h, width // patch_w)
    if min(new_grid) == 0:
        raise ValueError(
            f"image_size {(height, width)} must be at least one patch {(patch_h, patch_w)}"
        )
    side = math.sqrt(num_patches)
    if grid_size is None:
        if int(side) ** 2 != num_patches:
            raise ValueError(
                f"pos_embed has {num_patches} patch rows, not a square grid; pass grid_size"
            )
        old_grid = (int(side), int(side))
    else:
        old_grid = pair("grid_size", grid_size)
        if old_grid[0] * old_grid[1] != num_patches:
            raise ValueError(
                f"grid_size {old_grid} must have {num_patches} cells (pos_embed patch rows), "
                f"got {old_grid[0] * old_grid[1]}"
            )
    if max(new_grid) > MAX_GRID_SCALE * max(old_grid):
        # A bicubic resample to a 6250 x 6250 grid (image_size=100_000) runs for minutes
        # and allocates gigabytes for images nobody could encode.
        raise ValueError(
            f"image_size {(height, width)} gives a {new_grid} patch grid, more than "
            f"{MAX_GRID_SCALE} times the old grid {old_grid} per side; got image_size "
            f"{image_size!r}"
        )

    if rule == "reference":
        if new_grid[0] * new_grid[1] == num_patches and height == width:
            return pos_embed
        if old_grid[0] != old_grid[1]:
            raise ValueError(
                f"rule='reference' needs a square old grid (the reference reshapes to "
                f"sqrt(N) x sqrt(N)), got grid_size {old_grid}; use rule='size'"
            )
    elif new_grid == old_grid:
        return pos_embed

    prefix, patches = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    work_dtype = torch.float32 if pos_embed.dtype in (torch.float16, torch.bfloat16) else None
    grid = patches.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    if work_dtype is not None:
        grid = grid.to(work_dtype)
    if rule == "reference":
        scale = ((new_grid[0] + 0.1) / side, (new_grid[1] + 0.1) / side)
        resampled = F.interpolate(grid, scale_factor=scale, mode="bicubic")
        if tuple(resampled.shape[-2:]) != new_grid:  # pragma: no cover - guarded by the +0.1
            raise RuntimeError(f"interpolation gave grid {tuple(resampled.shape[-2:])}")
    else:
        resampled = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    resampled = resampled.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)
    return torch.cat([prefix, resampled.to(pos_embed.dtype)], dim=0)
