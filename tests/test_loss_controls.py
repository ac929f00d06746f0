"""The two members of a pair train with the same loss: frame weights with frames as images, the adaptive GAN
weight's definition, and the loss terms each run reports (lifted tokenizers are tokenizers)."""

from __future__ import annotations

import pytest
import torch

from pseudovideo.config import build_config
from pseudovideo.diffusion.betas import beta_schedule
from pseudovideo.diffusion.process import GaussianDiffusion
from pseudovideo.training.losses import adaptive_gan_weight, frame_weights, hinge_g_loss, reconstruction_loss
from pseudovideo.training.tasks import AtLevel, build_task, frame_levels

TINY = ["data.dataset=digits", "data.resolution=16", "data.channels=1", "pseudo_video.construction=higher_order",
        "pseudo_video.corruptions=[{name: blur, max_level: 1.5}, {name: noise, max_level: 0.2}]"]
VQVAE = ["model.family=vqvae", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4"]
CVIVIT = ["model.family=cvivit", "model.cvivit.dim=16", "model.cvivit.heads=2", "model.cvivit.dim_head=8",
          "model.cvivit.spatial_depth=1", "model.cvivit.temporal_depth=1", "model.cvivit.codebook_size=16",
          "model.cvivit.codebook_dim=4", "model.cvivit.patch_size=4", "model.cvivit.temporal_patch_size=1"]
UNET = ["model.family=unet", "model.unet.base_channels=8", "model.unet.channel_mult=[1,2]",
        "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=[]", "model.unet.num_heads=1",
        "diffusion.num_timesteps=20", "diffusion.sample_steps=5"]
GAN = ["loss.gan_weight=0.1", "loss.gan_start_step=0", "loss.discriminator_channels=8"]
RUNS = {  # name -> overrides: the image model, the image model on every frame, the video model
    "vqvae": [*VQVAE, "pseudo_video.num_frames=1"],
    "vqvae_frames": [*VQVAE, "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true"],
    "cvivit": [*CVIVIT, "pseudo_video.num_frames=3"],
}


def _images(batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _task(*overrides: str):
    task = build_task(build_config(overrides=[*TINY, *overrides]), channels=1)
    task.model.eval()  # a deterministic forward (no codebook updates), so the test can repeat it
    return task


def test_frames_as_images_weigh_the_clean_frame_as_the_video_model_does() -> None:
    # every frame as an image: each frame-image is weighted by its frame's weight, so the clean frame has
    # 4 / (2 + 4) of the reconstruction loss, its share in the C-ViViT (before: 1/3, a uniform mean)
    task = _task(*RUNS["vqvae_frames"], "loss.last_frame_weight=4")
    images = _images()
    _, scalars = task.training_loss(task.model, images, step=0, generator=torch.Generator().manual_seed(1))
    video = task.builder(images, generator=torch.Generator().manual_seed(1))  # (B, T, C, H, W)
    with torch.no_grad():
        recon = task.model(video.reshape(-1, 1, *video.shape[2:])).recon.reshape(video.shape)
    per_frame = (recon - video).abs().mean(dim=(0, 2, 3, 4))  # (T,)
    expected = (per_frame * torch.tensor([1.0, 1.0, 4.0])).sum() / 6
    torch.testing.assert_close(scalars["recon"], expected, rtol=1e-5, atol=0)
    assert torch.equal(task.weights, frame_weights(3, 4.0)) and torch.equal(_task(*RUNS["cvivit"]).weights, task.weights)


def test_diffusion_on_every_frame_weighs_each_frame_image_by_its_frame() -> None:
    task = _task(*UNET, "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true", "loss.last_frame_weight=4")
    images = _images(2)
    loss, _ = task.training_loss(task.model, images, step=0, generator=torch.Generator().manual_seed(1))
    # by hand: the same draws (pseudo videos, then timesteps and noise), frame-image errors weighted 1, 1, 4 per video
    generator = torch.Generator().manual_seed(1)
    video = task.builder(images, generator=generator).reshape(6, 1, 1, 16, 16)  # (B*T, 1, C, H, W), (b t) order
    diffusion: GaussianDiffusion = task.diffusion
    t = torch.randint(0, diffusion.num_timesteps, (6,), generator=generator)
    noise = torch.randn(video.shape, generator=generator)
    with torch.no_grad():
        output = AtLevel(task.model, frame_levels(2, 3))(diffusion.q_sample(video, t, noise), t)
    errors = (output - diffusion.target(video, noise, t)).square().mean(dim=(1, 2, 3, 4))  # (B*T,)
    weights = torch.tensor([1.0, 1.0, 4.0]).repeat(2)
    torch.testing.assert_close(loss.detach(), (weights * errors).sum() / weights.sum(), rtol=1e-5, atol=0)


def test_diffusion_sample_weights_are_a_weighted_mean_over_the_batch() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 10))
    x0 = torch.randn(3, 2, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def model(x, t):
        return x * 0.5

    weights = torch.tensor([1.0, 0.0, 3.0])
    loss, _ = diffusion.training_loss(model, x0, sample_weights=weights, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    t = torch.randint(0, 10, (3,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    error = (model(diffusion.q_sample(x0, t, noise), t) - diffusion.target(x0, noise, t)).square().mean(dim=(2, 3, 4))
    # sample 2 counts three times, sample 1 not at all; the two frames are then averaged
    torch.testing.assert_close(loss, (weights[:, None] * error).sum(0).mean() / weights.sum(), rtol=1e-6, atol=0)
    plain, _ = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(1))
    same, _ = diffusion.training_loss(model, x0, sample_weights=torch.ones(3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same, plain, rtol=1e-6, atol=0)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_adaptive_gan_weight_balances_the_clean_frames_reconstruction_loss(run: str) -> None:
    # one definition for every member of a pair: ||grad L_rec(clean frame)|| / ||grad L_G|| at the decoder's
    # last layer (before: the C-ViViT's frame-weighted loss over all T frames, the VQVAE's clean-frame loss)
    task = _task(*RUNS[run], *GAN)
    images = _images()
    _, scalars = task.training_loss(task.model, images, step=0, generator=torch.Generator().manual_seed(1))
    video = task.pseudo_videos(images, torch.Generator().manual_seed(1))
    out = task.model(video)
    real, fake = task._clean_frames(video), task._clean_frames(out.recon)  # (B, C, H, W)
    nll = reconstruction_loss(fake[:, None], real[:, None], torch.ones(1), "l1")
    expected = adaptive_gan_weight(nll, hinge_g_loss(task.discriminator(fake)), task.model.last_layer_weight)
    torch.testing.assert_close(scalars["gan_adaptive_weight"], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(scalars["recon_clean"], nll.detach(), rtol=1e-6, atol=0)


def test_a_lifted_tokenizer_reports_tokenizer_loss_terms() -> None:
    lifted = ["model.family=lifted", "model.lifted.base=vqvae", "model.lifted.kind=tokenizer",
              "model.vqvae.commitment_weight=0.5", *VQVAE[1:]]
    for frames in (1, 3):
        task = _task(*lifted, f"pseudo_video.num_frames={frames}", *GAN)
        terms = task.loss_terms
        assert set(terms) == {"reconstruction", "vq", "perceptual", "adversarial"}, terms
        assert terms["vq"]["commitment_weight"] == 0.5 and terms["vq"]["codebook"] == "EMA"
        assert terms["adversarial"]["active"] and terms["reconstruction"]["frames"] == (
            "one frame" if frames == 1 else "clean frame weighted 4x each corrupted frame")
    diffusion = _task("model.family=lifted", "model.lifted.base=unet", *UNET[1:], "pseudo_video.num_frames=3")
    assert set(diffusion.loss_terms) == {"diffusion"}
    frames = _task(*RUNS["vqvae_frames"]).loss_terms["reconstruction"]["frames"]
    assert frames == "3 frames as separate images, clean frame weighted 4x each corrupted frame (as the video model)"
