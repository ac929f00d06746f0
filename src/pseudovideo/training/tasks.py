"""The training tasks: what the engine trains for each model pair, built from a run config.

A *task* is what the training engine trains (see :class:`pseudovideo.training.engine.TrainingTask`): it
turns a batch of clean images into pseudo videos and a loss. Its network and pseudo-video builder come from
:mod:`pseudovideo.factory` (the one place where config sections meet constructors); this module adds the
objective (losses, discriminator, diffusion process) and the loss terms a run records.

Two tasks, one per model pair of the paper:
- :class:`TokenizerTask` (VQVAE / C-ViViT): reconstruct the pseudo video; the image output is its
  last frame. Loss = frame-weighted reconstruction + VQ + perceptual + adversarial (last frame).
- :class:`DiffusionTask` (DDPM UNet / video UNet): denoise the whole pseudo video jointly; the
  generated image is the last frame of a generated pseudo video.

Both take any construction of ``pseudo_video.construction``, including ``copies`` (T identical clean
frames), the control that gives a video model T frames of capacity without any corruption.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.config import RunConfig
from pseudovideo.diffusion.process import GaussianDiffusion
from pseudovideo.factory.models import TOKENIZER_FAMILIES, build_diffusion, build_model, is_tokenizer
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
from pseudovideo.models.cvivit import CViViT
from pseudovideo.models.discriminator import PatchGANDiscriminator
from pseudovideo.models.quantizer import VectorQuantizer, resolve_fsq_levels
from pseudovideo.models.tokenizer import VideoTokenizer
from pseudovideo.models.unet import UNet
from pseudovideo.pseudo_video.builder import PseudoVideoBuilder
from pseudovideo.training.distributed import unwrap_model
from pseudovideo.training.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    build_perceptual_loss,
    frame_weights,
    gan_factor,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)

PREVIEW_VIDEOS = 4  # pseudo videos shown in a preview grid


def frame_levels(batch: int, num_frames: int, device: torch.device | None = None) -> Tensor:
    """Level of every frame of ``batch`` pseudo videos flattened as ``(b t)``: T-1 .. 0 per video, (B*T,) long.

    Level 0 is the clean last frame, the image a level-conditioned model is sampled at.
    """
    levels = torch.arange(num_frames - 1, -1, -1, device=device)  # (T,): frame 0 is the most corrupted
    return levels.repeat(batch)  # (B*T,), matching rearrange "b t ... -> (b t) ..."


class AtLevel:
    """A level-conditioned model seen as the plain ``model(x_t, t)`` the diffusion process calls.

    ``level``: an int (every sample, e.g. 0 = clean for sampling) or a (B,) tensor (training).
    """

    def __init__(self, model: nn.Module, level: Tensor | int) -> None:
        self.model = model
        self.level = level

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, T, C, H, W), t (B,) -> the model's prediction at the bound level, (B, T, C, H, W)."""
        return self.model(x, t, level=self.level)

    def parameters(self):
        """The wrapped model's parameters (the diffusion process reads their device)."""
        return self.model.parameters()


def sampling_model(model: nn.Module) -> "nn.Module | AtLevel":
    """What to sample from: a level-conditioned UNet bound to level 0 (the clean image), else the model itself."""
    return AtLevel(model, 0) if getattr(unwrap_model(model), "num_levels", 0) > 0 else model


