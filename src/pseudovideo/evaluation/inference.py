"""Running a trained model on the evaluation images: the held-out images, the reconstructed clean frames of a
tokenizer (from the pseudo videos it was trained on) and the pseudo videos a diffusion model generates."""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from pseudovideo.config import RunConfig
from pseudovideo.config.modality import sample_shape
from pseudovideo.data.datasets import spread_images, spread_subset
from pseudovideo.diffusion.samplers import ddim_timesteps
from pseudovideo.evaluation.sampling_progress import SamplingProgress
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.models import build_diffusion, model_frames
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
from pseudovideo.models.quantizer import CodeUsage
from pseudovideo.training.precision import autocast, resolve_precision
from pseudovideo.training.tasks import diffusion_sample_kwargs, sampling_model


EXAMPLE_VIDEOS = 4  # pseudo videos drawn with their reconstructions in eval_pseudo_videos_then_reconstructions.png


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def held_out_images(config: RunConfig, num_images: int) -> Tensor:
    """``num_images`` images evenly spread over the evaluation split, (N, C, H, W) in [-1, 1] (no flips)."""
    return held_out_set(config, num_images)[0]


def held_out_set(config: RunConfig, num_images: int) -> tuple[Tensor, str]:
    """:func:`held_out_images` and the description of the split they come from (for the protocol)."""
    return held_out_data(config, num_images)[:2]


def held_out_data(config: RunConfig, num_images: int) -> tuple[Tensor, str, dict[str, Any] | None]:
    """:func:`held_out_set` and the dataset's normalisation record (signals, see pseudovideo.data.signals; None for
    images)."""
    dataset = build_dataset_from_config(config, split=config.data.eval_split, spread=num_images)  # decodes those only
    return spread_images(dataset, num_images), dataset.split_description, getattr(dataset, "normalisation", None)


@torch.no_grad()
def reconstruct_clean_frames(
    model: nn.Module, config: RunConfig, images: Tensor, *, batch_size: int, seed: int, device: torch.device,
    usage: CodeUsage | None = None,
    builder: Any = None,
) -> tuple[Tensor, Tensor]:
    """Reconstructs pseudo videos of ``images`` (N, C, H, W); returns (recon last frames (N, C, H, W), examples
    (2, E, T, C, H, W): the input and reconstructed videos of E = 4 images spread over ``images``).

    With ``pseudo_video.frames_as_images`` (an image model), the model sees the clean image alone (T = 1).
    ``usage``, when given, counts every code the tokenizer emits (all positions and time steps).
    Runs in float32: one pass is cheap, and PSNR/SSIM should not carry bf16 rounding (sampling, hundreds of
    passes, uses the training precision instead). ``builder``: the run's pseudo-video builder (default: the
    configured one; a run with a learned corruption passes its own, see pseudovideo.training.learned_runs.run_builder).
    """
    builder = builder if builder is not None else build_pseudo_video_builder(config.pseudo_video)
    if isinstance(builder, nn.Module):
        builder = builder.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    picks = spread_subset(images.shape[0], EXAMPLE_VIDEOS).tolist()  # not the first ones: a sorted split is one class
    recon_frames, inputs, recons = [], [], []
    for start in range(0, images.shape[0], batch_size):
        video = builder(images[start : start + batch_size].to(device), generator=generator)  # (B, T, C, H, W)
        if model_frames(config) == 1:
            video = video[:, -1:]  # (B, 1, C, H, W): an image model reconstructs the clean image
        out = model(video)
        recon = out.recon  # (B, T, C, H, W)
        if usage is not None:
            usage.add(out.indices)
        recon_frames.append(recon[:, -1].float().clamp(-1, 1).cpu())
        chosen = [i - start for i in picks if start <= i < start + video.shape[0]]
        inputs.append(video[chosen].float().cpu())
        recons.append(recon[chosen].float().clamp(-1, 1).cpu())
    return torch.cat(recon_frames), torch.stack([torch.cat(inputs), torch.cat(recons)])


@torch.no_grad()
def generate_videos(
    model: nn.Module, config: RunConfig, num_videos: int, channels: int, *, batch_size: int, seed: int,
    device: torch.device, progress: bool = False, budget_s: float | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Generates ``num_videos`` pseudo videos (N, T, C, H, W) with the configured sampler; returns them and info.

    ``progress``: a bar over the sampler's model calls with an ETA; ``budget_s``: warn as soon as sampling is
    projected to take longer (evaluation passes the run's training time).
    """
    diffusion = build_diffusion(config).to(device)
    kwargs = diffusion_sample_kwargs(config)
    shape = sample_shape(config.data)  # (R, R) images or (L,) signals
    generator = torch.Generator(device=device).manual_seed(seed)
    precision = resolve_precision(config.train.mixed_precision, device)  # sample as the model was trained
    calls = None  # model calls per batch; autoregressive sampling: learned from the first batch
    if kwargs["mode"] == "joint":
        calls = diffusion.num_timesteps if kwargs["sampler"] == "ddpm" else len(ddim_timesteps(kwargs["steps"], diffusion.num_timesteps))
    bar = SamplingProgress(num_videos, batch_size, calls, enabled=progress, budget_s=budget_s)
    denoiser = bar.counted(sampling_model(model))
    videos, info = [], {}
    start = time.perf_counter()
    try:
        for first in range(0, num_videos, batch_size):
            count = min(batch_size, num_videos - first)
            with autocast(precision, device):
                video, info = diffusion.sample(denoiser, (count, model_frames(config), channels, *shape), generator=generator, **kwargs)
            videos.append(video.float().cpu())
            bar.batch_done(count)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    info = {**info, "seconds": elapsed, "images_per_s": num_videos / max(elapsed, 1e-9)}
    return torch.cat(videos), info
