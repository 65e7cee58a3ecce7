"""ClusterMasking as the mask_fn of MaskedImageEncoder: filler invariance (spec A10.9, A10.11)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from adapters_models import make_clip, make_timm, single_thread  # noqa: F401  (autouse fixture)

from vlp.adapters import MaskedImageEncoder, open_clip_image_tokens, timm_vit_tokens
from vlp.masking import ClusterMasking, patch_dropout
from vlp.testing import assert_close


def _images(batch: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 40, 40, generator=g, dtype=torch.float64)
    return F.avg_pool2d(x, 9, 1)[..., :32, :32] * 3


def _masking(seed: int) -> ClusterMasking:
    # 32 px images, patch 8: L = 16, one anchor, 11 slots; a low threshold leaves fillers.
    return ClusterMasking(8, threshold=-0.2, generator=torch.Generator().manual_seed(seed))


def _hide(images: torch.Tensor, keep: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Replace the pixels of every patch the encoder does not see (masked or dropped)."""
    out = images.clone()
    g = torch.Generator().manual_seed(7)
    for b in range(images.shape[0]):
        seen = set(keep[b][~pad[b]].tolist())
        for j in range(16):
            if j not in seen:
                r, c = divmod(j, 4)
                out[b, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 5 * torch.randn(
                    3, 8, 8, generator=g, dtype=images.dtype
                )
    return out


@pytest.mark.parametrize("kind", ["open_clip", "timm"])
def test_pooled_embedding_ignores_masked_pixels(kind: str) -> None:
    model = (make_clip("tok") if kind == "open_clip" else make_timm()).double()
    images = _images()
    encoder = MaskedImageEncoder(model, mask_fn=_masking(seed=3)).train()
    masked_out = encoder(images)
    keep, pad = _masking(seed=3).train()(images)  # the same draw
    assert keep.shape == (4, 11) and bool(pad.any()) and not bool(pad.all())
    assert torch.equal(masked_out.mask, ~pad)
    hidden = _hide(images, keep, pad)
    assert float((hidden - images).abs().max()) > 1
    again = encoder(hidden, keep, pad)
    assert_close(again.pooled, masked_out.pooled, rtol=0, atol=1e-9)
    # eval mode: the full sequence, equal to the unmasked adapter
    full = encoder.eval()(images)
    if kind == "open_clip":
        expect = open_clip_image_tokens(model, images)
    else:
        expect = timm_vit_tokens(model, images)
    assert full.tokens.shape[1] == 16
    assert_close(full.pooled, expect.pooled, rtol=0, atol=1e-12)


def test_reference_filler_attention_leaks_masked_pixels() -> None:
    """The released code's +1 attention bias leaves fillers visible (spec A3.9): the
    invariance above is a real property, not an accident of the test."""
    model = make_clip("tok").double()
    images = _images()
    keep, pad = _masking(seed=3).train()(images)
    encoder = MaskedImageEncoder(model, filler_attention="reference").train()
    ref = encoder(images, keep, pad)
    leaked = encoder(_hide(images, keep, pad), keep, pad)
    rows = pad.any(dim=1)
    assert float((leaked.pooled[rows] - ref.pooled[rows]).detach().abs().max()) > 1e-3


def test_random_dropout_as_mask_fn() -> None:
    model = make_clip("tok").double()
    g = torch.Generator().manual_seed(0)
    encoder = MaskedImageEncoder(
        model, mask_fn=lambda x: (patch_dropout(x.shape[0], 16, 0.5, generator=g), None)
    ).train()
    out = encoder(_images())
    assert out.tokens.shape[1] == 8 and bool(out.mask.all())
