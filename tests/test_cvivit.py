"""C-ViViT (Phenaki's causal video tokenizer): shapes, frame-count checks, causality, training behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pseudovideo.models.cvivit import CViViT, num_time_steps
from pseudovideo.models.tokenizer import TokenizerOutput

from _tokenizer_helpers import (
    assert_checkpointing_gives_same_gradients,
    assert_restored_tokenizer_matches,
    smooth_video,
    train_steps,
)

RES = 16


def tiny_cvivit(**overrides) -> CViViT:
    kwargs = dict(
        in_channels=3, resolution=RES, patch_size=4, temporal_patch_size=2, dim=32, spatial_depth=1,
        temporal_depth=1, heads=2, dim_head=16, mlp_ratio=2.0, codebook_size=64, codebook_dim=8,
        dead_code_threshold=1.0, ema_decay=0.9, max_frames=9,
    )
    kwargs.update(overrides)
    return CViViT(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# Shapes and errors


@pytest.mark.parametrize(("frames", "tp"), [(1, 2), (3, 2), (5, 2), (9, 2), (1, 1), (2, 1), (5, 1), (9, 1)])
def test_output_shapes(frames: int, tp: int) -> None:
    torch.manual_seed(0)
    model = tiny_cvivit(temporal_patch_size=tp)
    x = smooth_video(2, frames)
    out = model(x)
    assert isinstance(out, TokenizerOutput)
    steps = 1 + (frames - 1) // tp
    assert out.recon.shape == x.shape
    assert out.indices.shape == (2, steps, 4, 4)
    assert out.aux_losses["vq"].ndim == 0 and torch.isfinite(out.aux_losses["vq"])
    model.eval()
    with torch.no_grad():
        latents, indices, _, _ = model.encode(x)
        assert latents.shape == (2, steps, 4, 4, 32)
        torch.testing.assert_close(model.decode_codes(indices), model.decode(latents))


def test_frame_count_must_fit_temporal_patch() -> None:
    model = tiny_cvivit(temporal_patch_size=2)
    with pytest.raises(ValueError, match=r"temporal_patch_size=2.*T=4 \(T-1=3\)"):
        model(torch.zeros(1, 4, 3, RES, RES))
    with pytest.raises(ValueError, match="divisible by 3"):
        num_time_steps(6, 3)
    assert num_time_steps(7, 3) == 3
    assert model.num_frames(model.num_time_steps(9)) == 9


def test_too_many_frames_and_bad_resolution_raise() -> None:
    model = tiny_cvivit(temporal_patch_size=1, max_frames=4)
    model(torch.zeros(1, 4, 3, RES, RES))  # max_frames itself is fine
    with pytest.raises(ValueError, match=r"T=5.*max_frames=4"):
        model(torch.zeros(1, 5, 3, RES, RES))
    with pytest.raises(ValueError, match=r"resolution=18 is not divisible by patch_size=4"):
        CViViT(resolution=18, patch_size=4)
    with pytest.raises(ValueError, match=r"\(B, T, 3, 16, 16\)"):
        model(torch.zeros(1, 1, 3, 8, 8))


def test_stats_in_valid_ranges() -> None:
    torch.manual_seed(0)
    out = tiny_cvivit()(smooth_video(2, 5))
    perplexity, usage = out.stats["perplexity"].item(), out.stats["codebook_usage"].item()
    assert 1.0 <= perplexity <= 64.0
    assert 0.0 < usage <= 1.0
    assert perplexity <= usage * 64 + 1e-4
    assert usage == pytest.approx(out.indices.unique().numel() / 64)


def test_last_layer_gets_gradient_for_images_and_videos() -> None:
    torch.manual_seed(0)
    model = tiny_cvivit()
    assert model.last_layer_weight.shape == (3 * 4 * 4, 32)
    for frames in (1, 5):
        model.zero_grad()
        out = model(smooth_video(1, frames))
        out.recon[:, -1].square().mean().backward()  # loss on the last (clean) frame only
        grad = model.last_layer_weight.grad
        assert grad is not None and grad.abs().sum() > 0, frames


# ---------------------------------------------------------------------------------------------------------
# Causality: frames <= t never see frames > t


def _step_of_frame(frame: int, tp: int) -> int:
    return 0 if frame == 0 else 1 + (frame - 1) // tp


@pytest.mark.parametrize(("tp", "t"), [(1, 0), (1, 2), (2, 0), (2, 2), (2, 4), (2, 6)])
def test_causality(tp: int, t: int) -> None:
    """With tp > 1, t is the last frame of a tubelet (0, 2, 4, ...), so later frames start a new time step."""
    torch.manual_seed(0)
    model = tiny_cvivit(temporal_patch_size=tp).eval()
    frames = 9
    x = smooth_video(2, frames)
    changed = x.clone()
    changed[:, t + 1 :] = smooth_video(2, frames - t - 1, seed=7)
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
    s = _step_of_frame(t, tp)
    assert torch.equal(out.indices[:, : s + 1], out_changed.indices[:, : s + 1])
    torch.testing.assert_close(out.recon[:, : t + 1], out_changed.recon[:, : t + 1], rtol=0, atol=1e-5)
    # the changed frames do change (the test is not vacuous)
    assert not torch.equal(out.indices[:, s + 1 :], out_changed.indices[:, s + 1 :])
    assert not torch.allclose(out.recon[:, t + 1 :], out_changed.recon[:, t + 1 :], atol=1e-3)


def test_information_flows_forward_in_time() -> None:
    """Changing only the first frame changes the codes of later time steps (the temporal transformer works)."""
    torch.manual_seed(0)
    model = tiny_cvivit(temporal_patch_size=1).eval()
    x = smooth_video(1, 5)
    changed = x.clone()
    changed[:, 0] = -changed[:, 0]
    with torch.no_grad():
        a, b = model.encode(x)[0], model.encode(changed)[0]
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Training behaviour


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = tiny_cvivit()
    x = smooth_video(2, 3)
    losses = train_steps(model, x, steps=120, lr=5e-3)
    model.eval()
    with torch.no_grad():
        final = F.mse_loss(model(x).recon, x).item()
    assert final < losses[0] / 10, (losses[0], final)


def test_deterministic_with_seed() -> None:
    def run() -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(321)
        model = tiny_cvivit()
        losses = train_steps(model, smooth_video(2, 5), steps=3)
        return losses, model.state_dict()

    losses_a, state_a = run()
    losses_b, state_b = run()
    assert losses_a == losses_b
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_state_dict_round_trip_restores_ema_buffers() -> None:
    torch.manual_seed(0)
    model = tiny_cvivit()
    x = smooth_video(2, 5)
    train_steps(model, x, steps=3)
    state = model.state_dict()
    assert {"quantizer.vq._codebook.embed_avg", "quantizer.vq._codebook.cluster_size"} <= set(state)

    torch.manual_seed(99)
    restored = tiny_cvivit()
    restored.load_state_dict(state)
    assert_restored_tokenizer_matches(model, restored, x)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    assert_checkpointing_gives_same_gradients(tiny_cvivit(dead_code_threshold=0.0), smooth_video(2, 5))
