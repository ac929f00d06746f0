"""Tokenizer rate (codes per clean image the last frame's decoder reads), residual quantization, and the
rate-limited C-ViViT (``clean_frame_context="own"``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pseudovideo.config import ConfigError, build_config
from pseudovideo.models.cvivit import CViViT
from pseudovideo.models.quantizer import VectorQuantizer
from pseudovideo.models.vqvae import VQVAE

from _tokenizer_helpers import (
    assert_checkpointing_gives_same_gradients,
    assert_restored_tokenizer_matches,
    smooth_video,
    train_steps,
)


def tiny_vqvae(**kwargs) -> VQVAE:
    return VQVAE(resolution=16, base_channels=16, codebook_size=32, codebook_dim=8, **kwargs)


def tiny_cvivit(**kwargs) -> CViViT:
    defaults = dict(resolution=16, dim=32, heads=2, dim_head=16, codebook_size=32, codebook_dim=8, spatial_depth=1,
                    temporal_depth=2)
    return CViViT(**{**defaults, **kwargs})


# -- Q = 1 and clean_frame_context="all" are the models as they were ---------------------------------------------


def _fingerprint(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float, int]:
    """(sum |weights and buffers|, sum |eval reconstruction|, sum of indices)."""
    weights = sum(float(v.double().abs().sum()) for v in model.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        out = model.eval()(x)
    return weights, float(out.recon.double().abs().sum()), int(out.indices.sum())


def test_default_models_match_the_weights_and_outputs_from_before_residual_quantization() -> None:
    # Fingerprints measured with the code before num_quantizers / clean_frame_context existed (commit c2da2c1):
    # same seed -> same weights (exactly: initialisation only draws random numbers) and same outputs.
    torch.manual_seed(0)
    vqvae = VQVAE(resolution=16, base_channels=16, codebook_size=32, codebook_dim=8)
    weights, recon, indices = _fingerprint(vqvae, smooth_video(2, 2))
    assert weights == pytest.approx(3665.7242031265287, rel=1e-12)
    assert recon == pytest.approx(781.8916022841586, rel=1e-5)
    assert indices == 4149
    torch.manual_seed(0)
    cvivit = CViViT(resolution=16, dim=32, heads=2, dim_head=16, codebook_size=32, codebook_dim=8, temporal_patch_size=2)
    weights, recon, indices = _fingerprint(cvivit, smooth_video(2, 5))
    assert weights == pytest.approx(8797.218787673619, rel=1e-12)
    assert recon == pytest.approx(2373.480863425648, rel=1e-5)
    assert indices == 1670


def test_one_quantizer_has_the_plain_state_dict_and_no_stage_axis() -> None:
    torch.manual_seed(0)
    plain = tiny_vqvae()
    torch.manual_seed(0)
    one = tiny_vqvae(num_quantizers=1)
    assert plain.state_dict().keys() == one.state_dict().keys()
    assert not any("residual_vqs" in key for key in one.state_dict())
    assert all(torch.equal(v, one.state_dict()[k]) for k, v in plain.state_dict().items())
    assert one(smooth_video(2, 1)).indices.shape == (2, 1, 8, 8)


# -- rate, by hand -------------------------------------------------------------------------------------------------


def test_vqvae_rate_hand_computed() -> None:
    # 32x32, 4x downsampling: an 8x8 grid = 64 codes of log2(512) = 9 bits; frames independent, so T does not matter.
    model = VQVAE(resolution=32, base_channels=8, channel_mult=(1, 2, 2), codebook_size=512, codebook_dim=8)
    for frames in (1, 8):
        rate = model.rate(frames)
        assert (rate.codes_per_image, rate.bits_per_image, rate.codebook_size, rate.num_quantizers) == (64, 576.0, 512, 1)
    rvq = VQVAE(resolution=32, base_channels=8, channel_mult=(1, 2, 2), codebook_size=512, codebook_dim=8, num_quantizers=8)
    rate = rvq.rate(1)
    assert (rate.codes_per_image, rate.bits_per_image, rate.num_quantizers) == (512, 4608.0, 8)
    assert "8x8" in rate.description and "8 residual stages" in rate.description
    assert set(rate.as_dict()) == {"codes_per_image", "bits_per_image", "codebook_size", "num_quantizers", "description"}
    odd = VQVAE(resolution=16, base_channels=8, codebook_size=100, codebook_dim=8)  # 8x8 grid, log2(100) bits per code
    assert odd.rate(1).bits_per_image == pytest.approx(64 * math.log2(100))
    with pytest.raises(ValueError, match="num_frames=0"):
        model.rate(0)


@pytest.mark.parametrize(
    "tp, frames, context, codes",
    [
        (1, 8, "all", 8 * 64),  # causal decoder: every step's 8x8 codes -> 512 codes, 8 times the VQVAE's
        (1, 8, "own", 64),  # the last step's codes only: the VQVAE's 64
        (2, 9, "all", 5 * 64),  # t = 1 + 8 / 2 = 5 steps
        (2, 9, "own", 64),
        (1, 1, "all", 64),  # an image: one step either way
        (1, 1, "own", 64),
    ],
)
def test_cvivit_rate_hand_computed(tp: int, frames: int, context: str, codes: int) -> None:
    model = CViViT(resolution=32, patch_size=4, temporal_patch_size=tp, dim=16, heads=2, dim_head=8,
                   spatial_depth=0, temporal_depth=1, codebook_size=512, codebook_dim=8, clean_frame_context=context)
    rate = model.rate(frames)
    assert rate.codes_per_image == codes
    assert rate.bits_per_image == codes * 9.0
    assert (rate.codebook_size, rate.num_quantizers) == (512, 1)


def test_cvivit_rate_counts_quantizer_stages_and_rejects_frame_counts_it_cannot_embed() -> None:
    model = tiny_cvivit(temporal_patch_size=2, num_quantizers=3)  # 16 / 4 = 4x4 grid, K = 32 (5 bits)
    rate = model.rate(5)  # 3 steps x 16 positions x 3 stages
    assert (rate.codes_per_image, rate.bits_per_image, rate.num_quantizers) == (144, 720.0, 3)
    with pytest.raises(ValueError, match="T-1 must be divisible by 2"):
        model.rate(4)


# -- residual vector quantization -------------------------------------------------------------------------------------


def test_residual_quantizer_hand_computed() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(4, codebook_size=8, num_quantizers=2, commitment_weight=0.5).eval()
    tokens = torch.randn(2, 5, 4)
    out = vq(tokens)
    first, second = vq.stages[0].codebook, vq.stages[1].codebook  # (8, 4) each
    i0 = torch.cdist(tokens, first.expand(2, 8, 4)).argmin(-1)  # (2, 5) nearest codes of stage 1
    residual = tokens - first[i0]
    i1 = torch.cdist(residual, second.expand(2, 8, 4)).argmin(-1)  # stage 2 quantizes what stage 1 left
    assert out.indices.shape == (2, 5, 2)
    assert torch.equal(out.indices[..., 0], i0) and torch.equal(out.indices[..., 1], i1)
    torch.testing.assert_close(out.quantized, first[i0] + second[i1])
    commitment = F.mse_loss(tokens, first[i0]) + F.mse_loss(residual, second[i1])  # summed over the stages
    torch.testing.assert_close(out.stats["commitment"], commitment)
    torch.testing.assert_close(out.loss, 0.5 * commitment)
    torch.testing.assert_close(vq.indices_to_latents(out.indices), out.quantized)
    for key, high in (("perplexity", 8.0), ("codebook_usage", 1.0)):
        assert 0 < float(out.stats[key]) <= high


def test_residual_quantizer_learned_codebooks_get_their_codebook_loss_and_straight_through_gradients() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(4, codebook_size=8, num_quantizers=3, ema_codebook=False).train()
    tokens = torch.randn(2, 5, 4, requires_grad=True)
    out = vq(tokens)
    out.quantized.sum().backward(retain_graph=True)
    torch.testing.assert_close(tokens.grad, torch.ones_like(tokens))  # straight through: identity once, not Q times
    tokens.grad = None
    out.loss.backward()
    for stage in vq.stages:  # every stage's codebook is learned by its own codebook loss
        grads = [p.grad for p in stage.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_residual_stages_lower_the_quantization_error_of_a_trained_vqvae() -> None:
    x = smooth_video(4, 1)
    errors = {}
    for stages in (1, 4):
        torch.manual_seed(0)
        model = tiny_vqvae(num_quantizers=stages, kmeans_init=True)
        train_steps(model, x, 30)
        with torch.no_grad():
            errors[stages] = F.mse_loss(model.eval()(x).recon, x).item()
    assert errors[4] < errors[1]


@pytest.mark.parametrize("make, frames", [(tiny_vqvae, 2), (lambda **kw: tiny_cvivit(temporal_patch_size=2, **kw), 5)])
def test_residual_tokenizers_shapes_decode_codes_and_state_round_trip(make, frames: int) -> None:
    torch.manual_seed(0)
    model = make(num_quantizers=3)
    x = smooth_video(2, frames)
    out = model(x)
    assert out.indices.shape[-1] == 3 and out.indices.ndim == 5
    assert out.recon.shape == x.shape
    model.eval()
    with torch.no_grad():
        latents, indices, _, _ = model.encode(x)
        torch.testing.assert_close(model.decode_codes(indices), model.decode(latents), rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="Q\\)"):
            model.decode_codes(indices[..., 0])
    torch.manual_seed(1)
    restored = make(num_quantizers=3)
    restored.load_state_dict(model.state_dict())
    assert_restored_tokenizer_matches(model, restored, x)


def test_bad_quantizer_counts_are_rejected_in_the_model_and_the_config() -> None:
    with pytest.raises(ValueError, match="num_quantizers must be >= 1, got 0"):
        tiny_vqvae(num_quantizers=0)
    with pytest.raises(ValueError, match="cosine_codes=True needs num_quantizers=1"):
        tiny_cvivit(num_quantizers=2, cosine_codes=True)
    with pytest.raises(ConfigError, match="model.vqvae.num_quantizers: expected an integer >= 1, got 0"):
        build_config(overrides=["model.vqvae.num_quantizers=0"])
    with pytest.raises(ConfigError, match="model.cvivit.num_quantizers=2 needs model.cvivit.cosine_codes=false"):
        build_config(overrides=["model.cvivit.num_quantizers=2", "model.cvivit.cosine_codes=true"])
    with pytest.raises(ConfigError, match="model.cvivit.clean_frame_context: expected one of all, own"):
        build_config(overrides=["model.cvivit.clean_frame_context=last"])
    config = build_config(
        overrides=["model.family=cvivit", "model.cvivit.num_quantizers=2", "model.cvivit.clean_frame_context=own"]
    )
    assert (config.model.cvivit.num_quantizers, config.model.cvivit.clean_frame_context) == (2, "own")


# -- rate-limited C-ViViT --------------------------------------------------------------------------------------------------


def _decoded_with_step0_randomised(model: CViViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction from the model's codes, reconstruction with the codes of time step 0 replaced at random)."""
    model.eval()
    with torch.no_grad():
        _, indices, _, _ = model.encode(x)
        changed = indices.clone()
        generator = torch.Generator().manual_seed(3)
        changed[:, 0] = torch.randint(0, model.codebook_size, changed[:, 0].shape, generator=generator)
        assert not torch.equal(changed, indices)
        return model.decode_codes(indices), model.decode_codes(changed)