def build_task(config: RunConfig, channels: int, builder: Any = None, *,
               trust_code: bool = False) -> "TokenizerTask | DiffusionTask":
    """The training task (model + objective) of a run config; ``builder``: its pseudo-video builder (default:
    the configured one; a run with a learned corruption passes it, see pseudovideo.training.learned_runs); ``trust_code``:
    see :func:`build_model`."""
    if builder is None:
        builder = build_pseudo_video_builder(config.pseudo_video)
    model = build_model(config, channels, trust_code=trust_code)
    # Per frame of the pseudo video, also when its frames are separate images: the clean frame gets the same
    # share of the loss as in the video model (frames_as_images weights each frame-image by its frame's weight).
    weights = frame_weights(config.pseudo_video.num_frames, config.loss.last_frame_weight)
    if is_tokenizer(config):
        loss = config.loss
        perceptual = None
        if loss.perceptual_weight > 0:
            perceptual = build_perceptual_loss(loss.perceptual_net, loss.perceptual_weights)
        discriminator = None
        if loss.gan_weight > 0:
            discriminator = PatchGANDiscriminator(
                in_channels=channels,
                base_channels=loss.discriminator_channels,
                num_layers=loss.discriminator_layers,
                image_size=config.data.resolution,
            )
        task = TokenizerTask(
            model, builder, weights,  # type: ignore[arg-type]
            reconstruction=loss.reconstruction,
            perceptual=perceptual,
            perceptual_weight=loss.perceptual_weight,
            discriminator=discriminator,
            gan_weight=loss.gan_weight,
            gan_start_step=loss.gan_start_step,
            frames_as_images=config.pseudo_video.frames_as_images,
        )
    else:
        task = DiffusionTask(
            model, build_diffusion(config), builder, weights,
            frames_as_images=config.pseudo_video.frames_as_images,
            sample_kwargs=diffusion_sample_kwargs(config, preview=True),
        )
    task.loss_terms = loss_terms(config, perceptual_active=getattr(task, "perceptual", None) is not None, model=model)
    return task


def _frame_note(config: RunConfig) -> str:
    """How the loss weighs the frames of a run's pseudo videos (for ``loss_terms``)."""
    pv, weight = config.pseudo_video, config.loss.last_frame_weight
    if pv.num_frames == 1:
        return "one frame"
    weighted = f"clean frame weighted {weight:g}x each corrupted frame"
    return f"{pv.num_frames} frames as separate images, {weighted} (as the video model)" if pv.frames_as_images else weighted


def _quantizer_settings(config: RunConfig, model: nn.Module | None) -> dict[str, Any]:
    """Commitment weight, codebook kind and FSQ levels (None: a codebook) of a tokenizer's quantizer (a lifted
    tokenizer's are its base's)."""
    family = config.model.family
    if family in TOKENIZER_FAMILIES:
        section = getattr(config.model, family)
        return {"commitment_weight": section.commitment_weight, "codebook": "EMA" if section.ema_codebook else "learned",
                "fsq_levels": resolve_fsq_levels(section.quantizer, section.fsq_levels)}
    quantizer = next((m for m in model.modules() if isinstance(m, VectorQuantizer)), None) if model is not None else None
    if quantizer is None:
        return {"codebook": "the lifted base's", "fsq_levels": None}
    return {"commitment_weight": quantizer.commitment_weight, "codebook": "EMA" if quantizer.ema_codebook else "learned",
            "fsq_levels": quantizer.fsq_levels}


def loss_terms(config: RunConfig, *, perceptual_active: bool, model: nn.Module | None = None) -> dict[str, dict[str, Any]]:
    """Which loss terms a run trains with and their weights (written to ``train_summary.json`` as ``loss_terms``).

    Every term has ``active`` and ``weight``; an inactive term that was asked for says why in ``reason``. The
    task decides the terms (a lifted tokenizer trains as a tokenizer); ``model`` gives a lifted base's quantizer.
    """
    loss = config.loss
    frame_note = _frame_note(config)
    if not is_tokenizer(config):
        d = config.diffusion
        return {"diffusion": {"active": True, "weight": 1.0, "kind": f"simple DDPM MSE on the {d.prediction} prediction",
                              "frames": frame_note}}
    quantizer = _quantizer_settings(config, model)
    fsq_levels = quantizer.pop("fsq_levels")
    terms: dict[str, dict[str, Any]] = {
        "reconstruction": {"active": True, "weight": 1.0, "kind": loss.reconstruction, "frames": frame_note},
        "vq": {"active": True, "weight": 1.0, **quantizer},
        "perceptual": {"active": perceptual_active, "weight": loss.perceptual_weight,
                       "kind": f"LPIPS-{loss.perceptual_net} on the clean last frame"},
        "adversarial": {"active": loss.gan_weight > 0, "weight": loss.gan_weight, "start_step": loss.gan_start_step,
                        "kind": f"hinge patch-GAN ({loss.discriminator_layers} layers, {loss.discriminator_channels} "
                                "channels) on the clean last frame, VQGAN adaptive weight of the clean frame's "
                                "reconstruction loss"},
    }
    if fsq_levels is not None:  # quantizer fsq: no codebook, no VQ loss
        terms["vq"] = {"active": False, "weight": 0.0, "reason": f"FSQ (levels {fsq_levels}) has no VQ loss"}
    if loss.perceptual_weight > 0 and not perceptual_active:
        terms["perceptual"]["reason"] = "LPIPS backbone weights not found (loss.perceptual_weights)"
    return terms


