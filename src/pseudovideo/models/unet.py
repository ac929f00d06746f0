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

from collections.abc import Iterator, Mapping, Sequence

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from pseudovideo.models.layers import conv_nd, count_parameters, group_norm, maybe_checkpoint
from pseudovideo.models.unet_blocks import (
    Downsample,
    UNetBlock,
    UNetBlockSpec,
    Upsample,
    _zero,
    timestep_embedding,
)

__all__ = [
    "FRAME_POSITIONS",
    "TEMPORAL_LAYERS",
    "TEMPORAL_MIXERS",
    "UNet",
    "image_unet",
    "video_unet",
    "is_temporal_key",
]

FRAME_POSITIONS = ("learned", "relative")
TEMPORAL_LAYERS = ("every_block", "per_level", "low_res")
TEMPORAL_MIXERS = ("attention", "conv", "hybrid")


def is_temporal_key(key: str) -> bool:
    """True for state_dict keys of the video UNet's temporal attention layers."""
    return ".temporal." in f".{key}"


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
        spec = UNetBlockSpec(emb_dim, dropout, num_heads, temporal, temporal_layers, temporal_mixer, max_frames,
                             frame_position, causal_temporal, len(channel_mult), spatial_dims)
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.input_conv = conv_nd(spatial_dims, in_channels, base_channels, 3, padding=1)
        widths = [base_channels * mult for mult in channel_mult]
        self.down, skip_channels = _down_path(spec, base_channels, widths, num_res_blocks, attention_resolutions,
                                              resolution)
        ch, res = widths[-1], resolution // self.downsample_factor
        # middle: res + attention, res (attention at the lowest resolution always, as in DDPM)
        self.middle = nn.ModuleList([spec.make(ch, ch, True, None), spec.make(ch, ch, False, (-1, 1, 2))])
        self.up = _up_path(spec, widths, num_res_blocks, attention_resolutions, res, skip_channels)
        ch = widths[0]
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


def _down_path(spec: UNetBlockSpec, base_channels: int, widths: list[int], num_res_blocks: int,
               attention_resolutions: tuple[int, ...], resolution: int) -> tuple[nn.ModuleList, list[int]]:
    """The blocks of the way down from the input convolution's ``base_channels`` (``num_res_blocks`` per level, a
    Downsample between levels) and the channels of every skip connection they leave, in order."""
    down = nn.ModuleList()
    skip_channels = [base_channels]
    ch, res = base_channels, resolution
    for level, width in enumerate(widths):
        for index in range(num_res_blocks):
            down.append(spec.make(ch, width, res in attention_resolutions, (level, index, num_res_blocks)))
            ch = width
            skip_channels.append(ch)
        if level != len(widths) - 1:
            down.append(Downsample(ch, spec.spatial_dims))
            skip_channels.append(ch)
            res //= 2
    return down, skip_channels


def _up_path(spec: UNetBlockSpec, widths: list[int], num_res_blocks: int, attention_resolutions: tuple[int, ...],
             res: int, skip_channels: list[int]) -> nn.ModuleList:
    """The blocks of the way up (``num_res_blocks + 1`` per level, each reading a skip connection, an Upsample
    between levels), from the lowest resolution ``res``; consumes ``skip_channels``."""
    up = nn.ModuleList()
    ch = widths[-1]
    for level in reversed(range(len(widths))):
        for index in range(num_res_blocks + 1):
            c_in = ch + skip_channels.pop()
            up.append(spec.make(c_in, widths[level], res in attention_resolutions, (level, index, num_res_blocks + 1)))
            ch = widths[level]
        if level != 0:
            up.append(Upsample(ch, spec.spatial_dims))
            res *= 2
    return up
