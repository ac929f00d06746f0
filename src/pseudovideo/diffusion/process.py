"""Gaussian diffusion (DDPM, Ho et al. 2020) on videos (B, T, C, H, W), with DDPM and DDIM samplers and
frame-autoregressive sampling of pseudo videos (replacement method and reconstruction guidance, Ho et al. 2022).

Why our own implementation and not ``diffusers``: the whole process is a few closed-form formulas; a
compact module of small pure functions is easy to read against the papers, is tested against those closed
forms (tests/test_diffusion.py), works on 5-D pseudo videos without adapters, and adds no dependency.

Notation (Ho et al. 2020), timesteps t = 0 .. N-1 (index 0 is the first, least noisy step):
    beta_t               noise variance added at step t
    alpha_t = 1 - beta_t,   alpha_bar_t = prod_{s <= t} alpha_s
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) epsilon,   epsilon ~ N(0, I)
    v   = sqrt(alpha_bar_t) epsilon - sqrt(1 - alpha_bar_t) x_0     (Salimans & Ho 2022)

A pseudo video is diffused as one sample: all T frames share the timestep t and get independent noise,
and the model ``model(x_t, t) -> prediction`` (x_t (B, T, C, H, W), t (B,) long) denoises them jointly.
The generated image is the last frame ``video[:, -1]``.

Clipping the predicted x_0 to [-1, 1] (``clip_x0``) is right for clean images, but the earlier frames of
a pseudo video are corrupted images whose values can leave [-1, 1] when the corruption adds noise; use
``clip_x0="last"`` (clip only the clean last frame) or ``False`` for such pseudo videos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTIONS",
    "SAMPLERS",
    "GUIDANCE_MODES",
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

BETA_SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddpm", "ddim")
GUIDANCE_MODES = ("replacement", "reconstruction")
CLIP_MODES = ("all", "last", "none")

Model = Callable[[Tensor, Tensor], Tensor]


# -- schedules ----------------------------------------------------------------------------------------------
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


# -- closed-form relations (alpha_bar_t broadcasts against the video) -----------------------------------------
def diffuse(x_0: Tensor, epsilon: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) epsilon."""
    return alpha_bar_t.sqrt() * x_0 + (1.0 - alpha_bar_t).sqrt() * epsilon


