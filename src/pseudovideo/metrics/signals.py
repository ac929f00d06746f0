"""Reconstruction metrics for signals (and any tensors): mean squared error and signal-to-noise ratio.

Both compare a reconstruction x with its original y sample by sample, in the data's normalised units ([-1, 1];
for signals see :class:`pseudovideo.data.signals.Normalisation`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SNR_CAP_DB", "mse", "snr"]

SNR_CAP_DB = 200.0  # the SNR of an exact reconstruction (instead of +inf)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"expected two batches (N, ...) of equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per sample of x vs y, both (N, C, L) (or any (N, ...)) -> (N,) float."""
    _check_pair(x, y)
    return (x.float() - y.float()).square().flatten(1).mean(dim=1)


def snr(x: Tensor, y: Tensor) -> Tensor:
    """Signal-to-noise ratio in dB per sample of a reconstruction x of y: 10 log10(sum y^2 / sum (x - y)^2),
    (N, ...) -> (N,) float, capped at ``SNR_CAP_DB`` (an exact reconstruction)."""
    _check_pair(x, y)
    signal = y.float().square().flatten(1).sum(dim=1)
    noise = (x.float() - y.float()).square().flatten(1).sum(dim=1)
    ratio = 10.0 * torch.log10(signal.clamp(min=1e-30) / noise.clamp(min=1e-30))
    return ratio.clamp(max=SNR_CAP_DB)
