"""Tests for the corruption operators (blur, noise, downsample, mask) and their registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive

from pseudovideo.pseudo_video.corruptions import (
    Compose,
    Downsample,
    GaussianBlur,
    GaussianNoise,
    PatchMask,
    build_corruption,
    heat_blur_matrix,
)

OPERATORS = {
    "blur": (GaussianBlur(), 1.5),
    "noise": (GaussianNoise(), 0.3),
    "downsample": (Downsample(), 1.0),
    "mask": (PatchMask(patch_size=2), 0.5),
}


def _images(n: int = 4, c: int = 3, h: int = 8, w: int = 8, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(dtype)


def _smooth_image(size: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth random image (1, 1, size, size): upsampled coarse noise."""
    coarse = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_level_zero_is_bit_exact_in_a_mixed_batch(name: str) -> None:
    op, level = OPERATORS[name]
    x = _images()
    out = op.apply(x, torch.tensor([0.0, level, 0.0, level]), torch.Generator().manual_seed(0))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1]) and not torch.equal(out[3], x[3])


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_kept(name: str, dtype: torch.dtype) -> None:
    op, level = OPERATORS[name]
    x = _images(n=3, c=2, h=8, w=6, dtype=dtype)
    out = op.apply(x, torch.full((3,), level), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.parametrize("name", ["noise", "mask"])
def test_random_operators_are_seedable(name: str) -> None:
    op, level = OPERATORS[name]
    x, levels = _images(), torch.full((4,), level)
    a = op.apply(x, levels, torch.Generator().manual_seed(7))
    b = op.apply(x, levels, torch.Generator().manual_seed(7))
    c = op.apply(x, levels, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _impulse_response(sigma: float, width: int = 81, dtype=torch.float64) -> torch.Tensor:
    """The blur of a centred impulse on a 1 x width image (only the horizontal pass acts): (width,)."""
    x = torch.zeros(1, 1, 1, width, dtype=dtype)
    x[..., width // 2] = 1.0
    return GaussianBlur().apply(x, torch.tensor([sigma])).flatten()


@pytest.mark.parametrize("sigma", [0.35, 2.0])
def test_blur_kernel_variance_is_sigma_squared(sigma: float) -> None:
    kernel = _impulse_response(sigma)
    offsets = torch.arange(81, dtype=torch.float64) - 40
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (kernel * offsets).sum().item() == pytest.approx(0.0, abs=1e-12)
    # hand computed: 0.35^2 = 0.1225 and 2^2 = 4 (a sampled Gaussian cut at 3 sigma gives ~0.03 at 0.35);
    # the tolerance is float32 rounding of the level itself
    assert (kernel * offsets**2).sum().item() == pytest.approx({0.35: 0.1225, 2.0: 4.0}[sigma], rel=1e-7)
    sigma32 = torch.tensor(sigma).item()  # the level as the operator holds it (float32)
    assert (kernel * offsets**2).sum().item() == pytest.approx(sigma32**2, abs=1e-10)
    # away from the borders the kernel is the discrete Gaussian e^{-s} I_n(s), s = sigma^2
    expected = torch.from_numpy(ive(offsets.abs().numpy(), sigma32**2))
    torch.testing.assert_close(kernel, expected, atol=1e-12, rtol=0)
    assert kernel.min().item() > -1e-14  # positive: no ringing


def test_blur_matches_hand_computed_kernel_along_both_axes() -> None:
    # sigma = 1: weights e^{-1} I_n(1) from the series I_n(1) = sum_m (1/2)^(2m+n) / (m! (m+n)!), n = 0..5
    kernel = _impulse_response(1.0, width=21)
    hand = torch.tensor([0.4657596, 0.2079104, 0.0499388, 0.0081553, 0.0010069, 0.0000999], dtype=torch.float64)
    torch.testing.assert_close(kernel[10:16], hand, atol=1e-7, rtol=0)
    torch.testing.assert_close(kernel, kernel.flip(0))
    x = torch.zeros(1, 1, 21, 1, dtype=torch.float64)
    x[..., 10, :] = 1.0
    torch.testing.assert_close(GaussianBlur().apply(x, torch.tensor([1.0])).flatten(), kernel)


def test_blur_sigma_zero_is_the_identity_exactly() -> None:
    assert torch.equal(heat_blur_matrix(7, 0.0), torch.eye(7, dtype=torch.float64))
    x = _images(n=2, h=9, w=5)
    assert torch.equal(GaussianBlur().apply(x, torch.zeros(2)), x)


def test_blur_composes_exactly() -> None:
    x = _images(n=3, c=2, h=16, w=12, dtype=torch.float64)  # white noise: every frequency present
    blur = GaussianBlur()
    for a, b in [(0.35, 0.2), (1.5, 2.0), (0.1, 3.0)]:
        twice = blur.apply(blur.apply(x, torch.full((3,), a)), torch.full((3,), b))
        once = blur.apply(x, torch.full((3,), math.hypot(a, b)))
        torch.testing.assert_close(twice, once, atol=1e-6, rtol=0)  # float32 levels: hypot rounds to ~1e-7
    torch.testing.assert_close(heat_blur_matrix(10, 0.6) @ heat_blur_matrix(10, 0.8), heat_blur_matrix(10, 1.0),
                               atol=1e-14, rtol=0)
    assert blur.increment(torch.tensor(1.5), torch.tensor(2.5)).item() == pytest.approx(2.0)


def test_blur_keeps_constant_images_and_tiny_sides() -> None:
    x = torch.full((2, 3, 5, 1), 0.3)
    out = GaussianBlur().apply(x, torch.tensor([4.0, 0.7]))  # a one-pixel side is left as it is
    torch.testing.assert_close(out, x)


def _blur_batched_vs_alone(device: str) -> None:
    x = _images(n=4, c=3, h=12, w=10).to(device)
    sigmas = torch.tensor([0.5, 2.0, 1.0, 0.5])
    batched = GaussianBlur().apply(x, sigmas)
    assert batched.device == x.device
    for i in range(4):
        alone = GaussianBlur().apply(x[i : i + 1], sigmas[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-6, rtol=0)
    on_cpu = GaussianBlur().apply(x.cpu(), sigmas)
    torch.testing.assert_close(batched.cpu(), on_cpu, atol=1e-5, rtol=0)


def test_blur_per_sample_sigma_matches_separate_calls() -> None:
    _blur_batched_vs_alone("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blur_batched_on_the_device_matches_per_image() -> None:
    _blur_batched_vs_alone("cuda")


def test_noise_residual_std_matches_level() -> None:
    x = torch.zeros(3, 1, 128, 128)
    levels = torch.tensor([0.1, 0.5, 2.0])
    out = GaussianNoise().apply(x, levels, torch.Generator().manual_seed(0))
    residual = (out - x).flatten(1)
    torch.testing.assert_close(residual.std(dim=1), levels, rtol=0.03, atol=0)
    assert (residual.mean(dim=1).abs() < 4 * levels / 128).all()  # within 4 standard errors
    assert GaussianNoise().increment(torch.tensor([0.3]), torch.tensor([0.5])).item() == pytest.approx(0.4)


def test_downsample_block_averages_and_nesting() -> None:
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = Downsample().apply(x, torch.tensor([1.0]))
    expected_blocks = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # means of the 2x2 blocks
    expected = expected_blocks.repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(out[0, 0], expected)
    # dyadic nesting: pixelating at level 1 then level 2 equals pixelating at level 2 directly
    y = _images(n=2, c=2, h=16, w=16)
    op = Downsample()
    two = torch.full((2,), 2.0)
    nested = op.apply(op.apply(y, torch.ones(2)), op.increment(torch.ones(2), two))
    torch.testing.assert_close(nested, op.apply(y, two))


def test_downsample_fractional_and_tiny_output_sizes() -> None:
    x = _images(n=2, c=1, h=8, w=8)
    out = Downsample().apply(x, torch.tensor([0.5, 10.0]))
    assert out.shape == x.shape
    assert len(torch.unique(out[0])) == 36  # round(8 / sqrt(2)) = 6 -> a 6 x 6 grid of distinct values
    torch.testing.assert_close(out[1], x[1].mean().expand_as(out[1]))  # size clamps to 1: the global mean


def test_downsample_upsamples_centred() -> None:
    # 5 px to 2 cells and back: nearest-exact takes source cell floor((i + 0.5) * 2 / 5) = 0, 0, 1, 1, 1
    # (plain nearest, floor(i * 2 / 5) = 0, 0, 0, 1, 1, shifts the content by half a pixel)
    x = torch.arange(5, dtype=torch.float32).reshape(1, 1, 1, 5)
    out = Downsample().apply(x, torch.tensor([math.log2(5 / 2)]))
    small = F.adaptive_avg_pool2d(x, (1, 2)).flatten()  # cells [0, 1, 2] and [2, 3, 4]: 1 and 3
    torch.testing.assert_close(out.flatten(), small[[0, 0, 1, 1, 1]])


def test_downsample_first_order_problem() -> None:
    assert Downsample.first_order_problem([3, 2, 1, 0], (16, 32)) is None
    assert Downsample.first_order_problem([6, 0], (16,)) is None  # clamps to the global mean
    assert "not whole octaves" in Downsample.first_order_problem([1.5, 1, 0])
    assert "grids [12, 6, 3, 2]" in Downsample.first_order_problem([3, 2, 1, 0], (12,))


def test_mask_fraction_patch_alignment_and_channel_sharing() -> None:
    op = PatchMask(patch_size=4, fill_value=-5.0)
    x = _images(n=2, c=3, h=128, w=128)
    levels = torch.tensor([0.3, 1.0])
    out = op.apply(x, levels, torch.Generator().manual_seed(0))
    masked = out == -5.0
    assert torch.equal(masked[:, 0], masked[:, 1]) and torch.equal(masked[:, 0], masked[:, 2])
    assert torch.equal(out[~masked], x[~masked])
    patches = masked[:, 0].reshape(2, 32, 4, 32, 4)
    assert bool((patches.all(dim=(2, 4)) == patches.any(dim=(2, 4))).all())  # whole patches only
    assert abs(masked[0].float().mean().item() - 0.3) < 0.06
    assert bool(masked[1].all())


def test_mask_increment_gives_exact_marginal() -> None:
    op = PatchMask(patch_size=1)
    inc = op.increment(torch.tensor([0.5, 0.2, 1.0]), torch.tensor([0.75, 0.2, 1.0]))
    torch.testing.assert_close(inc, torch.tensor([0.5, 0.0, 1.0]))
    x = torch.ones(1, 1, 200, 200)
    gen = torch.Generator().manual_seed(1)
    twice = op.apply(op.apply(x, torch.tensor([0.5]), gen), inc[:1], gen)
    assert abs((twice == 0).float().mean().item() - 0.75) < 0.01


def test_compose_applies_operators_in_order() -> None:
    x = torch.zeros(1, 1, 1, 9)
    x[..., 4] = 1.0
    compose = Compose([PatchMask(patch_size=1, fill_value=2.0), GaussianBlur()])
    out = compose.apply(x, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(out, torch.full_like(x, 2.0))  # masked to 2 everywhere, then blurred
    torch.testing.assert_close(
        compose.increment(torch.tensor([[0.5, 0.6]]), torch.tensor([[0.75, 1.0]])), torch.tensor([[0.5, 0.8]])
    )
    with pytest.raises(ValueError, match=r"levels must have shape \(N, K=2\)"):
        compose.apply(x, torch.tensor([1.0]))


def test_registry_builds_and_rejects() -> None:
    op = build_corruption("mask", patch_size=2, fill_value=1.0)
    assert isinstance(op, PatchMask) and op.patch_size == 2 and op.fill_value == 1.0
    assert isinstance(build_corruption("noise"), GaussianNoise)
    with pytest.raises(ValueError, match=r"unknown corruption 'jpeg'.*blur.*downsample.*mask.*noise"):
        build_corruption("jpeg")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['patch'\].*\['patch_size', 'fill_value'\]"):
        build_corruption("mask", patch=3)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigma'\]; valid parameters: \[\]"):
        build_corruption("noise", sigma=1.0)


def test_bad_levels_and_inputs_raise() -> None:
    x = _images(n=2)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1.0\]"):
        PatchMask().apply(x, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"levels must lie in \[0, inf\]"):
        GaussianNoise().apply(x, torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match=r"level must have shape \(N,\) = \(2,\), got \(3,\)"):
        GaussianBlur().apply(x, torch.ones(3))
    with pytest.raises(ValueError, match=r"x must be a 4-D tensor"):
        GaussianBlur().apply(x[0, 0], torch.ones(8))  # (8, 8): neither images nor signals
    with pytest.raises(ValueError, match=r"patch_size must be an integer >= 1, got 0"):
        PatchMask(patch_size=0)
