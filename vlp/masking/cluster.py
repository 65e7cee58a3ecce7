"""Cluster masking: drop whole clusters of visually similar patches (Wei et al., CVPR 2024).

A few random *anchor* patches are drawn per image; every patch whose raw-pixel
correlation with some anchor exceeds a threshold ``tau`` is masked (a single-hop ball
in correlation space around each anchor, so clusters need not be spatially connected).
Each image then keeps a fixed number of token slots: its visible patches (a random
subset when there are more than the slots) and, when there are fewer, randomly chosen
masked patches as *fillers*, hidden from attention by a key-padding mask.

Everything derives from one tensor, :func:`cluster_scores` (the max correlation of each
patch with the anchors): the mask at ``tau`` is ``scores > tau``, and
:func:`calibrate_threshold` finds the ``tau`` whose mean realised ratio meets a target.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from vlp._checks import (
    check_bool_mask,
    check_float,
    check_floating,
    check_positive,
    check_probability,
    check_shape,
)
from vlp._patches import check_images, grid_size, pair
from vlp.kernels._dispatch import Backend
from vlp.kernels.cluster_scores import cluster_scores
from vlp.masking.cluster_embed import embedding_rgb_scores, embedding_weight
from vlp.masking.dropout import _check_size, gather_tokens, uniform

__all__ = [
    "Calibration",
    "ClusterFeatures",
    "ClusterMask",
    "ClusterMasking",
    "KeptLength",
    "KeptTokens",
    "calibrate_threshold",
    "cluster_mask",
    "max_kept",
    "num_anchors",
    "realised_ratio",
    "sample_anchors",
    "select_kept_tokens",
]

#: ``"static"``: every batch keeps ``max_kept(L, min_ratio)`` slots (no host sync);
#: ``"batch_max"``: ``min(max_kept, most visible patches of any image)`` slots, the
#: released code's length (one host sync).
KeptLength = Literal["static", "batch_max"]

#: Patch similarity of :class:`ClusterMasking`: ``"rgb"``, the Pearson correlation of raw
#: pixels (the paper's method); ``"embedding_rgb"``, the release's ``use_embed`` ablation,
#: ``w · cos(token embeddings) + (1 − w) · cos(raw pixels)`` with ``w = epoch / 32``
#: (:func:`~vlp.masking.embedding_rgb_scores`).
ClusterFeatures = Literal["rgb", "embedding_rgb"]


def num_anchors(num_patches: int, anchor_fraction: float = 0.03) -> int:
    """Anchors per image: ``K = L - floor(L * (1 - anchor_fraction))``, at least 1.

    The released code's count: 6 for ``L = 196``, 8 for 256, 18 for 576 at the default 3%.

    Args:
        num_patches: patches per image ``L``.
        anchor_fraction: fraction of patches drawn as anchors, in ``(0, 1)``.

    Returns:
        ``K``.
    """
    _check_size("num_patches", num_patches)
    check_probability("anchor_fraction", anchor_fraction, low_inclusive=False)
    return max(1, num_patches - math.floor(num_patches * (1.0 - anchor_fraction)))


def max_kept(num_patches: int, min_ratio: float) -> int:
    """Token slots per image under a mask-ratio floor: ``max(1, floor(L * (1 - min_ratio)))``.

    137 for ``L = 196`` and the default floor 0.3, so every realised ratio is at least
    ``1 - 137 / 196 = 0.301``.
    """
    _check_size("num_patches", num_patches)
    check_probability("min_ratio", min_ratio)
    return max(1, math.floor(num_patches * (1.0 - min_ratio)))


def sample_anchors(
    batch: int,
    num_patches: int,
    num_anchors: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``K`` distinct anchor patches per image, uniformly without replacement.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1 (random anchor patches).

    Args:
        batch: number of images ``B``.
        num_patches: patches per image ``L``.
        num_anchors: ``K`` in ``[1, L]`` (see :func:`num_anchors`).
        generator: random source (noise is drawn on its device).
        device: device of the result.

    Returns:
        ``(B, K)`` int64 anchor indices.
    """
    _check_size("batch", batch)
    _check_size("num_patches", num_patches)
    _check_size("num_anchors", num_anchors)
    if num_anchors > num_patches:
        raise ValueError(
            f"num_anchors must be at most num_patches ({num_patches}), got {num_anchors}"
        )
    noise = uniform((batch, num_patches), generator=generator, device=device)
    return noise.topk(num_anchors, dim=1, largest=False, sorted=False).indices


