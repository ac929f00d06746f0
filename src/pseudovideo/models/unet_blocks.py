"""The blocks of the DDPM UNet and of its video version (:mod:`pseudovideo.models.unet` assembles them): residual
blocks with the timestep embedding, spatial attention, the temporal layers (attention or a 3-tap convolution across
frames at every pixel, starting as the identity), down- and up-sampling, and where the temporal layers go.

Every block takes frames ((B T), C, H, W); temporal layers also take T to see the frames of each video. With
``spatial_dims=1`` the same blocks take frames of signals ((B T), C, L) (Conv1d, attention over the L positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.models import layers
from pseudovideo.models.layers import conv_nd, group_norm, multi_head_attention

__all__ = [
    "Downsample",
    "ResBlock",
    "SpatialAttention",
    "TemporalAttention",
    "TemporalConv",
    "UNetBlock",
    "UNetBlockSpec",
    "Upsample",
    "timestep_embedding",
]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim) float32: [cos(t w_k), sin(t w_k)], w_k = P^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _zero(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` (residual branches start as identity, as in DDPM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, timestep embedding added in between, residual skip; ((B T), C, H, W) frames
    (((B T), C, L) with ``spatial_dims=1``)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, spatial_dims: int = 2) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv_nd(spatial_dims, in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(conv_nd(spatial_dims, out_channels, out_channels, 3, padding=1))
        self.skip = conv_nd(spatial_dims, in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x ((B T), C_in, H, W), emb ((B T), D) -> ((B T), C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))  # ((B T), C_out)
        h = h + e.view(*e.shape, *([1] * (h.ndim - 2)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Multi-head self-attention over the H W pixels of each frame, residual; ((B T), C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        """x ((B T), C, H, W) -> ((B T), C, H, W) (signals: ((B T), C, L), attention over the L positions)."""
        tokens = rearrange(self.norm(x).flatten(2), "n c s -> n s c")  # ((B T), H W, C)
        out = self.proj(multi_head_attention(self.qkv(tokens), self.num_heads))  # ((B T), H W, C)
        return x + rearrange(out, "n s c -> n c s").reshape(x.shape)


class TemporalAttention(nn.Module):
    """Multi-head self-attention across the T frames at every pixel, residual; ((B T), C, H, W) -> same.

    Frame positions: ``"learned"`` adds a learned (max_frames, C) embedding to the normalised tokens before
    the q/k/v projection; ``"relative"`` adds a learned per-head bias b[i - j] to the attention logits (as
    in video diffusion models). ``causal``: frame i attends only to frames j <= i. The output projection
    starts at zero, so the layer starts as the identity.
    """

    def __init__(self, channels: int, num_heads: int, max_frames: int, frame_position: str, causal: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.max_frames = max_frames
        self.frame_position = frame_position
        self.causal = causal
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))
        if frame_position == "learned":
            self.frame_embedding = nn.Parameter(0.02 * torch.randn(max_frames, channels))
        else:  # relative: bias per head for offsets i - j in [-(max_frames - 1), max_frames - 1]
            self.relative_bias = nn.Parameter(torch.zeros(2 * max_frames - 1, num_heads))

    def attention_bias(self, num_frames: int, dtype: torch.dtype) -> Tensor | None:
        """Additive logit bias (heads, T, T) from relative positions and the causal mask; None if neither."""
        if self.frame_position != "relative":
            return None
        device = self.relative_bias.device
        pos = torch.arange(num_frames, device=device)
        offset = pos[:, None] - pos[None, :] + self.max_frames - 1  # (T, T): i - j, shifted to >= 0
        bias = rearrange(self.relative_bias[offset], "i j heads -> heads i j").to(dtype)
        if self.causal:
            future = pos[None, :] > pos[:, None]  # (T, T): key frame j after query frame i
            bias = bias.masked_fill(future, float("-inf"))
        return bias

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x ((B T), C, H, W) with T = num_frames -> ((B T), C, H, W) (signals: ((B T), C, L))."""
        positions = x.shape[2:].numel()  # H W (or L)
        tokens = rearrange(x.flatten(2), "(b t) c s -> (b s) t c", t=num_frames)  # ((B H W), T, C)
        normed = self.norm(tokens)
        if self.frame_position == "learned":
            normed = normed + self.frame_embedding[:num_frames].to(normed.dtype)
        bias = self.attention_bias(num_frames, normed.dtype)  # (heads, T, T) or None
        out = multi_head_attention(self.qkv(normed), self.num_heads, attn_mask=bias, is_causal=self.causal and bias is None)
        tokens = tokens + self.proj(out)  # ((B H W), T, C)
        return rearrange(tokens, "(b s) t c -> (b t) c s", s=positions).reshape(x.shape)


