"""Tests of the DDPM image UNet and the space-time factorised video UNet (tiny CPU-sized models)."""

from __future__ import annotations

import pytest
import torch

from pseudovideo.models.unet import UNet, image_unet, is_temporal_key, video_unet

from _unet_helpers import TINY_UNET, randomize


def _video(batch: int = 2, frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("frame_position", ["learned", "relative"])
@pytest.mark.parametrize("frames", [1, 3])
def test_output_shape(temporal: bool, frame_position: str, frames: int) -> None:
    model = UNet(temporal=temporal, frame_position=frame_position, **TINY_UNET)
    x = _video(frames=frames)
    out = model(x, torch.tensor([3, 700]))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    # a scalar timestep is broadcast over the batch
    assert model(x, torch.tensor(5)).shape == x.shape


def test_zero_init_output_and_gradients_flow() -> None:
    model = video_unet(**TINY_UNET)
    x = _video()
    out = model(x, torch.tensor([10, 20]))
    assert torch.count_nonzero(out) == 0  # final conv starts at zero, as in DDPM
    out.sum().backward()  # the final conv still gets a gradient
    grad = model.out[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_video_unet_structure_matches_image_unet() -> None:
    image = image_unet(**TINY_UNET)
    video = video_unet(**TINY_UNET)
    temporal_count = sum(p.numel() for p in video.temporal_parameters())
    assert temporal_count > 0
    assert sum(1 for _ in image.temporal_parameters()) == 0
    assert video.num_parameters() - temporal_count == image.num_parameters()
    spatial_keys = [k for k in video.state_dict() if not is_temporal_key(k)]
    assert spatial_keys == list(image.state_dict())
    assert any(is_temporal_key(k) for k in video.state_dict())


def test_fresh_video_unet_starts_as_loaded_image_unet() -> None:
    """Temporal layers start as identity: with the image weights loaded, outputs equal the image UNet's."""
    image = randomize(image_unet(**TINY_UNET))
    video = video_unet(frame_position="relative", **TINY_UNET).eval()
    video.load_spatial_state_dict(image.state_dict())
    x = _video(frames=3)
    t = torch.tensor([100, 900])
    expected = image(x, t)
    assert expected.abs().mean() > 1e-3
    torch.testing.assert_close(video(x, t), expected, atol=1e-5, rtol=1e-5)


def test_load_spatial_state_dict_rejects_mismatch() -> None:
    video = video_unet(**TINY_UNET)
    other = image_unet(**{**TINY_UNET, "base_channels": 32})
    with pytest.raises(RuntimeError):  # size mismatch is reported by torch
        video.load_spatial_state_dict(other.state_dict())
    state = image_unet(**TINY_UNET).state_dict()
    state.pop("input_conv.weight")
    with pytest.raises(ValueError, match="missing"):
        video.load_spatial_state_dict(state)


@pytest.mark.parametrize("frame_position", ["learned", "relative"])
def test_temporal_attention_mixes_frames(frame_position: str) -> None:
    x = _video(frames=3)
    x_changed = x.clone()
    x_changed[:, 0] += 1.0  # change frame 0 only
    t = torch.tensor([50, 500])
    video = randomize(video_unet(frame_position=frame_position, **TINY_UNET))
    out, out_changed = video(x, t), video(x_changed, t)
    assert (out[:, 2] - out_changed[:, 2]).abs().max() > 1e-4  # frame 2 sees frame 0

    image = randomize(image_unet(**TINY_UNET))
    out, out_changed = image(x, t), image(x_changed, t)
    assert torch.equal(out[:, 1:], out_changed[:, 1:])  # frames are independent in the image UNet
    assert (out[:, 0] - out_changed[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("frame_position", ["learned", "relative"])
def test_causal_temporal_does_not_look_ahead(frame_position: str) -> None:
    model = randomize(video_unet(causal_temporal=True, frame_position=frame_position, **TINY_UNET))
    x = _video(frames=4)
    t = torch.tensor([50, 500])
    out = model(x, t)
    j = 2
    x_changed = x.clone()
    x_changed[:, j] += 1.0
    out_changed = model(x_changed, t)
    torch.testing.assert_close(out_changed[:, :j], out[:, :j], atol=1e-6, rtol=0)
    assert (out_changed[:, j:] - out[:, j:]).flatten(2).abs().amax(-1).min() > 1e-5  # frames >= j do change
    # a prefix of the video gives the same outputs for its frames
    torch.testing.assert_close(model(x[:, :j], t), out[:, :j], atol=1e-5, rtol=1e-5)


def test_relative_bias_and_causal_mask() -> None:
    model = video_unet(causal_temporal=True, frame_position="relative", max_frames=5, **TINY_UNET)
    layer = next(m for name, m in model.named_modules() if name.endswith("temporal"))
    with torch.no_grad():
        layer.relative_bias.copy_(torch.arange(9, dtype=torch.float32)[:, None].expand(9, 2))
    bias = layer.attention_bias(3, torch.float32)  # (heads, T, T)
    assert bias.shape == (2, 3, 3)
    # entry (i, j) is table[i - j + max_frames - 1] for j <= i, -inf for j > i
    assert bias[0, 2, 0] == 6.0 and bias[1, 1, 1] == 4.0 and bias[0, 2, 1] == 5.0
    assert torch.isinf(bias[:, 0, 1]).all() and torch.isinf(bias[:, 1, 2]).all()


def test_gradient_checkpointing_same_gradients() -> None:
    torch.manual_seed(0)
    model = randomize(video_unet(**TINY_UNET)).train()
    x, t = _video(), torch.tensor([3, 300])
    model(x, t).square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(x, t).square().mean().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)


def test_more_frames_than_max_frames_raises() -> None:
    model = video_unet(max_frames=2, **TINY_UNET)
    with pytest.raises(ValueError, match="max_frames=2"):
        model(_video(frames=3), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"resolution": 9, "attention_resolutions": ()}, "divisible by"),
        ({"attention_resolutions": (16,)}, "not feature-map sizes"),
        ({"num_heads": 3}, "must divide"),
        ({"frame_position": "absolute"}, "frame_position"),
        ({"causal_temporal": True}, "needs temporal=True"),
        ({"base_channels": 15}, "even"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"temporal": True, "max_frames": 0}, "max_frames"),
    ],
)
def test_bad_config_raises(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet(**{**TINY_UNET, **overrides})


def test_bad_inputs_raise() -> None:
    model = image_unet(**TINY_UNET)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\) or images \(B, C, H, W\)"):
        model(torch.randn(2, 3, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))  # images (B, C, H, W) with the wrong C
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(2, 1, 1, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(2, 1, 3, 7, 7), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.randn(2, 1, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="video_unet"):
        image_unet(temporal=True, **TINY_UNET)


@pytest.mark.parametrize("temporal", [False, True])
def test_images_are_videos_of_one_frame(temporal: bool) -> None:
    """(B, C, H, W) input is the T = 1 video: same numbers, image shape back (image and video UNet alike)."""
    torch.manual_seed(0)
    model = randomize(UNet(**TINY_UNET, temporal=temporal)).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    with torch.no_grad():
        image_out, video_out = model(x, t), model(x[:, None], t)
    assert image_out.shape == (2, 3, 8, 8)
    assert torch.equal(image_out, video_out[:, 0])
    level_model = randomize(image_unet(num_levels=3, **TINY_UNET)).eval()
    with torch.no_grad():
        assert torch.equal(level_model(x, t, level=1), level_model(x[:, None], t, level=1)[:, 0])


def test_level_conditioned_output_depends_on_the_level() -> None:
    torch.manual_seed(0)
    model = randomize(image_unet(in_channels=1, num_levels=4, **TINY_UNET))
    x, t = torch.randn(2, 1, 1, 8, 8), torch.tensor([5, 5])
    clean, corrupted = model(x, t, level=0), model(x, t, level=torch.tensor([3, 3]))
    assert not torch.allclose(clean, corrupted)
    torch.testing.assert_close(model(x, t, level=torch.tensor([0, 3]))[1], corrupted[1])  # per sample
    with pytest.raises(ValueError, match="pass level"):
        model(x, t)
    with pytest.raises(ValueError, match=r"level must lie in \[0, 4\)"):
        model(x, t, level=4)


def test_unconditional_unet_is_unchanged_by_level_conditioning() -> None:
    """Same seed, same weights: the level table is built last and only when asked for."""
    torch.manual_seed(3)
    plain = image_unet(in_channels=1, **TINY_UNET)
    torch.manual_seed(3)
    conditioned = image_unet(in_channels=1, num_levels=4, **TINY_UNET)
    plain_state, conditioned_state = plain.state_dict(), conditioned.state_dict()
    assert set(conditioned_state) - set(plain_state) == {"level_embed.weight"}
    assert all(torch.equal(value, conditioned_state[key]) for key, value in plain_state.items())
    with pytest.raises(ValueError, match="not level-conditioned"):
        plain(torch.randn(1, 1, 1, 8, 8), torch.tensor([1]), level=0)
