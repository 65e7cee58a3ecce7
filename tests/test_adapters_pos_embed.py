"""COSMOS local-crop positional-embedding interpolation and its use with open_clip."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from adapters_models import (
    make_clip,
    single_thread,  # noqa: F401  (autouse fixture)
)
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from vlp.adapters import (
    interpolate_pos_embed,
    open_clip_image_tokens,
    open_clip_multi_crop_tokens,
    open_clip_pos_embed,
)
from vlp.testing import assert_close


def _spec_rule(pos: torch.Tensor, new_side: int) -> torch.Tensor:
    """COSMOS spec Sec. 4.1 / check-list item 7, written out directly (square grids)."""
    n = pos.shape[0] - 1
    side = math.sqrt(n)
    grid = pos[1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    w0 = new_side + 0.1
    out = F.interpolate(grid, scale_factor=(w0 / side, w0 / side), mode="bicubic")
    return torch.cat([pos[:1], out.permute(0, 2, 3, 1).reshape(-1, pos.shape[1])])


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _bicubic_axis(size_in: int, size_out: int, scale_factor: float) -> np.ndarray:
    """(size_out, size_in) resampling matrix: PyTorch's bicubic with a given scale factor
    (align_corners=False): source = (dst + 0.5) / scale_factor - 0.5, taps clamped."""
    mat = np.zeros((size_out, size_in))
    for dst in range(size_out):
        src = (dst + 0.5) / scale_factor - 0.5
        base = math.floor(src)
        for tap in range(-1, 3):
            idx = min(max(base + tap, 0), size_in - 1)
            mat[dst, idx] += _cubic(np.array(src - (base + tap)))
    return mat


def _numpy_rule(pos: np.ndarray, new_grid: tuple[int, int]) -> np.ndarray:
    side = int(math.sqrt(pos.shape[0] - 1))
    grid = pos[1:].reshape(side, side, -1)
    rows = _bicubic_axis(side, new_grid[0], (new_grid[0] + 0.1) / side)
    cols = _bicubic_axis(side, new_grid[1], (new_grid[1] + 0.1) / side)
    out = np.einsum("ri,ijc,sj->rsc", rows, grid, cols)
    return np.concatenate([pos[:1], out.reshape(-1, pos.shape[1])])


@pytest.mark.parametrize(
    ("old_side", "image", "patch"),
    [(14, 96, 16), (7, 96, 32), (4, 16, 8), (4, 48, 8), (5, 24, 8)],
)
def test_reference_rule_matches_the_spec_and_a_numpy_bicubic(
    old_side: int, image: int, patch: int
) -> None:
    g = torch.Generator().manual_seed(old_side)
    pos = torch.randn(1 + old_side**2, 6, generator=g, dtype=torch.float64)
    out = interpolate_pos_embed(pos, image, patch)
    new = image // patch
    assert out.shape == (1 + new * new, 6)
    assert_close(out, _spec_rule(pos, new), rtol=0, atol=1e-12)
    assert_close(out, torch.from_numpy(_numpy_rule(pos.numpy(), (new, new))), rtol=0, atol=1e-6)
    assert torch.equal(out[0], pos[0])  # the CLS row is kept


def test_reference_rule_differs_from_size_rule() -> None:
    """Spec Sec. 11.5: same 6x6 shape, different values (scale factor vs size)."""
    pos = torch.randn(197, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = interpolate_pos_embed(pos, 96, 16)
    size = interpolate_pos_embed(pos, 96, 16, rule="size")
    grid = pos[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    direct = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    assert_close(size[1:], direct.permute(0, 2, 3, 1).reshape(36, 8), rtol=0, atol=0)
    assert ref.shape == size.shape
    assert float((ref - size).abs().max()) > 0.1


def test_non_square_images_and_grids() -> None:
    pos = torch.randn(17, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = interpolate_pos_embed(pos, (24, 16), 8)  # 4x4 grid -> 3x2
    assert out.shape == (7, 4)
    assert_close(out, torch.from_numpy(_numpy_rule(pos.numpy(), (3, 2))), rtol=0, atol=1e-6)
    # "size" rule from a non-square old grid (3x5) to 2x3
    pos = torch.randn(16, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = interpolate_pos_embed(pos, (16, 24), 8, rule="size", grid_size=(3, 5))
    grid = pos[1:].reshape(1, 3, 5, 4).permute(0, 3, 1, 2)
    direct = F.interpolate(grid, size=(2, 3), mode="bicubic", align_corners=False)
    assert_close(out[1:], direct.permute(0, 2, 3, 1).reshape(6, 4), rtol=0, atol=0)


def test_unchanged_grid_returns_the_embedding_itself() -> None:
    pos = torch.randn(17, 4)
    assert interpolate_pos_embed(pos, 32, 8) is pos
    assert interpolate_pos_embed(pos, 32, 8, rule="size") is pos
    # same patch count on a non-square image is resampled by the reference rule
    assert interpolate_pos_embed(pos, (16, 64), 8).shape == (17, 4)
    half = interpolate_pos_embed(pos.half(), 16, 8)
    assert half.dtype == torch.float16
    assert_close(half, interpolate_pos_embed(pos.half().float(), 16, 8).half(), rtol=0, atol=0)


def test_gradient_flows_to_the_parameter() -> None:
    pos = torch.randn(17, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: interpolate_pos_embed(p, 24, 8), (pos,))


def test_local_crop_forward_equals_a_model_built_at_the_crop_size() -> None:
    """An unmodified tower on 16 px crops = a 16 px open_clip model holding the resampled table."""
    model = make_clip("tok").double()
    g = torch.Generator().manual_seed(3)
    crops = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    out = open_clip_image_tokens(model, crops, pos_interpolation="reference")
    assert out.tokens.shape == (2, 4, 16)

    vision = CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=16)
    text = CLIPTextCfg(context_length=12, vocab_size=100, width=32, heads=2, layers=2)
    small = open_clip.CLIP(16, vision, text).double().eval()
    state = model.state_dict()
    state["visual.positional_embedding"] = _spec_rule(state["visual.positional_embedding"], 2)
    small.load_state_dict(state)
    assert torch.equal(out.pooled, small.encode_image(crops))
    assert_close(
        open_clip_pos_embed(model, 16), small.visual.positional_embedding, rtol=0, atol=1e-12
    )
    assert open_clip_pos_embed(model, 32) is model.visual.positional_embedding


def test_pos_embed_bad_input() -> None:
    pos = torch.randn(17, 4)
    with pytest.raises(ValueError, match="pos_embed must have shape"):
        interpolate_pos_embed(pos[None], 16, 8)
    with pytest.raises(TypeError, match="floating"):
        interpolate_pos_embed(pos.long(), 16, 8)
    with pytest.raises(ValueError, match="rule must be"):
        interpolate_pos_embed(pos, 16, 8, rule="bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one patch"):
        interpolate_pos_embed(pos, 4, 8)
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_pos_embed(torch.randn(16, 4), 16, 8)
    with pytest.raises(ValueError, match="grid_size"):
        interpolate_pos_embed(pos, 16, 8, grid_size=(3, 5))
    with pytest.raises(ValueError, match="square old grid"):
        interpolate_pos_embed(torch.randn(16, 4), 16, 8, grid_size=(3, 5))
    with pytest.raises(TypeError, match="image_size"):
        interpolate_pos_embed(pos, 16.0, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch_size must be positive"):
        interpolate_pos_embed(pos, 16, 0)
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        interpolate_pos_embed(pos, 16, 8, num_prefix_tokens=17)


def test_open_clip_pos_embed_bad_input() -> None:
    model = make_clip("tok")
    with pytest.raises(TypeError, match="image_size"):
        open_clip_pos_embed(model, 16.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one patch"):
        open_clip_pos_embed(model, 4)
    with pytest.raises(TypeError, match="image tower"):
        open_clip_pos_embed(torch.nn.Linear(2, 2), 16)
    with pytest.raises(ValueError, match="square old grid"):
        open_clip_pos_embed(make_clip("custom_block_nonsquare"), 16)
    assert open_clip_pos_embed(
        make_clip("custom_block_nonsquare"), (16, 16), rule="size"
    ).shape == (
        5,
        32,
    )


def test_multi_crop_groups_equal_resolutions() -> None:
    model = make_clip("tok").double()
    g = torch.Generator().manual_seed(5)
    sizes = [32, 32, 16, 16, 16, 32]
    views = [torch.randn(2, 3, s, s, generator=g, dtype=torch.float64) for s in sizes]
    outs = open_clip_multi_crop_tokens(model, views)
    assert len(outs) == len(views)
    for view, out in zip(views, outs):
        alone = open_clip_image_tokens(model, view, pos_interpolation="reference")
        for got, want in zip(out, alone):
            assert_close(got, want, rtol=0, atol=1e-12)
    assert outs[2].tokens.shape == (2, 4, 16) and outs[0].tokens.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="at least one tensor"):
        open_clip_multi_crop_tokens(model, [])
    with pytest.raises(TypeError, match="list of tensors"):
        open_clip_multi_crop_tokens(model, views[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"views\[1\] must have shape"):
        open_clip_multi_crop_tokens(model, [views[0], views[1][0]])
