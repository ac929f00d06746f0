"""Shared fixtures-as-functions of the tokenizer tests: smooth test videos and a tiny training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pseudovideo.models.tokenizer import VideoTokenizer


def smooth_video(batch: int, frames: int, resolution: int = 16, seed: int = 0) -> torch.Tensor:
    """(B, T, 3, R, R) smooth images in (-1, 1): bilinear upsampling of 4x4 noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch * frames, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=resolution, mode="bilinear", align_corners=False).tanh()
    return x.view(batch, frames, 3, resolution, resolution)


def train_steps(model: VideoTokenizer, x: torch.Tensor, steps: int, lr: float = 3e-3) -> list[float]:
    """Adam on MSE + VQ loss; returns the reconstruction losses of every step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out = model(x)
        rec = F.mse_loss(out.recon, x)
        loss = rec + sum(out.aux_losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(rec.item())
    return losses
