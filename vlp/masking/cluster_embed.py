r"""The "embedding + RGB" similarity of cluster masking (Wei et al., CVPR 2024, ablation).

The release's ``use_embed`` branch mixes two cosine similarities between every patch and the
anchors: one of the patch *token embeddings* (patch projection plus positional embedding, the
tokens at the point where masking happens) and one of the raw patch pixels (not centred or
scaled per patch, unlike the default RGB scores), weighted by ``w = epoch / 32`` so the
embedding term grows linearly over the 32 training epochs:

``score[b, j] = max_k  w · cos(e[b, a_k], e[b, j]) + (1 − w) · cos(x[b, a_k], x[b, j])``

The branch is broken as shipped (a NameError, spec A6); this is its evident formula. A zero
vector has cosine 0 with everything (never clustered through that term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp._checks import check_float, check_floating, check_shape, check_tensor, values_readable
from vlp._patches import check_images, grid_size, pair, patchify

__all__ = ["embedding_rgb_scores", "embedding_weight"]


def embedding_weight(epoch: float, ramp_epochs: float = 32.0) -> float:
    """The release's mixing weight ``w = epoch / ramp_epochs``, held at 1 after the ramp.

    Args:
        epoch: the current epoch (0-based; fractional values allowed).
        ramp_epochs: epochs over which ``w`` grows from 0 to 1 (32, the paper's schedule).

    Returns:
        ``min(epoch / ramp_epochs, 1)``.
    """
    e = check_float("epoch", epoch, low=0.0)
    ramp = check_float("ramp_epochs", ramp_epochs, low=0.0, low_inclusive=False)
    return min(e / ramp, 1.0)


def embedding_rgb_scores(
    images: torch.Tensor,
    embeddings: torch.Tensor,
    anchors: torch.Tensor,
    patch_size: int | tuple[int, int],
    *,
    embed_weight: float,
) -> torch.Tensor:
    """Max over anchors of the mixed embedding / raw-pixel cosine similarity.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking", CVPR 2024
    (the embedding-feature ablation; release ``use_embed=True``, spec A6).

    Args:
        images: ``(B, C, H, W)`` floating images, normalised for the model.
        embeddings: ``(B, L, D)`` patch token embeddings (patch projection + positional
            embedding, no CLS), ``L`` the patch grid of ``images``, row-major. Detached
            here: masking carries no gradient.
        anchors: ``(B, K)`` int64 anchor indices in ``[0, L)``.
        patch_size: ``p`` or ``(ph, pw)``.
        embed_weight: ``w`` in ``[0, 1]`` (see :func:`embedding_weight`).

    Returns:
        ``(B, L)`` scores in ``[-1, 1]``, float32 (float64 for float64 inputs); anchors score 1
        unless their pixels and embedding are both zero.

    Raises:
        TypeError / ValueError: on bad shapes, dtypes, devices, weights or anchor indices.
    """
    images = check_images(images)
    ph, pw = pair("patch_size", patch_size)
    gh, gw = grid_size((images.shape[2], images.shape[3]), (ph, pw))
    embeddings = check_tensor("embeddings", embeddings)
    check_floating("embeddings", embeddings)
    check_shape("embeddings", embeddings, (images.shape[0], gh * gw, "D"))
    anchors = check_tensor("anchors", anchors)
    check_shape("anchors", anchors, (images.shape[0], "K"))
    if anchors.dtype != torch.int64:
        raise TypeError(f"anchors must have dtype torch.int64, got {anchors.dtype}")
    if anchors.shape[1] == 0:
        raise ValueError("anchors must hold at least one anchor per image")
    for name, t in (("embeddings", embeddings), ("anchors", anchors)):
        if t.device != images.device:
            raise ValueError(
                f"{name} must be on the images' device {images.device}, got {t.device}"
            )
    if values_readable(anchors) and (int(anchors.min()) < 0 or int(anchors.max()) >= gh * gw):
        raise ValueError(f"anchors must lie in [0, {gh * gw}), got values outside")
    w = check_float("embed_weight", embed_weight, low=0.0, high=1.0)
    dtype = torch.float64 if torch.float64 in (images.dtype, embeddings.dtype) else torch.float32

    pixels = patchify(images, (ph, pw))
    # A patch with a non-finite pixel (or, when it is used, embedding) is invalid, as in
    # cluster_scores: it scores -inf and, as an anchor, forms no cluster.
    finite = torch.isfinite(pixels).all(dim=-1)
    if w > 0.0:
        finite = finite & torch.isfinite(embeddings).all(dim=-1)

    def anchor_cosines(features: torch.Tensor) -> torch.Tensor:  # (B, L, F) -> (B, K, L)
        x = torch.where(finite.unsqueeze(-1), features.detach().to(dtype), 0.0)
        unit = F.normalize(x, dim=-1)
        index = anchors.unsqueeze(-1).expand(-1, -1, unit.shape[-1])
        return torch.gather(unit, 1, index) @ unit.transpose(1, 2)

    cos = anchor_cosines(pixels)
    if w > 0.0:
        cos = w * anchor_cosines(embeddings) + (1.0 - w) * cos
    ok = finite.gather(1, anchors).unsqueeze(-1) & finite.unsqueeze(1)
    mixed: torch.Tensor = cos.masked_fill(~ok, float("-inf")).amax(dim=1)
    return mixed
