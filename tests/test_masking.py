"""vlp.masking: patches, correlation scores, cluster masks, kept slots, calibration, dropout.

The cluster-masking properties are those of the spec (cluster_masking_ssmke.md, A10).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vlp.masking import (
    ClusterMasking,
    calibrate_threshold,
    cluster_mask,
    cluster_scores,
    gather_tokens,
    max_kept,
    num_anchors,
    num_kept,
    patch_dropout,
    patch_features,
    patchify,
    random_patch_mask,
    realised_ratio,
    sample_anchors,
    select_kept_tokens,
    unpatchify,
)
from vlp.testing import assert_close

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _smooth_images(batch: int, h: int, w: int, seed: int = 0, dtype=torch.float32):
    """Spatially correlated noise: neighbouring patches correlate, like photographs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, h + 8, w + 8, generator=g, dtype=torch.float64)
    return F.avg_pool2d(x, 9, 1)[..., :h, :w].to(dtype)


def _clip_normalise(rgb: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def _red_blue(batch: int = 1, size: int = 224) -> torch.Tensor:
    """Left half pure red, right half pure blue, CLIP-normalised (spec A10.7)."""
    rgb = torch.zeros(batch, 3, size, size, dtype=torch.float64)
    rgb[:, 0, :, : size // 2] = 1.0
    rgb[:, 2, :, size // 2 :] = 1.0
    return _clip_normalise(rgb)


# ----------------------------------------------------------------------------- patches


@pytest.mark.parametrize(("size", "patch"), [((32, 48), 8), ((28, 42), 14), ((12, 20), (4, 5))])
def test_patchify_is_the_conv_patch_embedding_and_unpatchify_inverts_it(size, patch) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    weight = torch.randn(5, 3, ph, pw, generator=g, dtype=torch.float64)
    patches = patchify(x, patch)
    assert patches.shape == (2, (size[0] // ph) * (size[1] // pw), 3 * ph * pw)
    conv = F.conv2d(x, weight, stride=(ph, pw)).flatten(2).transpose(1, 2)
    assert_close(patches @ weight.flatten(1).T, conv)
    # patch j is grid cell (j // cols, j % cols)
    cols = size[1] // pw
    j = cols + 2
    assert torch.equal(patches[1, j], x[1, :, ph : 2 * ph, 2 * pw : 3 * pw].flatten())
    assert torch.equal(unpatchify(patches, patch, size), x)


def test_patch_features_are_pearson_correlations_and_flat_patches_are_invalid() -> None:
    x = _smooth_images(2, 32, 32, dtype=torch.float64)
    x[1, :, :8, 8:16] = 0.37  # patch 1 of image 1: one grey level
    feats, valid = patch_features(x, 8)
    raw = patchify(x, 8)
    corr = torch.corrcoef(raw[0])
    assert_close(feats[0] @ feats[0].T, corr, rtol=0, atol=1e-12)
    assert_close(torch.linalg.vector_norm(feats[valid], dim=-1), torch.ones(int(valid.sum())))
    assert valid.sum() == valid.numel() - 1 and not valid[1, 1]
    assert torch.equal(feats[1, 1], torch.zeros(3 * 64, dtype=torch.float64))


# ----------------------------------------------------------------------------- anchors


def test_anchor_count() -> None:
    """Spec A10.3: K = L - floor(L (1 - p))."""
    assert [num_anchors(n) for n in (196, 256, 576, 49, 64)] == [6, 8, 18, 2, 2]
    assert num_anchors(196, 0.1) == 196 - math.floor(196 * 0.9)
    assert num_anchors(4, 0.01) == 1


def test_sample_anchors_distinct_uniform_and_replayable() -> None:
    g = torch.Generator().manual_seed(3)
    a = sample_anchors(4000, 10, 3, generator=g)
    assert a.shape == (4000, 3) and a.dtype == torch.int64
    assert bool((a.sort(dim=1).values.diff(dim=1) > 0).all())  # distinct per image
    counts = torch.bincount(a.flatten(), minlength=10).double()
    # each patch is an anchor with probability 3/10: 1200 expected, sd ~29
    assert float((counts - 1200).abs().max()) < 150
    b = sample_anchors(4000, 10, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- scores


def test_scores_are_the_max_correlation_with_the_anchors() -> None:
    x = _smooth_images(3, 48, 32, seed=1, dtype=torch.float64)
    anchors = torch.tensor([[0, 5, 11], [23, 2, 7], [4, 4, 4]])
    scores = cluster_scores(x, anchors, 8, backend="torch")
    assert scores.dtype == torch.float64 and scores.shape == (3, 24)
    for b in range(3):
        corr = torch.corrcoef(patchify(x, 8)[b])  # full L x L, float64
        assert_close(scores[b], corr[anchors[b]].amax(dim=0), rtol=0, atol=1e-12)
        assert_close(scores[b, anchors[b]], torch.ones(3, dtype=torch.float64))
    assert cluster_scores(x.float(), anchors, 8, backend="torch").dtype == torch.float32


def test_flat_patches_never_cluster() -> None:
    x = _smooth_images(2, 32, 32, seed=2)
    x[0, :, :8, :8] = -0.4  # patch 0 flat
    x[1] = 0.25  # image 1 entirely flat
    anchors = torch.tensor([[0, 9], [0, 9]])
    scores = cluster_scores(x, anchors, 8, backend="torch")
    assert scores[0, 0] == float("-inf")
    assert bool(torch.isfinite(scores[0, 1:]).all())
    assert bool((scores[1] == float("-inf")).all())
    masked = cluster_mask(x, 8, -0.99, anchors=anchors, backend="torch").masked
    assert not masked[0, 0] and not masked[1].any() and bool(masked[0, 1:].all())
    # a flat anchor forms no cluster: only anchor 9 counts for image 0
    only9 = cluster_scores(x, anchors[:, 1:], 8, backend="torch")
    assert_close(scores[0], only9[0])


# ----------------------------------------------------------------------------- mask properties


def test_anchors_are_masked_and_mask_is_monotone_in_threshold() -> None:
    """Spec A10.4, A10.5 and A10.6."""
    x = _smooth_images(8, 64, 64, seed=4)
    anchors = sample_anchors(8, 64, 4, generator=torch.Generator().manual_seed(0))
    masks = [
        cluster_mask(x, 8, tau, anchors=anchors, backend="torch").masked
        for tau in (-0.5, 0.0, 0.2, 0.4, 0.6, 0.999)
    ]
    for m in masks:
        assert bool(m.gather(1, anchors).all())
    # even just below 1: an anchor's self-correlation is exactly 1, not a rounded 1 - 6e-8
    below_one = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
    for images in (x, _smooth_images(8, 224, 224, seed=12)):
        grid_anchors = sample_anchors(
            8, images.shape[-1] ** 2 // 64, 4, generator=torch.Generator().manual_seed(2)
        )
        m = cluster_mask(images, 8, below_one, anchors=grid_anchors, backend="torch").masked
        assert bool(m.gather(1, grid_anchors).all())
    for loose, tight in itertools.pairwise(masks):
        assert bool((tight <= loose).all())  # mask(t1) contains mask(t2) for t1 < t2
        assert int(tight.sum()) < int(loose.sum())
    assert not cluster_mask(x, 8, 1.0, anchors=anchors, backend="torch").masked.any()
    scores = cluster_scores(x, anchors, 8, backend="torch")
    means = [float(realised_ratio(scores, t).mean()) for t in torch.linspace(-1, 1, 21)]
    assert all(a >= b for a, b in itertools.pairwise(means))


def test_empty_mask_gives_the_floor_and_a_random_dropped_set() -> None:
    """Spec A10.6: tau >= 1 masks nothing; the floor drops a random visible subset."""
    x = _smooth_images(2, 224, 224, seed=5)
    masked = cluster_mask(x, 16, 1.0, generator=torch.Generator().manual_seed(0)).masked
    assert not masked.any()
    sets = []
    for seed in range(3):
        kept = select_kept_tokens(masked, generator=torch.Generator().manual_seed(seed))
        assert_close(kept.ratio, torch.full((2,), 1 - 137 / 196))
        assert not kept.key_padding_mask.any()
        sets.append(kept.keep_idx.sort(dim=1).values)
    assert not torch.equal(sets[0], sets[1]) and not torch.equal(sets[1], sets[2])
    assert not torch.equal(sets[0][0], sets[0][1])  # differs across the images of a batch


def test_two_flat_colour_regions_are_masked_whole() -> None:
    """Spec A10.7: r(red, red) = 1, r(red, blue) ~ -0.449."""
    x = _red_blue(batch=64)
    feats, valid = patch_features(x[:1], 16)
    assert bool(valid.all())
    assert float(feats[0, 0] @ feats[0, 7]) == pytest.approx(-0.449, abs=1e-3)
    left = torch.tensor([c for c in range(196) if c % 14 < 7])
    anchors = left[torch.tensor([[0, 17, 50, 97]])].expand(64, -1)
    for tau in (-0.44, 0.0, 0.68, 0.999):
        masked = cluster_mask(x, 16, tau, anchors=anchors, backend="torch").masked
        expect = torch.zeros(196, dtype=torch.bool).index_fill(0, left, True)
        assert torch.equal(masked, expect.expand(64, -1))
    g = torch.Generator().manual_seed(0)
    masked = cluster_mask(x, 16, 0.5, generator=g, backend="torch").masked
    halves = masked.view(64, 14, 2, 7).permute(0, 2, 1, 3).reshape(64, 2, 98)
    assert bool((halves.all(dim=2) | ~halves.any(dim=2)).all())  # each half all or nothing
    ratio = select_kept_tokens(masked, generator=g).ratio
    assert set(ratio.tolist()) <= {0.5, 1.0}
    assert bool((ratio == 1.0).any()) and bool((ratio == 0.5).any())  # p(both) ~ 0.97


def test_affine_invariance() -> None:
    """Spec A10.8: a * x + b (a > 0) leaves scores and masks unchanged, same RNG."""
    x = _smooth_images(4, 64, 48, seed=6, dtype=torch.float64)
    out = [
        cluster_mask(y, 8, 0.3, generator=torch.Generator().manual_seed(1), backend="torch")
        for y in (x, 2.5 * x + 0.7)
    ]
    assert torch.equal(out[0].anchors, out[1].anchors)
    assert_close(out[0].scores, out[1].scores, rtol=0, atol=1e-12)
    assert torch.equal(out[0].masked, out[1].masked)


# ----------------------------------------------------------------------------- kept slots


def _random_mask(batch: int, num_patches: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    fraction = torch.linspace(0.0, 1.0, batch).unsqueeze(1)
    return torch.rand(batch, num_patches, generator=g) < fraction


@pytest.mark.parametrize("length", ["static", "batch_max"])
def test_select_kept_tokens_floor_length_and_fillers(length: str) -> None:
    """Spec A10.1 and A10.2."""
    masked = _random_mask(9, 196)
    masked[0] = False  # one image fully visible: batch_max reaches the cap
    kept = select_kept_tokens(masked, length=length, generator=torch.Generator().manual_seed(0))
    cap = max_kept(196, 0.3)
    assert cap == 137
    visible = (~masked).sum(dim=1)
    assert kept.keep_idx.shape == (9, 137) and kept.key_padding_mask.shape == (9, 137)
    assert bool((kept.ratio >= 1 - 137 / 196 - 1e-7).all()) and bool((kept.ratio <= 1).all())
    assert_close(kept.ratio, 1 - visible.clamp(max=cap).float() / 196)
    assert torch.equal(kept.key_padding_mask, masked.gather(1, kept.keep_idx))
    for b in range(9):
        row = kept.keep_idx[b]
        assert row.unique().numel() == 137
        pad = kept.key_padding_mask[b]
        n_vis = int((~pad).sum())
        assert n_vis == min(int(visible[b]), cap)
        assert not pad[:n_vis].any() and bool(pad[n_vis:].all())  # visible first
        if visible[b] <= cap:  # every visible patch is kept
            assert set(row[~pad].tolist()) == set((~masked[b]).nonzero().flatten().tolist())


def test_batch_max_length_follows_the_least_masked_image() -> None:
    masked = torch.ones(3, 100, dtype=torch.bool)
    masked[0, :20] = False
    masked[1, :45] = False
    kept = select_kept_tokens(masked, length="batch_max", min_ratio=0.3)
    assert kept.keep_idx.shape == (3, 45)
    assert int(kept.key_padding_mask[1].sum()) == 0 and int(kept.key_padding_mask[2].sum()) == 45
    static = select_kept_tokens(masked, min_ratio=0.3)
    assert static.keep_idx.shape == (3, 70)
    assert torch.equal(kept.ratio, static.ratio)
    all_masked = select_kept_tokens(torch.ones(2, 10, dtype=torch.bool), length="batch_max")
    assert all_masked.keep_idx.shape == (2, 1) and bool(all_masked.key_padding_mask.all())


def test_visible_patches_dropped_by_the_floor_are_uniformly_random() -> None:
    """Spec A7.3: the released code drops by sort-tie order; here every visible patch
    survives with probability Lk / V, independently of its position."""
    masked = torch.zeros(1, 20, dtype=torch.bool)
    masked[0, 15:] = True  # 15 visible, 14 slots at min_ratio 0.3
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(20)
    for _ in range(600):
        kept = select_kept_tokens(masked, min_ratio=0.3, generator=g)
        counts[kept.keep_idx[0]] += 1
    assert counts[15:].sum() == 0
    # kept with probability 14/15: 560 expected of 600, sd ~6
    assert float((counts[:15] - 560).abs().max()) < 30


class _HostToDevice(TorchFunctionMode):
    """Records tensors built from host data on another device (``torch.tensor(list,
    device="cuda")`` copies from pageable memory and synchronises the stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type != "cpu":
                self.calls.append(f"{func.__name__}(device={device})")
        return func(*args, **kwargs)


def test_no_host_sync_in_the_static_path() -> None:
    """Meta tensors hold no data: any host read (item, bool, int) would raise; and no
    tensor is built from host data on the device (a synchronising copy on CUDA)."""
    meta = torch.zeros(4, 196, dtype=torch.bool, device="meta")
    with _HostToDevice() as copies:
        kept = select_kept_tokens(meta)
        module = ClusterMasking(16, threshold=0.5, backend="torch").train()
        keep, pad = module(torch.empty(2, 3, 224, 224, device="meta"))
        cal = calibrate_threshold(torch.empty(4, 196, device="meta"), 0.5)
        every = ClusterMasking(16, calibrate="every_batch", backend="torch").train().to("meta")
        every(torch.empty(2, 3, 224, 224, device="meta"))
    assert copies.calls == []
    assert kept.keep_idx.shape == (4, 137) and kept.keep_idx.device.type == "meta"
    with pytest.raises(RuntimeError):
        select_kept_tokens(meta, length="batch_max")  # the one sync is real
    assert keep.shape == (2, 137) and pad.shape == (2, 137)
    assert cal.threshold.device.type == "meta"


# ----------------------------------------------------------------------------- calibration


def test_calibration_hits_the_target_exactly_as_well_as_possible() -> None:
    """Spec A10.10."""
    x = _smooth_images(16, 224, 224, seed=7)
    anchors = sample_anchors(16, 196, 6, generator=torch.Generator().manual_seed(0))
    scores = cluster_scores(x, anchors, 16, backend="torch")
    for target in (0.302, 0.4, 0.5, 0.75, 0.95):
        cal = calibrate_threshold(scores, target)
        assert -1 <= float(cal.threshold) <= 1
        assert float(cal.mean_ratio) == pytest.approx(
            float(realised_ratio(scores, cal.threshold).mean()), abs=1e-6
        )
        assert abs(float(cal.mean_ratio) - target) <= 1 / (16 * 196) + 1e-6
    # optimal: no score value (nor a point between two) does better
    cal = calibrate_threshold(scores, 0.5)
    grid = scores.flatten().sort().values
    best = min(abs(float(realised_ratio(scores, t).mean()) - 0.5) for t in grid[::7])
    assert abs(float(cal.mean_ratio) - 0.5) <= best + 1e-7
    # the floor is always reachable: tau = 1 masks nothing
    assert float(calibrate_threshold(scores, 1 - 137 / 196).mean_ratio) == pytest.approx(
        1 - 137 / 196, abs=1e-6
    )


def test_calibration_separates_adjacent_float32_scores() -> None:
    """The midpoint of two neighbouring float32 values rounds to one of them; rounded up,
    it would merge the two and miss the threshold between them."""
    a = torch.tensor(0.5)
    b = torch.nextafter(a, torch.tensor(1.0))
    c = torch.nextafter(b, torch.tensor(1.0))
    assert 0.5 * (b + c) == c  # round half to even goes up here
    scores = torch.cat([torch.zeros(5), b.view(1), c.view(1), torch.full((3,), 0.9)]).view(1, 10)
    cal = calibrate_threshold(scores, 0.4, min_ratio=0.0)  # tau = b: 4 of 10 masked
    assert float(cal.mean_ratio) == pytest.approx(0.4)
    assert float(realised_ratio(scores, cal.threshold, min_ratio=0.0)) == pytest.approx(0.4)


def test_calibration_raises_below_the_floor() -> None:
    scores = torch.rand(4, 196, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"target_ratio must lie in \[0.301020, 1\]"):
        calibrate_threshold(scores, 0.3)
    with pytest.raises(ValueError, match="target_ratio"):
        calibrate_threshold(scores, 1.2)
    with pytest.raises(TypeError, match="target_ratio"):
        calibrate_threshold(scores, "0.5")  # type: ignore[arg-type]  (released code's bug)
    with pytest.raises(ValueError, match="min_ratio"):
        calibrate_threshold(scores, 0.5, min_ratio=1.0)
    # unreachable above: flat images can never be masked; the best effort is returned
    flat = torch.full((2, 10), float("-inf"))
    cal = calibrate_threshold(flat, 0.9)
    assert float(cal.mean_ratio) == pytest.approx(0.3)


# ----------------------------------------------------------------------------- dropout, gather


def test_random_patch_dropout() -> None:
    g = torch.Generator().manual_seed(0)
    keep = patch_dropout(3000, 16, 0.75, generator=g)
    assert keep.shape == (3000, 4) == (3000, num_kept(16, 0.75))
    assert bool((keep.diff(dim=1) > 0).all())  # sorted, distinct
    counts = torch.bincount(keep.flatten(), minlength=16).double()
    assert float((counts - 750).abs().max()) < 90  # p = 1/4, sd ~24
    mask = random_patch_mask(3000, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, torch.ones(3000, 16, dtype=torch.bool).scatter(1, keep, False))
    assert num_kept(196, 0.5) == 98 and num_kept(10, 0.99) == 1


def test_gather_tokens() -> None:
    tokens = torch.arange(2 * 6 * 3).view(2, 6, 3).float()
    keep = torch.tensor([[4, 0], [2, 3]])
    out = gather_tokens(tokens, keep, num_prefix_tokens=1)
    assert torch.equal(out[:, 0], tokens[:, 0])
    assert torch.equal(out[0, 1:], tokens[0, [5, 1]]) and torch.equal(out[1, 1:], tokens[1, [3, 4]])
    assert torch.equal(gather_tokens(tokens, keep), tokens[torch.arange(2)[:, None], keep])


# ----------------------------------------------------------------------------- module


def test_cluster_masking_module_calibrates_once_and_is_identity_in_eval() -> None:
    x = _smooth_images(16, 224, 224, seed=8)
    module = ClusterMasking(16, generator=torch.Generator().manual_seed(0), backend="torch")
    assert (module.anchor_fraction, module.target_ratio, module.min_ratio) == (0.03, 0.5, 0.3)
    keep, pad = module.train()(x)
    assert keep.shape == pad.shape == (16, 137)
    tau = float(module.threshold)
    assert -1 < tau < 1
    assert float(module.last_ratio.mean()) == pytest.approx(0.5, abs=1e-3)
    module(_smooth_images(16, 224, 224, seed=9))
    assert float(module.threshold) == tau  # frozen after the first batch
    assert module.state_dict()["threshold"] == tau
    restored = ClusterMasking(16)
    restored.load_state_dict(module.state_dict())
    assert float(restored.threshold) == tau
    every = ClusterMasking(16, calibrate="every_batch", backend="torch").train()
    every(_smooth_images(16, 224, 224, seed=9))
    assert float(every.last_ratio.mean()) == pytest.approx(0.5, abs=1e-3)

    module.eval()
    keep, pad = module(x)
    assert torch.equal(keep, torch.arange(196).expand(16, -1)) and not pad.any()
    tokens = torch.randn(16, 197, 8)
    out, none = module.mask_tokens(tokens, x)
    assert out is tokens and none is None
    module.train()
    out, pad = module.mask_tokens(tokens, x)
    assert out.shape == (16, 138, 8) and pad.shape == (16, 138) and not pad[:, 0].any()
    assert torch.equal(out[:, 0], tokens[:, 0])


def test_fixed_threshold_reproduces_cluster_mask() -> None:
    x = _smooth_images(4, 64, 64, seed=10)
    module = ClusterMasking(8, threshold=0.5, generator=torch.Generator().manual_seed(5))
    keep, pad = module.train()(x)
    g = torch.Generator().manual_seed(5)
    cm = cluster_mask(x, 8, 0.5, generator=g)
    kept = select_kept_tokens(cm.masked, generator=g)
    assert torch.equal(keep, kept.keep_idx) and torch.equal(pad, kept.key_padding_mask)


# ----------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    x = torch.randn(2, 3, 32, 32)
    a = torch.zeros(2, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        patchify(torch.randn(1, 3, 30, 32), 8)
    with pytest.raises(ValueError, match="images must have shape"):
        patchify(torch.randn(3, 32, 32), 8)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(x, 0)
    with pytest.raises(TypeError, match="patch_size"):
        patchify(x, 8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patches must have shape"):
        unpatchify(torch.randn(1, 15, 192), 8, (32, 32))
    with pytest.raises(TypeError, match="floating"):
        cluster_scores(x.to(torch.uint8), a, 8)
    with pytest.raises(TypeError, match="int64"):
        cluster_scores(x, a.int(), 8)
    with pytest.raises(ValueError, match=r"anchors must lie in \[0, 16\)"):
        cluster_scores(x, a + 16, 8)
    with pytest.raises(ValueError, match="anchors must have shape"):
        cluster_scores(x, a[:1], 8)
    with pytest.raises(ValueError, match="at least one anchor"):
        cluster_scores(x, a[:, :0], 8)
    with pytest.raises(ValueError, match="eps"):
        cluster_scores(x, a, 8, eps=0.0)
    with pytest.raises(ValueError, match="backend"):
        cluster_scores(x, a, 8, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        cluster_mask(x, 8, float("nan"))
    with pytest.raises(ValueError, match="anchor_fraction"):
        num_anchors(196, 0.0)
    with pytest.raises(ValueError, match="num_anchors must be at most"):
        sample_anchors(2, 4, 5)
    with pytest.raises(TypeError, match="masked must have dtype torch.bool"):
        select_kept_tokens(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="min_ratio"):
        select_kept_tokens(torch.zeros(2, 4, dtype=torch.bool), min_ratio=1.0)
    with pytest.raises(ValueError, match="length"):
        select_kept_tokens(torch.zeros(2, 4, dtype=torch.bool), length="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_ratio"):
        patch_dropout(2, 16, 1.0)
    with pytest.raises(ValueError, match="keep_idx must lie"):
        gather_tokens(torch.randn(2, 5, 3), torch.tensor([[0, 4], [1, 2]]), num_prefix_tokens=1)
    with pytest.raises(ValueError, match="target_ratio must be >= min_ratio"):
        ClusterMasking(16, target_ratio=0.2)
    with pytest.raises(ValueError, match="calibrate"):
        ClusterMasking(16, calibrate="always")  # type: ignore[arg-type]


def test_scoring_never_writes_its_input() -> None:
    for size in ((8, 8), (16, 24)):  # one patch: patchify returns a view of the input
        x = _smooth_images(2, *size, seed=11)
        before = x.clone()
        cluster_scores(x, torch.zeros(2, 1, dtype=torch.int64), 8, backend="torch")
        patch_features(x, 8)
        assert torch.equal(x, before)
