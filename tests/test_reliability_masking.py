"""Issue 17, masking: degenerate calibration, non-finite pixels, thresholds, grid sizes.

Each test reproduces one finding of the reliability fuzz run and pins the documented
behaviour (see docs/reliability.md).
"""

from __future__ import annotations

import pytest
import torch

from vlp.masking import (
    ClusterMasking,
    calibrate_threshold,
    cluster_mask,
    cluster_scores,
    grid_size,
    patch_features,
    realised_ratio,
)


def _images(batch: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


# --- degenerate calibration batches ------------------------------------------------------


@pytest.mark.parametrize("kind", ["zeros", "nan", "inf", "mostly_flat"])
def test_cluster_masking_rejects_degenerate_calibration_batch(kind: str) -> None:
    masking = ClusterMasking(4, generator=torch.Generator().manual_seed(0))
    bad = _images()
    if kind == "zeros":
        bad = torch.zeros_like(bad)
    elif kind == "nan":
        bad = torch.full_like(bad, float("nan"))
    elif kind == "inf":
        bad[:, :, :, :] = float("inf")
    else:  # one non-flat patch per image: the 0.5 target is out of reach
        bad = torch.zeros_like(bad)
        bad[:, :, :4, :4] = _images()[:, :, :4, :4]
    with pytest.raises(ValueError, match=r"cannot calibrate.*target_ratio=0\.5.*threshold=0\.5"):
        masking(bad)
    # Nothing was stored: the threshold is still uncalibrated ...
    assert torch.isnan(masking.threshold)
    # ... and the next, real batch calibrates it to a proper tau and ratio.
    masking(_images(seed=1))
    tau = float(masking.threshold)
    assert -1.0 < tau < 1.0
    assert masking.last_ratio is not None
    assert 0.3 <= float(masking.last_ratio.mean()) < 0.9
    # A later flat batch is then just a batch with nothing to mask: never 100% masked.
    masking(torch.zeros(4, 3, 16, 16))
    assert float(masking.threshold) == tau
    assert torch.allclose(masking.last_ratio, torch.full((4,), 1 - 11 / 16))


def test_cluster_masking_every_batch_uses_degenerate_tau_for_that_batch_only() -> None:
    masking = ClusterMasking(4, calibrate="every_batch")
    masking(torch.zeros(2, 3, 16, 16))
    assert float(masking.threshold) == -1.0
    masking(_images())
    assert float(masking.threshold) > -1.0


def test_cluster_masking_target_ratio_one_may_calibrate_to_minus_one() -> None:
    masking = ClusterMasking(4, target_ratio=1.0)
    masking(torch.zeros(2, 3, 16, 16))
    assert float(masking.threshold) == -1.0


# --- non-finite pixels: an invalid patch, like a flat one ---------------------------------


def _with_bad_pixels() -> torch.Tensor:
    x = _images(2)
    x[0, 0, 0, 0] = float("nan")  # patch 0 of image 0
    x[1, 1, 5, 5] = float("inf")  # patch 5 of image 1
    x[1, :, 8:12, 8:12] = 1e20 * _images(1, 4)[0]  # patch 10: finite, but its norm overflows
    return x


def test_patch_features_non_finite_patch_is_zero_and_invalid() -> None:
    x = _with_bad_pixels()
    feats, valid = patch_features(x, 4)
    assert not torch.isnan(feats).any()
    assert valid.sum() == 32 - 3
    assert not valid[0, 0] and not valid[1, 5] and not valid[1, 10]
    assert torch.equal(feats[0, 0], torch.zeros(48))
    assert torch.equal(feats[1, 5], torch.zeros(48))
    # The other patches are unchanged: same features as with the bad patch zeroed out.
    clean = x.clone()
    clean[0, :, :4, :4] = 0.0
    clean[1, :, 4:8, 4:8] = 0.0
    clean[1, :, 8:12, 8:12] = 0.0
    ref, _ = patch_features(clean, 4)
    assert torch.equal(feats, ref)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter computes NaN
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cluster_scores_non_finite_patch_scores_minus_inf(backend: str) -> None:
    x = _with_bad_pixels()
    anchors = torch.tensor([[0, 1], [5, 2]])  # image 0: a NaN anchor; image 1: an inf anchor
    scores = cluster_scores(x, anchors, 4, backend=backend)
    assert not torch.isnan(scores).any()
    assert scores[0, 0] == float("-inf") and scores[1, 5] == float("-inf")
    assert scores[1, 10] == float("-inf")
    assert scores[0, 1] == 1.0 and scores[1, 2] == 1.0  # the finite anchors still cluster
    # Only the valid anchor counts: the same scores as with the bad anchor left out.
    alone = cluster_scores(x, anchors[:, 1:], 4, backend=backend)
    torch.testing.assert_close(scores, alone, rtol=0, atol=1e-6)
    # Every anchor invalid: every score -inf, nothing masked.
    none = cluster_scores(x, torch.tensor([[0, 0], [5, 10]]), 4, backend=backend)
    assert torch.equal(none[1], torch.full((16,), float("-inf")))
    assert not cluster_mask(x, 4, 0.0, anchors=torch.tensor([[0], [5]])).masked[1].any()


def test_nan_scores_count_as_visible_everywhere() -> None:
    scores = torch.tensor([[float("nan"), 0.5, 0.2, -0.3]])
    flat = torch.tensor([[float("-inf"), 0.5, 0.2, -0.3]])
    for tau in (-0.5, 0.0, 0.3):
        ratio = realised_ratio(scores, tau, min_ratio=0.0)
        assert torch.equal(ratio, realised_ratio(flat, tau, min_ratio=0.0))
        # The ratio of the mask cluster_mask draws (scores > tau): NaN is never masked.
        assert float(ratio) == float((scores > tau).float().mean())
    got = calibrate_threshold(scores, 0.5, min_ratio=0.0)
    want = calibrate_threshold(flat, 0.5, min_ratio=0.0)
    assert torch.equal(got.threshold, want.threshold)
    assert torch.equal(got.mean_ratio, want.mean_ratio)
    assert float(got.threshold) == pytest.approx(-0.05)  # midway between -0.3 and 0.2
    assert float(got.mean_ratio) == 0.5


def test_nan_threshold_tensor_rejected_like_float() -> None:
    x = _images(1)
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        cluster_mask(x, 4, float("nan"))
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        cluster_mask(x, 4, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        realised_ratio(torch.zeros(1, 4), torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="threshold"):
        cluster_mask(x, 4, torch.tensor(0.5j))


# --- grid sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "exc"),
    [
        ((-16, -16), ValueError),
        ((0, 16), ValueError),
        ((18, 16), ValueError),
        ((16.0, 16), TypeError),
        ((16,), TypeError),
    ],
)
def test_grid_size_rejects_bad_sizes(size: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="image_size"):
        grid_size(size, 4)  # type: ignore[arg-type]


def test_grid_size_valid() -> None:
    assert grid_size((16, 8), 4) == (4, 2)
    assert grid_size((16, 12), (8, 4)) == (2, 3)


# --- state: the generator and the threshold round-trip, loads are all or nothing ---------


def _masks(masking: ClusterMasking, steps: int, seed: int) -> list[torch.Tensor]:
    return [masking(_images(seed=seed + i))[0] for i in range(steps)]


def test_cluster_masking_resume_draws_the_same_masks() -> None:
    full = ClusterMasking(4, generator=torch.Generator().manual_seed(3))
    want = _masks(full, 6, seed=10)
    first = ClusterMasking(4, generator=torch.Generator().manual_seed(3))
    got = _masks(first, 3, seed=10)
    state = first.state_dict()
    assert set(state) == {"threshold", "epoch", "generator_state"}
    assert state["epoch"].item() == 0.0
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # safetensors-ready
    resumed = ClusterMasking(4, generator=torch.Generator().manual_seed(99))
    resumed.load_state_dict(state)
    got += _masks(resumed, 3, seed=13)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(resumed.threshold, full.threshold)


def test_cluster_masking_failed_load_changes_nothing() -> None:
    masking = ClusterMasking(4, generator=torch.Generator().manual_seed(0))
    masking(_images())
    before = masking.state_dict()["generator_state"].clone()
    tau = masking.threshold.clone()
    donor = ClusterMasking(4, generator=torch.Generator().manual_seed(5))
    donor(_images(seed=7))
    bad = donor.state_dict()
    bad["generator_state"] = torch.zeros(3, dtype=torch.uint8)
    bad["epoch"] = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match="generator_state is invalid"):
        masking.load_state_dict(bad)
    bad = donor.state_dict()
    bad["threshold"] = torch.zeros(2)
    with pytest.raises(RuntimeError, match="threshold must be a 0-d tensor"):
        masking.load_state_dict(bad)
    assert torch.equal(masking.threshold, tau)
    assert torch.equal(masking.state_dict()["generator_state"], before)
    assert masking.epoch == 0.0


def test_cluster_masking_fixed_threshold_refuses_nan_state() -> None:
    masking = ClusterMasking(4, threshold=0.5)
    with pytest.raises(RuntimeError, match="fixed threshold"):
        masking.load_state_dict(
            {"threshold": torch.tensor(float("nan")), "epoch": torch.tensor(0.0)}
        )
    assert float(masking.threshold) == 0.5
    # A state dict from before the epoch and generator were saved still loads.
    masking.load_state_dict({"threshold": torch.tensor(0.25)})
    assert float(masking.threshold) == 0.25
    seeded = ClusterMasking(4, threshold=0.5, generator=torch.Generator().manual_seed(0))
    seeded.load_state_dict({"threshold": torch.tensor(0.25)})
    assert float(seeded.threshold) == 0.25
    # ... and a seeded run's state loads into an unseeded module (nothing to restore).
    ClusterMasking(4, threshold=0.5).load_state_dict(seeded.state_dict())
    with pytest.raises(RuntimeError, match="epoch"):
        masking.load_state_dict({"threshold": torch.tensor(0.5), "epoch": torch.tensor(-1.0)})
    assert float(masking.threshold) == 0.25
