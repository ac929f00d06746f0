"""VQVAE (image tokenizer, frame by frame on videos) and the shared vector quantizer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pseudovideo.models.quantizer import VectorQuantizer, code_usage_stats
from pseudovideo.models.tokenizer import TokenizerOutput, count_parameters
from pseudovideo.models.vqvae import VQVAE

from _tokenizer_helpers import (
    assert_checkpointing_gives_same_gradients,
    assert_restored_tokenizer_matches,
    smooth_video,
    train_steps,
)

RES = 16


def tiny_vqvae(**overrides) -> VQVAE:
    kwargs = dict(
        in_channels=3, resolution=RES, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        codebook_size=64, codebook_dim=8, dead_code_threshold=1.0, ema_decay=0.9,
    )
    kwargs.update(overrides)
    return VQVAE(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# Shapes, interface, errors


@pytest.mark.parametrize("frames", [1, 2, 5, 9])
def test_output_shapes(frames: int) -> None:
    torch.manual_seed(0)
    model = tiny_vqvae()
    x = smooth_video(2, frames)
    out = model(x)
    assert isinstance(out, TokenizerOutput)
    assert out.recon.shape == x.shape
    assert out.indices.shape == (2, frames, 8, 8)
    assert out.indices.dtype == torch.long
    assert set(out.aux_losses) == {"vq"} and out.aux_losses["vq"].ndim == 0
    assert torch.isfinite(out.aux_losses["vq"]) and out.aux_losses["vq"] > 0
    model.eval()  # (training mode updates the EMA codebook at every call)
    with torch.no_grad():
        latents, indices, _, _ = model.encode(x)
        assert latents.shape == (2, frames, 8, 8, 8)
        assert torch.equal(indices, model(x).indices)


def test_stats_in_valid_ranges() -> None:
    torch.manual_seed(0)
    model = tiny_vqvae()
    out = model(smooth_video(2, 3))
    perplexity, usage = out.stats["perplexity"], out.stats["codebook_usage"]
    assert not perplexity.requires_grad and not usage.requires_grad
    assert 1.0 <= perplexity.item() <= 64.0
    assert 0.0 < usage.item() <= 1.0
    # the perplexity of the batch cannot exceed the number of codes it uses
    assert perplexity.item() <= usage.item() * 64 + 1e-4
    assert usage.item() == pytest.approx(out.indices.unique().numel() / 64)


def test_code_usage_stats_hand_computed() -> None:
    stats = code_usage_stats(torch.tensor([[0, 0, 1, 1]]), codebook_size=4)
    assert stats["perplexity"].item() == pytest.approx(2.0)
    assert stats["codebook_usage"].item() == pytest.approx(0.5)
    stats = code_usage_stats(torch.tensor([3, 3, 3]), codebook_size=8)
    assert stats["perplexity"].item() == pytest.approx(1.0)
    assert stats["codebook_usage"].item() == pytest.approx(1 / 8)
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2, perplexity 2 ** 1.5
    stats = code_usage_stats(torch.tensor([0, 0, 1, 2]), codebook_size=5)
    assert stats["perplexity"].item() == pytest.approx(2**1.5, rel=1e-5)


def test_bad_resolution_raises_naming_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"resolution=18.*factor 4"):
        VQVAE(resolution=18, base_channels=8, channel_mult=(1, 2, 2))
    VQVAE(resolution=20, base_channels=8, channel_mult=(1, 2, 2), codebook_size=8, codebook_dim=4)


def test_wrong_input_shape_raises() -> None:
    model = tiny_vqvae()
    with pytest.raises(ValueError, match=r"\(B, T, 3, 16, 16\)"):
        model(torch.randn(1, 1, 3, 32, 32))
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        model(torch.randn(1, 3, 16, 16))


def test_frames_are_independent() -> None:
    torch.manual_seed(0)
    model = tiny_vqvae().eval()
    x = smooth_video(2, 4)
    changed = x.clone()
    changed[:, 2] = smooth_video(2, 1, seed=5)[:, 0]
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
        alone = model(x[:, 3:4])  # the last frame as an image (T = 1)
    keep = [0, 1, 3]
    assert torch.equal(out.indices[:, keep], out_changed.indices[:, keep])
    torch.testing.assert_close(out.recon[:, keep], out_changed.recon[:, keep], rtol=0, atol=1e-6)
    assert not torch.allclose(out.recon[:, 2], out_changed.recon[:, 2], atol=1e-3)
    torch.testing.assert_close(alone.recon[:, 0], out.recon[:, 3], rtol=0, atol=1e-5)


def test_decode_codes_matches_decode_of_latents() -> None:
    torch.manual_seed(0)
    model = tiny_vqvae().eval()
    with torch.no_grad():
        latents, indices, _, _ = model.encode(smooth_video(2, 2))
        torch.testing.assert_close(model.decode_codes(indices), model.decode(latents))


def test_parameter_count_and_last_layer() -> None:
    model = tiny_vqvae()
    assert model.num_parameters() == count_parameters(model) == sum(p.numel() for p in model.parameters())
    out = model(smooth_video(1, 2))
    F.mse_loss(out.recon, torch.zeros_like(out.recon)).backward()
    assert model.last_layer_weight.shape == (3, 8, 3, 3)
    assert model.last_layer_weight.grad is not None and model.last_layer_weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------
# Quantizer behaviour


def test_quantizer_loss_matches_hand_computation() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4, codebook_size=8, commitment_weight=0.25).eval()
    z = torch.randn(2, 5, 4)
    out = quantizer(z)
    codebook = quantizer.codebook
    nearest = torch.cdist(z.reshape(-1, 4), codebook).argmin(dim=-1).view(2, 5)
    assert torch.equal(out.indices, nearest)
    torch.testing.assert_close(out.quantized, codebook[nearest])
    expected = 0.25 * ((z - codebook[nearest]) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_quantizer_straight_through_and_learned_codebook_gradients() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 6, 4, requires_grad=True)
    quantizer = VectorQuantizer(4, codebook_size=8, ema_codebook=False).train()
    out = quantizer(z)
    codebook = quantizer.codebook
    torch.testing.assert_close(out.quantized, codebook[out.indices].detach())
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # straight-through: identity gradient
    z.grad = None
    quantizer.zero_grad()
    quantizer(z).loss.backward()
    grad = quantizer.vq._codebook.embed.grad
    assert grad is not None and grad.abs().sum() > 0  # codebook loss trains the codes
    with pytest.raises(ValueError, match="cosine_codes"):
        VectorQuantizer(4, codebook_size=8, ema_codebook=False, cosine_codes=True)


def test_ema_codebook_moves_codes_towards_their_tokens() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4, codebook_size=8, ema_decay=0.5).train()
    z = torch.randn(1, 32, 4)
    before = quantizer.codebook.clone()
    indices = quantizer(z).indices
    used = indices.unique()
    for k in used.tolist():
        mean = z[indices == k].mean(dim=0)
        assert (quantizer.codebook[k] - mean).norm() < (before[k] - mean).norm()
    assert not quantizer.vq.zero.requires_grad


def test_cosine_codes_are_unit_norm() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(6, codebook_size=8, codebook_dim=4, cosine_codes=True).train()
    out = quantizer(torch.randn(2, 10, 6))
    assert out.quantized.shape == (2, 10, 6)
    torch.testing.assert_close(quantizer.codebook.norm(dim=-1), torch.ones(8))


def test_kmeans_init_flag_is_checkpointed() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4, codebook_size=4, kmeans_init=True).train()
    assert not bool(quantizer.vq._codebook.initted)
    quantizer(torch.randn(2, 16, 4))
    state = quantizer.state_dict()
    assert bool(state["vq._codebook.initted"])
    restored = VectorQuantizer(4, codebook_size=4, kmeans_init=True)
    restored.load_state_dict(state)
    assert bool(restored.vq._codebook.initted)
    torch.testing.assert_close(restored.codebook, quantizer.codebook, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Training behaviour


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = tiny_vqvae()
    x = smooth_video(2, 1)
    losses = train_steps(model, x, steps=60)
    model.eval()
    with torch.no_grad():
        final = F.mse_loss(model(x).recon, x).item()
    assert final < losses[0] / 10, (losses[0], final)


def test_deterministic_with_seed() -> None:
    def run() -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(123)
        model = tiny_vqvae()
        losses = train_steps(model, smooth_video(2, 2), steps=3)
        return losses, model.state_dict()

    losses_a, state_a = run()
    losses_b, state_b = run()
    assert losses_a == losses_b
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_state_dict_round_trip_restores_ema_buffers() -> None:
    torch.manual_seed(0)
    model = tiny_vqvae()
    fresh = copy.deepcopy(model)
    x = smooth_video(2, 2)
    train_steps(model, x, steps=3)
    state = model.state_dict()
    for name in ("embed", "embed_avg", "cluster_size", "initted"):
        assert f"quantizer.vq._codebook.{name}" in state
    assert not torch.equal(state["quantizer.vq._codebook.cluster_size"], fresh.state_dict()["quantizer.vq._codebook.cluster_size"])

    torch.manual_seed(99)
    restored = tiny_vqvae()
    restored.load_state_dict(state)
    assert_restored_tokenizer_matches(model, restored, x)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    assert_checkpointing_gives_same_gradients(tiny_vqvae(dead_code_threshold=0.0), smooth_video(2, 2))
