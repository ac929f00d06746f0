"""Building blocks shared by the models: group normalisation, x2 upsampling, multi-head attention, parameter counts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["group_norm", "conv_nd", "Upsample", "multi_head_attention", "count_parameters", "maybe_checkpoint"]


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with the most groups (up to 32) that divide ``channels`` (small test models have few channels)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=eps)


def conv_nd(spatial_dims: int, *args: Any, **kwargs: Any) -> nn.Module:
    """``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` for 1, 2 or 3 spatial dimensions, with the given arguments."""
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1 (signals), 2 (images) or 3, got {spatial_dims!r}")
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims](*args, **kwargs)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv: (N, C, H, W) -> (N, C, 2H, 2W).

    ``spatial_dims=1``: a 3-tap conv on signals, (N, C, L) -> (N, C, 2L).
    """

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, 2H, 2W) (signals: (N, C, L) -> (N, C, 2L))."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def multi_head_attention(
    qkv: Tensor, heads: int, *, attn_mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """Self-attention of packed projections through ``scaled_dot_product_attention``.

    qkv (N, L, 3 * heads * d), laid out as (q | k | v) x heads x d -> output (N, L, heads * d).
    ``attn_mask`` is an additive (heads, L, L) bias or boolean mask; ``is_causal``: position i sees j <= i.
    """
    q, k, v = rearrange(qkv, "n l (three h d) -> three n h l d", three=3, h=heads)  # each (N, heads, L, d)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)  # (N, heads, L, d)
    return rearrange(out, "n h l d -> n l (h d)")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (sum of numel), optionally only those requiring grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def maybe_checkpoint(enabled: bool, block: Callable[..., Tensor], *args: Any) -> Tensor:
    """``block(*args)``, recomputed in the backward pass (activation checkpointing) when ``enabled`` and
    gradients are being recorded. Only for deterministic blocks without state updates."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