class ClusterMask(NamedTuple):
    """Result of :func:`cluster_mask`."""

    masked: torch.Tensor
    """``(B, L)`` bool, ``True`` = in a cluster (``scores > threshold``)."""
    scores: torch.Tensor
    """``(B, L)`` float32 max correlation with the anchors (see :func:`cluster_scores`)."""
    anchors: torch.Tensor
    """``(B, K)`` int64 anchor indices."""


def cluster_mask(
    images: torch.Tensor,
    patch_size: int | tuple[int, int],
    threshold: float | torch.Tensor,
    *,
    anchor_fraction: float = 0.03,
    anchors: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eps: float = 1e-6,
    backend: Backend = "auto",
) -> ClusterMask:
    """Mask every patch whose pixel correlation with a random anchor patch exceeds ``threshold``.

    ``masked[b, j] = max_k corr(patch[b, anchor_k], patch[b, j]) > threshold``. Anchors
    mask themselves for ``threshold < 1``; flat patches (pixel std ``<= eps``) are never
    masked. ``threshold >= 1`` masks nothing. A patch holding NaN or inf pixels counts
    as flat (see :func:`vlp.masking.patch_features`): score ``-inf``, never masked.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1.

    Args:
        images: ``(B, C, H, W)`` floating images, already normalised for the model.
        patch_size: ``p`` or ``(ph, pw)``, the ViT's patch.
        threshold: ``tau`` (a float or a scalar tensor, e.g. from
            :func:`calibrate_threshold`). The released code runs ``tau = 0.5``.
        anchor_fraction: anchors per image as a fraction of ``L`` (:func:`num_anchors`).
        anchors: optional ``(B, K)`` int64 anchors to use instead of drawing them.
        generator: random source for the anchors.
        eps: flat-patch threshold on the pixel standard deviation.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for :func:`cluster_scores`.

    Returns:
        :class:`ClusterMask` ``(masked, scores, anchors)``.
    """
    images = check_images(images)
    gh, gw = grid_size((images.shape[2], images.shape[3]), pair("patch_size", patch_size))
    if anchors is None:
        k = num_anchors(gh * gw, anchor_fraction)
        anchors = sample_anchors(
            images.shape[0], gh * gw, k, generator=generator, device=images.device
        )
    threshold = _check_threshold(threshold)
    scores = cluster_scores(images, anchors, patch_size, eps=eps, backend=backend)
    return ClusterMask(scores > threshold, scores, anchors)


