"""Gaussian diffusion on pseudo videos (B, T, C, H, W): :mod:`~pseudovideo.diffusion.betas` (noise schedules),
:mod:`~pseudovideo.diffusion.formulas` (closed-form relations), :mod:`~pseudovideo.diffusion.process` (the forward
process and training loss, :class:`GaussianDiffusion`) and :mod:`~pseudovideo.diffusion.samplers` (DDPM, DDIM,
conditional and frame-autoregressive sampling as small functions). Our own, not diffusers': a few closed-form
formulas, tested against the papers, on 5-D pseudo videos without adapters. The names below are the package's API
(``from pseudovideo.diffusion import GaussianDiffusion, beta_schedule``)."""

from __future__ import annotations

from pseudovideo.diffusion.betas import BETA_SCHEDULES, beta_schedule, cosine_alpha_bar, cosine_betas, linear_betas
from pseudovideo.diffusion.formulas import diffuse, eps_from_v, eps_from_x0, v_from_x0_eps, x0_from_eps, x0_from_v
from pseudovideo.diffusion.process import PREDICTIONS, GaussianDiffusion
from pseudovideo.diffusion.samplers import CLIP_MODES, GUIDANCE_MODES, SAMPLERS, Model, ddim_timesteps

__all__ = [
    "BETA_SCHEDULES",
    "CLIP_MODES",
    "GUIDANCE_MODES",
    "Model",
    "PREDICTIONS",
    "SAMPLERS",
    "GaussianDiffusion",
    "beta_schedule",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_timesteps",
    "diffuse",
    "eps_from_v",
    "eps_from_x0",
    "linear_betas",
    "v_from_x0_eps",
    "x0_from_eps",
    "x0_from_v",
]
