"""Fused cluster-scores kernel vs the torch reference (interpreter on CPU, spec A10.12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests._device import DEVICE
from vlp.kernels.cluster_scores import cluster_scores, cluster_scores_reference
from vlp.masking import ClusterMasking, sample_anchors
from vlp.testing import assert_close, triton_runnable

pytestmark = pytest.mark.skipif(not triton_runnable(), reason="needs Triton (interpreter or GPU)")


def _images(batch: int, h: int, w: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Smooth noise (neighbouring patches correlate) with a mean offset, as photographs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, h + 4, w + 4, generator=g, dtype=torch.float64)
    return (F.avg_pool2d(x, 5, 1)[..., :h, :w] * 3 + 0.8).to(dtype)


def _grid(h: int, w: int, patch) -> int:
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    return (h // ph) * (w // pw)


def _check(images: torch.Tensor, anchors: torch.Tensor, patch, atol: float = 1e-5) -> None:
    """The kernel on the test device (same strides) vs the float64 CPU reference."""
    on_device = images.to(DEVICE) if DEVICE.type != "cpu" else images
    out = cluster_scores(on_device, anchors.to(DEVICE), patch, backend="triton").cpu()
    ref = cluster_scores_reference(images.cpu().to(torch.float64), anchors.cpu(), patch)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.equal(torch.isinf(out), torch.isinf(ref))
    finite = torch.isfinite(ref)
    assert_close(out[finite], ref[finite].float(), rtol=0, atol=atol)
    for tau in (-0.2, 0.3, 0.68):
        near = (ref - tau).abs() < 1e-5
        agree = (out > tau) == (ref > tau)
        assert bool((agree | near).all()), f"masks differ away from tau={tau}"


@pytest.mark.parametrize(
    ("batch", "h", "w", "patch", "k"),
    [
        (1, 224, 224, 16, 6),  # ViT-B/16: L = 196
        (1, 224, 224, 14, 8),  # ViT-L/14: L = 256, 196 values per channel (padded chunk)
        (1, 224, 224, 32, 2),  # ViT-B/32: L = 49, 4 chunks per channel
        (2, 48, 80, 16, 3),  # non-square image
        (2, 70, 56, 14, 17),  # non-square, K padded to 32
        (3, 30, 20, (6, 5), 1),  # non-square patch, one anchor
        (2, 12, 12, (2, 3), 4),  # patch of 6 values, chunk padded to 16
    ],
)
def test_triton_matches_torch(batch: int, h: int, w: int, patch, k: int) -> None:
    images = _images(batch, h, w, seed=h + w + k)
    num = _grid(h, w, patch)
    anchors = sample_anchors(batch, num, k, generator=torch.Generator().manual_seed(k))
    _check(images, anchors, patch)


def test_flat_patches_and_flat_anchors() -> None:
    images = _images(2, 32, 48, seed=1)
    images[0, :, :8, :8] = 0.4  # patch 0 flat
    images[0, :, 8:16, 16:24] = -2.0  # patch 8 flat
    images[1] = 1.5  # every patch of image 1 flat
    anchors = torch.tensor([[0, 8, 3], [0, 5, 23]])
    out = cluster_scores(images.to(DEVICE), anchors.to(DEVICE), 8, backend="triton").cpu()
    assert out[0, 0] == float("-inf") and out[0, 8] == float("-inf")
    assert bool((out[1] == float("-inf")).all())
    _check(images, anchors, 8)
    only_flat = cluster_scores(images.to(DEVICE), anchors[:, :2].to(DEVICE), 8, backend="triton")
    assert bool((only_flat == float("-inf")).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtypes_accumulate_in_fp32(dtype: torch.dtype) -> None:
    images = _images(2, 32, 32, seed=2, dtype=dtype)
    anchors = sample_anchors(2, 16, 3, generator=torch.Generator().manual_seed(0))
    _check(images, anchors, 8)  # the reference sees the same (rounded) values in float64


def test_strided_inputs_are_read_in_place() -> None:
    images = _images(2, 40, 48, seed=3)
    anchors = sample_anchors(2, 30, 4, generator=torch.Generator().manual_seed(1))
    _check(images.to(memory_format=torch.channels_last), anchors, 8)
    wide = _images(2, 40, 64, seed=4)[..., 8:56]  # a view: row stride 64
    assert not wide.is_contiguous()
    _check(wide, anchors, 8)


def test_module_masks_agree_across_backends() -> None:
    images = _images(4, 32, 32, seed=5).to(DEVICE)
    keeps = [
        ClusterMasking(
            8, threshold=0.3, backend=b, generator=torch.Generator().manual_seed(2)
        ).train()(images)
        for b in ("torch", "triton")
    ]
    assert torch.equal(keeps[0][0], keeps[1][0]) and torch.equal(keeps[0][1], keeps[1][1])


def test_anchors_score_exactly_one() -> None:
    """Spec A10.4 holds for every tau < 1, even one rounding step below it."""
    images = _images(4, 64, 96, seed=6)
    anchors = sample_anchors(4, 96, 5, generator=torch.Generator().manual_seed(3))
    for backend in ("torch", "triton"):
        scores = cluster_scores(images.to(DEVICE), anchors.to(DEVICE), 8, backend=backend)
        assert bool((scores.cpu().gather(1, anchors) == 1.0).all()), backend


def test_out_of_range_anchors_are_ignored_on_the_device() -> None:
    """On CUDA the range is not checked on the host: both paths then ignore such anchors.

    Called below the public check (which raises for CPU tensors): an anchor index outside
    ``[0, L)`` must neither be read nor form a cluster; the scores equal those of the
    in-range anchors alone, on the kernel and on the torch path.
    """
    from vlp.kernels.cluster_scores import _cluster_scores_triton, _reference

    images = _images(2, 32, 32, seed=8)  # L = 16
    anchors = torch.tensor([[3, 16, 7, -1], [1000, 2, 2**40, 5]])
    inside = torch.tensor([[3, 7], [2, 5]])
    want = _reference(images.double(), inside, (8, 8), 1e-6)
    got_torch = _reference(images.double(), anchors, (8, 8), 1e-6)
    assert_close(got_torch, want, rtol=0, atol=1e-12)
    got = _cluster_scores_triton(images.to(DEVICE), anchors.to(DEVICE), (8, 8), (4, 4), 1e-6)
    assert_close(got.cpu(), want.float(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"anchors must lie in \[0, 16\)"):
        cluster_scores(images, anchors, 8)


def test_vectorised_lanes_cover_odd_patch_widths() -> None:
    """Rows of PW pixels walk next_pow2(PW) lanes; the masked lanes add nothing."""
    for patch in ((3, 5), (7, 7), (2, 9)):
        images = _images(2, 21, 45, seed=9)[..., : 21 // patch[0] * patch[0], :]
        images = images[..., : images.shape[-1] // patch[1] * patch[1]]
        num = _grid(images.shape[2], images.shape[3], patch)
        anchors = sample_anchors(2, num, 3, generator=torch.Generator().manual_seed(4))
        _check(images, anchors, patch)


def test_gpu_tiles_fit_in_shared_memory() -> None:
    """The interpreter has no shared memory: compile for a GPU offline and read the size.

    The software pipeline keeps ``num_stages`` copies of the patch and anchor chunks; with
    Triton's default 3 stages and 256-value chunks, ViT-L/14 at 336 px (K = 18, padded to
    32) needed 197 KB, more than an A100 has (163 KB), and ViT-B/16 147 KB (consumer GPUs
    have 99 KB). Every configuration now stays within 64 KiB.
    """
    from vlp.kernels.cluster_scores import _SHARED_BUDGET, _TILE_BUDGET, _launch_config

    for values in (6, 196, 256, 1024):
        for k in (*range(1, 65), 100, 128, 200, 256):
            cfg = _launch_config(values, 4096, k, interpreter=False)
            assert cfg.num_stages * (cfg.block + cfg.kp) * cfg.chunk * 4 <= _TILE_BUDGET
            assert min(cfg.block, cfg.chunk, cfg.kp) >= 16  # tl.dot tiles

    # Compiled in a fresh process: TRITON_INTERPRET=1 (set for this session) diverts the
    # compiler's frontend to the interpreter.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, check=True
    )
    shared = int(out.stdout.split()[-1])
    assert 0 < shared <= _SHARED_BUDGET


# ViT-L/14 at 336 px (K = 18) for an A100 (sm_80), offline: prints the shared memory.
_COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vlp.kernels import _cluster_scores_triton as kern
from vlp.kernels.cluster_scores import _launch_config
cfg = _launch_config(14 * 16, 576, 18, interpreter=False)
ints = ("s_b", "s_c", "s_h", "s_w", "s_ab", "s_ob", "C", "L", "GW", "PH", "PW", "K")
signature = {"img_ptr": "*fp32", "anc_ptr": "*i64", "out_ptr": "*fp32",
             **dict.fromkeys(ints, "i32"), "num": "fp32", "eps_norm": "fp32",
             **dict.fromkeys(("BL", "QC", "KP", "PWP"), "constexpr")}
source = ASTSource(fn=kern.cluster_scores_fwd, signature=signature,
                   constexprs={"BL": cfg.block, "QC": cfg.chunk, "KP": cfg.kp, "PWP": 16})
options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
print(triton.compile(source, target=GPUTarget("cuda", 80, 32), options=options).metadata.shared)
"""