def _check_threshold(threshold: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() != 1:
            raise ValueError(f"threshold must be a scalar, got shape {tuple(threshold.shape)}")
        if threshold.is_complex():
            raise TypeError(f"threshold must be a real scalar, got dtype {threshold.dtype}")
        # Read the value on the CPU only (on a GPU it would synchronise), eagerly.
        if (
            threshold.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and bool(torch.isnan(threshold))
        ):
            raise ValueError("threshold must not be NaN, got a NaN tensor")
        return threshold.reshape(())
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a float or a scalar tensor, got {type(threshold)}")
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    return float(threshold)


class KeptTokens(NamedTuple):
    """Result of :func:`select_kept_tokens`."""

    keep_idx: torch.Tensor
    """``(B, Lk)`` int64 patch indices: visible patches first, then fillers."""
    key_padding_mask: torch.Tensor
    """``(B, Lk)`` bool, ``True`` = filler (a masked patch that only pads the row)."""
    ratio: torch.Tensor
    """``(B,)`` float32 realised mask ratio ``1 - (visible kept) / L`` (fillers count masked)."""


def select_kept_tokens(
    masked: torch.Tensor,
    *,
    min_ratio: float = 0.3,
    length: KeptLength = "static",
    generator: torch.Generator | None = None,
) -> KeptTokens:
    """Choose the token slots every image keeps, given its cluster mask.

    Each image gets ``Lk`` slots. With ``length="static"``, ``Lk = max_kept(L, min_ratio)``
    (137 of 196 at the default floor): a shape known in advance, no host sync. With
    ``length="batch_max"``, ``Lk = min(max_kept, max_b visible_b)`` as in the released
    code (one host sync; fewer fillers). An image with more visible patches than slots
    keeps a uniformly random subset of them (the floor on the mask ratio); one with
    fewer fills the rest with uniformly random masked patches, flagged in
    ``key_padding_mask`` so the encoder can ignore them. Sort key per patch:
    ``U(0, 1) + 2 * masked``.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1 (minimum mask ratio); the random choice among visible patches
    fixes the released code's sort-tie order.

    Args:
        masked: ``(B, L)`` bool cluster mask (``True`` = masked).
        min_ratio: floor on every image's mask ratio, in ``[0, 1)``.
        length: ``"static"`` or ``"batch_max"``.
        generator: random source for the choice of slots.

    Returns:
        :class:`KeptTokens` ``(keep_idx, key_padding_mask, ratio)``; ``ratio`` lies in
        ``[1 - Lk / L, 1]``.
    """
    check_bool_mask("masked", masked, ("B", "L"))
    num_patches = masked.shape[1]
    if masked.numel() == 0:
        raise ValueError(f"masked must not be empty, got shape {tuple(masked.shape)}")
    cap = max_kept(num_patches, min_ratio)
    if length == "static":
        kept = cap
    elif length == "batch_max":
        kept = max(1, min(cap, int((~masked).sum(dim=1).max())))
    else:
        raise ValueError(f"length must be 'static' or 'batch_max', got {length!r}")
    key = uniform(masked.shape, generator=generator, device=masked.device) + 2 * masked
    keep = key.topk(kept, dim=1, largest=False, sorted=True).indices
    pad = masked.gather(1, keep)
    ratio = 1.0 - (~pad).sum(dim=1, dtype=torch.float32) / num_patches
    return KeptTokens(keep, pad, ratio)


def realised_ratio(
    scores: torch.Tensor, threshold: float | torch.Tensor, *, min_ratio: float = 0.3
) -> torch.Tensor:
    """The per-image mask ratio :func:`select_kept_tokens` reports at ``threshold``.

    ``1 - min(visible_b, max_kept(L, min_ratio)) / L`` with ``visible_b`` the patches
    :func:`cluster_mask` leaves visible (``not scores > threshold``: a NaN score counts as
    visible, like the ``-inf`` of a flat patch); the same in both ``length`` modes, and no
    random draw.

    Args:
        scores: ``(B, L)`` floating scores from :func:`cluster_scores`.
        threshold: ``tau``.
        min_ratio: the floor.

    Returns:
        ``(B,)`` float32.
    """
    check_shape("scores", scores, ("B", "L"))
    check_floating("scores", scores)
    cap = max_kept(scores.shape[1], min_ratio)
    visible = (~(scores > _check_threshold(threshold))).sum(dim=1).clamp(max=cap)
    return 1.0 - visible.to(torch.float32) / scores.shape[1]


class Calibration(NamedTuple):
    """Result of :func:`calibrate_threshold`."""

    threshold: torch.Tensor
    """0-d float32 ``tau`` in ``[-1, 1]``, on the scores' device."""
    mean_ratio: torch.Tensor
    """0-d float32 batch-mean realised ratio at ``threshold``."""


def calibrate_threshold(
    scores: torch.Tensor, target_ratio: float = 0.5, *, min_ratio: float = 0.3
) -> Calibration:
    """The threshold whose batch-mean realised mask ratio is closest to ``target_ratio``.

    The mean ratio is a non-increasing step function of ``tau`` that changes only at
    score values, so the candidates are ``-1``, ``1`` and the midpoints between
    consecutive sorted scores (the lower score where no float lies between them); a
    binary search over them (``ceil(log2(B * L + 2))`` vectorised steps, on the scores'
    device, no host sync) returns the best one. The result is exact for this batch: no
    ``tau`` gets closer. Calibrate once on a batch and keep ``tau`` fixed, as the paper
    intends. A NaN score counts as ``-inf`` (a flat patch: never masked), as in
    :func:`cluster_mask` and :func:`realised_ratio`. When flat patches make the target
    unreachable the result is ``tau = -1`` (mask every other patch); :class:`ClusterMasking`
    refuses to keep such a threshold.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024 (threshold set for a target average mask ratio).

    Args:
        scores: ``(B, L)`` floating scores from :func:`cluster_scores`.
        target_ratio: wanted batch-mean ratio, in ``[1 - max_kept(L, min_ratio) / L, 1]``.
        min_ratio: the floor on each image's ratio.

    Returns:
        :class:`Calibration` ``(threshold, mean_ratio)``.

    Raises:
        ValueError: when ``target_ratio`` is below the floor's ratio or above 1.
    """
    check_shape("scores", scores, ("B", "L"))
    check_floating("scores", scores)
    if scores.numel() == 0:
        raise ValueError(f"scores must not be empty, got shape {tuple(scores.shape)}")
    cap = max_kept(scores.shape[1], min_ratio)
    floor = 1.0 - cap / scores.shape[1]
    check_float("target_ratio", target_ratio)
    if not floor - 1e-12 <= target_ratio <= 1.0:
        raise ValueError(
            f"target_ratio must lie in [{floor:.6f}, 1] (the floor 1 - {cap}/{scores.shape[1]} "
            f"set by min_ratio={min_ratio}), got {target_ratio}"
        )
    s = scores.detach().to(torch.float32)
    s = torch.where(torch.isnan(s), torch.full((), float("-inf"), device=s.device), s)
    values = s.flatten().clamp(-1.0, 1.0).sort().values
    # torch.full, not torch.tensor([...], device=...): a tensor built from host data on
    # CUDA is a synchronising copy.
    low, high = (torch.full((1,), v, device=s.device) for v in (-1.0, 1.0))
    # Between two neighbouring floats the midpoint rounds to one of them: keep the lower
    # one then, else the two scores would fall on the same side of every candidate.
    mid = 0.5 * (values[1:] + values[:-1])
    mid = torch.where(mid < values[1:], mid, values[:-1])
    candidates = torch.cat([low, mid, high])
    n = candidates.numel()
    width = s.shape[1]

    def mean_ratio(index: torch.Tensor) -> torch.Tensor:  # (N,) candidate indices -> (N,)
        tau = candidates[index].view(-1, 1, 1)  # a tensor index: no host sync
        visible = (s <= tau).sum(dim=-1).clamp(max=cap)
        return 1.0 - visible.to(torch.float32).mean(dim=-1) / width

    # Smallest index whose ratio is <= target (n if none): f is non-increasing.
    lo = torch.zeros((), dtype=torch.int64, device=s.device)
    hi = torch.full((), n, dtype=torch.int64, device=s.device)
    for _ in range(math.ceil(math.log2(n + 1))):
        mid = (lo + hi) // 2
        above = mean_ratio(mid.clamp(max=n - 1).view(1))[0] > target_ratio
        active = lo < hi
        lo = torch.where(active & above, mid + 1, lo)
        hi = torch.where(active & ~above, mid, hi)
    pair = torch.stack([lo - 1, lo]).clamp(0, n - 1)
    ratios = mean_ratio(pair)
    best = (ratios - target_ratio).abs().argmin().view(1)
    return Calibration(candidates[pair[best]][0], ratios[best][0])


class ClusterMasking(nn.Module):
    """Cluster masking as a ``mask_fn``: ``images -> (keep_idx, key_padding_mask)``.

    In training mode each call draws anchors, scores the patches (:func:`cluster_scores`),
    masks those above the threshold and picks the kept slots (:func:`select_kept_tokens`);
    in eval mode it masks nothing (every patch kept, no fillers). Plug it into
    :class:`vlp.adapters.MaskedImageEncoder` (``mask_fn=ClusterMasking(16)``), or call
    :meth:`mask_tokens` on your own tokens.

    Without an explicit ``threshold``, the first training batch calibrates it
    (:func:`calibrate_threshold`) to ``target_ratio`` and it stays fixed (a buffer, saved
    in the state dict); ``calibrate="every_batch"`` recalibrates on every batch instead.
    The realised ratios of the last call are in :attr:`last_ratio`.

    A calibration batch that cannot reach ``target_ratio`` because too many of its patches
    are flat or non-finite (an all-zero or NaN batch) would give ``tau = -1``, which masks
    every later image completely: the first call then raises ``ValueError`` and the
    threshold stays uncalibrated (the next call tries again). ``calibrate="every_batch"``
    uses such a ``tau`` for that batch only.

    ``state_dict()`` holds the threshold, the epoch and the generator's state (when a
    ``generator`` is given), all tensors (safetensors can store them), so a resumed run
    draws the same masks as an uninterrupted one; a ``load_state_dict`` that fails leaves
    the module unchanged.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024 (defaults: 3% anchors, target ratio 0.5, floor 0.3).

    Args:
        patch_size: the ViT's patch, ``p`` or ``(ph, pw)``.
        anchor_fraction: anchors per image as a fraction of the patches.
        target_ratio: batch-mean mask ratio the calibration aims for.
        min_ratio: floor on every image's mask ratio.
        threshold: fixed ``tau`` (skips calibration); ``0.5`` is what the released code
            runs.
        calibrate: ``"once"`` or ``"every_batch"`` (ignored with a fixed ``threshold``).
        length: ``"static"`` (no host sync) or ``"batch_max"`` (the released code's
            sequence length), see :func:`select_kept_tokens`.
        eps: flat-patch threshold on the pixel standard deviation.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for :func:`cluster_scores`.
        generator: random source for anchors and slots (on the images' device for a
            sync-free step).
        features: ``"rgb"`` (default, the paper) or ``"embedding_rgb"``, the embedding +
            RGB ablation: it needs the patch token embeddings (``forward(images,
            embeddings)``, :meth:`mask_tokens` passes its tokens, and
            :class:`vlp.adapters.MaskedImageEncoder` computes them) and mixes them in with
            the weight ``min(epoch / embed_ramp_epochs, 1)``; call :meth:`set_epoch` at
            every epoch. The Triton ``backend`` serves ``"rgb"`` only.
        embed_ramp_epochs: epochs over which the embedding weight grows to 1 (32 in the
            release).
    """

    threshold: torch.Tensor

    def __init__(
        self,
        patch_size: int | tuple[int, int],
        *,
        anchor_fraction: float = 0.03,
        target_ratio: float = 0.5,
        min_ratio: float = 0.3,
        threshold: float | None = None,
        calibrate: Literal["once", "every_batch"] = "once",
        length: KeptLength = "static",
        eps: float = 1e-6,
        backend: Backend = "auto",
        generator: torch.Generator | None = None,
        features: ClusterFeatures = "rgb",
        embed_ramp_epochs: float = 32.0,
    ) -> None:
        super().__init__()
        self.patch_size = pair("patch_size", patch_size)
        if features not in ("rgb", "embedding_rgb"):
            raise ValueError(f"features must be 'rgb' or 'embedding_rgb', got {features!r}")
        self.features: ClusterFeatures = features
        self.embed_ramp_epochs = embed_ramp_epochs
        embedding_weight(0.0, embed_ramp_epochs)  # validates embed_ramp_epochs
        #: Current epoch, set by :meth:`set_epoch` (only the ``"embedding_rgb"`` weight reads it).
        self.epoch = 0.0
        check_probability("anchor_fraction", anchor_fraction, low_inclusive=False)
        check_probability("min_ratio", min_ratio)
        check_probability("target_ratio", target_ratio, high_inclusive=True)
        if target_ratio < min_ratio:
            raise ValueError(f"target_ratio must be >= min_ratio ({min_ratio}), got {target_ratio}")
        if calibrate not in ("once", "every_batch"):
            raise ValueError(f"calibrate must be 'once' or 'every_batch', got {calibrate!r}")
        if length not in ("static", "batch_max"):
            raise ValueError(f"length must be 'static' or 'batch_max', got {length!r}")
        check_positive("eps", eps)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        self.anchor_fraction = anchor_fraction
        self.target_ratio = target_ratio
        self.min_ratio = min_ratio
        self.fixed = threshold is not None
        self.calibrate = calibrate
        self.length: KeptLength = length
        self.eps = eps
        self.backend: Backend = backend
        self.generator = generator
        value = float("nan") if threshold is None else float(_check_threshold(threshold))
        self.register_buffer("threshold", torch.tensor(value, dtype=torch.float32))
        self._calibrated = threshold is not None
        self.last_ratio: torch.Tensor | None = None

    def _tau(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.fixed and self.calibrate == "every_batch":
            tau = calibrate_threshold(scores, self.target_ratio, min_ratio=self.min_ratio)
            self.threshold.copy_(tau.threshold)
        elif not self._calibrated:
            if torch.compiler.is_compiling():
                raise RuntimeError(
                    "ClusterMasking calibrates its threshold on the first training batch, "
                    "which reads tensor values on the host: run that first call eagerly (or "
                    "pass threshold=, or load a calibrated state dict) before torch.compile"
                )
            # One host sync, on the first call only (a loaded state dict may hold tau).
            if bool(torch.isnan(self.threshold)):
                if scores.is_meta:
                    raise ValueError(
                        "images must hold values to calibrate the threshold (got a meta "
                        "tensor); pass a fixed threshold or a calibrated state"
                    )
                tau = calibrate_threshold(scores, self.target_ratio, min_ratio=self.min_ratio)
                self._check_calibration(scores, tau)
                self.threshold.copy_(tau.threshold)
            self._calibrated = True
        return self.threshold

    def _check_calibration(self, scores: torch.Tensor, tau: Calibration) -> None:
        """Refuse to keep ``tau = -1`` (every non-flat patch masked, forever)."""
        if self.target_ratio >= 1.0 or float(tau.threshold) > -1.0:
            return
        invalid = float((~torch.isfinite(scores)).float().mean())
        raise ValueError(
            f"ClusterMasking cannot calibrate its threshold on this batch: {invalid:.0%} of "
            f"its patches are flat or hold NaN/inf pixels (such patches are never masked), "
            f"so only tau = -1 comes near target_ratio={self.target_ratio} (mean ratio "
            f"{float(tau.mean_ratio):.3f}), and a stored tau = -1 would mask every later "
            "image completely. Call it first on a batch of real images (the threshold stays "
            "uncalibrated until a call succeeds), or pass a fixed threshold (the released "
            "code runs threshold=0.5)."
        )

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        # Tensors only, so that safetensors can store the state dict.
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "epoch"] = torch.tensor(self.epoch, dtype=torch.float64)
        if self.generator is not None:
            destination[prefix + "generator_state"] = self.generator.get_state()

    def _check_loaded_epoch(self, value: object) -> float | None:
        if value is None:
            return None
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.is_complex():
            raise ValueError(
                f"ClusterMasking epoch must be a real scalar tensor, got {value!r:.60}"
            )
        epoch = float(value)
        embedding_weight(epoch, self.embed_ramp_epochs)  # validates it (finite, >= 0)
        return epoch

    def _check_loaded_generator_state(self, value: object) -> torch.Tensor | None:
        if value is None or self.generator is None:
            return None
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
            raise TypeError(
                f"ClusterMasking generator_state must be a torch.uint8 tensor, got {value!r:.60}"
            )
        # Try it on a scratch generator first, so that a bad state changes nothing.
        probe = torch.Generator(device=self.generator.device)
        try:
            probe.set_state(value)
        except RuntimeError as err:
            raise ValueError(f"ClusterMasking generator_state is invalid: {err}") from err
        return value

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # All or nothing: check every entry of this module before copying any.
        key = prefix + "threshold"
        if key in state_dict:
            value = state_dict[key]
            if not isinstance(value, torch.Tensor) or value.shape != self.threshold.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                error_msgs.append(f"{key} must be a 0-d tensor, got {shape}")
                return
            if self.fixed and bool(torch.isnan(value)):
                error_msgs.append(f"{key} is NaN but this ClusterMasking has a fixed threshold")
                return
        epoch_key, gen_key = prefix + "epoch", prefix + "generator_state"
        try:
            epoch = self._check_loaded_epoch(state_dict.get(epoch_key))
            gen_state = self._check_loaded_generator_state(state_dict.get(gen_key))
        except (TypeError, ValueError) as err:
            error_msgs.append(str(err))
            return
        errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if len(error_msgs) > errors:
            return
        # Not buffers: torch calls them unexpected. State dicts without them (older ones)
        # load and leave the epoch and the generator as they are.
        for extra in (epoch_key, gen_key):
            if extra in unexpected_keys:
                unexpected_keys.remove(extra)
        if epoch is not None:
            self.epoch = epoch
        if gen_state is not None and self.generator is not None:
            self.generator.set_state(gen_state)
        # A loaded NaN means "not calibrated yet"; anything else is kept as is. Read here,
        # eagerly, so that a compiled forward never reads the threshold's value.
        self._calibrated = self.fixed or not bool(torch.isnan(self.threshold))

    @property
    def needs_embeddings(self) -> bool:
        """Whether :meth:`forward` needs the patch token embeddings (``"embedding_rgb"``)."""
        return self.features == "embedding_rgb"

    @property
    def embed_weight(self) -> float:
        """The weight ``w`` of the embedding similarity at the current epoch (0 for ``"rgb"``)."""
        if self.features == "rgb":
            return 0.0
        return embedding_weight(self.epoch, self.embed_ramp_epochs)

    def set_epoch(self, epoch: float) -> None:
        """Set the epoch that the ``"embedding_rgb"`` weight ``min(epoch / 32, 1)`` reads."""
        embedding_weight(epoch, self.embed_ramp_epochs)  # validates epoch
        self.epoch = float(epoch)

    def forward(
        self, images: torch.Tensor, embeddings: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept patch indices and filler mask for ``images``.

        Args:
            images: ``(B, C, H, W)`` floating images, normalised for the model.
            embeddings: ``(B, L, D)`` patch token embeddings (patch projection plus
                positional embedding, no prefix tokens); required with
                ``features="embedding_rgb"``, ignored otherwise.

        Returns:
            ``(keep_idx (B, Lk) int64, key_padding_mask (B, Lk) bool)``; in eval mode
            ``Lk = L``, ``keep_idx = arange(L)`` and no fillers.
        """
        images = check_images(images)
        batch = images.shape[0]
        gh, gw = grid_size((images.shape[2], images.shape[3]), self.patch_size)
        num_patches = gh * gw
        if not self.training:
            keep = torch.arange(num_patches, device=images.device).expand(batch, -1)
            pad = torch.zeros(batch, num_patches, dtype=torch.bool, device=images.device)
            self.last_ratio = torch.zeros(batch, device=images.device)
            return keep, pad
        anchors = sample_anchors(
            batch,
            num_patches,
            num_anchors(num_patches, self.anchor_fraction),
            generator=self.generator,
            device=images.device,
        )
        if self.features == "embedding_rgb":
            if embeddings is None:
                raise ValueError(
                    "features='embedding_rgb' needs the patch token embeddings: call "
                    "forward(images, embeddings) or mask_tokens(tokens, images)"
                )
            scores = embedding_rgb_scores(
                images, embeddings, anchors, self.patch_size, embed_weight=self.embed_weight
            )
        else:
            scores = cluster_scores(
                images, anchors, self.patch_size, eps=self.eps, backend=self.backend
            )
        masked = scores > self._tau(scores)
        kept = select_kept_tokens(
            masked, min_ratio=self.min_ratio, length=self.length, generator=self.generator
        )
        self.last_ratio = kept.ratio
        return kept.keep_idx, kept.key_padding_mask

    def mask_tokens(
        self, tokens: torch.Tensor, images: torch.Tensor, *, num_prefix_tokens: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Keep the selected tokens of your own ViT (training) or pass them through (eval).

        Args:
            tokens: ``(B, N + L, D)`` tokens after patch and positional embedding, the
                first ``num_prefix_tokens = N`` (CLS, registers) always kept.
            images: ``(B, C, H, W)`` the images the tokens came from.
            num_prefix_tokens: ``N``.

        Returns:
            ``(kept (B, N + Lk, D), key_padding_mask (B, N + Lk) bool)`` in training
            mode (prefix never padded); ``(tokens, None)``, unchanged, in eval mode.
        """
        if not self.training:
            return tokens, None
        embeddings = tokens[:, num_prefix_tokens:] if self.needs_embeddings else None
        keep, pad = self(images, embeddings)
        kept = gather_tokens(tokens, keep, num_prefix_tokens=num_prefix_tokens)
        prefix = torch.zeros(pad.shape[0], num_prefix_tokens, dtype=torch.bool, device=pad.device)
        return kept, torch.cat([prefix, pad], dim=1)

    def extra_repr(self) -> str:
        """Summarise the configuration."""
        tau = f"threshold={float(self.threshold):.4f}" if self._calibrated else "threshold=auto"
        return (
            f"patch_size={self.patch_size}, anchor_fraction={self.anchor_fraction}, "
            f"target_ratio={self.target_ratio}, min_ratio={self.min_ratio}, {tau}, "
            f"length={self.length!r}"
            + (f", features={self.features!r}" if self.features != "rgb" else "")
        )
