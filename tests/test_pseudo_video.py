"""Tests for pseudo video construction (first-order and higher-order)."""

from __future__ import annotations

import pytest
import torch

from pseudovideo.pseudo_video.builder import PseudoVideoBuilder, build_pseudo_video_builder
from pseudovideo.pseudo_video.corruptions import GaussianBlur, GaussianNoise, PatchMask

SPECS = {
    "blur": {"name": "blur", "max_level": 2.0},
    "noise": {"name": "noise", "max_level": 0.5},
    "downsample": {"name": "downsample", "max_level": 4.0},  # whole octaves at T = 2 and 5 (first_order needs them)
    "mask": {"name": "mask", "max_level": 0.8, "patch_size": 2},
    "blur+noise": [{"name": "blur", "max_level": 1.0}, {"name": "noise", "schedule": "cosine", "max_level": 0.2}],
}
CONSTRUCTIONS = ["first_order", "higher_order"]


def _builder(key: str, num_frames: int, construction: str) -> PseudoVideoBuilder:
    spec = SPECS[key]
    return build_pseudo_video_builder(spec if isinstance(spec, list) else [spec], num_frames, construction)


def _images(n: int = 3, c: int = 3, h: int = 8, w: int = 8, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(dtype)


@pytest.mark.parametrize("key", sorted(SPECS))
@pytest.mark.parametrize("construction", CONSTRUCTIONS)
@pytest.mark.parametrize("num_frames", [1, 2, 5])
def test_last_frame_is_input_exactly(key: str, construction: str, num_frames: int) -> None:
    x = _images()
    video = _builder(key, num_frames, construction)(x, torch.Generator().manual_seed(0))
    assert video.shape == (3, num_frames, 3, 8, 8)
    assert torch.equal(video[:, -1], x)
    if num_frames > 1:
        assert not torch.equal(video[:, 0], x)


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_dtype_device_and_num_frames(construction: str) -> None:
    x = _images(n=2, c=1, h=6, w=10, dtype=torch.float64)
    builder = _builder("blur+noise", 4, construction)
    video = builder(x, torch.Generator().manual_seed(0))
    assert builder.num_frames == 4
    assert video.shape == (2, 4, 1, 6, 10) and video.dtype == torch.float64 and video.device == x.device


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_seeded_generator_is_deterministic(construction: str) -> None:
    x = _images()
    builder = _builder("blur+noise", 5, construction)
    a = builder(x, torch.Generator().manual_seed(3))
    b = builder(x, torch.Generator().manual_seed(3))
    c = builder(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a[:, :-1], c[:, :-1])


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_noise_marginals_match_the_schedule(construction: str) -> None:
    x = _images(n=32, c=1, h=16, w=16)
    builder = _builder("noise", 5, construction)  # levels [0.5, 0.375, 0.25, 0.125, 0]
    video = builder(x, torch.Generator().manual_seed(0))
    residual = video - x[:, None]  # (B, T, C, H, W)
    std = residual.transpose(0, 1).flatten(1).std(dim=1)
    mean = residual.transpose(0, 1).flatten(1).mean(dim=1)
    torch.testing.assert_close(std[:-1], torch.tensor([0.5, 0.375, 0.25, 0.125]), rtol=0.03, atol=0)
    levels = torch.tensor([0.5, 0.375, 0.25, 0.125, 0.0])
    assert (mean.abs() <= 4 * levels / residual[:, 0].numel() ** 0.5).all()  # within 4 standard errors
    assert std[-1].item() == 0.0


def test_noise_residual_covariance_first_vs_higher_order() -> None:
    x = _images(n=64, c=1, h=16, w=16)
    levels = torch.tensor([0.5, 0.375, 0.25, 0.125, 0.0])
    for construction in CONSTRUCTIONS:
        video = _builder("noise", 5, construction)(x, torch.Generator().manual_seed(1))
        residual = (video - x[:, None]).transpose(0, 1).flatten(1)  # (T, B*C*H*W)
        cov_next = (residual[:-2] * residual[1:-1]).mean(dim=1)  # E[r_t r_{t+1}], t = 0..T-3
        if construction == "first_order":
            # r_t = r_{t+1} + independent noise, so E[r_t r_{t+1}] = level_{t+1}^2
            torch.testing.assert_close(cov_next, levels[1:-1] ** 2, rtol=0.08, atol=0)
        else:
            # independent draws: covariance ~ 0 (within 4 standard errors level_t level_{t+1} / sqrt(n))
            assert (cov_next.abs() < 4 * levels[:-2] * levels[1:-1] / residual.shape[1] ** 0.5).all()


def test_blur_first_order_equals_higher_order_on_rough_images() -> None:
    # the discrete Gaussian composes exactly, so the chain of small increments equals the direct blur
    # everywhere (borders included), also on white-noise images where a sampled kernel fails badly
    x = _images(n=2, c=2, h=20, w=14, dtype=torch.float64)
    builder = build_pseudo_video_builder([{"name": "blur", "max_level": 2.0}], 18, "first_order")
    first = builder(x)
    higher = build_pseudo_video_builder([{"name": "blur", "max_level": 2.0}], 18, "higher_order")(x)
    torch.testing.assert_close(first, higher, atol=1e-6, rtol=0)  # levels and increments are float32
    assert (higher[:, 12] - x).abs().max() > 0.1  # sigma 0.59 at frame 12: a real blur


def test_dyadic_downsample_first_order_equals_higher_order() -> None:
    x = _images(n=2, c=2, h=16, w=16)
    spec = [{"name": "downsample", "max_level": 3.0}]  # linear T=4: levels 3, 2, 1, 0
    first = build_pseudo_video_builder(spec, 4, "first_order")(x)
    higher = build_pseudo_video_builder(spec, 4, "higher_order")(x)
    torch.testing.assert_close(first, higher)


def test_first_order_refuses_downsample_levels_that_do_not_nest() -> None:
    spec = [{"name": "downsample", "max_level": 2.0}]  # linear T = 5: levels 2, 1.5, 1, 0.5, 0
    with pytest.raises(ValueError, match=r"first_order construction: downsample levels \[0.5, 1.5\] are not whole octaves"):
        build_pseudo_video_builder(spec, 5, "first_order")
    build_pseudo_video_builder(spec, 5, "higher_order")  # direct frames are fine at any level
    builder = build_pseudo_video_builder([{"name": "downsample", "max_level": 2.0}], 3, "first_order")  # 2, 1, 0
    builder(torch.zeros(1, 1, 8, 12))  # grids 8, 4, 2 and 12, 6, 3 nest
    with pytest.raises(ValueError, match=r"on 10x10 images: downsample levels \[0, 1, 2\] give grids \[10, 5, 3\]"):
        builder(torch.zeros(1, 1, 10, 10))


@pytest.mark.parametrize("num_frames", [1, 2, 6])
def test_copies_are_identical_clean_frames(num_frames: int) -> None:
    x = _images(n=3, c=2, h=6, w=10)
    builder = build_pseudo_video_builder(SPECS["blur+noise"], num_frames, "copies")
    video = builder(x, torch.Generator().manual_seed(0))
    assert video.shape == (3, num_frames, 2, 6, 10) and builder.num_frames == num_frames
    for t in range(num_frames):
        assert torch.equal(video[:, t], x)
    video[:, 0] += 1  # the frames are copies, not views of x
    assert torch.equal(builder(x)[:, 0], x)
    no_corruption = build_pseudo_video_builder([], num_frames, "copies")(x)  # corruptions are not needed
    assert torch.equal(no_corruption, builder(x))


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_mask_marginal_fraction_matches_levels(construction: str) -> None:
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5  # never equals fill 0
    builder = PseudoVideoBuilder([PatchMask(patch_size=2)], torch.tensor([[0.8], [0.5], [0.2], [0.0]]), construction)
    video = builder(x, torch.Generator().manual_seed(0))
    fraction = (video == 0).transpose(0, 1).flatten(1).float().mean(dim=1)
    torch.testing.assert_close(fraction, torch.tensor([0.8, 0.5, 0.2, 0.0]), atol=0.03, rtol=0)
    if construction == "first_order":  # masks are nested: whatever is masked stays masked
        masked = video == 0
        assert bool((masked[:, 1:] <= masked[:, :-1]).all())


def test_composed_blur_noise_first_order_keeps_the_scheduled_noise() -> None:
    # frame 0 has the same noise level as frame 1 but more blur: the step blurs frame 1's noise, and its
    # coloured increment restores white noise of std 0.3 (before, the chain's frame 0 had std 0.22)
    x = torch.zeros(16, 1, 32, 32)
    levels = torch.tensor([[2.0, 0.3], [1.0, 0.3], [0.0, 0.0]])
    ops = [GaussianBlur(), GaussianNoise()]
    first = PseudoVideoBuilder(ops, levels, "first_order")(x, torch.Generator().manual_seed(0))
    higher = PseudoVideoBuilder(ops, levels, "higher_order")(x, torch.Generator().manual_seed(0))
    for video in (first, higher):
        assert abs(video[:, 0].std().item() - 0.3) < 0.01 and abs(video[:, 1].std().item() - 0.3) < 0.01
    # white: neighbouring pixels uncorrelated (blurred noise would correlate them by ~0.7)
    neighbours = (first[:, 0, :, :, 1:] * first[:, 0, :, :, :-1]).mean() / first[:, 0].var()
    assert abs(neighbours.item()) < 0.03


@pytest.mark.parametrize("key", ["blur", "noise", "downsample", "mask"])
def test_single_operator_first_order_is_the_plain_chain_of_increments(key: str) -> None:
    # one operator: frame t-1 = op(frame t, increment), bit for bit (the coloured increments are for blur+noise)
    x = _images(n=4, h=16, w=16)
    builder = _builder(key, 5, "first_order")
    video = builder(x, torch.Generator().manual_seed(5))
    generator, frames = torch.Generator().manual_seed(5), [x]
    for t in range(3, -1, -1):
        frames.append(builder.compose.apply(frames[-1], builder.increments[t].expand(4, -1), generator))
    assert torch.equal(video, torch.stack(frames[::-1], dim=1))


@pytest.mark.parametrize("key", ["blur", "blur+noise"])
@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_pseudo_videos_are_built_in_float32_under_bf16_autocast(key: str, construction: str) -> None:
    x = _images(n=4, h=32, w=32)
    builder = _builder(key, 8, construction)
    plain = builder(x, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = builder(x, torch.Generator().manual_seed(0))
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)


def test_blur_first_and_higher_order_agree_under_bf16_autocast() -> None:
    x = _images(n=4, h=32, w=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = _builder("blur", 18, "first_order")(x)
        higher = _builder("blur", 18, "higher_order")(x)
    torch.testing.assert_close(first, higher, atol=1e-5, rtol=0)  # bf16 matmuls drifted apart by ~1e-2


def test_a_bf16_batch_is_built_in_float32_and_returned_in_bf16() -> None:
    x = _images(n=4, h=16, w=16).bfloat16()
    video = _builder("blur", 6, "higher_order")(x)
    reference = _builder("blur", 6, "higher_order")(x.float())
    assert video.dtype == torch.bfloat16 and torch.equal(video[:, -1], x)
    assert torch.equal(video, reference.bfloat16())


def test_builder_levels_from_specs() -> None:
    builder = build_pseudo_video_builder(
        [
            {"name": "blur", "schedule": "linear", "max_level": 2.0, "min_level": None, "levels": None},
            {"name": "mask", "schedule": "explicit", "levels": [0.5, 0.5, 0.25], "patch_size": 4},
            {"name": "noise", "schedule": "geometric", "max_level": 0.4, "min_level": 0.1},
        ],
        4,
        "first_order",
    )
    expected = torch.tensor([[2.0, 0.5, 0.4], [4 / 3, 0.5, 0.2], [2 / 3, 0.25, 0.1], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(builder.levels, expected)
    assert [op.name for op in builder.operators] == ["blur", "mask", "noise"]
    assert builder.operators[1].patch_size == 4


def test_bad_inputs_raise() -> None:
    ops = [GaussianNoise()]
    with pytest.raises(ValueError, match=r"last row of levels .* must be all zeros, got \[0.5\]"):
        PseudoVideoBuilder(ops, torch.tensor([[1.0], [0.5]]), "first_order")
    with pytest.raises(ValueError, match=r"unknown construction 'second_order'.*first_order.*higher_order.*copies"):
        PseudoVideoBuilder(ops, torch.tensor([[1.0], [0.0]]), "second_order")
    with pytest.raises(ValueError, match=r"levels must have shape \(T, K=1\)"):
        PseudoVideoBuilder(ops, torch.zeros(3, 2), "first_order")
    with pytest.raises(ValueError, match=r"non-increasing"):
        PseudoVideoBuilder(ops, torch.tensor([[0.5], [1.0], [0.0]]), "higher_order")
    with pytest.raises(ValueError, match=r"operator 'mask' must be <= 1.0"):
        PseudoVideoBuilder([PatchMask()], torch.tensor([[1.5], [0.0]]), "higher_order")
    builder = PseudoVideoBuilder(ops, torch.tensor([[1.0], [0.0]]), "first_order")
    with pytest.raises(ValueError, match=r"x must be a 4-D image batch \(B, C, H, W\) or a 3-D signal batch \(B, C, L\), got shape \(8, 8\)"):
        builder(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"unknown corruption 'jpeg'"):
        build_pseudo_video_builder([{"name": "jpeg", "max_level": 1.0}], 4, "first_order")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigma'\]"):
        build_pseudo_video_builder([{"name": "blur", "max_level": 1.0, "sigma": 2}], 4, "first_order")
    with pytest.raises(ValueError, match=r"needs max_level"):
        build_pseudo_video_builder([{"name": "blur"}], 4, "first_order")


def test_config_style_specs_explicit_ignores_default_max_level_and_single_frame_needs_no_operator() -> None:
    # the config layer always passes max_level (default 2.0); explicit levels define the maximum
    spec = {"name": "noise", "schedule": "explicit", "max_level": 2.0, "min_level": None, "levels": [0.3, 0.1]}
    builder = build_pseudo_video_builder([spec], 3, "higher_order")
    torch.testing.assert_close(builder.levels, torch.tensor([[0.3], [0.1], [0.0]]))
    single = build_pseudo_video_builder([], 1, "first_order")
    x = _images()
    assert torch.equal(single(x)[:, 0], x) and single.num_frames == 1
    with pytest.raises(ValueError, match=r"at least one operator when num_frames=3"):
        build_pseudo_video_builder([], 3, "first_order")


@pytest.mark.parametrize("family", ["vqvae", "cvivit", "unet", "video_unet"])
def test_copies_construction_trains_every_model_family(family: str) -> None:
    from pseudovideo.config import build_config
    from pseudovideo.training.tasks import build_task
    from pseudovideo.factory.pseudo_videos import describe_pseudo_video
    from test_train_cli import TINY, TOKENIZERS, UNET

    frames = {"vqvae": 1, "cvivit": 3, "unet": 1, "video_unet": 3}[family]
    model = TOKENIZERS.get(family, [f"model.family={family}", *UNET])
    config = build_config(overrides=[*TINY, *model, f"pseudo_video.num_frames={frames}",
                                     "pseudo_video.construction=copies"])
    task = build_task(config, channels=1)
    images = _images(n=2, c=1)
    video = task.builder(images)
    assert video.shape == (2, frames, 1, 8, 8) and all(torch.equal(video[:, t], images) for t in range(frames))
    loss, _ = task.training_loss(task.model, images, 0, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert describe_pseudo_video(config.pseudo_video) == (
        f"T={frames}, copies ({frames} identical clean frames: the capacity control, corruptions ignored)"
    )
