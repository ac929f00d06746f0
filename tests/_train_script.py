"""Tiny training task for the engine tests, and a script entry point for subprocess / torchrun runs.

``python tests/_train_script.py RUN_DIR --steps 12 [--resume] [--sleep 0.05] [--deterministic]``
trains :class:`TinyTask` on :func:`tiny_dataset` on the CPU. The task uses every kind of randomness
the engine must restore on resume: the pseudo-video generator (noise), dropout (global torch RNG) and
random flips in the dataset (global torch RNG in ``__getitem__``), plus a buffer updated in forward
(like a VQ codebook) and an optional patch discriminator.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pseudovideo.config import TrainConfig


class Interrupted(Exception):
    """Raised by the task to stop a run at a chosen step (an in-process stand-in for a crash)."""


class TinyAutoencoder(nn.Module):
    """(B, 1, 8, 8) -> (B, 1, 8, 8) conv autoencoder with dropout and forward-updated buffers."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.encode = nn.Conv2d(1, 4, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.decode = nn.Conv2d(4, 1, 3, padding=1)
        self.register_buffer("running_mean", torch.zeros(4))  # EMA-updated in forward, like a VQ codebook
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.encode(x))  # (B, 4, 8, 8)
        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(h.mean((0, 2, 3)).float(), 0.1)
                self.updates += 1
        return self.decode(self.dropout(h))


class TinyDiscriminator(nn.Module):
    """(B, 1, 8, 8) -> (B, 1, 4, 4) patch logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TinyTask:
    """Denoising autoencoder task: noise from the generator, optional hinge-GAN term from ``gan_start``."""

    frames_per_image = 2

    def __init__(
        self,
        *,
        deterministic: bool = False,
        discriminator: bool = False,
        gan_start: int = 2,
        nan_at: int | None = None,
        stop_at: int | None = None,
        sleep: float = 0.0,
        seed: int = 0,
        previews: bool = False,
    ):
        torch.manual_seed(seed)
        self.model = TinyAutoencoder(dropout=0.0 if deterministic else 0.2)
        self.discriminator = TinyDiscriminator() if discriminator else None
        self.deterministic, self.gan_start = deterministic, gan_start
        self.nan_at, self.stop_at, self.sleep, self.previews = nan_at, stop_at, sleep, previews
        self._fake: Tensor | None = None
        self._real: Tensor | None = None

    def training_loss(self, model: nn.Module, images: Tensor, step: int, generator: torch.Generator):
        if self.stop_at is not None and step == self.stop_at:
            raise Interrupted(f"stopped at step {step}")
        if self.sleep:
            time.sleep(self.sleep)
        noise = 0.0 if self.deterministic else 0.3 * torch.randn(images.shape, generator=generator, device=images.device)
        recon = model(images + noise)  # (B, 1, 8, 8)
        loss = F.mse_loss(recon, images)
        scalars = {"mse": loss.detach()}
        if self.discriminator is not None and step >= self.gan_start:
            g_loss = -self.discriminator(recon).mean()
            loss = loss + 0.1 * g_loss
            scalars["g_loss"] = g_loss.detach()
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        self._fake, self._real = recon.detach(), images
        return loss, scalars

    def discriminator_loss(self, step: int):
        if self.discriminator is None or step < self.gan_start:
            return None
        d_real = self.discriminator(self._real)
        d_fake = self.discriminator(self._fake)
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return d_loss, {"d_real": d_real.mean().detach()}

    def preview(self, model: nn.Module, images: Tensor, generator: torch.Generator):
        if not self.previews:
            return {}
        recon = model(images).clamp(-1, 1)
        video = torch.stack([recon, images], dim=1)  # (B, T=2, 1, 8, 8)
        return {"recon": torch.cat([images, recon]), "video": video}


class FlipDataset(Dataset):
    """Fixed random (1, 8, 8) images in [-1, 1], flipped left-right with probability 0.5 (global torch RNG)."""

    def __init__(self, num_images: int = 24, seed: int = 123):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num_images, 1, 8, 8, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index]
        if torch.rand(()).item() < 0.5:
            image = image.flip(-1)
        return image


def tiny_settings(**overrides) -> TrainConfig:
    """Small CPU settings for the tests (fp32, no progress bar, log every step)."""
    base = dict(
        steps=8, batch_size=4, lr=1e-2, warmup_steps=2, min_lr_ratio=0.1, grad_clip=1.0, ema_decay=0.9,
        mixed_precision="off", checkpoint_every=4, keep_last=10, log_every=1, image_every=0, seed=7,
        device="cpu", num_workers=0, progress=False, weight_decay=0.01,
    )
    base.update(overrides)
    return TrainConfig(**base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--deterministic", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from pseudovideo.training.engine import train

    task = TinyTask(deterministic=args.deterministic, sleep=args.sleep)
    settings = tiny_settings(
        steps=args.steps, batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
        ema_decay=0.0 if args.deterministic else 0.9, grad_clip=0.0 if args.deterministic else 1.0,
    )
    train(task, FlipDataset(), settings, args.run_dir, resume=args.resume, config_dict={"steps": args.steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