class TemporalConv(nn.Module):
    """GroupNorm-SiLU then a 3-tap convolution over time at every pixel, residual; ((B T), C, H, W) -> same.

    The cheap temporal mixer: one Conv3d with kernel (3, 1, 1) over the whole (B, C, T, H, W) batch instead of
    B H W attention problems of T tokens. Zero padding at the clip's ends; ``causal`` pads two frames before
    the first instead, so frame i sees frames i-2..i only. ``"learned"`` frame positions add a learned
    (max_frames, C) embedding after the norm; ``"relative"`` adds nothing (a convolution is already relative).
    The convolution starts at zero, so the layer starts as the identity.
    """

    def __init__(self, channels: int, max_frames: int, frame_position: str, causal: bool, spatial_dims: int = 2) -> None:
        super().__init__()
        self.causal = causal
        self.frame_position = frame_position
        self.spatial_dims = spatial_dims
        self.norm = group_norm(channels)
        kernel, padding = (3, *[1] * spatial_dims), (0 if causal else 1, *[0] * spatial_dims)  # (3, 1, 1) for images
        self.conv = _zero(conv_nd(spatial_dims + 1, channels, channels, kernel, padding=padding))
        if frame_position == "learned":
            self.frame_embedding = nn.Parameter(0.02 * torch.randn(max_frames, channels))

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x ((B T), C, H, W) with T = num_frames -> ((B T), C, H, W)."""
        h = rearrange(self.norm(x), "(b t) c ... -> b c t ...", t=num_frames)  # (B, C, T, H, W)
        if self.frame_position == "learned":
            embedding = rearrange(self.frame_embedding[:num_frames].to(h.dtype), "t c -> c t")
            h = h + embedding.view(*embedding.shape, *([1] * self.spatial_dims))  # (C, T, 1, 1)
        h = F.silu(h)
        if self.causal:
            h = F.pad(h, (0, 0) * self.spatial_dims + (2, 0))  # (B, C, T + 2, H, W): two zero frames before frame 0
        return x + rearrange(self.conv(h), "b c t ... -> (b t) c ...")


class UNetBlock(nn.Module):
    """One UNet stage unit: residual block, optional spatial attention, optional temporal layer."""

    def __init__(
        self, res: ResBlock, attn: SpatialAttention | None, temporal: TemporalAttention | TemporalConv | None
    ) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.temporal = temporal

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """x ((B T), C_in, H, W), emb ((B T), D) -> ((B T), C_out, H, W)."""
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.temporal is not None:
            x = self.temporal(x, num_frames)
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: ((B T), C, H, W) -> ((B T), C, H/2, W/2) (signals: a 3-tap one, L -> L/2)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """Halves the resolution; emb and num_frames are unused (uniform block signature)."""
        return self.conv(x)


class Upsample(layers.Upsample):
    """Nearest-neighbour x2 then 3x3 convolution: ((B T), C, H, W) -> ((B T), C, 2H, 2W)."""

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """Doubles the resolution; emb and num_frames are unused (uniform block signature)."""
        return super().forward(x)


def _temporal_mixer_at(
    temporal: bool, layers: str, mixer: str, place: tuple[int, int, int] | None, num_resolutions: int
) -> str | None:
    """The temporal layer of one block: "attention", "conv" or None.

    ``place`` is (level, index in the level, blocks in the level) on the down and up paths; None for the first
    middle block, (-1, 1, 2) for the second (the middle is at the lowest resolution, never at full resolution
    unless the UNet has a single level).
    """
    if not temporal:
        return None
    level, index, count = place if place is not None else (-1, 0, 2)
    full_resolution = level == 0 or (level == -1 and num_resolutions == 1)
    if layers == "per_level" and index != (count - 1 if level >= 0 else 0):
        return None
    if layers == "low_res" and full_resolution and level >= 0:
        return None
    if mixer == "hybrid":
        return "conv" if full_resolution else "attention"
    return mixer


@dataclass(frozen=True)
class UNetBlockSpec:
    """What every block of one UNet shares; :meth:`make` builds a block (residual, optional spatial attention,
    the temporal layer its place gets)."""

    emb_dim: int
    dropout: float
    num_heads: int
    temporal: bool
    temporal_layers: str
    temporal_mixer: str
    max_frames: int
    frame_position: str
    causal_temporal: bool
    num_resolutions: int
    spatial_dims: int = 2  # 1: the blocks of the 1-D UNet (signals)

    def make(self, c_in: int, c_out: int, spatial_attention: bool, place: tuple[int, int, int] | None) -> UNetBlock:
        """A block from ``c_in`` to ``c_out`` channels; ``place`` = (level, index in the level, blocks in the level)
        on the down/up path, None for the first middle block (see :func:`_temporal_mixer_at`)."""
        attn = SpatialAttention(c_out, self.num_heads) if spatial_attention else None
        mixer = _temporal_mixer_at(self.temporal, self.temporal_layers, self.temporal_mixer, place, self.num_resolutions)
        if mixer == "attention":
            temp = TemporalAttention(c_out, self.num_heads, self.max_frames, self.frame_position, self.causal_temporal)
        elif mixer == "conv":
            temp = TemporalConv(c_out, self.max_frames, self.frame_position, self.causal_temporal, self.spatial_dims)
        else:
            temp = None
        return UNetBlock(ResBlock(c_in, c_out, self.emb_dim, self.dropout, self.spatial_dims), attn, temp)
