"""Gaussian diffusion on pseudo videos."""

from __future__ import annotations

from pseudovideo.diffusion.process import (  # noqa: F401
    BETA_SCHEDULES,
    PREDICTIONS,
    SAMPLERS,
    GUIDANCE_MODES,
    CLIP_MODES,
    Model,
    linear_betas,
    cosine_alpha_bar,
    cosine_betas,
    beta_schedule,
    diffuse,
    v_from_x0_eps,
    x0_from_eps,
    eps_from_x0,
    x0_from_v,
    eps_from_v,
    ddim_timesteps,
    GaussianDiffusion,
)

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTIONS",
    "SAMPLERS",
    "GUIDANCE_MODES",
    "CLIP_MODES",
    "Model",
    "linear_betas",
    "cosine_alpha_bar",
    "cosine_betas",
    "beta_schedule",
    "diffuse",
    "v_from_x0_eps",
    "x0_from_eps",
    "eps_from_x0",
    "x0_from_v",
    "eps_from_v",
    "ddim_timesteps",
    "GaussianDiffusion",
]
