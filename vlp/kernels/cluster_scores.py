"""Cluster-masking scores: torch reference and fused Triton path.

``score[b, j] = max_k corr(patch[b, anchors[b, k]], patch[b, j])``: the largest Pearson
correlation between patch ``j``'s raw pixels and any anchor patch of the same image
(``-inf`` where patch ``j`` or every anchor is flat). Everything cluster masking needs
derives from it: the mask at threshold ``tau`` is ``score > tau``.

The torch path builds the centred, unit-norm features of all patches and multiplies
only the ``K`` anchor rows into them (``(B, K, L)``, never the ``L x L`` similarity of the
released code). The Triton path reads the NCHW image once, straight from its strides:
one program per block of patches of one image loads its anchor patches, centres and
normalises them, streams its patches in chunks of one channel's pixels, and
accumulates the anchor dot products and the row statistics in fp32. No patch copy, no
``(B, L, P)`` intermediate, no host sync.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vlp._checks import (
    check_positive,
    check_same_device,
    check_shape,
    check_tensor,
    values_readable,
)
from vlp._patches import centred_patches, check_images, grid_size, pair
from vlp.kernels._blocks import next_pow2
from vlp.kernels._dispatch import Backend, resolve_backend
from vlp.kernels._precision import device_guard

__all__ = ["cluster_scores", "cluster_scores_reference"]


def _validate(
    images: object, anchors: object, patch_size: int | tuple[int, int], eps: float
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
    images = check_images(images)
    anchors = check_tensor("anchors", anchors)
    ph, pw = pair("patch_size", patch_size)
    gh, gw = grid_size((images.shape[2], images.shape[3]), (ph, pw))
    check_shape("anchors", anchors, (images.shape[0], "K"))
    if anchors.dtype != torch.int64:
        raise TypeError(f"anchors must have dtype torch.int64, got {anchors.dtype}")
    check_same_device(("images", images), ("anchors", anchors))
    check_positive("eps", eps)
    if anchors.shape[1] == 0:
        raise ValueError(f"anchors must hold at least one anchor per image, got {anchors.shape}")
    # Range check on the CPU only: on CUDA it would synchronise the device.
    if values_readable(anchors):
        lo, hi = int(anchors.min()), int(anchors.max())
        if lo < 0 or hi >= gh * gw:
            raise ValueError(
                f"anchors must lie in [0, {gh * gw}) (the patch grid {gh}x{gw}), got values in "
                f"[{lo}, {hi}]"
            )
    return images, anchors, (ph, pw), (gh, gw)


def cluster_scores_reference(
    images: torch.Tensor,
    anchors: torch.Tensor,
    patch_size: int | tuple[int, int],
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Max correlation of every patch with the anchors, in plain torch.

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1 (patches within distance ``r`` of an anchor are masked).

    Args:
        images: ``(B, C, H, W)`` floating images, ``H``/``W`` multiples of the patch.
        anchors: ``(B, K)`` int64 anchor patch indices in ``[0, L)`` (row-major grid).
        patch_size: ``p`` or ``(ph, pw)``.
        eps: patches whose pixel standard deviation is ``<= eps`` are flat (never cluster).

    Returns:
        ``(B, L)`` float32 scores in ``[-1, 1]`` (float64 for float64 images); ``-inf`` for
        a flat patch, and for every patch when all of the image's anchors are flat.
    """
    images, anchors, patch, _ = _validate(images, anchors, patch_size, eps)
    return _reference(images, anchors, patch, eps)


def _reference(
    images: torch.Tensor, anchors: torch.Tensor, patch: tuple[int, int], eps: float
) -> torch.Tensor:
    x, norm, valid = centred_patches(images, patch, eps)  # (B, L, P), (B, L), (B, L)
    safe = torch.where(valid, norm, torch.ones_like(norm))
    # Out-of-range anchors (possible on CUDA, where the range is not checked on the host)
    # are ignored, as in the kernel: clamped for the gathers, then masked out.
    in_range = (anchors >= 0) & (anchors < x.shape[1])
    anchors = anchors.clamp(0, x.shape[1] - 1)
    index = anchors.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    rows = x.gather(1, index) / safe.gather(1, anchors).unsqueeze(-1)  # (B, K, P) unit anchors
    sim = torch.bmm(rows, x.transpose(1, 2)) / safe.unsqueeze(1)  # (B, K, L), never L x L
    ok = (valid.gather(1, anchors) & in_range).unsqueeze(-1) & valid.unsqueeze(1)
    # Rounding puts a self-correlation a hair off 1: clamp, so tau >= 1 masks nothing, and
    # set it to exactly 1, so every anchor is masked for every tau < 1.
    sim = sim.clamp(-1.0, 1.0).scatter(2, anchors.unsqueeze(-1), 1.0)
    return sim.masked_fill(~ok, float("-inf")).amax(dim=1)


