"""DDPM UNet (Ho et al. 2020) and its space-time factorised video version (video diffusion models, Ho et al. 2022).

Both take a video x (B, T, C, H, W) and diffusion timesteps t (B,) and return a tensor shaped like x (the
noise or v prediction). T = 1 is the image setting.

- Image UNet (``temporal=False``): every frame goes through the 2D network on its own ((B T) C H W), so
  frames never see each other.
- Video UNet (``temporal=True``): the same 2D layers, plus temporal layers that mix frames at each pixel,
  placed after a residual block (after its spatial attention where there is one). ``temporal_layers``
  chooses which blocks get one: ``every_block`` (all of them, the original design), ``per_level`` (the last
  block of each level on the way down and up, plus the first middle block: one per level and direction, as
  in video-diffusion-pytorch's Unet3D) or ``low_res`` (every block except those at the full input
  resolution, where frames are mixed by the most, and smallest, attention problems). ``temporal_mixer``
  chooses the layer: ``attention`` (self-attention across the T frames, (B H W) T C), ``conv`` (a
  3-tap convolution over time, one Conv3d over the whole batch) or ``hybrid`` (conv at the full-resolution
  level, attention below). Frame positions come from a learned per-frame embedding or (attention only) a
  learned relative position bias; with ``causal_temporal`` frame i only sees frames <= i. The output layer of
  every temporal layer starts at zero, so a fresh video UNet computes exactly the image UNet's function and
  :meth:`UNet.load_spatial_state_dict` can start it from a trained image UNet.

``spatial_dims=1`` builds the same networks for 1-D signals (B, T, C, L): Conv1d instead of Conv2d, attention
over the L positions, temporal layers at every position; the 1-D DDPM UNet and its video counterpart.

Temporal layers live in sub-modules named ``temporal``: removing the keys containing ``.temporal.`` from a
video UNet's state_dict leaves exactly the keys of the image UNet of the same configuration.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from pseudovideo.models import layers
from pseudovideo.models.layers import conv_nd, count_parameters, group_norm, maybe_checkpoint, multi_head_attention

__all__ = [
    "FRAME_POSITIONS",
    "TEMPORAL_LAYERS",
    "TEMPORAL_MIXERS",
    "UNet",
    "image_unet",
    "video_unet",
    "timestep_embedding",
    "is_temporal_key",
]

FRAME_POSITIONS = ("learned", "relative")
TEMPORAL_LAYERS = ("every_block", "per_level", "low_res")
TEMPORAL_MIXERS = ("attention", "conv", "hybrid")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim) float32: [cos(t w_k), sin(t w_k)], w_k = P^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def is_temporal_key(key: str) -> bool:
    """True for state_dict keys of the video UNet's temporal attention layers."""
    return ".temporal." in f".{key}"


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


