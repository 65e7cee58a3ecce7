"""Patch-grid helpers shared by the masking ops, the cluster-score kernel and the adapters.

Cutting images into patches is needed at two layers: by :mod:`vlp.kernels.cluster_scores`
(the torch reference of the fused path) and by :mod:`vlp.masking`, which is built on that
kernel. The helpers live here, below both, so that neither imports the other's privates.
:func:`grid_size` and :func:`patchify` are public as ``vlp.masking.grid_size`` and
``vlp.masking.patchify``.

This module imports nothing from ``vlp`` but :mod:`vlp._checks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vlp._checks import check_floating, check_shape, check_tensor

__all__ = ["centred_patches", "check_images", "grid_size", "pair", "patchify"]


def pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as ``(h, w)``: an int ``p`` means ``(p, p)``.

    Raises:
        TypeError: if ``value`` is not an int or a pair of ints (bools are not ints).
        ValueError: if a side is not positive.
    """
    items = (value, value) if isinstance(value, int) else value
    if not (
        isinstance(items, (tuple, list))
        and len(items) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(items) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(items[0]), int(items[1])


def check_images(images: object, *, channels: int | None = None) -> torch.Tensor:
    """A non-empty ``(B, C, H, W)`` floating tensor (``C == channels`` when given).

    Raises:
        TypeError: if ``images`` is not a floating tensor.
        ValueError: if it is not 4-D, has another channel count, or ``B == 0``.
    """
    images = check_tensor("images", images)
    check_shape("images", images, ("B", "C" if channels is None else channels, "H", "W"))
    check_floating("images", images)
    if images.shape[0] == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    return images


def grid_size(image_size: tuple[int, int], patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of an ``image_size = (H, W)`` image.

    Args:
        image_size: ``(H, W)`` in pixels; each must be a multiple of the patch side.
        patch_size: ``p`` or ``(ph, pw)``.

    Returns:
        ``(H // ph, W // pw)``.

    Raises:
        TypeError: when ``image_size`` is not a pair of ints.
        ValueError: when a side is not a positive multiple of the patch side.
    """
    ph, pw = pair("patch_size", patch_size)
    if not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2:
        raise TypeError(f"image_size must be a pair (H, W), got {image_size!r}")
    h, w = image_size
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise TypeError(f"image_size must be a pair of ints, got {image_size!r}")
    if h <= 0 or w <= 0 or h % ph or w % pw:
        raise ValueError(
            f"image_size must be a positive multiple of patch_size {(ph, pw)}, got {(h, w)}"
        )
    return h // ph, w // pw


def patchify(images: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Cut images into non-overlapping patches, row-major over the grid.

    Patch ``j`` is grid cell ``(j // cols, j % cols)``, the order of a ViT's patch tokens.
    Its values are laid out ``(channel, row, col)``, the layout of a conv patch embedding's
    weight, so ``patchify(x, p) @ conv.weight.flatten(1).T`` is the conv embedding.

    Args:
        images: ``(B, C, H, W)`` tensor of any dtype; ``H``, ``W`` multiples of the patch.
        patch_size: ``p`` or ``(ph, pw)``.

    Returns:
        ``(B, L, C * ph * pw)`` tensor (a copy), ``L = (H // ph) * (W // pw)``.
    """
    check_shape("images", images, ("B", "C", "H", "W"))
    ph, pw = pair("patch_size", patch_size)
    b, c, h, w = images.shape
    gh, gw = grid_size((h, w), (ph, pw))
    x = images.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c * ph * pw)


def centred_patches(
    images: torch.Tensor, patch_size: int | tuple[int, int], eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean-free raw-pixel vectors of every patch, their L2 norms and which are not flat.

    Args:
        images: ``(B, C, H, W)`` floating images.
        patch_size: ``p`` or ``(ph, pw)``.
        eps: a patch whose pixel standard deviation is ``<= eps`` is flat.

    A patch is valid when its norm is finite and above the flat threshold: NaN or inf
    pixels (and overflowing norms) make the norm non-finite, so such a patch is invalid,
    like a flat one.

    Returns:
        ``(x, norm, valid)``: ``(B, L, P)`` centred patches (float32, float64 for float64
        images; one copy of the image), ``(B, L)`` norms and ``(B, L)`` bool.
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = patchify(images, patch_size).to(dtype)
    # Out of place: patchify may return a view of the input (a one-patch grid). (The
    # storage comparison this replaces cannot be traced by torch.compile.)
    x = x - x.mean(dim=-1, keepdim=True)
    # A second centring removes the rounding residue of the first, so that a flat patch
    # is exactly zero rather than a constant of order 1e-7.
    x = x - x.mean(dim=-1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=-1)
    return x, norm, torch.isfinite(norm) & (norm > eps * math.sqrt(x.shape[-1]))
