"""Short proxy runs that score a candidate corruption for the random search (corruption_search.random_search).

A proxy run trains the run's own model (same family, sizes, batch, learning rate and AdamW betas) for
``pseudo_video.learned.proxy_steps`` steps on pseudo videos of the candidate corruption, without EMA, GAN or
perceptual loss, in memory (no run folder), seeded by ``pseudo_video.learned.seed``; then it scores the clean
frame on held-out images: a tokenizer by the PSNR of its reconstructed clean frame (higher is better), a
diffusion model by the denoising MSE of the clean frame (the ``mse_last_frame`` of the DDPM loss, 4 passes with
fixed timesteps and noise; lower is better).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from pseudovideo import metrics as M
from pseudovideo.config import RunConfig
from pseudovideo.factory.models import is_tokenizer, model_frames
from pseudovideo.training.distributed import resolve_device
from pseudovideo.training.randomness import seeded
from pseudovideo.training.tasks import build_task

__all__ = ["proxy_score"]

DIFFUSION_PASSES = 4


def proxy_config(config: RunConfig) -> RunConfig:
    """The run's config without the losses a proxy run leaves out (GAN, perceptual) and without learning."""
    loss = dataclasses.replace(config.loss, gan_weight=0.0, perceptual_weight=0.0)
    learned = dataclasses.replace(config.pseudo_video.learned, objective="none")
    return dataclasses.replace(config, loss=loss, pseudo_video=dataclasses.replace(config.pseudo_video, learned=learned))


@torch.no_grad()
def _score(task: Any, config: RunConfig, builder: Any, held_out: Tensor, seed: int) -> tuple[float, str]:
    """The proxy metric of a trained task on held-out images (N, C, H, W): (value, "psnr" or "clean_frame_mse")."""
    model = task.model.eval()
    generator = torch.Generator().manual_seed(seed)
    if is_tokenizer(config):
        video = builder(held_out, generator=generator)  # (N, T, C, H, W)
        if model_frames(config) == 1:
            video = video[:, -1:]
        recon = model(video).recon[:, -1].clamp(-1, 1)
        return float(M.psnr(recon, held_out).mean()), "psnr"
    values = []
    for _ in range(DIFFUSION_PASSES):
        _, stats = task.training_loss(model, held_out, 0, generator)
        values.append(float(stats["mse_last_frame"]))
    return sum(values) / len(values), "clean_frame_mse"


def proxy_score(config: RunConfig, builder: Any, train_images: Tensor, held_out: Tensor) -> tuple[float, str]:
    """Trains a proxy of ``config``'s model on ``builder``'s pseudo videos of train_images (N, C, H, W) and scores
    it on held_out (M, C, H, W); returns (score, metric name). Deterministic for ``learned.seed`` on the CPU."""
    seed = config.pseudo_video.learned.seed
    proxy = proxy_config(config)
    train = config.train
    device = resolve_device(train.device)
    train_images, held_out = train_images.to(device), held_out.to(device)
    with seeded(seed):
        task = build_task(proxy, channels=train_images.shape[1], builder=builder)
        model = task.model.to(device).train()
        task.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        for step in range(config.pseudo_video.learned.proxy_steps):
            batch = train_images[torch.randint(0, train_images.shape[0], (train.batch_size,), generator=generator)]
            loss, _ = task.training_loss(model, batch, step, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
        return _score(task, proxy, builder, held_out, seed + 1)
