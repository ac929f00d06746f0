"""Corruption operators whose levels carry gradient, for learning pseudo-video corruptions.

The operators of :mod:`pseudovideo.pseudo_video.corruptions` validate their levels on the host and detach them; these
versions take levels (N,) that may require grad and return frames (N, C, H, W) differentiable in them:

- blur: the same discrete Gaussian (the heat semigroup, diagonal in the DCT-II basis): the image is taken to
  the DCT basis, each frequency (k, l) scaled by exp(-2 sigma^2 (sin^2(pi k / 2H) + sin^2(pi l / 2W))), and
  taken back. Equal to :class:`~pseudovideo.pseudo_video.corruptions.GaussianBlur` up to float rounding; smooth in sigma.
- noise: reparameterised, x + sigma * eps with eps drawn from the generator (d/dsigma = eps).
- mask: a relaxed Bernoulli per patch (the Concrete / Gumbel-sigmoid relaxation, temperature ``temperature``)
  on the same uniform draw as :class:`~pseudovideo.pseudo_video.corruptions.PatchMask`: with ``hard`` (straight-through) the
  forward value is exactly PatchMask's mask (masked where u < p) and the gradient is the relaxed one's.
- downsample: keeps discrete octaves; its level carries no gradient (pixelation is piecewise constant in the
  level), so a learned schedule keeps a downsample column fixed and a learned mixture refuses it.

Operators are applied in float32 (or the input's wider dtype) as the pseudo-video builder does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange, repeat
from torch import Tensor

from pseudovideo.pseudo_video.corruptions import (
    Corruption,
    Downsample,
    GaussianBlur,
    GaussianNoise,
    PatchMask,
    _cached,
    _dct_matrix,
    _rand,
    _randn,
)

__all__ = [
    "DIFFERENTIABLE",
    "RELAXATION_TEMPERATURE",
    "apply_differentiable",
    "blur",
    "corrupt",
    "gumbel_choice",
    "is_differentiable",
    "noise",
    "relaxed_mask",
]

#: temperature of the relaxed Bernoulli (mask) and of the relaxed operator choice (Gumbel-softmax)
RELAXATION_TEMPERATURE = 0.5
#: operators whose level carries gradient
DIFFERENTIABLE = (GaussianBlur, GaussianNoise, PatchMask)
_LOGIT_EPS = 1e-6  # mask probabilities are kept in [eps, 1 - eps] inside the logit


def is_differentiable(op: Corruption) -> bool:
    """Whether ``op``'s level carries gradient here (blur, noise, mask; not downsample)."""
    return isinstance(op, DIFFERENTIABLE)


def _dct(size: int, like: Tensor) -> Tensor:
    """The orthonormal DCT-II matrix (size, size) in like's dtype and device (cached)."""
    key = ("dct-matrix", size, str(like.device), like.dtype)
    return _cached(key, lambda: _dct_matrix(size).to(device=like.device, dtype=like.dtype))


def _half_angle_sines(size: int, like: Tensor) -> Tensor:
    """sin^2(pi k / (2 size)) for k = 0..size-1, (size,) in like's dtype."""
    frequencies = math.pi * torch.arange(size, dtype=torch.float64) / (2 * size)
    return torch.sin(frequencies).square().to(device=like.device, dtype=like.dtype)


def blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Discrete-Gaussian blur of x (N, C, H, W) with per-sample sigma (N,) in pixels; differentiable in both.

    out[n] = D_H^T (G_n * (D_H x[n] D_W^T)) D_W with G_n[k, l] = exp(-2 sigma_n^2 (s_H[k] + s_W[l])),
    s[k] = sin^2(pi k / 2 size): the heat semigroup of :func:`pseudovideo.pseudo_video.corruptions.heat_blur_matrix`.
    """
    h, w = x.shape[-2:]
    dct_h, dct_w = _dct(h, x), _dct(w, x)
    spectrum = dct_h @ x @ dct_w.T  # (N, C, H, W) DCT coefficients
    rates = _half_angle_sines(h, x)[:, None] + _half_angle_sines(w, x)[None, :]  # (H, W)
    gains = torch.exp(-2.0 * rearrange(sigma.to(x.dtype).square(), "n -> n 1 1 1") * rates)  # (N, 1, H, W)
    return dct_h.T @ (gains * spectrum) @ dct_w


def noise(x: Tensor, std: Tensor, eps: Tensor) -> Tensor:
    """x (N, C, H, W) + std (N,) * eps (N, C, H, W): reparameterised additive Gaussian noise."""
    return x + rearrange(std.to(x.dtype), "n -> n 1 1 1") * eps


def relaxed_mask(
    x: Tensor, probability: Tensor, uniform: Tensor, *, patch_size: int, fill_value: float,
    temperature: float = RELAXATION_TEMPERATURE, hard: bool = True,
) -> Tensor:
    """Patch masking of x (N, C, H, W) with probability (N,) relaxed: uniform (N, 1, gh, gw) the per-patch draws.

    The soft mask is sigmoid((logit p + log((1 - u) / u)) / temperature); with ``hard`` the forward value is the
    exact Bernoulli mask (u < p, as :class:`~pseudovideo.pseudo_video.corruptions.PatchMask`) and the gradient the soft one's.
    """
    p = rearrange(probability.to(x.dtype), "n -> n 1 1 1").clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
    u = uniform.to(x.dtype).clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
    logits = torch.log(p) - torch.log1p(-p) + torch.log1p(-u) - torch.log(u)  # (N, 1, gh, gw)
    soft = torch.sigmoid(logits / temperature)
    if hard:
        exact = (uniform < rearrange(probability.detach().to(uniform.dtype), "n -> n 1 1 1")).to(x.dtype)
        soft = exact + (soft - soft.detach())  # forward value exactly the Bernoulli mask
    h, w = x.shape[-2:]
    masked = repeat(soft, "n 1 gh gw -> n 1 (gh ph) (gw pw)", ph=patch_size, pw=patch_size)[:, :, :h, :w]
    return x * (1 - masked) + fill_value * masked


def apply_differentiable(
    op: Corruption, x: Tensor, level: Tensor, generator: torch.Generator | None, *, hard: bool = True
) -> Tensor:
    """Corrupt x (N, C, H, W) by ``op`` at level (N,) so that the result is differentiable in level.

    Draws the same random numbers as ``op.apply`` (noise: one normal per value; mask: one uniform per patch).
    Downsample is applied by its own operator with the level detached (discrete octaves, no gradient).
    """
    if isinstance(op, GaussianBlur):
        return blur(x, level)
    if isinstance(op, GaussianNoise):
        return noise(x, level, _randn(x.shape, x, generator))
    if isinstance(op, PatchMask):
        n, _, h, w = x.shape
        ps = op.patch_size
        uniform = _rand((n, 1, -(-h // ps), -(-w // ps)), x, generator)
        return relaxed_mask(x, level, uniform, patch_size=ps, fill_value=op.fill_value, hard=hard)
    if isinstance(op, Downsample):
        return op.apply(x, level.detach().float().cpu(), generator)
    raise ValueError(f"no differentiable version of corruption {op.name!r}")


def gumbel_choice(
    probabilities: Tensor, generator: torch.Generator | None, *, temperature: float = RELAXATION_TEMPERATURE,
    hard: bool = True,
) -> Tensor:
    """A relaxed one-of-K choice per row of probabilities (..., K): Gumbel-softmax weights (..., K).

    With ``hard`` (straight-through) the forward value is the one-hot of the sampled operator, drawn with
    probability ``probabilities``, and the gradient is the relaxed softmax's.
    """
    device = generator.device if generator is not None else probabilities.device
    uniform = torch.rand(probabilities.shape, generator=generator, device=device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20))).to(probabilities.device, probabilities.dtype)
    scores = torch.log(probabilities.clamp_min(1e-20)) + gumbel
    soft = torch.softmax(scores / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = torch.nn.functional.one_hot(scores.argmax(dim=-1), probabilities.shape[-1]).to(soft.dtype)
    return one_hot + (soft - soft.detach())  # forward value exactly one-hot


def corrupt(
    operators: Sequence[Corruption], x: Tensor, levels: Tensor, generator: torch.Generator | None,
    choice: Tensor | None = None, *, hard: bool = True,
) -> Tensor:
    """Frames of x (N, C, H, W) at levels (N, K), differentiable in the levels (and the choice weights).

    ``choice`` None: the K operators compose in order (as :class:`~pseudovideo.pseudo_video.corruptions.Compose`).
    ``choice`` (N, K): a mixture, sum_k choice[n, k] * op_k(x[n], levels[n, k]) (one-hot rows: one operator).
    """
    if choice is None:
        for k, op in enumerate(operators):
            x = apply_differentiable(op, x, levels[:, k], generator, hard=hard)
        return x
    frames = [apply_differentiable(op, x, levels[:, k], generator, hard=hard) for k, op in enumerate(operators)]
    stacked = torch.stack(frames, dim=1)  # (N, K, C, H, W)
    return torch.einsum("nk,nkchw->nchw", choice.to(stacked.dtype), stacked)
