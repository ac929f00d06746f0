"""Noise schedules of the Gaussian diffusion: the betas beta_t of the linear (Ho et al. 2020) and cosine (Nichol &
Dhariwal 2021) schedules, as float64 tensors (N,)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BETA_SCHEDULES", "beta_schedule", "cosine_alpha_bar", "cosine_betas", "linear_betas"]

BETA_SCHEDULES = ("linear", "cosine")


def linear_betas(num_timesteps: int) -> Tensor:
    """Ho et al. linear betas from 1e-4 to 0.02, both scaled by 1000 / N; (N,) float64."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_alpha_bar(u: Tensor, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal alpha_bar(u) = f(u) / f(0), f(u) = cos^2(pi/2 (u + s) / (1 + s)), u = t / N in [0, 1]."""
    f = torch.cos(0.5 * math.pi * (u + s) / (1.0 + s)) ** 2
    f0 = math.cos(0.5 * math.pi * s / (1.0 + s)) ** 2
    return f / f0


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas beta_t = min(1 - alpha_bar((t+1)/N) / alpha_bar(t/N), max_beta) of the cosine schedule; (N,) float64."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = cosine_alpha_bar(u, s)
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def beta_schedule(kind: str, num_timesteps: int) -> Tensor:
    """The beta_t of a named schedule ("linear" or "cosine") with N = num_timesteps steps; (N,) float64."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if kind == "linear":
        if num_timesteps <= 20:  # the last beta 0.02 * 1000 / N must stay below 1
            raise ValueError(
                f"the linear schedule needs num_timesteps > 20 (last beta 20 / N < 1), got {num_timesteps}"
            )
        return linear_betas(num_timesteps)
    if kind == "cosine":
        return cosine_betas(num_timesteps)
    raise ValueError(f"beta schedule must be one of {BETA_SCHEDULES}, got {kind!r}")