def _split_frames(video: Tensor, frames_as_images: bool) -> Tensor:
    """(B, T, C, H, W) -> itself, or (B*T, 1, C, H, W) when every frame is a separate image sample."""
    return rearrange(video, "b t c ... -> (b t) 1 c ...") if frames_as_images else video  # images or signals


class TokenizerTask:
    """Trains a VQ tokenizer (VQVAE or C-ViViT) to reconstruct pseudo videos of the clean images.

    Loss = sum_t w_t |recon_t - video_t| (frame weights emphasise the clean last frame)
         + VQ commitment/codebook loss (from the model)
         + perceptual_weight * LPIPS(last frame)            [when the backbone weights are present]
         + gan_weight * lambda_adaptive * hinge_g(D(last frame))   [after gan_start_step, VQGAN]
    The perceptual and adversarial terms act on the clean last frame, the image the tokenizer is judged on.
    lambda_adaptive balances the adversarial gradient against the clean frame's own reconstruction loss (+
    LPIPS) for every model alike (an image model's whole loss; a video model's clean frame). With
    ``frames_as_images`` the B*T frame-images are weighted by their frame's w_t, as in the video model.
    """

    def __init__(
        self,
        model: VideoTokenizer,
        builder: PseudoVideoBuilder,
        weights: Tensor,
        *,
        reconstruction: str = "l1",
        perceptual: PerceptualLoss | None = None,
        perceptual_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        gan_weight: float = 0.0,
        gan_start_step: int = 0,
        frames_as_images: bool = False,
    ) -> None:
        self.model = model
        self.builder = builder
        self.weights = weights
        self.reconstruction = reconstruction
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight
        self.discriminator = discriminator
        self.gan_weight = gan_weight
        self.gan_start_step = gan_start_step
        self.frames_as_images = frames_as_images
        self.frames_per_image = builder.num_frames
        self.loss_terms: dict[str, Any] = {}  # filled by build_task (see loss_terms)
        # C-ViViT leaves its tubelet layers unused when it sees single frames; DDP must not wait for their grads.
        frames_seen = 1 if frames_as_images else builder.num_frames
        self.find_unused_parameters = isinstance(model, CViViT) and frames_seen == 1
        self._last: tuple[Tensor, Tensor] | None = None  # (real, fake) clean frames for the discriminator

    def to(self, device: torch.device) -> "TokenizerTask":
        """Moves the auxiliary networks (perceptual loss) and the frame weights to ``device``."""
        self.weights = self.weights.to(device)
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self

    def pseudo_videos(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Clean images (B, C, H, W) -> the model's input videos (B, T, C, H, W), or (B*T, 1, C, H, W)."""
        return _split_frames(self.builder(images, generator=generator), self.frames_as_images)

    def training_loss(
        self, model: nn.Module, images: Tensor, step: int, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and logged scalars for a clean batch ``images`` (B, C, H, W)."""
        video = self.pseudo_videos(images, generator)  # (B, T, C, H, W), or (B*T, 1, C, H, W)
        out = model(video)
        recon_loss = reconstruction_loss(self._as_videos(out.recon), self._as_videos(video), self.weights,
                                         self.reconstruction)
        loss = recon_loss + sum(out.aux_losses.values())
        scalars = {"recon": recon_loss.detach(), **{k: v.detach() for k, v in out.aux_losses.items()}, **out.stats}
        real, fake = self._clean_frames(video), self._clean_frames(out.recon)  # (B, C, H, W)
        # The clean frame's own error: comparable between an image model (T = 1) and a video model.
        recon_clean = reconstruction_loss(fake[:, None], real[:, None], torch.ones(1), self.reconstruction)
        scalars["recon_clean"] = recon_clean.detach()
        nll = recon_clean  # what the adaptive GAN weight balances, the same definition for every model
        if self.perceptual is not None and self.perceptual_weight > 0:
            perceptual = self.perceptual(fake.float(), real.float()).mean()
            nll = nll + self.perceptual_weight * perceptual
            loss = loss + self.perceptual_weight * perceptual
            scalars["lpips"] = perceptual.detach()
        if self.discriminator is not None and gan_factor(step, self.gan_start_step) > 0:
            self.discriminator.requires_grad_(False)  # the generator step must not train D
            g_loss = hinge_g_loss(self.discriminator(fake))
            self.discriminator.requires_grad_(True)
            last_layer = unwrap_model(model).last_layer_weight
            adaptive = adaptive_gan_weight(nll, g_loss, last_layer) if torch.is_grad_enabled() else torch.ones(())
            loss = loss + self.gan_weight * adaptive * g_loss
            scalars.update(g_loss=g_loss.detach(), gan_adaptive_weight=adaptive.detach())
        if self.discriminator is not None:  # copies, so the step's whole videos are not kept alive
            self._last = (real.detach().clone(), fake.detach().clone())
        return loss, scalars

    def _as_videos(self, video: Tensor) -> Tensor:
        """(B, T, C, H, W) itself, or frame-images (B*T, 1, C, H, W) back in their videos (B, T, C, H, W)."""
        return rearrange(video, "(b t) 1 c ... -> b t c ...", t=self.frames_per_image) if self.frames_as_images else video

    def _clean_frames(self, video: Tensor) -> Tensor:
        """The clean last frame of each pseudo video: (B, T, C, H, W) or (B*T, 1, C, H, W) -> (B, C, H, W)."""
        return self._as_videos(video)[:, -1]

    def discriminator_loss(self, step: int) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Hinge loss of the patch GAN on the last clean/reconstructed frames; None before gan_start_step."""
        if self.discriminator is None or self._last is None or gan_factor(step, self.gan_start_step) == 0:
            return None
        real, fake = self._last
        logits_real, logits_fake = self.discriminator(real), self.discriminator(fake)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}

    @torch.no_grad()
    def preview(self, model: nn.Module, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Input pseudo videos and their reconstructions (B, T, C, H, W), and clean vs reconstructed images."""
        video = self.builder(images, generator=generator)  # (N, T, C, H, W)
        recon = model(_split_frames(video, self.frames_as_images)).recon.reshape(video.shape)  # (N, T, C, H, W)
        clean = torch.cat([images, recon[:, -1]])  # (2N, C, H, W): a row of originals, a row of reconstructions
        return {
            "pseudo_videos": video[:PREVIEW_VIDEOS],
            "reconstructions": recon[:PREVIEW_VIDEOS],
            "clean_then_reconstructed": clean,
        }


class DiffusionTask:
    """Trains a (video) UNet to denoise whole pseudo videos with the simple DDPM loss.

    The same timestep t is shared by all frames of a pseudo video and the noise is independent per frame;
    the per-frame squared errors are combined with the frame weights. The generated image of a video model
    is the last frame of a generated pseudo video.
    """

    discriminator = None
    find_unused_parameters = False
    cuda_graphs_ok = True  # static shapes, no buffers mutated in the forward: train.compile_mode auto = CUDA graphs

    def __init__(
        self,
        model: UNet,
        diffusion: GaussianDiffusion,
        builder: PseudoVideoBuilder,
        weights: Tensor,
        *,
        frames_as_images: bool = False,
        sample_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.diffusion = diffusion
        self.builder = builder
        self.weights = diffusion.normalise_frame_weights(weights, weights.numel(), torch.device("cpu"))  # validated once
        if frames_as_images and weights.numel() != builder.num_frames:
            raise ValueError(f"frames_as_images needs one weight per frame ({builder.num_frames}), got {weights.numel()}")
        self.uniform_weights = bool((self.weights == self.weights[0]).all())  # on the host, once
        self.frames_as_images = frames_as_images
        self.frames_per_image = builder.num_frames
        # The logged clean-frame term (the loss picture's); frame-images in one batch log no clean-frame MSE.
        self.clean_frame_terms: tuple[str, ...] = () if frames_as_images else ("mse_last_frame",)
        self.sample_kwargs = sample_kwargs or {}
        self.loss_terms: dict[str, Any] = {}  # filled by build_task (see loss_terms)
        self.level_conditioned = getattr(model, "num_levels", 0) > 0
        if self.level_conditioned and not frames_as_images:
            raise ValueError("a level-conditioned UNet trains on frames as separate images (frames_as_images=True)")

    def to(self, device: torch.device) -> "DiffusionTask":
        """Moves the diffusion buffers and frame weights to ``device``."""
        self.diffusion.to(device)
        self.weights = self.weights.to(device)
        return self

    def training_loss(
        self, model: nn.Module, images: Tensor, step: int, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Simple diffusion loss on the pseudo videos of the clean batch ``images`` (B, C, H, W)."""
        video = _split_frames(self.builder(images, generator=generator), self.frames_as_images)  # (B, T, C, H, W)
        if not self.frames_as_images:
            return self.diffusion.training_loss(model, video, frame_weights=self.weights, generator=generator)
        if self.level_conditioned:  # every frame-image is told its level; (B*T,) levels T-1..0 per image
            model = AtLevel(model, frame_levels(images.shape[0], self.frames_per_image, images.device))
        # each frame-image weighted by its frame's weight (uniform weights: the plain mean, as before)
        sample_weights = None if self.uniform_weights else self.weights.repeat(images.shape[0])  # (B*T,), "(b t)" order
        return self.diffusion.training_loss(model, video, sample_weights=sample_weights, generator=generator)

    def discriminator_loss(self, step: int) -> None:
        """Diffusion models train no discriminator."""
        return None

    @torch.no_grad()
    def preview(self, model: nn.Module, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """A few generated pseudo videos (B, T, C, H, W) and their last frames (the generated images)."""
        frames = 1 if self.frames_as_images else self.builder.num_frames
        shape = (images.shape[0], frames, *images.shape[1:])
        video, _ = self.diffusion.sample(sampling_model(model), shape, generator=generator, **self.sample_kwargs)
        return {"generated_pseudo_videos": video[:PREVIEW_VIDEOS], "generated_images": video[:, -1]}


def diffusion_sample_kwargs(config: RunConfig, *, preview: bool = False) -> dict[str, Any]:
    """Keyword arguments of :meth:`GaussianDiffusion.sample` from the ``diffusion`` config section.

    Previews during training use at most 25 DDIM steps so that they stay cheap.
    """
    d = config.diffusion
    sampler, steps = d.sampler, d.sample_steps
    if preview:
        sampler, steps = "ddim", min(steps, 25)
    if d.sampling_mode == "autoregressive" and config.pseudo_video.num_frames < 2:
        warnings.warn("autoregressive sampling needs at least 2 frames; sampling jointly", stacklevel=2)
    return {
        "mode": d.sampling_mode if config.pseudo_video.num_frames > 1 else "joint",
        "sampler": sampler,
        "steps": steps,
        "eta": d.eta,
        "clip_x0": d.clip_x0,
        "first_frames": d.autoregressive_first_frames,
        "frames_per_step": d.autoregressive_frames_per_step,
        "first_stage": d.autoregressive_first_stage,
        "guidance": d.guidance,
        "guidance_weight": d.guidance_weight,
    }
