"""Product work the fused contrastive kernels issue, counted under the interpreter.

Units of G = 2 N M D, one logits product. A flash-style InfoNCE issues 1 G forward and
1 G recompute + 2 G gradient products backward (4 G); SigLIP computes its gradient in
the forward pass, 1 G + 2 G (3 G). Features are walked in blocks of 16 or more, so the
issued work is exactly that of D rounded up to a multiple of 16 (pinned below, for D
values the tiles were not tuned for too): at most 4.5 G / 3.5 G whenever that rounding
adds at most 12.5% / 16.7%, which holds for every D from 64 to 1024 except the few listed
in ``ROUNDING_EXCEEDS`` (documented in docs/kernels.md).
"""

from __future__ import annotations

import pytest
import torch

from tests._device import ON_CUDA
from tests._dot_counter import count_dots
from vlp.kernels.contrastive import tiled_logsumexp, tiled_sigmoid_loss
from vlp.testing import triton_runnable

pytestmark = pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")


def _interp() -> bool:
    # With VLP_TEST_DEVICE=cuda the compiled kernels run: there is no interpreter dot to
    # count (the GPU issues the same products; benchmarks/compile_report.py shows them).
    from vlp.kernels import interpreter_active

    return interpreter_active() and not ON_CUDA


def padded(d: int) -> int:
    return -(-d // 16) * 16


def issued(fn, n: int, m: int, d: int, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g).requires_grad_()
    b = torch.randn(m, d, generator=g).requires_grad_()
    with count_dots() as work:
        fn(a, b).backward()
    return work.flops / (2 * n * m * d)


def clip(a, b):
    return tiled_logsumexp(a, b, 3.0, 0.2, row_weight=0.5, col_weight=0.5, backend="triton")


def siglip(a, b):
    return tiled_sigmoid_loss(a, b, 3.0, -2.0, backend="triton")


# Tuned on 64, 128, 512, 768, 1024; the rest were picked to sit between tile sizes.
D_VALUES = [64, 96, 100, 128, 130, 200, 333, 512, 600, 768, 1000, 1024]

#: D in [64, 1024] whose rounding up to 16 pushes the issued work over the bound.
ROUNDING_EXCEEDS = {
    "clip": [d for d in range(64, 1025) if 4 * padded(d) / d > 4.5],
    "siglip": [d for d in range(64, 1025) if 3 * padded(d) / d > 3.5],
}


@pytest.mark.skipif(not _interp(), reason="counts the interpreter's tl.dot")
@pytest.mark.parametrize("d", D_VALUES)
def test_clip_forward_backward_issues_4g(d):
    work = issued(clip, 64, 64, d)
    assert work == pytest.approx(4 * padded(d) / d, rel=1e-12)
    assert work <= 4.5


@pytest.mark.skipif(not _interp(), reason="counts the interpreter's tl.dot")
@pytest.mark.parametrize("d", D_VALUES)
def test_siglip_forward_backward_issues_3g(d):
    work = issued(siglip, 64, 64, d)
    assert work == pytest.approx(3 * padded(d) / d, rel=1e-12)
    assert work <= 3.5


@pytest.mark.skipif(not _interp(), reason="counts the interpreter's tl.dot")
def test_small_local_batch_against_large_gathered_batch():
    # 32 rows against 256 columns: the grid splits the columns (4 splits under the
    # interpreter's 4 pretend SMs) and the work stays 4 G / 3 G.
    def local_clip(a, b):
        return tiled_logsumexp(a, b, 3.0, 0.2, row_weight=1.0, backend="triton")

    assert issued(local_clip, 32, 256, 48) == pytest.approx(4.0)
    assert issued(siglip, 32, 256, 48) == pytest.approx(3.0)


@pytest.mark.skipif(not _interp(), reason="counts the interpreter's tl.dot")
def test_siglip_without_grad_issues_one_product():
    a, b = torch.randn(64, 128), torch.randn(64, 128)
    with count_dots() as work:
        siglip(a, b)
    assert work.flops == 2 * 64 * 64 * 128


def test_rounding_exceptions_are_the_documented_ones():
    # The D values whose 16-rounding exceeds the bound are few, all below 128, and
    # docs/kernels.md lists them; this pins the list.
    clip_exceeds = [*range(65, 72), *range(81, 86), 97, 98, 99, 113]
    assert ROUNDING_EXCEEDS["clip"] == clip_exceeds
    assert ROUNDING_EXCEEDS["siglip"] == [65, 66, 67, 68, 81, 82]
