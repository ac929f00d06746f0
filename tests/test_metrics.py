"""Tests for PSNR, SSIM, SWD, FID/KID (with a randomly initialised Inception) and the reference-stats cache."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
import torchvision

from pseudovideo.metrics import (
    INCEPTION_WEIGHTS_FILE,
    InceptionFeatureStats,
    ReferenceStatsKey,
    build_inception,
    cached_reference_stats,
    evaluation_protocol,
    fid_kid,
    format_protocol,
    frechet_distance,
    images_to_uint8,
    inception_features,
    inception_weights_available,
    kernel_inception_distance,
    laplacian_pyramid,
    load_reference_stats,
    psnr,
    resolve_inception_weights,
    save_reference_stats,
    sliced_wasserstein,
    sliced_wasserstein_distance,
    ssim,
)


def _smooth_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Structured test images in [-1, 1]: upsampled low-resolution noise, (n, C, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, size // 4, size // 4, generator=gen) * 2 - 1
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_of_constant_error() -> None:
    x = torch.zeros(2, 3, 8, 8)
    # +0.2 in [-1, 1] is +0.1 in [0, 1]: MSE 0.01 -> 20 dB; +0.02 -> 0.01 -> 40 dB
    y = x + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)
    torch.testing.assert_close(psnr(x, y), torch.tensor([20.0, 40.0]))
    assert torch.isinf(psnr(x, x)).all()


def _numpy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Reference SSIM of one (C, H, W) image pair in [0, 1]: 11x11 Gaussian (sigma 1.5), reflect padding 5."""
    d = np.arange(11) - 5.0
    g = np.exp(-0.5 * (d / 1.5) ** 2)
    g /= g.sum()
    window = np.outer(g, g)

    def filt(img: np.ndarray) -> np.ndarray:
        padded = np.pad(img, 5, mode="reflect")
        h, w = img.shape
        return np.array([[np.sum(padded[i : i + 11, j : j + 11] * window) for j in range(w)] for i in range(h)])

    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for a, b in zip(x, y):
        mu_a, mu_b = filt(a), filt(b)
        var_a = filt(a * a) - mu_a**2
        var_b = filt(b * b) - mu_b**2
        cov = filt(a * b) - mu_a * mu_b
        maps.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(maps))


def test_ssim_matches_numpy_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    got = ssim(x, y)
    assert got.shape == (2,)
    expected = [_numpy_ssim(((x[i] + 1) / 2).numpy(), ((y[i] + 1) / 2).numpy()) for i in range(2)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (got < 1).all()


def test_ssim_rejects_tiny_or_mismatched_images() -> None:
    with pytest.raises(ValueError, match="H, W >= 6"):
        ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="equal shape"):
        psnr(torch.zeros(1, 1, 8, 8), torch.zeros(2, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- SWD


def test_sliced_wasserstein_1d_hand_computed() -> None:
    a = torch.tensor([[2.0], [0.0], [1.0]])
    b = torch.tensor([[5.0], [1.0], [3.0]])
    # in 1-D every unit direction is +-1: W1 = mean |sort(a) - sort(b)| = (1 + 2 + 3) / 3
    assert sliced_wasserstein(a, b, num_projections=7).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="equal shapes"):
        sliced_wasserstein(a, b[:2])


def test_sliced_wasserstein_translation_in_2d() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 2, generator=gen)
    b = a + torch.tensor([3.0, 0.0])
    # projections of a translated set are translated by 3 cos(phi): SW = E|3 cos(phi)| = 6 / pi
    value = sliced_wasserstein(a, b, num_projections=4096, generator=gen).item()
    assert value == pytest.approx(6 / math.pi, rel=0.03)


def test_laplacian_pyramid_shapes_and_constant_image() -> None:
    levels = laplacian_pyramid(torch.full((1, 2, 32, 32), 0.7), 3)
    assert [tuple(level.shape) for level in levels] == [(1, 2, 32, 32), (1, 2, 16, 16), (1, 2, 8, 8)]
    torch.testing.assert_close(levels[0], torch.zeros(1, 2, 32, 32))  # no detail in a flat image
    torch.testing.assert_close(levels[-1], torch.full((1, 2, 8, 8), 0.7))
    with pytest.raises(ValueError, match="divisible"):
        laplacian_pyramid(torch.zeros(1, 1, 12, 12), 4)