def v_from_x0_eps(x_0: Tensor, epsilon: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """v = sqrt(alpha_bar_t) epsilon - sqrt(1 - alpha_bar_t) x_0."""
    return alpha_bar_t.sqrt() * epsilon - (1.0 - alpha_bar_t).sqrt() * x_0


def x0_from_eps(x_t: Tensor, epsilon: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) epsilon) / sqrt(alpha_bar_t)."""
    return (x_t - (1.0 - alpha_bar_t).sqrt() * epsilon) / alpha_bar_t.sqrt()


def eps_from_x0(x_t: Tensor, x_0: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """epsilon = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    return (x_t - alpha_bar_t.sqrt() * x_0) / (1.0 - alpha_bar_t).sqrt()


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
    return alpha_bar_t.sqrt() * x_t - (1.0 - alpha_bar_t).sqrt() * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """epsilon = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""
    return (1.0 - alpha_bar_t).sqrt() * x_t + alpha_bar_t.sqrt() * v


def ddim_timesteps(steps: int, num_timesteps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from N-1 down to 0 (both included when steps >= 2), descending."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in 1..{num_timesteps} (num_timesteps), got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    return torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


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


class GaussianDiffusion(nn.Module):
    """The DDPM forward process q(x_t | x_0) with its training loss and samplers, for videos (B, T, C, H, W).

    Args:
        betas: beta_t, (N,) (e.g. from :func:`beta_schedule`); stored with everything derived from it as
            float64 buffers (not saved in state_dicts), cast to the video's dtype at use. ``.to(device)``
            moves them.
        prediction: what the model predicts: "eps" (epsilon) or "v" (Salimans & Ho 2022).
    """

    def __init__(self, betas: Tensor, prediction: str = "eps") -> None:
        super().__init__()
        _check_choice("prediction", prediction, PREDICTIONS)
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError(
                f"betas must lie in (0, 1), got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.prediction = prediction
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t), Ho et al. eq. (6)-(7)
            "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def num_timesteps(self) -> int:
        """N, the number of diffusion steps."""
        return self.betas.numel()

    def extra_repr(self) -> str:
        return f"num_timesteps={self.num_timesteps}, prediction={self.prediction!r}"

    def _at(self, buffer: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """buffer[t] for t (B,), cast to like's dtype/device and shaped (B, 1, 1, 1, 1) to broadcast."""
        values = buffer.to(like.device)[t.to(like.device)].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    # -- forward process and targets ----------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) for x0 (B, ...), t (B,) and noise epsilon shaped like x0."""
        return diffuse(x0, noise, self._at(self.alphas_cumprod, t, x0))

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The regression target of the model: epsilon, or v; shaped like x0."""
        if self.prediction == "eps":
            return noise
        return v_from_x0_eps(x0, noise, self._at(self.alphas_cumprod, t, x0))

    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 recovered from the model's prediction (epsilon or v) at x_t, t; shaped like x_t."""
        alpha_bar_t = self._at(self.alphas_cumprod, t, x_t)
        if self.prediction == "eps":
            return x0_from_eps(x_t, model_output, alpha_bar_t)
        return x0_from_v(x_t, model_output, alpha_bar_t)

    def predict_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """epsilon recovered from the model's prediction (epsilon or v) at x_t, t; shaped like x_t."""
        if self.prediction == "eps":
            return model_output
        return eps_from_v(x_t, model_output, self._at(self.alphas_cumprod, t, x_t))

    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shaped like x_t) and variance beta_tilde_t (B, 1, 1, 1, 1) of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x0 + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t)

    # -- training ---------------------------------------------------------------------------------------------------
    def training_loss(
        self,
        model: Model,
        x0: Tensor,
        *,
        frame_weights: Tensor | None = None,
        sample_weights: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Simple DDPM loss ||target - model(x_t, t)||^2 on clean videos x0 (B, T, C, H, W).

        One timestep t ~ U{0..N-1} per video (shared by its frames), independent noise per frame. The
        squared error is averaged per frame (over the batch, or with ``sample_weights`` (B,) a weighted mean
        over it) and the frames are combined with ``frame_weights`` (T,) normalised to sum 1 (default
        uniform). Returns (scalar loss, detached stats: "mse" (unweighted), "mse_first_frame",
        "mse_last_frame", "t_mean").
        """
        if x0.ndim not in (4, 5):
            raise ValueError(f"expected x0 of shape (B, T, C, H, W) or (B, T, C, L), got {tuple(x0.shape)}")
        batch, num_frames = x0.shape[:2]
        weights = self.normalise_frame_weights(frame_weights, num_frames, x0.device)
        gen_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device).to(x0.device)
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, t)
        if output.shape != x0.shape:
            raise ValueError(f"model output shape {tuple(output.shape)} differs from the input {tuple(x0.shape)}")
        error = (output.float() - self.target(x0, noise, t).float()).square()
        sample_dims = tuple(range(2, error.ndim))  # (2, 3, 4) for images, (2, 3) for signals
        per_frame = error.mean(dim=(0, *sample_dims))  # (T,)
        weighted = per_frame
        if sample_weights is not None:
            sample_weights = sample_weights.to(device=error.device, dtype=error.dtype)
            weighted = (sample_weights[:, None] * error.mean(dim=sample_dims)).sum(dim=0) / sample_weights.sum()  # (T,)
        loss = (weights * weighted).sum()
        stats = {
            "mse": per_frame.mean().detach(),
            "mse_first_frame": per_frame[0].detach(),
            "mse_last_frame": per_frame[-1].detach(),
            "t_mean": t.float().mean(),
        }
        return loss, stats

    @staticmethod
    def normalise_frame_weights(frame_weights: Tensor | None, num_frames: int, device: torch.device) -> Tensor:
        """Validated frame weights (T,) float32 on ``device``, normalised to sum 1 (uniform when None)."""
        if frame_weights is None:
            return torch.full((num_frames,), 1.0 / num_frames, device=device)
        weights = torch.as_tensor(frame_weights, dtype=torch.float32).detach().flatten()
        if weights.numel() != num_frames:
            raise ValueError(f"frame_weights must have T={num_frames} entries, got {weights.numel()}")
        # Value checks only where they cost no device sync (callers validate device tensors once, on the CPU).
        if weights.device.type == "cpu" and (
            not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0
        ):
            raise ValueError(f"frame_weights must be finite, non-negative and not all 0, got {weights.tolist()}")
        return (weights / weights.sum()).to(device)

    # -- sampling ----------------------------------------------------------------------------------------------------
    def _denoise(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor,
        clip: str,
        known: Tensor | None = None,
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
                x0 = self.predict_x0(self._call(model, x_in, t), x_in, t)
                error = (known - x0[:, :num_known]).square().sum()
                (grad,) = torch.autograd.grad(error, x_in)
            x0 = x0.detach()
            scale = reconstruction_weight * self._at(self.alphas_cumprod, t, x_t).sqrt() / 2.0
            x0 = torch.cat([x0[:, :num_known], x0[:, num_known:] - scale * grad[:, num_known:]], dim=1)
            eps = None
        else:
            output = self._call(model, x_t, t)
            x0 = self.predict_x0(output, x_t, t)
            eps = self.predict_eps(output, x_t, t) if clip == "none" else None  # else recomputed from the clipped x0
        if eps is None:
            x0 = _clip(x0, clip)
            eps = eps_from_x0(x_t, x0, self._at(self.alphas_cumprod, t, x_t))
        return x0, eps

    @staticmethod
    def _call(model: Model, x_t: Tensor, t: Tensor) -> Tensor:
        """model(x_t, t), checked to be shaped like x_t and cast to its dtype."""
        output = model(x_t, t)
        if output.shape != x_t.shape:
            raise ValueError(f"model output shape {tuple(output.shape)} differs from the input {tuple(x_t.shape)}")
        return output.to(x_t.dtype)

    def _timesteps(self, sampler: str, steps: int | None) -> list[int]:
        """Descending timesteps visited by a sampler: all N for DDPM, ``steps`` evenly spaced for DDIM."""
        _check_choice("sampler", sampler, SAMPLERS)
        if sampler == "ddpm":
            return list(range(self.num_timesteps - 1, -1, -1))
        if steps is None:
            raise ValueError("the ddim sampler needs a number of steps")
        return ddim_timesteps(int(steps), self.num_timesteps)

    def _sample_loop(
        self,
        model: Model,
        x: Tensor,
        timesteps: list[int],
        *,
        sampler: str,
        eta: float,
        clip: str,
        generator: torch.Generator | None,
        progress: bool,
        known: Tensor | None = None,
        reconstruction_weight: float = 0.0,
    ) -> Tensor:
        """Runs the reverse process from x = x_T (B, T, C, H, W) over ``timesteps`` (descending) -> x_0.

        With ``known`` (B, K, C, H, W), the first K frames are conditioned on: at every step they are
        replaced by q_sample(known, t) (replacement method), optionally with reconstruction guidance on the
        other frames, and they are set to ``known`` in the output.
        """
        alphas_cumprod = self.alphas_cumprod.detach().cpu()  # python floats for DDIM, no device syncs
        batch = x.shape[0]
        iterator: Any = timesteps
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(timesteps, desc=f"{sampler} sampling", leave=False)
        for i, t_int in enumerate(iterator):
            t = torch.full((batch,), t_int, device=x.device, dtype=torch.long)
            if known is not None:
                noisy_known = self.q_sample(known, t, _randn(known.shape, generator, x.device, x.dtype))
                x = torch.cat([noisy_known, x[:, known.shape[1]:]], dim=1)
            x0, eps = self._denoise(model, x, t, clip, known, reconstruction_weight)
            if sampler == "ddpm":
                mean, variance = self.posterior_mean_variance(x0, x, t)
                x = mean + variance.sqrt() * _randn(x.shape, generator, x.device, x.dtype) if t_int > 0 else mean
            else:
                t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                alpha_bar = float(alphas_cumprod[t_int])
                alpha_bar_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
                # DDIM (Song et al. 2021, eq. 12/16); eta = 1 gives DDPM's posterior variance
                sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
                x = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0)) * eps
                if sigma > 0:
                    x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
        if known is not None:
            x = torch.cat([known.to(x.dtype), x[:, known.shape[1]:]], dim=1)
        return x

    def _initial_noise(
        self,
        shape: Sequence[int],
        x_T: Tensor | None,
        generator: torch.Generator | None,
        device: torch.device | str | None,
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

    @torch.no_grad()
    def sample_ddpm(
        self,
        model: Model,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        progress: bool = False,
        *,
        clip_x0: bool | str = True,
        x_T: Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Ancestral DDPM sampling over all N steps -> videos (B, T, C, H, W) of the given shape.

        ``clip_x0``: True / "all" clips predicted x_0 to [-1, 1], "last" only its last frame, False / "none"
        not at all (corrupted pseudo-video frames may leave [-1, 1]).
        """
        x = self._initial_noise(shape, x_T, generator, device, model)
        return self._sample_loop(
            model, x, self._timesteps("ddpm", None), sampler="ddpm", eta=1.0, clip=_clip_mode(clip_x0),
            generator=generator, progress=progress,
        )

    @torch.no_grad()
    def sample_ddim(
        self,
        model: Model,
        shape: Sequence[int],
        steps: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
        *,
        clip_x0: bool | str = True,
        progress: bool = False,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """DDIM sampling over ``steps`` evenly spaced timesteps -> videos (B, T, C, H, W).

        eta = 0 is deterministic given x_T; eta = 1 matches DDPM's ancestral variance. ``clip_x0`` as in
        :meth:`sample_ddpm`.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        x = self._initial_noise(shape, x_T, generator, device, model)
        return self._sample_loop(
            model, x, self._timesteps("ddim", steps), sampler="ddim", eta=eta, clip=_clip_mode(clip_x0),
            generator=generator, progress=progress,
        )

    @torch.no_grad()
    def sample_conditional(
        self,
        model: Model,
        x_known: Tensor,
        num_frames: int,
        *,
        sampler: str = "ddim",
        steps: int | None = 50,
        eta: float = 0.0,
        guidance: str = "replacement",
        guidance_weight: float = 1.0,
        clip_x0: bool | str = True,
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
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
        timesteps = self._timesteps(sampler, steps)
        x = self._initial_noise((batch, num_frames, channels, *sizes), x_T, generator, x_known.device, model)
        weight = float(guidance_weight) if guidance == "reconstruction" else 0.0
        return self._sample_loop(
            model, x, timesteps, sampler=sampler, eta=1.0 if sampler == "ddpm" else eta, clip=_clip_mode(clip_x0),
            generator=generator, progress=progress, known=x_known.to(x.dtype), reconstruction_weight=weight,
        )

    @torch.no_grad()
    def sample_autoregressive(
        self,
        model: Model,
        shape: Sequence[int],
        *,
        first_frames: int,
        sampler: str = "ddim",
        steps: int | None = 50,
        eta: float = 0.0,
        guidance: str = "replacement",
        guidance_weight: float = 1.0,
        frames_per_step: int = 1,
        first_stage: str = "full",
        clip_x0: bool | str = True,
        generator: torch.Generator | None = None,
        progress: bool = False,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Frame-autoregressive sampling of pseudo videos of ``shape`` (B, T, C, H, W).

        Stage 1 samples the first ``first_frames`` frames: ``first_stage="full"`` samples the whole video
        jointly and keeps them, "prefix" samples a video of only ``first_frames`` frames (for causal models
        or models trained on shorter clips). Each later stage samples a full T-frame video conditioned on the
        frames kept so far (:meth:`sample_conditional`, replacement or reconstruction guidance) and keeps
        ``frames_per_step`` more frames, until all T are fixed; the last stage produces the clean last frame.
        Returns (video (B, T, C, H, W), info dict naming the mode, sampler, guidance and number of stages).
        """
        batch, num_frames, channels, *sizes = _check_shape(shape)
        _check_choice("sampler", sampler, SAMPLERS)
        _check_choice("guidance", guidance, GUIDANCE_MODES)
        _check_choice("first_stage", first_stage, ("full", "prefix"))
        if not 1 <= first_frames <= num_frames:
            raise ValueError(f"first_frames must be in 1..T={num_frames}, got {first_frames}")
        if frames_per_step < 1:
            raise ValueError(f"frames_per_step must be >= 1, got {frames_per_step}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        timesteps = self._timesteps(sampler, steps)
        clip = _clip_mode(clip_x0)
        first_shape = (batch, num_frames if first_stage == "full" else first_frames, channels, *sizes)
        x_T = self._initial_noise(first_shape, None, generator, device, model)
        video = self._sample_loop(
            model, x_T, timesteps, sampler=sampler, eta=1.0 if sampler == "ddpm" else eta, clip=clip,
            generator=generator, progress=progress,
        )
        known = video[:, :first_frames]
        stages = 1
        while known.shape[1] < num_frames:
            video = self.sample_conditional(
                model, known, num_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                guidance_weight=guidance_weight, clip_x0=clip, generator=generator, progress=progress,
            )
            known = video[:, : min(num_frames, known.shape[1] + frames_per_step)]
            stages += 1
        info = {
            "mode": "autoregressive",
            "sampler": sampler,
            "steps": len(timesteps),
            "eta": eta if sampler == "ddim" else 1.0,
            "guidance": guidance,
            "guidance_weight": float(guidance_weight) if guidance == "reconstruction" else 0.0,
            "first_frames": first_frames,
            "frames_per_step": frames_per_step,
            "first_stage": first_stage,
            "stages": stages,
        }
        return known, info

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        shape: Sequence[int],
        *,
        mode: str = "joint",
        sampler: str = "ddim",
        steps: int | None = 50,
        eta: float = 0.0,
        clip_x0: bool | str = "last",
        first_frames: int = 1,
        frames_per_step: int = 1,
        first_stage: str = "full",
        guidance: str = "replacement",
        guidance_weight: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """One entry point for the configured sampling: mode "joint" (all frames at once) or "autoregressive".

        Defaults are those of the ``diffusion`` config section (``clip_x0="last"``: only the clean last
        frame is clipped). Returns (videos (B, T, C, H, W), info dict saying which mode / sampler / guidance
        was used).
        """
        _check_choice("mode", mode, ("joint", "autoregressive"))
        _check_choice("sampler", sampler, SAMPLERS)
        if mode == "autoregressive":
            return self.sample_autoregressive(
                model, shape, first_frames=first_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                guidance_weight=guidance_weight, frames_per_step=frames_per_step, first_stage=first_stage, clip_x0=clip_x0,
                generator=generator, progress=progress, device=device,
            )
        if sampler == "ddpm":
            video = self.sample_ddpm(model, shape, generator, progress, clip_x0=clip_x0, device=device)
            return video, {"mode": "joint", "sampler": "ddpm", "steps": self.num_timesteps, "eta": 1.0}
        if steps is None:
            raise ValueError("the ddim sampler needs a number of steps")
        video = self.sample_ddim(model, shape, steps, eta, generator, clip_x0=clip_x0, progress=progress, device=device)
        return video, {"mode": "joint", "sampler": "ddim", "steps": int(steps), "eta": eta}
