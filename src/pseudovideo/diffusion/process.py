"""The Gaussian diffusion process (DDPM, Ho et al. 2020) on videos (B, T, C, H, W): the forward process, the
regression targets, the training loss; its samplers (DDPM, DDIM, frame-autoregressive) are the functions of
:mod:`pseudovideo.diffusion.samplers`, which :class:`GaussianDiffusion`'s ``sample*`` methods call.

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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pseudovideo.diffusion import samplers
from pseudovideo.diffusion.formulas import diffuse, eps_from_v, v_from_x0_eps, x0_from_eps, x0_from_v
from pseudovideo.diffusion.samplers import Model, _check_choice, _randn

__all__ = ["PREDICTIONS", "GaussianDiffusion"]

PREDICTIONS = ("eps", "v")


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

    # -- sampling (the functions of pseudovideo.diffusion.samplers) -----------------------------------------------
    @torch.no_grad()
    def sample_ddpm(
        self, model: Model, shape: Sequence[int], generator: torch.Generator | None = None, progress: bool = False, *,
        clip_x0: bool | str = True, x_T: Tensor | None = None, device: torch.device | str | None = None,
    ) -> Tensor:
        """Ancestral DDPM sampling over all N steps -> videos (B, T, C, H, W) (:func:`samplers.sample_ddpm`)."""
        return samplers.sample_ddpm(self, model, shape, generator, progress, clip_x0=clip_x0, x_T=x_T, device=device)

    @torch.no_grad()
    def sample_ddim(
        self, model: Model, shape: Sequence[int], steps: int, eta: float = 0.0, generator: torch.Generator | None = None,
        x_T: Tensor | None = None, *, clip_x0: bool | str = True, progress: bool = False,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """DDIM sampling over ``steps`` evenly spaced timesteps -> videos (B, T, C, H, W) (:func:`samplers.sample_ddim`)."""
        return samplers.sample_ddim(self, model, shape, steps, eta, generator, x_T, clip_x0=clip_x0, progress=progress,
                                    device=device)

    @torch.no_grad()
    def sample_conditional(
        self, model: Model, x_known: Tensor, num_frames: int, *, sampler: str = "ddim", steps: int | None = 50,
        eta: float = 0.0, guidance: str = "replacement", guidance_weight: float = 1.0, clip_x0: bool | str = True,
        generator: torch.Generator | None = None, x_T: Tensor | None = None, progress: bool = False,
    ) -> Tensor:
        """The frames K..T-1 of videos whose first K frames are ``x_known`` (B, K, C, H, W) -> (B, T, C, H, W)
        (:func:`samplers.sample_conditional`)."""
        return samplers.sample_conditional(
            self, model, x_known, num_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
            guidance_weight=guidance_weight, clip_x0=clip_x0, generator=generator, x_T=x_T, progress=progress,
        )

    @torch.no_grad()
    def sample_autoregressive(
        self, model: Model, shape: Sequence[int], *, first_frames: int, sampler: str = "ddim", steps: int | None = 50,
        eta: float = 0.0, guidance: str = "replacement", guidance_weight: float = 1.0, frames_per_step: int = 1,
        first_stage: str = "full", clip_x0: bool | str = True, generator: torch.Generator | None = None,
        progress: bool = False, device: torch.device | str | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Frame-autoregressive sampling of pseudo videos of ``shape`` (B, T, C, H, W) -> (video, info)
        (:func:`samplers.sample_autoregressive`)."""
        return samplers.sample_autoregressive(
            self, model, shape, first_frames=first_frames, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
            guidance_weight=guidance_weight, frames_per_step=frames_per_step, first_stage=first_stage, clip_x0=clip_x0,
            generator=generator, progress=progress, device=device,
        )

    @torch.no_grad()
    def sample(
        self, model: Model, shape: Sequence[int], *, mode: str = "joint", sampler: str = "ddim", steps: int | None = 50,
        eta: float = 0.0, clip_x0: bool | str = "last", first_frames: int = 1, frames_per_step: int = 1,
        first_stage: str = "full", guidance: str = "replacement", guidance_weight: float = 1.0,
        generator: torch.Generator | None = None, progress: bool = False, device: torch.device | str | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """The configured sampling, joint or autoregressive -> (videos (B, T, C, H, W), info) (:func:`samplers.sample`)."""
        return samplers.sample(
            self, model, shape, mode=mode, sampler=sampler, steps=steps, eta=eta, clip_x0=clip_x0,
            first_frames=first_frames, frames_per_step=frames_per_step, first_stage=first_stage, guidance=guidance,
            guidance_weight=guidance_weight, generator=generator, progress=progress, device=device,
        )
