"""Cutting images into patches and back, and the per-patch correlation features."""

from __future__ import annotations

import math

import torch

from vlp._checks import check_floating, check_positive, check_shape, check_tensor

__all__ = ["grid_size", "patch_features", "patchify", "unpatchify"]


def _pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be positive int(s), got {value!r}")
    return pair


def grid_size(image_size: tuple[int, int], patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of an ``image_size = (H, W)`` image.

    Args:
        image_size: ``(H, W)`` in pixels; each must be a multiple of the patch side.
        patch_size: ``p`` or ``(ph, pw)``.

    Returns:
        ``(H // ph, W // pw)``.

    Raises:
        ValueError: when a side is not a multiple of the patch side.
    """
    ph, pw = _pair("patch_size", patch_size)
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
    ph, pw = _pair("patch_size", patch_size)
    b, c, h, w = images.shape
    gh, gw = grid_size((h, w), (ph, pw))
    x = images.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c * ph * pw)


def unpatchify(
    patches: torch.Tensor, patch_size: int | tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Args:
        patches: ``(B, L, C * ph * pw)`` tensor.
        patch_size: ``p`` or ``(ph, pw)``.
        image_size: ``(H, W)`` of the images the patches came from.

    Returns:
        ``(B, C, H, W)`` tensor with ``unpatchify(patchify(x, p), p, x.shape[-2:]) == x``.
    """
    check_shape("patches", patches, ("B", "L", "P"))
    ph, pw = _pair("patch_size", patch_size)
    gh, gw = grid_size((int(image_size[0]), int(image_size[1])), (ph, pw))
    b, n, d = patches.shape
    if n != gh * gw or d % (ph * pw):
        raise ValueError(
            f"patches must have shape (B, {gh * gw}, C * {ph * pw}) for image_size "
            f"{tuple(image_size)} and patch_size {(ph, pw)}, got {tuple(patches.shape)}"
        )
    c = d // (ph * pw)
    x = patches.reshape(b, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * ph, gw * pw)


def patch_features(
    images: torch.Tensor, patch_size: int | tuple[int, int], *, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred, unit-norm raw-pixel vectors of every patch (the cluster-masking feature).

    Each patch's ``P = C * ph * pw`` values (all channels jointly) have their mean
    removed and are scaled to unit L2 norm, so the dot product of two features is the
    Pearson correlation of the two patches' pixels, invariant to any global affine map
    ``a * x + b`` with ``a > 0``. A patch whose values have standard deviation
    ``<= eps`` (a flat patch of one grey level) gets the zero vector and ``valid = False``:
    it never joins or forms a cluster. So does a patch holding a NaN or an infinite value
    (or whose norm overflows): non-finite pixels never reach a feature, and the rule is
    applied on the device, without a host sync (see ``docs/reliability.md``).

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1 (per-patch normalisation, cosine similarity).

    Args:
        images: ``(B, C, H, W)`` floating images (already model-normalised).
        patch_size: ``p`` or ``(ph, pw)``.
        eps: standard-deviation threshold below which a patch counts as flat.

    Returns:
        ``(features, valid)``: ``(B, L, P)`` float32 (float64 for float64 images) and
        ``(B, L)`` bool.
    """
    check_floating("images", images)
    check_positive("eps", eps)
    x, norm, valid = _centred_patches(images, patch_size, eps)
    feats = x / torch.where(valid, norm, torch.ones_like(norm)).unsqueeze(-1)
    # where, not a product: an invalid patch may hold NaN, and NaN * 0 is NaN.
    return torch.where(valid.unsqueeze(-1), feats, torch.zeros((), dtype=feats.dtype)), valid


def _centred_patches(
    images: torch.Tensor, patch_size: int | tuple[int, int], eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, L, P)`` centred patches (one copy of the image), their norms and validity.

    A patch is valid when its norm is finite and above the flat threshold: NaN or inf
    pixels (and overflowing norms) make the norm non-finite, so such a patch is invalid,
    like a flat one.
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = patchify(images, patch_size).to(dtype)
    if x.untyped_storage().data_ptr() == images.untyped_storage().data_ptr():
        x = x.clone()  # patchify returned a view (a one-patch grid): never write the input
    x -= x.mean(dim=-1, keepdim=True)
    # A second centring removes the rounding residue of the first, so that a flat patch
    # is exactly zero rather than a constant of order 1e-7.
    x -= x.mean(dim=-1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=-1)
    return x, norm, torch.isfinite(norm) & (norm > eps * math.sqrt(x.shape[-1]))


def _check_images(images: object) -> torch.Tensor:
    images = check_tensor("images", images)
    check_shape("images", images, ("B", "C", "H", "W"))
    check_floating("images", images)
    return images
