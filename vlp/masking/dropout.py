"""Random patch dropout (FLIP) and gathering kept tokens."""

from __future__ import annotations

import math

import torch

from vlp._checks import check_int, check_probability, check_shape, check_tensor, values_readable

__all__ = ["gather_tokens", "num_kept", "patch_dropout", "random_patch_mask", "uniform"]


def _check_size(name: str, value: object) -> int:
    return check_int(name, value, low=1)


#: Most random draws one masking call makes: 2**31, far beyond any real batch of images.
_MAX_NOISE = 2**31


def uniform(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``U(0, 1)`` float32 noise of ``shape`` on ``device``, drawn from ``generator``.

    The noise is drawn on the generator's device and moved to ``device``: a generator on
    the target device keeps the call free of host synchronisation.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if math.prod(shape) > _MAX_NOISE:
        raise ValueError(
            f"the noise of shape {tuple(shape)} (batch x num_patches) must have at most "
            f"{_MAX_NOISE} elements, got {math.prod(shape)}"
        )
    target = torch.device(device) if device is not None else None
    source = generator.device if generator is not None else target
    noise = torch.rand(shape, generator=generator, device=source)
    return noise if target is None else noise.to(target)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Tokens kept by dropout at ``mask_ratio``: ``max(1, floor(L * (1 - mask_ratio)))``."""
    _check_size("num_patches", num_patches)
    check_probability("mask_ratio", mask_ratio)
    return max(1, math.floor(num_patches * (1.0 - mask_ratio)))


def patch_dropout(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices of the patches kept by random patch dropout, drawn independently per image.

    Every image keeps the same number :func:`num_kept` of patches, a uniformly random
    subset, returned in increasing order (grid order). Pass the result as ``keep_idx`` to
    :func:`vlp.adapters.open_clip_masked_image_tokens` (no fillers) or to
    :func:`gather_tokens`.

    Paper: Li et al., "Scaling Language-Image Pre-training via Masking" (FLIP), CVPR 2023,
    Sec. 3.

    Args:
        batch: number of images ``B``.
        num_patches: patches per image ``L``.
        mask_ratio: fraction of patches to drop, in ``[0, 1)``.
        generator: random source (its device is where the noise is drawn).
        device: device of the result (default: the generator's, else the CPU).

    Returns:
        ``(B, K)`` int64 kept indices, ``K = max(1, floor(L * (1 - mask_ratio)))``.
    """
    _check_size("batch", batch)
    kept = num_kept(num_patches, mask_ratio)
    noise = uniform((batch, num_patches), generator=generator, device=device)
    keep = noise.topk(kept, dim=1, largest=False, sorted=False).indices
    return keep.sort(dim=1).values


def random_patch_mask(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask of random patch dropout: ``True`` = dropped.

    Exactly ``L - max(1, floor(L * (1 - mask_ratio)))`` patches per image are ``True``;
    the same draw as :func:`patch_dropout` with the same generator state.

    Paper: Li et al., "Scaling Language-Image Pre-training via Masking" (FLIP), CVPR 2023.

    Args:
        batch: number of images ``B``.
        num_patches: patches per image ``L``.
        mask_ratio: fraction of patches to drop, in ``[0, 1)``.
        generator: random source.
        device: device of the result.

    Returns:
        ``(B, L)`` bool.
    """
    keep = patch_dropout(batch, num_patches, mask_ratio, generator=generator, device=device)
    mask = torch.ones(batch, num_patches, dtype=torch.bool, device=keep.device)
    return mask.scatter(1, keep, False)


def gather_tokens(
    tokens: torch.Tensor, keep_idx: torch.Tensor, *, num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Select the kept patch tokens of each sample.

    Args:
        tokens: ``(B, N + L, D)`` tokens, the first ``num_prefix_tokens = N`` of them
            (CLS, registers) always kept, then the ``L`` patch tokens.
        keep_idx: ``(B, K)`` int64 indices into the ``L`` patch tokens.
        num_prefix_tokens: ``N``, tokens in front of the patches.

    Returns:
        ``(B, N + K, D)``: the prefix tokens, then ``tokens[b, N + keep_idx[b, k]]``.
    """
    check_shape("tokens", tokens, ("B", "N+L", "D"))
    check_tensor("keep_idx", keep_idx)
    check_shape("keep_idx", keep_idx, (tokens.shape[0], "K"))
    if keep_idx.dtype != torch.int64:
        raise TypeError(f"keep_idx must have dtype torch.int64, got {keep_idx.dtype}")
    if keep_idx.device != tokens.device:
        raise ValueError(
            f"keep_idx must be on the device of tokens ({tokens.device}), got {keep_idx.device}"
        )
    check_int("num_prefix_tokens", num_prefix_tokens, low=0, high=tokens.shape[1] - 1)
    num_patches = tokens.shape[1] - num_prefix_tokens
    if values_readable(keep_idx) and keep_idx.numel():
        lo, hi = int(keep_idx.min()), int(keep_idx.max())
        if lo < 0 or hi >= num_patches:
            raise ValueError(f"keep_idx must lie in [0, {num_patches}), got values in [{lo}, {hi}]")
    index = (keep_idx + num_prefix_tokens).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    kept = tokens.gather(1, index.to(tokens.device))
    if num_prefix_tokens == 0:
        return kept
    return torch.cat([tokens[:, :num_prefix_tokens], kept], dim=1)