def test_swd_identical_zero_noise_grows_and_seeded() -> None:
    real = _smooth_images(8, 32)
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(real.shape, generator=gen)

    def swd(fake: torch.Tensor) -> dict[str, float]:
        return sliced_wasserstein_distance(real, fake, patches_per_image=16, num_projections=128,
                                           generator=torch.Generator().manual_seed(1))

    same = swd(real.clone())
    assert set(same) == {"swd_32", "swd_16", "swd_avg"}
    assert same["swd_avg"] == pytest.approx(0.0, abs=1e-6)
    small, large = swd((real + 0.05 * noise).clamp(-1, 1)), swd((real + 0.5 * noise).clamp(-1, 1))
    assert 0 < small["swd_avg"] < large["swd_avg"]
    assert small["swd_32"] < large["swd_32"] and small["swd_16"] < large["swd_16"]
    assert small["swd_avg"] == pytest.approx((small["swd_32"] + small["swd_16"]) / 2)
    assert swd((real + 0.05 * noise).clamp(-1, 1)) == small  # deterministic with a seeded generator


def test_swd_levels_for_small_images_and_validation() -> None:
    x = _smooth_images(4, 16, channels=1)
    out = sliced_wasserstein_distance(x, x.flip(-1), patches_per_image=8, num_projections=32)
    assert set(out) == {"swd_16", "swd_avg"}
    with pytest.raises(ValueError, match="patch_size=9"):
        sliced_wasserstein_distance(x, x, patch_size=9, levels=2)


# ---------------------------------------------------------------------------------------------- FID / KID core


def test_frechet_distance_diagonal_hand_computed() -> None:
    mu1, mu2 = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([4.0, 9.0]))
    # ||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 5 + (1 - 2)^2 + (2 - 3)^2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(7.0)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 5, generator=gen, dtype=torch.float64), torch.randn(5, 5, generator=gen, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(5, generator=gen, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace()) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_kid_hand_computed_tiny_case() -> None:
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[1.0], [2.0]])
    # k(a, b) = (ab + 1)^3. XX off-diag: k(0,1) = 1; YY off-diag: k(1,2) = 27;
    # XY: k(0,1) + k(0,2) + k(1,1) + k(1,2) = 1 + 1 + 8 + 27 = 37 -> MMD = 1 + 27 - 2 * 37 / 4 = 9.5
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=2, generator=torch.Generator().manual_seed(0))
    assert mean == pytest.approx(9.5)
    assert std == pytest.approx(0.0)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(x, y, subsets=1, subset_size=3)


def test_kid_of_whole_sets_is_computed_once() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 4, generator=gen), torch.randn(50, 4, generator=gen) + 0.5
    mean, std = kernel_inception_distance(a, b, subsets=100, subset_size=50, generator=gen)
    k_aa, k_bb, k_ab = (((p.double() @ q.double().T) / 4 + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
    by_hand = (k_aa.sum() - k_aa.trace() + k_bb.sum() - k_bb.trace()) / (50 * 49) - 2 * k_ab.sum() / 50**2
    assert mean == pytest.approx(float(by_hand), rel=1e-9)
    assert std == 0.0  # one round: no spurious spread from reshuffling the same sets


def test_kid_is_unbiased_near_zero_for_same_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=100, generator=gen)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=100, generator=gen)
    assert abs(same) < 0.01 < shifted


# ---------------------------------------------------------------------------------------------- Inception path


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """torch-fidelity's Inception loaded from a randomly initialised state_dict written by the test."""
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    # default init shrinks activations ~1e-8 by the pool layer; BN scales of 2.5 keep the features O(1)
    state = {k: v * 2.5 if k.endswith("bn.weight") else v for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_FILE
    torch.save(state, path)
    return build_inception(path)


def test_images_to_uint8() -> None:
    out = images_to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4))
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 4)
    assert out[0, 2, 0].tolist() == [0, 128, 255, 255]