class UNet(nn.Module):
    """DDPM UNet on videos (B, T, C, H, W) with timesteps t (B,); ``temporal=True`` makes it the video UNet.

    Args:
        in_channels: image channels C (also the output channels).
        base_channels: channels of the first level (even: it is also the sinusoidal embedding size).
        channel_mult: channel multiplier per level; the resolution halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (e.g. 16) that get spatial self-attention.
        resolution: input height = width the attention resolutions refer to.
        dropout: dropout in the residual blocks.
        num_heads: heads of the spatial and temporal attention (must divide their channels).
        temporal: add temporal attention layers (the video UNet); otherwise frames are independent.
        causal_temporal: frame i attends only to frames <= i (needs ``temporal``).
        max_frames: largest T the temporal layers accept (size of the position tables).
        frame_position: "learned" (absolute frame embedding) or "relative" (relative position bias).
        temporal_layers: which blocks get a temporal layer: "every_block", "per_level" or "low_res".
        temporal_mixer: "attention", "conv" (3-tap temporal convolution) or "hybrid" (conv at full resolution).
        num_levels: > 0 makes the model level-conditioned: ``forward`` then needs ``level`` (B,) in
            [0, num_levels), the corruption level of each sample (0 = clean), embedded by a learned table
            and added to the timestep embedding. Used when an image UNet trains on every pseudo-video
            frame as a separate image; 0 (default) builds exactly the unconditional UNet.
        spatial_dims: 2 for images (B, T, C, H, W); 1 for signals (B, T, C, L) (``resolution`` is then the length L).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        resolution: int = 32,
        dropout: float = 0.0,
        num_heads: int = 4,
        temporal: bool = False,
        causal_temporal: bool = False,
        max_frames: int = 32,
        frame_position: str = "learned",
        temporal_layers: str = "every_block",
        temporal_mixer: str = "attention",
        num_levels: int = 0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (signals) or 2 (images), got {spatial_dims}")
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        _validate_config(
            in_channels, base_channels, channel_mult, num_res_blocks, attention_resolutions, resolution,
            dropout, num_heads, temporal, causal_temporal, max_frames, frame_position, num_levels,
        )
        _validate_temporal_choices(temporal_layers, temporal_mixer)
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.base_channels = base_channels
        self.channel_mult = channel_mult
        self.resolution = resolution
        self.temporal = temporal
        self.causal_temporal = causal_temporal
        self.max_frames = max_frames
        self.frame_position = frame_position
        self.temporal_layers = temporal_layers
        self.temporal_mixer = temporal_mixer
        self.gradient_checkpointing = False
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * base_channels

        num_resolutions = len(channel_mult)

        def block(c_in: int, c_out: int, spatial_attention: bool, place: tuple[int, int, int] | None) -> UNetBlock:
            # place = (level, index in the level, blocks in the level) on the down/up path; see _temporal_mixer_at
            attn = SpatialAttention(c_out, num_heads) if spatial_attention else None
            mixer = _temporal_mixer_at(temporal, temporal_layers, temporal_mixer, place, num_resolutions)
            if mixer == "attention":
                temp = TemporalAttention(c_out, num_heads, max_frames, frame_position, causal_temporal)
            elif mixer == "conv":
                temp = TemporalConv(c_out, max_frames, frame_position, causal_temporal, spatial_dims)
            else:
                temp = None
            return UNetBlock(ResBlock(c_in, c_out, emb_dim, dropout, spatial_dims), attn, temp)

        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.input_conv = conv_nd(spatial_dims, in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, resolution
        for level, mult in enumerate(channel_mult):
            for index in range(num_res_blocks):
                place = (level, index, num_res_blocks)
                self.down.append(block(ch, base_channels * mult, res in attention_resolutions, place))
                ch = base_channels * mult
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(ch, spatial_dims))
                skip_channels.append(ch)
                res //= 2

        # middle: res + attention, res (attention at the lowest resolution always, as in DDPM)
        self.middle = nn.ModuleList([block(ch, ch, True, None), block(ch, ch, False, (-1, 1, 2))])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for index in range(num_res_blocks + 1):
                place = (level, index, num_res_blocks + 1)
                c_in = ch + skip_channels.pop()
                self.up.append(block(c_in, base_channels * mult, res in attention_resolutions, place))
                ch = base_channels * mult
            if level != 0:
                self.up.append(Upsample(ch, spatial_dims))
                res *= 2

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), _zero(conv_nd(spatial_dims, ch, in_channels, 3, padding=1)))
        # Created last and only when asked, so an unconditional UNet draws the same initial weights as before.
        self.num_levels = int(num_levels)
        self.level_embed = nn.Embedding(self.num_levels, emb_dim) if self.num_levels > 0 else None

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, level: Tensor | int | None = None) -> Tensor:
        """Predicts noise (or v) for noisy videos x (B, T, C, H, W) at timesteps t (B,) -> (B, T, C, H, W).

        Images x (B, C, H, W) are taken as videos of T = 1 frame and give (B, C, H, W) back. With
        ``spatial_dims=1`` the same holds for signals: videos (B, T, C, L), signals (B, C, L).
        ``level`` (B,) or a scalar: the corruption level of each sample, required by (and only accepted by)
        a level-conditioned UNet (``num_levels > 0``).
        """
        if x.ndim == self.spatial_dims + 2:  # an image (or signal) batch: one frame per sample
            return self.forward(x[:, None], t, level)[:, 0]
        batch, num_frames = self._check_input(x)
        t = self._per_sample(t, batch, x.device, "timesteps t")
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(self.input_conv.weight.dtype))  # (B, D)
        level_emb = self._level_embedding(level, batch, x.device, emb.dtype)  # (B, D) or None
        if level_emb is not None:
            emb = emb + level_emb
        emb = repeat(emb, "b d -> (b t) d", t=num_frames)  # ((B T), D): same timestep for every frame

        h = self.input_conv(rearrange(x, "b t c ... -> (b t) c ..."))  # ((B T), C0, H, W)
        skips = [h]
        for layer in self.down:
            h = self._run(layer, h, emb, num_frames)
            skips.append(h)
        for layer in self.middle:
            h = self._run(layer, h, emb, num_frames)
        for layer in self.up:
            if isinstance(layer, UNetBlock):
                h = torch.cat([h, skips.pop()], dim=1)  # ((B T), C + C_skip, H', W')
            h = self._run(layer, h, emb, num_frames)
        return rearrange(self.out(h), "(b t) c ... -> b t c ...", t=num_frames)

    @staticmethod
    def _per_sample(values: Tensor | int, batch: int, device: torch.device, what: str) -> Tensor:
        """A scalar or (B,) tensor of per-sample integers -> (B,) on ``device``."""
        values = torch.as_tensor(values, device=device)
        if values.ndim == 0:
            values = values.expand(batch)
        if values.shape != (batch,):
            raise ValueError(f"expected {what} of shape ({batch},), got {tuple(values.shape)}")
        return values

    def _level_embedding(
        self, level: Tensor | int | None, batch: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor | None:
        """Learned embedding (B, D) of the per-sample level; None for an unconditional UNet (which takes no level)."""
        if self.level_embed is None:
            if level is not None:
                raise ValueError("this UNet is not level-conditioned (num_levels=0) but got a level")
            return None
        if level is None:
            raise ValueError(f"this UNet is level-conditioned (num_levels={self.num_levels}): pass level (0 = clean)")
        level = self._per_sample(level, batch, device, "level").long()
        if level.min() < 0 or level.max() >= self.num_levels:
            raise ValueError(f"level must lie in [0, {self.num_levels}), got values {level.min().item()}..{level.max().item()}")
        return self.level_embed(level).to(dtype)

    def _run(self, layer: nn.Module, h: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """Runs one block, recomputed in backward when gradient checkpointing is on."""
        return maybe_checkpoint(self.gradient_checkpointing, layer, h, emb, num_frames)

    def _check_input(self, x: Tensor) -> tuple[int, int]:
        """Validates x (B, T, C, H, W) against the configuration; returns (B, T)."""
        if x.ndim != self.spatial_dims + 3:
            shapes = "(B, T, C, H, W) or images (B, C, H, W)" if self.spatial_dims == 2 else "(B, T, C, L) or signals (B, C, L)"
            raise ValueError(f"expected a video {shapes}, got shape {tuple(x.shape)}")
        batch, num_frames, channels, *sizes = x.shape
        if channels != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got input of shape {tuple(x.shape)}")
        if any(size % self.downsample_factor for size in sizes):
            what = "height and width" if self.spatial_dims == 2 else "the length"
            raise ValueError(
                f"{what} must be divisible by {self.downsample_factor} "
                f"(2**(len(channel_mult)-1)), got {'x'.join(map(str, sizes))}"
            )
        if num_frames < 1:
            raise ValueError(f"expected at least one frame, got T={num_frames}")
        if self.temporal and num_frames > self.max_frames:
            raise ValueError(f"video UNet built with max_frames={self.max_frames} got T={num_frames} frames")
        return batch, num_frames

    # -- utilities --------------------------------------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute every block in the backward pass (saves activation memory on long pseudo videos)."""
        self.gradient_checkpointing = bool(enabled)

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the temporal attention layers (none for the image UNet)."""
        for name, p in self.named_parameters():
            if is_temporal_key(name):
                yield p

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters of the model."""
        return count_parameters(self, trainable_only)

    def load_spatial_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Loads an image UNet's state_dict into the spatial layers; temporal layers keep their (identity) init.

        Raises ValueError if a spatial key is missing or the state_dict has keys this model lacks.
        """
        spatial = {k: v for k, v in state_dict.items() if not is_temporal_key(k)}
        result = self.load_state_dict(spatial, strict=False)
        missing = [k for k in result.missing_keys if not is_temporal_key(k)]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"state_dict does not match this UNet's spatial layers: missing {missing[:5]}, "
                f"unexpected {list(result.unexpected_keys)[:5]}"
            )


def _validate_config(
    in_channels: int,
    base_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...],
    resolution: int,
    dropout: float,
    num_heads: int,
    temporal: bool,
    causal_temporal: bool,
    max_frames: int,
    frame_position: str,
    num_levels: int,
) -> None:
    """Raises ValueError naming the first bad UNet argument."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if base_channels < 2 or base_channels % 2:
        raise ValueError(f"base_channels must be an even number >= 2, got {base_channels}")
    if not channel_mult or any(m < 1 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
    factor = 2 ** (len(channel_mult) - 1)
    if resolution < 1 or resolution % factor:
        raise ValueError(
            f"resolution must be divisible by 2**(len(channel_mult)-1) = {factor} "
            f"(channel_mult={channel_mult}), got {resolution}"
        )
    reachable = [resolution // 2**i for i in range(len(channel_mult))]
    unreachable = [r for r in attention_resolutions if r not in reachable]
    if unreachable:
        raise ValueError(
            f"attention_resolutions {list(unreachable)} are not feature-map sizes of this UNet; "
            f"reachable sizes for resolution={resolution}, channel_mult={channel_mult}: {reachable}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    for i, mult in enumerate(channel_mult):
        channels = base_channels * mult
        lowest = i == len(channel_mult) - 1  # the middle block always has spatial attention
        needs_heads = temporal or lowest or reachable[i] in attention_resolutions
        if needs_heads and channels % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the {channels} channels of level {i} "
                f"(base_channels={base_channels} x channel_mult[{i}]={mult})"
            )
    if frame_position not in FRAME_POSITIONS:
        raise ValueError(f"frame_position must be one of {FRAME_POSITIONS}, got {frame_position!r}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if num_levels < 0:
        raise ValueError(f"num_levels must be >= 0 (0 = not level-conditioned), got {num_levels}")
    if causal_temporal and not temporal:
        raise ValueError("causal_temporal=True needs temporal=True (the image UNet has no temporal layers)")


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


def _validate_temporal_choices(temporal_layers: str, temporal_mixer: str) -> None:
    """Raises ValueError naming a bad temporal_layers / temporal_mixer value."""
    if temporal_layers not in TEMPORAL_LAYERS:
        raise ValueError(f"temporal_layers must be one of {TEMPORAL_LAYERS}, got {temporal_layers!r}")
    if temporal_mixer not in TEMPORAL_MIXERS:
        raise ValueError(f"temporal_mixer must be one of {TEMPORAL_MIXERS}, got {temporal_mixer!r}")


def image_unet(**kwargs) -> UNet:
    """The DDPM image UNet (no temporal layers): every frame of a (B, T, C, H, W) input is processed alone."""
    if kwargs.pop("temporal", False):
        raise ValueError("image_unet builds a UNet without temporal layers; use video_unet for temporal=True")
    return UNet(temporal=False, **kwargs)


def video_unet(**kwargs) -> UNet:
    """The space-time factorised video UNet: the image UNet plus temporal attention across frames."""
    if not kwargs.pop("temporal", True):
        raise ValueError("video_unet always has temporal layers; use image_unet for temporal=False")
    return UNet(temporal=True, **kwargs)
