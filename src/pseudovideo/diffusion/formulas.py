"""Closed-form relations of the Gaussian diffusion (Ho et al. 2020; v of Salimans & Ho 2022) between x_0, x_t,
epsilon and v at alpha_bar_t, which broadcasts against the video (B, 1, 1, 1, 1)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["diffuse", "eps_from_v", "eps_from_x0", "v_from_x0_eps", "x0_from_eps", "x0_from_v"]


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