def test_inception_features_and_fid_kid(random_inception: torch.nn.Module) -> None:
    # Inception runs at 299x299 whatever the input: ~0.5 s per image on CPU, so keep N tiny
    real = _smooth_images(4, 32, channels=1, seed=1)
    fake = _smooth_images(4, 32, channels=1, seed=2)
    f_real = inception_features(real, random_inception, batch_size=3)  # batches of 3 + 1
    assert f_real.shape == (4, 2048) and f_real.dtype == torch.float32
    assert f_real.std(dim=0).mean() > 1e-3  # distinct images give distinct features
    # batch composition must not change the features
    torch.testing.assert_close(inception_features(real[:1], random_inception), f_real[:1], rtol=1e-4, atol=1e-5)
    shifted = (fake + 0.8).clamp(-1, 1)
    f_fake = inception_features(iter([shifted[:2], shifted[2:]]), random_inception)
    s_real = InceptionFeatureStats.from_features(f_real)
    s_fake = InceptionFeatureStats.from_features(f_fake)
    scale = float(s_real.sigma.trace())
    assert abs(frechet_distance(s_real.mu, s_real.sigma, s_real.mu, s_real.sigma)) < 1e-6 * scale
    out = fid_kid(s_real, s_fake, kid_subsets=5, kid_subset_size=3, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"fid", "kid_mean", "kid_std"}
    assert out["fid"] > 0.1 * scale
    assert out["kid_mean"] > 0


def test_build_inception_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # unpickling would create the marker file
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(ValueError, match="refused unread"):
        build_inception(bad)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        build_inception(tmp_path / "missing.pth")


def test_inception_weights_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert inception_weights_available() is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_inception_weights(allow_download=False) is None
    assert len(caught) == 1 and "SKIPPED" in str(caught[0].message)
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert inception_weights_available() == cached
    assert inception_weights_available(str(cached)) == cached
    with pytest.raises(FileNotFoundError, match="nope"):
        inception_weights_available(str(tmp_path / "nope.pth"))


def test_reference_stats_cache_round_trip(tmp_path: Path, random_inception: torch.nn.Module) -> None:
    key = ReferenceStatsKey(dataset="toy/set", split="test", resolution=16, num_images=2)
    calls = []

    def images() -> torch.Tensor:
        calls.append(1)
        return _smooth_images(2, 16, seed=3)

    first = cached_reference_stats(tmp_path, key, images, random_inception)
    second = cached_reference_stats(tmp_path, key, images, random_inception)
    assert len(calls) == 1  # computed once, then loaded
    assert (tmp_path / "toy_set-test-16px-n2.safetensors").is_file()
    torch.testing.assert_close(second.mu, first.mu)
    torch.testing.assert_close(second.sigma, first.sigma)
    torch.testing.assert_close(second.features, first.features)
    assert second.mu.dtype == torch.float64 and second.features.shape == (2, 2048)
    with pytest.raises(ValueError, match="key says 4"):
        save_reference_stats(tmp_path, ReferenceStatsKey("toy/set", "test", 16, 4), first)
    # a file whose metadata disagrees with its key is refused
    other = ReferenceStatsKey("toy", "train", 16, 2)
    first.save(tmp_path / other.filename, key.metadata())
    with pytest.raises(ValueError, match="do not match"):
        load_reference_stats(tmp_path, other)
    # a grey copy of the same dataset gets its own file, not the RGB statistics
    grey = ReferenceStatsKey("toy/set", "test", 16, 2, channels=1)
    assert grey.filename == "toy_set-test-16px-c1-n2.safetensors"
    assert load_reference_stats(tmp_path, grey) is None


def test_evaluation_protocol() -> None:
    proto = evaluation_protocol(num_real=10000, num_generated=5000, reference_split="test", resolution=32,
                                weights="ema", kid_subset_size=1000)
    assert proto["num_real"] == 10000 and proto["num_generated"] == 5000 and proto["weights"] == "ema"
    assert "2015-12-05" in proto["inception"] and "2048" in proto["features"] and "299" in proto["resize"]
    assert "1000" in proto["kid"]
    assert '"reference_split": "test"' in format_protocol(proto)
    with pytest.raises(ValueError, match="ema"):
        evaluation_protocol(num_real=1, num_generated=1, reference_split="x", resolution=8, weights="best")
