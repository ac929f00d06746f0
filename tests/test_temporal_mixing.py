"""Placement and kind of the video UNet's temporal layers (model.unet.temporal_layers / temporal_mixer)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pseudovideo.config import ConfigError, build_config
from pseudovideo.models.unet import TEMPORAL_LAYERS, TEMPORAL_MIXERS, image_unet, video_unet
from pseudovideo.models.unet_blocks import TemporalAttention, TemporalConv
from pseudovideo.training.tasks import build_task

from _unet_helpers import TINY_UNET, randomize

SETTINGS = list(itertools.product(TEMPORAL_LAYERS, TEMPORAL_MIXERS))
# three levels, so that "full resolution", "low resolution" and "one per level" differ
SMALL_UNET = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(4,), resolution=16,
                  num_heads=2)


def _fingerprint(model: torch.nn.Module) -> float:
    return sum(float((p.double() * (i + 1)).sum()) for i, p in enumerate(model.state_dict().values()))


def _temporal_kinds(model: torch.nn.Module) -> list[str]:
    blocks = [b for b in [*model.down, *model.middle, *model.up] if hasattr(b, "temporal")]
    return [type(b.temporal).__name__ if b.temporal is not None else "-" for b in blocks]


@pytest.mark.parametrize("frame_position, expected", [("learned", 81052.82177539734), ("relative", 77662.0531953247)])
def test_default_setting_builds_the_original_weights(frame_position: str, expected: float) -> None:
    # fingerprints taken from the video UNet before temporal_layers/temporal_mixer existed (same seed)
    for kwargs in ({}, dict(temporal_layers="every_block", temporal_mixer="attention")):
        torch.manual_seed(0)
        model = video_unet(**TINY_UNET, frame_position=frame_position, **kwargs)
        assert len(model.state_dict()) == 184
        assert _fingerprint(model) == pytest.approx(expected, rel=1e-12)


def test_placement_of_each_setting() -> None:
    kinds = {s: _temporal_kinds(video_unet(**SMALL_UNET, temporal_layers=s[0], temporal_mixer=s[1])) for s in SETTINGS}
    attn, conv = "TemporalAttention", "TemporalConv"
    # down 2+2+2, middle 2, up 3+3+3 blocks; level 0 = full resolution = first 2 down and last 3 up blocks
    assert kinds["every_block", "attention"] == [attn] * 17
    assert kinds["every_block", "conv"] == [conv] * 17
    assert kinds["every_block", "hybrid"] == [conv] * 2 + [attn] * 12 + [conv] * 3
    assert kinds["per_level", "attention"] == ["-", attn] * 3 + [attn, "-"] + ["-", "-", attn] * 3
    assert kinds["per_level", "hybrid"][1] == conv and kinds["per_level", "hybrid"][-1] == conv
    assert kinds["low_res", "attention"] == ["-"] * 2 + [attn] * 12 + ["-"] * 3
    assert kinds["low_res", "hybrid"] == kinds["low_res", "attention"]  # no temporal layer at full resolution


@pytest.mark.parametrize("layers, mixer", SETTINGS)
@pytest.mark.parametrize("frames", [1, 3])
def test_shapes_and_identity_at_init(layers: str, mixer: str, frames: int) -> None:
    torch.manual_seed(0)
    video = video_unet(**SMALL_UNET, temporal_layers=layers, temporal_mixer=mixer)
    image = image_unet(**SMALL_UNET)
    image.load_state_dict({k: v for k, v in video.state_dict().items() if ".temporal." not in k})
    x, t = torch.randn(2, frames, 3, 16, 16), torch.tensor([5, 700])
    with torch.no_grad():
        out = video(x, t)
        assert out.shape == x.shape
        # every temporal layer's output starts at zero: a fresh video UNet is the image UNet
        torch.testing.assert_close(out, image(x, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frame_position", ["learned", "relative"])
def test_temporal_conv_mixes_neighbours_and_respects_causality(frame_position: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2 * 5, 8, 4, 4)  # ((B T), C, H, W), T = 5
    for causal in (False, True):
        layer = randomize(TemporalConv(8, max_frames=8, frame_position=frame_position, causal=causal), scale=0.3)
        changed = x.clone().view(2, 5, 8, 4, 4)
        changed[:, 3] += torch.randn(2, 8, 4, 4)  # perturb frame 3 only (not by a constant: the norm removes it)
        with torch.no_grad():
            delta = (layer(changed.view(10, 8, 4, 4), 5) - layer(x, 5)).view(2, 5, 8, 4, 4).abs().amax(dim=(0, 2, 3, 4))
        # a 3-tap kernel reaches frames 2..4 (non-causal) or 3..5 (causal: i sees i-2..i)
        seen = [3, 4] if causal else [2, 3, 4]
        for frame in range(5):
            assert (delta[frame] > 1e-4) == (frame in seen), (causal, frame, delta)


@pytest.mark.parametrize("layers, mixer", [("per_level", "attention"), ("low_res", "hybrid"), ("every_block", "conv")])
def test_causal_video_unet_does_not_look_ahead(layers: str, mixer: str) -> None:
    torch.manual_seed(0)
    model = randomize(video_unet(**SMALL_UNET, causal_temporal=True, temporal_layers=layers, temporal_mixer=mixer))
    x = torch.randn(1, 4, 3, 16, 16)
    changed = x.clone()
    changed[:, 3] += 1.0
    with torch.no_grad():
        a, b = model(x, torch.tensor([100])), model(changed, torch.tensor([100]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert (a[:, 3] - b[:, 3]).abs().max() > 1e-3
    # and the frames do see each other: a change of frame 0 reaches frame 3
    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        assert (model(changed, torch.tensor([100]))[:, 3] - a[:, 3]).abs().max() > 1e-4


def _forward_flops(model: torch.nn.Module, frames: int = 4) -> int:
    x = torch.randn(1, frames, 3, 16, 16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([10]))
    return counter.get_total_flops()


def test_parameter_and_flop_counts_follow_the_placement() -> None:
    image = image_unet(**SMALL_UNET)
    built = {s: video_unet(**SMALL_UNET, temporal_layers=s[0], temporal_mixer=s[1]) for s in SETTINGS}
    params = {s: m.num_parameters() for s, m in built.items()}
    flops = {s: _forward_flops(m) for s, m in built.items()}
    image_params, image_flops = image.num_parameters(), _forward_flops(image)
    for mixer in TEMPORAL_MIXERS:
        for fewer in ("per_level", "low_res"):
            assert image_params < params[fewer, mixer] < params["every_block", mixer]
            assert image_flops < flops[fewer, mixer] < flops["every_block", mixer]
    for layers in TEMPORAL_LAYERS:  # a 3-tap conv (3 C^2 per pixel) costs less than attention (4 C^2 + scores)
        assert params[layers, "conv"] < params[layers, "attention"]
        assert flops[layers, "conv"] < flops[layers, "attention"]
    # the temporal parameters of one conv layer: a (C, C, 3, 1, 1) kernel, bias, GroupNorm and frame embedding
    conv = TemporalConv(16, max_frames=32, frame_position="learned", causal=False)
    assert sum(p.numel() for p in conv.parameters()) == 16 * 16 * 3 + 16 + 2 * 16 + 32 * 16
    attention = TemporalAttention(16, 2, 32, "learned", False)
    assert sum(p.numel() for p in attention.parameters()) == 4 * 16 * 16 + 4 * 16 + 2 * 16 + 32 * 16


@pytest.mark.parametrize("layers, mixer", SETTINGS)
def test_each_setting_trains_one_step(layers: str, mixer: str) -> None:
    config = build_config(overrides=[
        "model.family=video_unet", "data.resolution=8", "pseudo_video.num_frames=3",
        "model.unet.base_channels=8", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2", "model.unet.causal_temporal=true",
        f"model.unet.temporal_layers={layers}", f"model.unet.temporal_mixer={mixer}",
    ])
    torch.manual_seed(0)
    task = build_task(config, channels=3)
    model = task.model
    temporal = [p for n, p in model.named_parameters() if ".temporal." in n]
    assert temporal
    before = [p.detach().clone() for p in temporal]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    for step in range(2):  # the zero-initialised output conv passes gradients on from the second step
        optimizer.zero_grad()
        loss, _ = task.training_loss(model, images, step, generator)
        loss.backward()
        assert torch.isfinite(loss)
        optimizer.step()
    assert all(p.grad is not None for p in temporal)
    assert any(not torch.equal(a, p) for a, p in zip(before, temporal))


def test_bad_temporal_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="temporal_layers"):
        build_config(overrides=["model.family=video_unet", "model.unet.temporal_layers=sometimes"])
    with pytest.raises(ValueError, match="temporal_mixer"):
        video_unet(**TINY_UNET, temporal_mixer="fft")
