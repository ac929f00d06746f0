"""Tests for the Markov-order diagnostic (paper section 4.1): L*_k flat for first order, decreasing for higher order."""

from __future__ import annotations

import pytest
import torch

from pseudovideo.pseudo_video.builder import build_pseudo_video_builder
from pseudovideo.pseudo_video.diagnose import (
    format_diagnostic_table,
    markov_order_diagnostic,
    sample_patch_features,
)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """sklearn's bundled 8x8 digits (1797 images) as (N, 1, 8, 8) in [-1, 1]."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 8.0 - 1.0


def _noise_builder(construction: str):
    return build_pseudo_video_builder([{"name": "noise", "max_level": 1.0}], 5, construction)


def test_first_order_noise_gives_flat_mse(digits: torch.Tensor) -> None:
    rows = markov_order_diagnostic(digits, _noise_builder("first_order"), generator=torch.Generator().manual_seed(0))
    assert [row["k"] for row in rows] == [1, 2, 3, 4]
    mse = torch.tensor([row["mse"] for row in rows])
    assert (mse / mse[0] - 1).abs().max() < 0.02  # L*_k = L*_1
    assert [row["num_features"] for row in rows] == [9, 18, 27, 36]


def test_higher_order_noise_gives_decreasing_mse(digits: torch.Tensor) -> None:
    rows = markov_order_diagnostic(digits, _noise_builder("higher_order"), generator=torch.Generator().manual_seed(0))
    mse = torch.tensor([row["mse"] for row in rows])
    assert bool((mse[1:] < mse[:-1]).all())  # L*_k < L*_{k-1}
    assert mse[-1] < 0.85 * mse[0]
    train = torch.tensor([row["mse_train"] for row in rows])
    assert bool((train[1:] <= train[:-1] + 1e-9).all())  # nested least squares: train error cannot grow


def test_diagnostic_is_deterministic_and_splits_by_image(digits: torch.Tensor) -> None:
    images = digits[:200]
    builder = _noise_builder("higher_order")
    kwargs = {"pixels_per_image": 4, "batch_size": 64}  # several batches per split
    a = markov_order_diagnostic(images, builder, generator=torch.Generator().manual_seed(1), **kwargs)
    b = markov_order_diagnostic(images, builder, generator=torch.Generator().manual_seed(1), **kwargs)
    assert a == b
    assert a[0]["n_test"] == 50 * 4 and a[0]["n_train"] == 150 * 4


def test_sufficient_statistics_match_direct_least_squares() -> None:
    images = torch.rand(40, 2, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    builder = build_pseudo_video_builder([{"name": "noise", "max_level": 0.5}], 3, "higher_order")
    gen = torch.Generator().manual_seed(0)
    rows = markov_order_diagnostic(images, builder, ridge=0.0, pixels_per_image=8, holdout_fraction=0.25, generator=gen)
    # replay the same random stream to rebuild the training rows and solve least squares directly
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(40, generator=gen)
    test_idx, train_idx = order[:10], order[10:]
    for indices in (test_idx, train_idx):
        video = builder(images[indices], gen)
        ys = torch.randint(1, 5, (len(indices), 8), generator=gen)
        xs = torch.randint(1, 5, (len(indices), 8), generator=gen)
        feats, targets = sample_patch_features(video, ys, xs, 3)
        if indices is train_idx:
            design = torch.cat([torch.ones(len(feats), 1), feats], dim=1).double()
            weights = torch.linalg.lstsq(design, targets.double()).solution
            mse_train = (design @ weights - targets.double()).square().mean().item()
    assert rows[-1]["mse_train"] == pytest.approx(mse_train, rel=1e-6)


def test_sample_patch_features_hand_computed_layout() -> None:
    # video (B=1, T=3, C=1, H=4, W=4) where frame t holds 100 * t + pixel index
    pixels = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    video = torch.stack([100.0 * t + pixels for t in range(3)])[None, :, None]  # (1, 3, 1, 4, 4)
    feats, targets = sample_patch_features(video, torch.tensor([[1]]), torch.tensor([[2]]), 3)
    patch = torch.tensor([1.0, 2, 3, 5, 6, 7, 9, 10, 11])  # 3x3 around (row 1, col 2), row-major
    torch.testing.assert_close(feats, torch.cat([100.0 + patch, patch])[None])  # frame T-2 first, then T-3
    torch.testing.assert_close(targets, torch.tensor([[206.0]]))  # clean frame T-1 at (1, 2)


def test_format_table() -> None:
    rows = [{"k": 1, "mse": 0.5, "mse_train": 0.4}, {"k": 2, "mse": 0.25, "mse_train": 0.2}]
    table = format_diagnostic_table(rows, "noise, higher_order")
    lines = table.strip().splitlines()
    assert lines[0] == "### noise, higher_order"
    assert lines[2] == "| k | held-out MSE | train MSE | MSE / MSE(k=1) |"
    assert lines[-1] == "| 2 | 0.250000 | 0.200000 | 0.5000 |"


def test_bad_inputs_raise(digits: torch.Tensor) -> None:
    builder = _noise_builder("first_order")
    single = build_pseudo_video_builder([{"name": "noise", "max_level": 1.0}], 1, "first_order")
    with pytest.raises(ValueError, match=r"at least 2 frames, got num_frames=1"):
        markov_order_diagnostic(digits[:20], single)
    with pytest.raises(ValueError, match=r"patch_size must be an odd integer in \[1, min\(H, W\)=8\], got 4"):
        markov_order_diagnostic(digits[:20], builder, patch_size=4)
    with pytest.raises(ValueError, match=r"holdout_fraction must lie in \(0, 1\), got 0.0"):
        markov_order_diagnostic(digits[:20], builder, holdout_fraction=0.0)
    with pytest.raises(ValueError, match=r"images must be a 4-D tensor"):
        markov_order_diagnostic(digits[0, 0], builder)  # (16, 16): neither images nor signals (N, C, L)
    with pytest.raises(ValueError, match=r"at least one train and one held-out image, got N=2"):
        markov_order_diagnostic(digits[:2], builder, holdout_fraction=0.1)
    with pytest.raises(ValueError, match=r"needs corrupted frames .* got construction 'copies'"):
        markov_order_diagnostic(digits[:20], _noise_builder("copies"))


def test_identical_frames_are_handled_by_the_ridge(digits: torch.Tensor) -> None:
    # equal levels: first-order increments are 0, so frames 0..T-2 are identical (a singular Gram matrix)
    builder = build_pseudo_video_builder(
        [{"name": "noise", "schedule": "explicit", "levels": [0.5, 0.5, 0.5]}], 4, "first_order"
    )
    rows = markov_order_diagnostic(digits[:300], builder, generator=torch.Generator().manual_seed(0))
    mse = torch.tensor([row["mse"] for row in rows])
    assert bool(torch.isfinite(mse).all())
    torch.testing.assert_close(mse, mse[0].expand(3), rtol=1e-4, atol=0)
