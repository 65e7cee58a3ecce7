"""Cutting images into patches and back, and the per-patch correlation features.

:func:`grid_size` and :func:`patchify` are defined in :mod:`vlp._patches` (shared with the
cluster-score kernel below this package) and exported from here.
"""

from __future__ import annotations

import torch

from vlp._checks import check_floating, check_positive, check_shape
from vlp._patches import centred_patches, grid_size, pair, patchify

__all__ = ["grid_size", "patch_features", "patchify", "unpatchify"]


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
    ph, pw = pair("patch_size", patch_size)
    gh, gw = grid_size(image_size, (ph, pw))
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
    x, norm, valid = centred_patches(images, patch_size, eps)
    feats = x / torch.where(valid, norm, torch.ones_like(norm)).unsqueeze(-1)
    # where, not a product: an invalid patch may hold NaN, and NaN * 0 is NaN.
    return torch.where(valid.unsqueeze(-1), feats, torch.zeros((), dtype=feats.dtype)), valid
