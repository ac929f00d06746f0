"""Samplers of the Gaussian diffusion, as small pure functions of the process and the model (k-diffusion style):
ancestral DDPM, DDIM, sampling conditioned on known first frames (replacement method and reconstruction guidance,
Ho et al. 2022) and frame-autoregressive sampling of pseudo videos.

Every function takes the process (a :class:`~pseudovideo.diffusion.process.GaussianDiffusion`) first and the model
``model(x_t (B, T, C, H, W), t (B,) long) -> prediction`` second; :class:`GaussianDiffusion`'s ``sample*`` methods
call them. Clipping the predicted x_0 to [-1, 1] is right for clean images, but the earlier frames of a pseudo
video may leave [-1, 1] when the corruption adds noise: ``clip_x0="last"`` clips the clean last frame only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from pseudovideo.diffusion.formulas import eps_from_x0

__all__ = [
    "CLIP_MODES",
    "GUIDANCE_MODES",
    "SAMPLERS",
    "ddim_timesteps",
    "denoise",
    "sample",
    "sample_autoregressive",
    "sample_conditional",
    "sample_ddim",
    "sample_ddpm",
    "sample_loop",
]

SAMPLERS = ("ddpm", "ddim")
GUIDANCE_MODES = ("replacement", "reconstruction")
CLIP_MODES = ("all", "last", "none")

Model = Callable[[Tensor, Tensor], Tensor]


class Process(Protocol):
    """What a sampler reads of the diffusion process (:class:`~pseudovideo.diffusion.process.GaussianDiffusion`)."""

    alphas_cumprod: Tensor
    num_timesteps: int

    def _at(self, buffer: Tensor, t: Tensor, like: Tensor) -> Tensor: ...
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor: ...
    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor: ...
    def predict_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor: ...
    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]: ...


# -- helpers ----------------------------------------------------------------------------------------------------
def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard normal noise on ``device``, drawn from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _clip_mode(clip_x0: bool | str) -> str:
    """Normalises ``clip_x0`` (True / False / "all" / "last" / "none") to one of CLIP_MODES."""
    if clip_x0 is True:
        return "all"
    if clip_x0 is False:
        return "none"
    if clip_x0 not in CLIP_MODES:
        raise ValueError(f"clip_x0 must be True, False or one of {CLIP_MODES}, got {clip_x0!r}")
    return clip_x0


def _clip(x_0: Tensor, mode: str) -> Tensor:
    """Clips a predicted x_0 (B, T, C, H, W) to [-1, 1]: all frames, only the last (clean) frame, or none."""
    if mode == "all":
        return x_0.clamp(-1.0, 1.0)
    if mode == "last":
        return torch.cat([x_0[:, :-1], x_0[:, -1:].clamp(-1.0, 1.0)], dim=1)
    return x_0


def _model_device(model: Model) -> torch.device:
    """Device of the model's first parameter (CPU for parameter-free callables)."""
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Validates a video shape (B, T, C, H, W) (or (B, T, C, L) for signals) of positive ints."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f"expected a video shape (B, T, C, H, W) or (B, T, C, L) of positive ints, got {shape}")
    return shape  # type: ignore[return-value]


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raises ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def ddim_timesteps(steps: int, num_timesteps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from N-1 down to 0 (both included when steps >= 2), descending."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in 1..{num_timesteps} (num_timesteps), got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    return torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def sampler_timesteps(process: Process, sampler: str, steps: int | None) -> list[int]:
    """Descending timesteps visited by a sampler: all N for DDPM, ``steps`` evenly spaced for DDIM."""
    _check_choice("sampler", sampler, SAMPLERS)
    if sampler == "ddpm":
        return list(range(process.num_timesteps - 1, -1, -1))
    if steps is None:
        raise ValueError("the ddim sampler needs a number of steps")
    return ddim_timesteps(int(steps), process.num_timesteps)


def _call(model: Model, x_t: Tensor, t: Tensor) -> Tensor:
    """model(x_t, t), checked to be shaped like x_t and cast to its dtype."""
    output = model(x_t, t)
    if output.shape != x_t.shape:
        raise ValueError(f"model output shape {tuple(output.shape)} differs from the input {tuple(x_t.shape)}")
    return output.to(x_t.dtype)


def _initial_noise(
    shape: Sequence[int], x_T: Tensor | None, generator: torch.Generator | None, device: torch.device | str | None,
    model: Model,
) -> Tensor:
    """x_T: the given one (checked against ``shape``) or fresh noise on ``device`` (default: the model's)."""
    shape = _check_shape(shape)
    if x_T is not None:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        return x_T
    device = torch.device(device) if device is not None else _model_device(model)
    return _randn(shape, generator, device, torch.float32)


# -- one step ---------------------------------------------------------------------------------------------------
def denoise(
    process: Process, model: Model, x_t: Tensor, t: Tensor, clip: str, known: Tensor | None = None,
    reconstruction_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Predicted (x_0, epsilon) at x_t, t, with reconstruction guidance on frames after the known prefix.

    Reconstruction guidance (Ho et al. 2022, eq. 7): x0_hat[unknown] -= w sqrt(alpha_bar_t) / 2 *
    grad_{x_t[unknown]} ||x_known - x0_hat[known]||^2. epsilon is recomputed from the (clipped, guided) x_0.
    """
    guided = known is not None and reconstruction_weight != 0.0
    if guided:
        num_known = known.shape[1]
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            x0 = process.predict_x0(_call(model, x_in, t), x_in, t)
            error = (known - x0[:, :num_known]).square().sum()
            (grad,) = torch.autograd.grad(error, x_in)
        x0 = x0.detach()
        scale = reconstruction_weight * process._at(process.alphas_cumprod, t, x_t).sqrt() / 2.0
        x0 = torch.cat([x0[:, :num_known], x0[:, num_known:] - scale * grad[:, num_known:]], dim=1)
        eps = None
    else:
        output = _call(model, x_t, t)
        x0 = process.predict_x0(output, x_t, t)
        eps = process.predict_eps(output, x_t, t) if clip == "none" else None  # else recomputed from the clipped x0
    if eps is None:
        x0 = _clip(x0, clip)
        eps = eps_from_x0(x_t, x0, process._at(process.alphas_cumprod, t, x_t))
    return x0, eps


def _ddim_step(x0: Tensor, eps: Tensor, alpha_bar: float, alpha_bar_prev: float, eta: float,
               generator: torch.Generator | None) -> Tensor:
    """x_{t_prev} from the predicted (x_0, epsilon): DDIM (Song et al. 2021, eq. 12/16); eta = 1 gives DDPM's
    posterior variance."""
    sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    x = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
    return x


def sample_loop(
    process: Process, model: Model, x: Tensor, timesteps: list[int], *, sampler: str, eta: float, clip: str,
    generator: torch.Generator | None, progress: bool, known: Tensor | None = None, reconstruction_weight: float = 0.0,
) -> Tensor:
    """Runs the reverse process from x = x_T (B, T, C, H, W) over ``timesteps`` (descending) -> x_0.

    With ``known`` (B, K, C, H, W), the first K frames are conditioned on: at every step they are
    replaced by q_sample(known, t) (replacement method), optionally with reconstruction guidance on the
    other frames, and they are set to ``known`` in the output.
    """
    alphas_cumprod = process.alphas_cumprod.detach().cpu()  # python floats for DDIM, no device syncs
    batch = x.shape[0]
    iterator: Any = timesteps
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(timesteps, desc=f"{sampler} sampling", leave=False)
    for i, t_int in enumerate(iterator):
        t = torch.full((batch,), t_int, device=x.device, dtype=torch.long)
        if known is not None:
            noisy_known = process.q_sample(known, t, _randn(known.shape, generator, x.device, x.dtype))
            x = torch.cat([noisy_known, x[:, known.shape[1]:]], dim=1)
        x0, eps = denoise(process, model, x, t, clip, known, reconstruction_weight)
        if sampler == "ddpm":
            mean, variance = process.posterior_mean_variance(x0, x, t)
            x = mean + variance.sqrt() * _randn(x.shape, generator, x.device, x.dtype) if t_int > 0 else mean
        else:
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            alpha_bar_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
            x = _ddim_step(x0, eps, float(alphas_cumprod[t_int]), alpha_bar_prev, eta, generator)
    if known is not None:
        x = torch.cat([known.to(x.dtype), x[:, known.shape[1]:]], dim=1)
    return x


# -- samplers ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_ddpm(
    process: Process, model: Model, shape: Sequence[int], generator: torch.Generator | None = None,
    progress: bool = False, *, clip_x0: bool | str = True, x_T: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Ancestral DDPM sampling over all N steps -> videos (B, T, C, H, W) of the given shape.

    ``clip_x0``: True / "all" clips predicted x_0 to [-1, 1], "last" only its last frame, False / "none"
    not at all (corrupted pseudo-video frames may leave [-1, 1]).
    """
    x = _initial_noise(shape, x_T, generator, device, model)
    return sample_loop(
        process, model, x, sampler_timesteps(process, "ddpm", None), sampler="ddpm", eta=1.0, clip=_clip_mode(clip_x0),
        generator=generator, progress=progress,
    )


@torch.no_grad()
def sample_ddim(
    process: Process, model: Model, shape: Sequence[int], steps: int, eta: float = 0.0,
    generator: torch.Generator | None = None, x_T: Tensor | None = None, *, clip_x0: bool | str = True,
    progress: bool = False, device: torch.device | str | None = None,
) -> Tensor:
    """DDIM sampling over ``steps`` evenly spaced timesteps -> videos (B, T, C, H, W).

    eta = 0 is deterministic given x_T; eta = 1 matches DDPM's ancestral variance. ``clip_x0`` as in
    :func:`sample_ddpm`.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = _initial_noise(shape, x_T, generator, device, model)
    return sample_loop(
        process, model, x, sampler_timesteps(process, "ddim", steps), sampler="ddim", eta=eta, clip=_clip_mode(clip_x0),
        generator=generator, progress=progress,
    )


@torch.no_grad()
def sample_conditional(
    process: Process, model: Model, x_known: Tensor, num_frames: int, *, sampler: str = "ddim",
    steps: int | None = 50, eta: float = 0.0, guidance: str = "replacement", guidance_weight: float = 1.0,
    clip_x0: bool | str = True, generator: torch.Generator | None = None, x_T: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """Samples the frames K..T-1 of videos whose first K frames are ``x_known`` (B, K, C, H, W).

    Returns (B, T, C, H, W) with T = num_frames and ``out[:, :K] == x_known``. At every step the known
    frames of x_t are replaced by q_sample(x_known, t) (the replacement method); with
    guidance="reconstruction" the unknown frames' x_0 prediction also gets reconstruction guidance of
    weight ``guidance_weight`` (Ho et al. 2022). ``steps`` is ignored by the DDPM sampler.
    """
    _check_choice("guidance", guidance, GUIDANCE_MODES)
    if x_known.ndim not in (4, 5):
        raise ValueError(f"expected x_known of shape (B, K, C, H, W) or (B, K, C, L), got {tuple(x_known.shape)}")
    batch, num_known, channels, *sizes = x_known.shape
    if not 1 <= num_known < num_frames:
        raise ValueError(f"need 1 <= K < num_frames known frames, got K={num_known}, num_frames={num_frames}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    timesteps = sampler_timesteps(process, sampler, steps)
    x = _initial_noise((batch, num_frames, channels, *sizes), x_T, generator, x_known.device, model)
    weight = float(guidance_weight) if guidance == "reconstruction" else 0.0
    return sample_loop(
        process, model, x, timesteps, sampler=sampler, eta=1.0 if sampler == "ddpm" else eta, clip=_clip_mode(clip_x0),
        generator=generator, progress=progress, known=x_known.to(x.dtype), reconstruction_weight=weight,
    )


def _check_autoregressive(num_frames: int, sampler: str, guidance: str, first_stage: str, first_frames: int,
                          frames_per_step: int, eta: float) -> None:
    """ValueError naming the first setting of an autoregressive sampling that cannot be."""
    _check_choice("sampler", sampler, SAMPLERS)
    _check_choice("guidance", guidance, GUIDANCE_MODES)
    _check_choice("first_stage", first_stage, ("full", "prefix"))
    if not 1 <= first_frames <= num_frames:
        raise ValueError(f"first_frames must be in 1..T={num_frames}, got {first_frames}")
    if frames_per_step < 1:
        raise ValueError(f"frames_per_step must be >= 1, got {frames_per_step}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")


@torch.no_grad()
def sample_autoregressive(
    process: Process, model: Model, shape: Sequence[int], *, first_frames: int, sampler: str = "ddim",
    steps: int | None = 50, eta: float = 0.0, guidance: str = "replacement", guidance_weight: float = 1.0,
    frames_per_step: int = 1, first_stage: str = "full", clip_x0: bool | str = True,
    generator: torch.Generator | None = None, progress: bool = False, device: torch.device | str | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Frame-autoregressive sampling of pseudo videos of ``shape`` (B, T, C, H, W).

    Stage 1 samples the first ``first_frames`` frames: ``first_stage="full"`` samples the whole video
    jointly and keeps them, "prefix" samples a video of only ``first_frames`` frames (for causal models
    or models trained on shorter clips). Each later stage samples a full T-frame video conditioned on the
    frames kept so far (:func:`sample_conditional`, replacement or reconstruction guidance) and keeps
    ``frames_per_step`` more frames, until all T are fixed; the last stage produces the clean last frame.
    Returns (video (B, T, C, H, W), info dict naming the mode, sampler, guidance and number of stages).
    """
    batch, num_frames, channels, *sizes = _check_shape(shape)
    _check_autoregressive(num_frames, sampler, guidance, first_stage, first_frames, frames_per_step, eta)
    timesteps = sampler_timesteps(process, sampler, steps)
    clip = _clip_mode(clip_x0)
    first_shape = (batch, num_frames if first_stage == "full" else first_frames, channels, *sizes)
    x_T = _initial_noise(first_shape, None, generator, device, model)
    video = sample_loop(
        process, model, x_T, timesteps, sampler=sampler, eta=1.0 if sampler == "ddpm" else eta, clip=clip,
        generator=generator, progress=progress,
    )
    known = video[:, :first_frames]
    stages = 1
    while known.shape[1] < num_frames:
        video = sample_conditional(
            process, model, known, num_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
            guidance_weight=guidance_weight, clip_x0=clip, generator=generator, progress=progress,
        )
        known = video[:, : min(num_frames, known.shape[1] + frames_per_step)]
        stages += 1
    info = {
        "mode": "autoregressive", "sampler": sampler, "steps": len(timesteps), "eta": eta if sampler == "ddim" else 1.0,
        "guidance": guidance, "guidance_weight": float(guidance_weight) if guidance == "reconstruction" else 0.0,
        "first_frames": first_frames, "frames_per_step": frames_per_step, "first_stage": first_stage, "stages": stages,
    }
    return known, info


@torch.no_grad()
def sample(
    process: Process, model: Model, shape: Sequence[int], *, mode: str = "joint", sampler: str = "ddim",
    steps: int | None = 50, eta: float = 0.0, clip_x0: bool | str = "last", first_frames: int = 1,
    frames_per_step: int = 1, first_stage: str = "full", guidance: str = "replacement", guidance_weight: float = 1.0,
    generator: torch.Generator | None = None, progress: bool = False, device: torch.device | str | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """One entry point for the configured sampling: mode "joint" (all frames at once) or "autoregressive".

    Defaults are those of the ``diffusion`` config section (``clip_x0="last"``: only the clean last
    frame is clipped). Returns (videos (B, T, C, H, W), info dict saying which mode / sampler / guidance
    was used).
    """
    _check_choice("mode", mode, ("joint", "autoregressive"))
    _check_choice("sampler", sampler, SAMPLERS)
    if mode == "autoregressive":
        return sample_autoregressive(
            process, model, shape, first_frames=first_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
            guidance_weight=guidance_weight, frames_per_step=frames_per_step, first_stage=first_stage, clip_x0=clip_x0,
            generator=generator, progress=progress, device=device,
        )
    if sampler == "ddpm":
        video = sample_ddpm(process, model, shape, generator, progress, clip_x0=clip_x0, device=device)
        return video, {"mode": "joint", "sampler": "ddpm", "steps": process.num_timesteps, "eta": 1.0}
    if steps is None:
        raise ValueError("the ddim sampler needs a number of steps")
    video = sample_ddim(process, model, shape, steps, eta, generator, clip_x0=clip_x0, progress=progress, device=device)
    return video, {"mode": "joint", "sampler": "ddim", "steps": int(steps), "eta": eta}
