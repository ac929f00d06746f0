"""From a typed config to the objects a run needs: dataset, pseudo-video builder, model, task.

A *task* is what the training engine trains (see :class:`pseudovideo.training.engine.TrainingTask`): it
turns a batch of clean images into pseudo videos and a loss. The model code knows nothing of
tasks or configs; this module is the only place where config fields meet constructors.

Two tasks, one per model pair of the paper:
- :class:`TokenizerTask` (VQVAE / C-ViViT): reconstruct the pseudo video; the image output is its
  last frame. Loss = frame-weighted reconstruction + VQ + perceptual + adversarial (last frame).
- :class:`DiffusionTask` (DDPM UNet / video UNet): denoise the whole pseudo video jointly; the
  generated image is the last frame of a generated pseudo video.

Both take any construction of ``pseudo_video.construction``, including ``copies`` (T identical clean
frames), the control that gives a video model T frames of capacity without any corruption.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.config import PseudoVideoConfig, RunConfig, model_kind
from pseudovideo.config.modality import sample_size, spatial_dims
from pseudovideo.pseudo_video.corruptions import corruption_params
from pseudovideo.data.images import ImageDataset
from pseudovideo.data.cache import cached_dataset
from pseudovideo.data.modality import build_split
from pseudovideo.diffusion.process import GaussianDiffusion, beta_schedule
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
from pseudovideo.models.cvivit import CViViT
from pseudovideo.models.discriminator import PatchGANDiscriminator
from pseudovideo.models.quantizer import VectorQuantizer, resolve_fsq_levels
from pseudovideo.models.tokenizer import VideoTokenizer
from pseudovideo.models.unet import UNet, image_unet, video_unet
from pseudovideo.models.vqvae import VQVAE
from pseudovideo.models.vqvae1d import SignalVQVAE
from pseudovideo.pseudo_video.builder import SCHEDULE_KEYS, PseudoVideoBuilder
from pseudovideo.pseudo_video.builder import build_pseudo_video_builder as _build_builder

TOKENIZER_FAMILIES = ("vqvae", "cvivit")
DIFFUSION_FAMILIES = ("unet", "video_unet")  # and model.family lifted, by its base: see is_tokenizer
PREVIEW_VIDEOS = 4  # pseudo videos shown in a preview grid


def build_dataset_from_config(config: RunConfig, *, split: str, spread: int | None = None) -> ImageDataset:
    """The configured dataset split as images (C, H, W) or signals (C, L) in [-1, 1] (flips only for training images).

    ``spread``: decode only that many images evenly spread over a split other than the training split (the images
    ``spread_images(whole split, spread)`` picks, unless ``data.skip_bad_files`` drops files: then the whole split).
    """
    data = config.data
    mixed_channels = data.channels is None and data.dataset.startswith("folder:")  # counted over the images read
    if spread is not None and (split == data.train_split or data.skip_bad_files or mixed_channels):
        spread = None  # a training subset or skipped bad files would move the spread: decode the whole split
    max_images = data.max_images if split == data.train_split else spread
    random_flip = data.random_flip and split == data.train_split
    key = (split, max_images, random_flip, *sorted(dataclasses.asdict(data).items()))
    # images or signals, as the data's modality says (pseudovideo.data.modality)
    return cached_dataset(key, lambda: build_split(data, split, max_images=max_images, random_flip=random_flip))


def corruption_dicts(pv_config: PseudoVideoConfig) -> list[dict[str, Any]]:
    """The ``pseudo_video.corruptions`` as the dicts :func:`pseudovideo.pseudo_video.builder.build_pseudo_video_builder` takes."""
    corruptions: list[dict[str, Any]] = []
    for corruption in pv_config.corruptions:
        accepted = (*SCHEDULE_KEYS, *corruption_params(corruption.name))  # e.g. patch_size only for mask
        corruptions.append({k: v for k, v in dataclasses.asdict(corruption).items() if k in accepted})
    return corruptions


def build_pseudo_video_builder(pv_config: PseudoVideoConfig) -> Any:
    """The pseudo-video builder described by a ``pseudo_video`` config section.

    A PseudoVideoBuilder, except with a fixed ``mixture`` or a ``learned.from_file`` (a
    :class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos`).
    A run whose ``learned.objective`` searches or learns its corruption gets it from
    :func:`pseudovideo.training.learned_runs.prepare_corruption`; this function gives its configured starting point.
    """
    from pseudovideo.training.learned_runs import configured_learned_builder  # imports this module

    learned = configured_learned_builder(pv_config)
    if learned is not None:
        return learned
    return _build_builder(corruption_dicts(pv_config), num_frames=pv_config.num_frames, construction=pv_config.construction)


def describe_pseudo_video(pv_config: PseudoVideoConfig) -> str:
    """One line saying how the run's pseudo videos are made (for eval notes and tables)."""
    if pv_config.construction == "copies":
        return (f"T={pv_config.num_frames}, copies ({pv_config.num_frames} identical clean frames: the capacity "
                "control, corruptions ignored)")
    if pv_config.num_frames == 1:
        return "T=1: the clean images themselves (no corruption applied)"
    if pv_config.construction == "noise_frames":
        return (f"T={pv_config.num_frames}, noise_frames ({pv_config.num_frames - 1} frames of N(0, 0.5^2) noise "
                "then the clean image: the non-informative control, corruptions ignored)")
    corruptions = "+".join(f"{c.name}({c.schedule}, max {c.max_level})" for c in pv_config.corruptions)
    learned = pv_config.learned
    extra = f", mixture {pv_config.mixture}" if pv_config.mixture is not None else ""
    if learned.objective != "none":
        extra += f", learned by {learned.objective}" + (" (per image)" if learned.per_image else "") + (
            " with an operator mixture" if learned.mixture else "") + " from this start"
    if learned.from_file:
        extra += f", learned corruption from {learned.from_file}"
    if learned.searched_by:
        extra += f" ({learned.searched_by})"
    return f"T={pv_config.num_frames}, {pv_config.construction}, {corruptions}{extra}"


def is_tokenizer(config: RunConfig) -> bool:
    """Whether the run trains a tokenizer (vqvae, cvivit, a lifted tokenizer) rather than a diffusion model."""
    return model_kind(config.model) == "tokenizer"


def model_frames(config: RunConfig) -> int:
    """Frames per sample the model sees: T, or 1 when pseudo-video frames are used as separate images."""
    return 1 if config.pseudo_video.frames_as_images else config.pseudo_video.num_frames


def build_model(config: RunConfig, channels: int, *, trust_code: bool = False) -> nn.Module:
    """The network of ``model.family`` for images with ``channels`` channels at ``data.resolution``, or for signals
    at ``data.length``: the data's modality (:mod:`pseudovideo.config.modality`) picks the 2-D or the 1-D network.

    A ``model.lifted.base: python:...`` base imports and calls user code: only with ``trust_code=True``, else
    :class:`~pseudovideo.interop.trust.UntrustedCodeError` before anything is imported (see :mod:`pseudovideo.interop.trust`).
    """
    family, resolution, dims = config.model.family, sample_size(config.data), spatial_dims(config.data)
    if family == "lifted":
        from pseudovideo.interop.bases import build_lifted_model  # bases builds our families through this function

        return build_lifted_model(config, channels, model_frames(config), trust_code=trust_code)
    if family == "vqvae" and dims == 1:
        return SignalVQVAE(in_channels=channels, length=resolution, **_kwargs(config.model.vqvae))
    if family == "vqvae":
        return VQVAE(in_channels=channels, resolution=resolution, **_kwargs(config.model.vqvae))
    if family == "cvivit":
        return CViViT(in_channels=channels, resolution=resolution, **_kwargs(config.model.cvivit))
    unet = _kwargs(config.model.unet)
    del unet["level_conditioning"]
    if family == "unet":
        for key in ("causal_temporal", "frame_position", "temporal_layers", "temporal_mixer"):
            del unet[key]  # options of the temporal layers it does not have
        return image_unet(in_channels=channels, resolution=resolution, num_levels=num_levels(config), spatial_dims=dims, **unet)
    return video_unet(in_channels=channels, resolution=resolution, spatial_dims=dims, **unet)


def num_levels(config: RunConfig) -> int:
    """Levels an image UNet is conditioned on: T when it trains on every frame as an image (and
    ``model.unet.level_conditioning``), else 0 (unconditional)."""
    pv = config.pseudo_video
    conditioned = config.model.family == "unet" and pv.frames_as_images and config.model.unet.level_conditioning
    return pv.num_frames if conditioned else 0


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


def _kwargs(section: Any) -> dict[str, Any]:
    """A model config section as constructor keyword arguments (lists become tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dataclasses.asdict(section).items()}


def build_diffusion(config: RunConfig) -> GaussianDiffusion:
    """The Gaussian diffusion process of the ``diffusion`` config section."""
    d = config.diffusion
    return GaussianDiffusion(beta_schedule(d.beta_schedule, d.num_timesteps), prediction=d.prediction)


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
    """(B, T, C, H, W) -> itself, or (B*T, 1, C, H, W) when every frame is a separate image sample (signals: (B, T, C, L))."""
    return rearrange(video, "b t c ... -> (b t) 1 c ...") if frames_as_images else video


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
