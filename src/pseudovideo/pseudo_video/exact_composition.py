"""Exact first-order steps for pseudo videos that compose blur and noise.

The higher-order frame t of blur(s) then noise(n) is ``B(s_t) x + n_t eps``: given the clean image x, a
Gaussian with mean B(s_t) x and white covariance n_t^2 I. A first-order step that blurs frame t+1 by
sqrt(s_t^2 - s_{t+1}^2) also blurs the noise already in it, so adding white noise of variance
n_t^2 - n_{t+1}^2 leaves too little noise, and noise that is no longer white.

Both blur and the noise covariance are diagonal in the 2-D DCT-II basis (the blur matrix of one axis is
``D^T diag(g) D`` with gains g_k(s) = exp(-2 s^2 sin^2(pi k / 2n)), :func:`pseudovideo.pseudo_video.corruptions.heat_blur_matrix`),
so the step can restore the exact law: each noise increment is coloured noise whose variance per DCT
frequency (k, l) is what the target covariance lacks after the step's blurs. For any sequence of blur and
noise operators, with primes for frame t+1, Delta_i the blur increments, and g = g_k g_l:

    C_j(k, l) = prod_{blur i after j} g(s'_i)^2 * (n_j^2 - n'_j^2 * prod_{blur i before j} g(Delta_i)^2)  >= 0,

and every first-order frame then has the higher-order frame's conditional law given x: the same mean and the
same covariance (white noise n_t^2 I for blur then noise), not only the same total residual variance. Where
C_j is the same at every frequency (no blur acts on that noise) the increment is the plain white draw of
:class:`~pseudovideo.pseudo_video.corruptions.GaussianNoise`, so single-operator pseudo videos are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pseudovideo.pseudo_video.corruptions import (
    Corruption,
    GaussianBlur,
    GaussianNoise,
    _cached,
    _dct_matrix,
    _quadrature_increment,
    _randn,
)

__all__ = ["BlurNoiseChain", "blur_gains", "blur_noise_chain", "first_order_exact"]


def first_order_exact(operators: Sequence[Corruption]) -> bool:
    """Whether first-order frames have the higher-order frames' marginals for this composition.

    True for one operator (downsample: at whole octaves, checked by the builder) and for any sequence of
    blur and noise operators (:class:`BlurNoiseChain`); other compositions are not known to be exact and
    :func:`pseudovideo.pseudo_video.marginals.marginal_mismatch` measures them.
    """
    return len(operators) <= 1 or all(isinstance(op, (GaussianBlur, GaussianNoise)) for op in operators)


def blur_noise_chain(operators: Sequence[Corruption]) -> "BlurNoiseChain | None":
    """The exact first-order steps of a composition of blur and noise (at least one of each); None for others."""
    operators = tuple(operators)
    mixed = any(isinstance(op, GaussianBlur) for op in operators) and any(isinstance(op, GaussianNoise) for op in operators)
    return BlurNoiseChain(operators) if mixed and first_order_exact(operators) else None


def blur_gains(size: int, sigma: float) -> Tensor:
    """Gains (size,) float64 of the discrete-Gaussian blur of one axis on its DCT-II frequencies k = 0..size-1."""
    frequencies = math.pi * torch.arange(size, dtype=torch.float64) / (2 * size)
    return torch.exp(-2.0 * sigma**2 * torch.sin(frequencies) ** 2)


class BlurNoiseChain:
    """First-order steps for a composition of blur and noise operators (at least one of each) with exact marginals.

    ``step(frame (N, C, H, W), levels_from (K,), levels_to (K,))`` takes frames at ``levels_from`` (frame
    t+1) to ``levels_to`` (frame t): blurs by the quadrature increments and adds, per noise operator, the
    coloured noise of variance C_j (module docstring), drawn from ``generator``.
    """

    def __init__(self, operators: Sequence[Corruption]) -> None:
        operators = tuple(operators)
        if not (operators and first_order_exact(operators) and len(operators) > 1
                and any(isinstance(op, GaussianBlur) for op in operators)
                and any(isinstance(op, GaussianNoise) for op in operators)):
            raise ValueError(f"BlurNoiseChain needs blur and noise operators only, at least one of each, got {operators}")
        self.operators = operators

    def step(self, x: Tensor, levels_from: Tensor, levels_to: Tensor, generator: torch.Generator | None) -> Tensor:
        """Frames x (N, C, H, W) at ``levels_from`` (K,) -> (N, C, H, W) at ``levels_to`` (K,) with the exact law."""
        n = x.shape[0]
        increments = _quadrature_increment(levels_from, levels_to)  # (K,) float32, as Compose.increment gives
        for j, op in enumerate(self.operators):
            if isinstance(op, GaussianBlur):
                x = op.apply(x, increments[j].expand(n), generator)
                continue
            std = self._noise_std(j, levels_from, levels_to, increments, x)
            if std is None:
                continue
            noise = _randn(x.shape, x, generator)  # the draw GaussianNoise makes
            x = x + (std * noise if isinstance(std, float) else self._coloured(noise, std))
        return x

    def _noise_std(self, j: int, levels_from: Tensor, levels_to: Tensor, increments: Tensor, like: Tensor
                   ) -> "Tensor | float | None":
        """Std per DCT frequency (H, W) of noise operator j's increment on like's device; a float when it is
        the same at every frequency (white noise), None when it is zero."""
        blur = [isinstance(op, GaussianBlur) for op in self.operators]
        before = tuple(float(increments[i]) for i in range(j) if blur[i] and increments[i] > 0)
        after = tuple(float(levels_from[i]) for i in range(j + 1, len(blur)) if blur[i] and levels_from[i] > 0)
        target, kept = float(levels_to[j]) ** 2, float(levels_from[j]) ** 2
        if not before and target <= kept:  # nothing to restore, nothing to add
            return None
        if not after and (not before or kept == 0):  # no blur acts on this noise: white
            return math.sqrt(target - kept)
        h, w = like.shape[-2:]
        key = ("blur-noise-std", before, after, target, kept, h, w, str(like.device), like.dtype)
        return _cached(key, lambda: self._spectrum(before, after, target, kept, h, w).to(like.device, like.dtype))

    @staticmethod
    def _spectrum(before: tuple[float, ...], after: tuple[float, ...], target: float, kept: float, h: int, w: int) -> Tensor:
        """sqrt(C_j) (H, W) float64 from the blur increments before j, the blur levels after j and n_j^2, n'_j^2."""

        def gain(sigmas: tuple[float, ...]) -> Tensor:  # prod_i g(sigma_i)^2 over both axes, (H, W)
            total = math.sqrt(sum(s * s for s in sigmas))  # gains multiply as sigmas add in quadrature
            return (blur_gains(h, total)[:, None] * blur_gains(w, total)[None, :]).square()

        variance = gain(after) * (target - kept * gain(before))
        return torch.sqrt(torch.clamp(variance, min=0.0))

    @staticmethod
    def _coloured(noise: Tensor, std: Tensor) -> Tensor:
        """White noise (N, C, H, W) read as DCT coefficients, scaled by std (H, W), back to pixels: D_H^T (std * E) D_W."""
        h, w = noise.shape[-2:]
        basis_h = _cached(("dct-matrix", h, str(noise.device), noise.dtype),
                          lambda: _dct_matrix(h).to(device=noise.device, dtype=noise.dtype))
        basis_w = _cached(("dct-matrix", w, str(noise.device), noise.dtype),
                          lambda: _dct_matrix(w).to(device=noise.device, dtype=noise.dtype))
        return basis_h.T @ (std * noise) @ basis_w