@pytest.mark.parametrize("tp, frames, quantizers", [(1, 4, 1), (2, 5, 1), (1, 3, 2)])
def test_own_context_decodes_the_last_frame_from_the_last_step_only(tp: int, frames: int, quantizers: int) -> None:
    torch.manual_seed(0)
    model = tiny_cvivit(temporal_patch_size=tp, clean_frame_context="own", num_quantizers=quantizers)
    before, after = _decoded_with_step0_randomised(model, smooth_video(2, frames))
    torch.testing.assert_close(after[:, -tp:], before[:, -tp:], rtol=0, atol=1e-6)  # the last step's frames
    # the other steps stay causal: step 1 still reads step 0 (when it is not the last step)
    if model.num_time_steps(frames) > 2:
        assert not torch.allclose(after[:, 1], before[:, 1], atol=1e-4)


def test_all_context_decodes_the_last_frame_from_every_step() -> None:
    torch.manual_seed(0)
    model = tiny_cvivit(temporal_patch_size=1, clean_frame_context="all")
    before, after = _decoded_with_step0_randomised(model, smooth_video(2, 4))
    assert not torch.allclose(after[:, -1], before[:, -1], atol=1e-4)


def test_own_context_keeps_the_weights_and_gradient_checkpointing_of_the_causal_model() -> None:
    torch.manual_seed(0)
    causal = tiny_cvivit()
    torch.manual_seed(0)
    own = tiny_cvivit(clean_frame_context="own")
    assert all(torch.equal(v, own.state_dict()[k]) for k, v in causal.state_dict().items())  # same parameters
    x = smooth_video(2, 3)
    with torch.no_grad():  # one step: nothing to restrict, both decoders agree on an image
        torch.testing.assert_close(own.eval()(x[:, :1]).recon, causal.eval()(x[:, :1]).recon, rtol=0, atol=0)
    assert_checkpointing_gives_same_gradients(own.train(), x)
