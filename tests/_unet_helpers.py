"""Shared fixtures-as-functions of the UNet and diffusion tests: a tiny UNet size and parameter noise."""

from __future__ import annotations

import torch

TINY_UNET = dict(
    base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), resolution=8, num_heads=2
)


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturbs every parameter, so zero-initialised output layers (identity at init) become active; returns eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()