#: Shared memory per program on a GPU, in bytes: 64 KiB fits every GPU Triton targets
#: (Turing's per-block limit, well under the 99 KiB of consumer Ampere/Ada and the
#: 163 KiB of the A100). A software pipeline would hold ``num_stages`` copies of the patch
#: and anchor chunks, ``(BL + KP) * QC`` fp32 values each; they get 3/4 of it.
_SHARED_BUDGET = 64 * 1024
_TILE_BUDGET = 48 * 1024
#: One stage: no software pipeline. The loop's loads feed elementwise centring before the
#: product, so a pipeline buys little here (each SM runs several programs of B * cdiv(L, BL)
#: to hide load latency) and costs registers: at 2 stages ptxas spilled 4 bytes for ViT-B/16
#: fp16 on sm_90 (72 registers), at 3 stages bf16 instead; 1 stage compiles without spills
#: for every dtype and both targets of the compile report, with fewer registers and more
#: vectorised loads (benchmarks/compile_report.py, ``--only cluster_scores``).
_NUM_STAGES = 1
_GPU_CHUNK = 32


class _LaunchConfig(NamedTuple):
    block: int  # BL, patches per program
    chunk: int  # QC, pixel values per loop step
    kp: int  # KP, anchors padded to a power of two >= 16
    num_warps: int
    num_stages: int


def _launch_config(
    patch_values: int, num_patches: int, num_anchors: int, *, interpreter: bool
) -> _LaunchConfig:
    """Tile sizes for ``patch_values = ph * pw`` values per channel, ``L`` patches, ``K``."""
    # The interpreter's cost is per program and per loop step: fewer, larger blocks.
    block = min(64 if interpreter else 32, max(16, next_pow2(num_patches)))
    kp = max(16, next_pow2(num_anchors))
    # On a GPU, 32 values per step: every loaded value carries a 64-bit address, and the
    # offline compile report (benchmarks/compile_report.py) found spills with larger
    # chunks (ViT-B/16 at 128 values: 224 bytes on sm_90 in bf16).
    chunk = min(256 if interpreter else _GPU_CHUNK, max(16, next_pow2(patch_values)))
    if not interpreter:
        while chunk > 16 and _NUM_STAGES * (block + kp) * chunk * 4 > _TILE_BUDGET:
            chunk //= 2
    warps = 4
    return _LaunchConfig(block, chunk, kp, warps, _NUM_STAGES)


def _cluster_scores_triton(
    images: torch.Tensor,
    anchors: torch.Tensor,
    patch: tuple[int, int],
    grid: tuple[int, int],
    eps: float,
) -> torch.Tensor:
    from vlp.kernels import _cluster_scores_triton as kern
    from vlp.kernels._dispatch import interpreter_active

    b, c = images.shape[:2]
    ph, pw = patch
    num_patches = grid[0] * grid[1]
    k = anchors.shape[1]
    anchors = anchors.contiguous()
    out = torch.empty((b, num_patches), dtype=torch.float32, device=images.device)
    pwp = next_pow2(pw)  # row lanes: contiguous runs the loads can vectorise
    cfg = _launch_config(ph * pwp, num_patches, k, interpreter=interpreter_active())
    launch = (b, -(-num_patches // cfg.block))
    with device_guard(images):
        kern.cluster_scores_fwd[launch](
            images, anchors, out,
            *images.stride(), anchors.stride(0), out.stride(0),
            c, num_patches, grid[1], ph, pw, k, float(c * ph * pw), eps * math.sqrt(c * ph * pw),
            BL=cfg.block, QC=cfg.chunk, KP=cfg.kp, PWP=pwp, num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )  # fmt: skip
    return out


def cluster_scores(
    images: torch.Tensor,
    anchors: torch.Tensor,
    patch_size: int | tuple[int, int],
    *,
    eps: float = 1e-6,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Max correlation of every patch with its image's anchor patches (fused on CUDA).

    ``score[b, j] = max_k <f[b, anchors[b, k]], f[b, j]>`` with ``f`` the centred,
    unit-norm pixel vectors of :func:`vlp.masking.patch_features` (Pearson correlation).
    Patch ``j`` is cluster-masked at threshold ``tau`` iff ``score[b, j] > tau``; a
    non-flat anchor scores exactly 1 (masked for every ``tau < 1``). Not differentiable
    (masking decisions carry no gradient).

    Paper: Wei et al., "Efficient Vision-Language Pre-training by Cluster Masking",
    CVPR 2024, Sec. 3.1.

    Args:
        images: ``(B, C, H, W)`` floating images (fp16/bf16/fp32/fp64, any strides),
            ``H``/``W`` multiples of the patch.
        anchors: ``(B, K)`` int64 anchor patch indices in ``[0, L)``, on the images' device.
            Out-of-range values raise ``ValueError`` for CPU tensors; on CUDA (checked on the
            device, no host sync) such an anchor is ignored: it forms no cluster.
        patch_size: ``p`` or ``(ph, pw)``.
        eps: patches whose pixel standard deviation is ``<= eps`` are flat: their score
            is ``-inf`` and, as anchors, they form no cluster.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`vlp.kernels.resolve_backend`).

    Returns:
        ``(B, L)`` scores: float32 (the torch path returns float64 for float64 images),
        in ``[-1, 1]`` or ``-inf``.
    """
    images, anchors, patch, grid = _validate(images, anchors, patch_size, eps)
    if resolve_backend(backend, images, anchors, op="cluster_scores") == "torch":
        with torch.no_grad():
            return _reference(images, anchors, patch, eps)
    # The registered op vlp::cluster_scores (vlp.kernels._ops).
    scores: torch.Tensor = torch.ops.vlp.cluster_scores(
        images.detach(), anchors, patch[0], patch[1], grid[0], grid[1], float(eps)
    )
    return scores
