"""Lift any 2-D image network (or 1-D signal network) to its video counterpart by inserting temporal mixing layers.

The recipe of AnimateDiff / Make-A-Video motion modules, for any ``nn.Module`` that runs on frames:
the video (B, T, C, H, W) goes through the image network as a batch of B*T frames ((B T), C, H, W),
and after each chosen block a temporal layer mixes the T frames at every spatial position (temporal
attention over T, optionally a temporal 1-D convolution). Every inserted layer ends in a zero-initialised
output projection inside a residual branch, so **at initialisation the lifted network computes exactly the
image network on every frame**; training then learns how frames should talk to each other.

- :func:`lift` returns a :class:`LiftedNet` (``video_net(video, *per_frame_inputs) -> (B, T, ...)``) for
  denoisers and other frame-to-frame networks, and a :class:`LiftedTokenizer` (the
  :class:`~pseudovideo.models.tokenizer.VideoTokenizer` interface) for our VQ tokenizers.
- ``where`` chooses the blocks: class names (``"ResnetBlock2D"``), module names (``"down.3"``) or glob
  patterns on module names (``"dec_blocks.*"``); only the outermost matches count (a block inside a matched
  block is not lifted twice). The default, :data:`DEFAULT_BLOCKS`, covers our UNet's blocks (residual block
  + spatial attention), residual blocks of conv autoencoders (our VQVAE) and diffusers' ``ResnetBlock2D`` /
  ``Transformer2DModel``.
- The temporal layers run from forward hooks that the lifted object registers on the image network's
  blocks; they act only while the lifted object is running (calling the image network directly still
  computes the image model) and :meth:`LiftedNet.unlift` removes them. No library class is changed.
- ``causal=True`` masks the temporal attention (and pads the temporal convolution) so that frame t only
  sees frames <= t.
- Networks on 1-D signals lift the same way: the video (B, T, C, L) runs as (B*T, C, L) frames and the temporal
  layers mix the T frames at every position of the length (blocks with 3-D ((B T), C, L) activations).
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pseudovideo.models.tokenizer import TokenizerOutput, TokenizerRate, VideoTokenizer
from pseudovideo.models.unet import UNet
from pseudovideo.models.unet_blocks import TemporalAttention

__all__ = [
    "DEFAULT_BLOCKS",
    "TEMPORAL_KINDS",
    "LiftError",
    "LiftedNet",
    "LiftedTokenizer",
    "TemporalConv",
    "TemporalMixer",
    "find_blocks",
    "lift",
]

# Class names lifted by default: our UNet's UNetBlock (residual block + spatial attention), conv
# autoencoder residual blocks (our VQVAE's ResBlock, "ResnetBlock"s), diffusers' ResnetBlock2D / Transformer2DModel.
DEFAULT_BLOCKS = ("UNetBlock", "ResBlock", "ResnetBlock", "ResnetBlock2D", "Transformer2DModel")
TEMPORAL_KINDS = ("attention", "conv", "both", "none")
# Top-level module names of a tokenizer's decoder: temporal layers there make the last frame's decoding
# read the codes of every frame (the rate grows T-fold).
DECODER_PREFIXES = ("dec", "decoder", "post_quant")


class LiftError(ValueError):
    """An image network that cannot be lifted as asked (no block matched, activations not 4-D, ...)."""


# -- temporal layers ----------------------------------------------------------------------------------------
class TemporalConv(nn.Module):
    """Residual 1-D convolution across the T frames at every pixel: ((B T), C, H, W) -> same.

    LayerNorm over channels, then a kernel-``kernel_size`` convolution over time (left-padded when ``causal``,
    so frame t sees frames <= t) whose weights start at zero: the layer starts as the identity.
    """

    def __init__(self, channels: int, kernel_size: int = 3, causal: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.causal = causal
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x ((B T), C, H, W) with T = num_frames -> ((B T), C, H, W) (signals: ((B T), C, L))."""
        positions = x.shape[2:].numel()  # H W (or L)
        tokens = rearrange(x.flatten(2), "(b t) c s -> (b s) t c", t=num_frames)  # ((B H W), T, C)
        seq = rearrange(self.norm(tokens), "n t c -> n c t")  # ((B H W), C, T)
        pad = self.kernel_size - 1
        seq = F.pad(seq, (pad, 0) if self.causal else (pad // 2, pad - pad // 2))
        tokens = tokens + rearrange(self.conv(seq), "n c t -> n t c")  # ((B H W), T, C)
        return rearrange(tokens, "(b s) t c -> (b t) c s", s=positions).reshape(x.shape)


class TemporalMixer(nn.Module):
    """The temporal layers inserted after one block: a temporal conv and/or temporal attention, each residual."""

    def __init__(self, channels: int, max_frames: int, kind: str, causal: bool, num_heads: int | None = None) -> None:
        super().__init__()
        if kind not in TEMPORAL_KINDS[:3]:
            raise LiftError(f"temporal must be one of {', '.join(TEMPORAL_KINDS[:3])}, got {kind!r}")
        self.channels = channels
        heads = num_heads or _default_heads(channels)
        if channels % heads:
            raise LiftError(f"num_heads={heads} does not divide the {channels} channels of a lifted block")
        self.conv = TemporalConv(channels, causal=causal) if kind in ("conv", "both") else None
        self.attention = (
            TemporalAttention(channels, heads, max_frames, "learned", causal) if kind in ("attention", "both") else None
        )

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x ((B T), C, H, W) -> ((B T), C, H, W)."""
        if self.conv is not None:
            x = self.conv(x, num_frames)
        if self.attention is not None:
            x = self.attention(x, num_frames)
        return x


def _default_heads(channels: int) -> int:
    """Most heads among 8, 4, 2, 1 that divide ``channels`` with at least 8 channels per head."""
    return next((h for h in (8, 4, 2) if channels % h == 0 and channels // h >= 8), 1)


# -- choosing blocks ----------------------------------------------------------------------------------------
def _matches(name: str, module: nn.Module, pattern: str | type) -> bool:
    if isinstance(pattern, type):
        return isinstance(module, pattern)
    return type(module).__name__ == pattern or name == pattern or ("*" in pattern and fnmatch.fnmatchcase(name, pattern))


def find_blocks(net: nn.Module, where: str | type | Sequence[str | type] | None = None) -> list[str]:
    """Names of the outermost sub-modules of ``net`` matched by ``where`` (see the module docstring).

    Raises LiftError listing the block types ``net`` has when nothing matches.
    """
    patterns = list(DEFAULT_BLOCKS if where is None else [where] if isinstance(where, (str, type)) else where)
    chosen: list[str] = []
    for name, module in net.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        if any(_matches(name, module, p) for p in patterns):
            chosen.append(name)
    if not chosen:
        types = Counter(type(m).__name__ for n, m in net.named_modules() if n and len(list(m.children())) > 0)
        listing = ", ".join(f"{t} (x{c})" for t, c in sorted(types.items())) or "none (it has no sub-modules)"
        raise LiftError(
            f"no block of {type(net).__name__} matches where={patterns!r}; its block types are: {listing}. "
            "Pass where= class names, module names or glob patterns on names (e.g. 'down.*')"
        )
    return chosen


def _output_channels(module: nn.Module) -> int | None:
    """Channels of a block's output, from an ``out_channels`` attribute or its last conv/linear/norm layer."""
    for attr in ("out_channels", "out_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    last = None
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.Conv2d)):
            last = sub.out_channels
        elif isinstance(sub, nn.Linear):
            last = sub.out_features
        elif isinstance(sub, nn.GroupNorm):
            last = sub.num_channels
    return last


class _TemporalHook:
    """Forward hook running one block's temporal layers on its 4-D output while the lifted model runs."""

    def __init__(self, owner: "_LiftedLayers", name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        frames = self.owner._frames
        if frames is None:  # the image network called on its own: the image model
            return None
        mixer = self.owner.temporal[_key(self.name)]
        if isinstance(output, Tensor):
            return self._mix(mixer, output, frames)
        if hasattr(output, "sample") and isinstance(output.sample, Tensor):  # diffusers BaseOutput
            output.sample = self._mix(mixer, output.sample, frames)
            return output
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
            return (self._mix(mixer, output[0], frames), *output[1:])
        raise LiftError(f"block {self.name!r} returns {type(output).__name__}, not a ((B T), C, H, W) or ((B T), C, L) tensor; "
                        "choose other blocks with where=")

    def _mix(self, mixer: TemporalMixer, x: Tensor, frames: int) -> Tensor:
        if x.ndim not in (3, 4):
            raise LiftError(f"block {self.name!r} returns activations of shape {tuple(x.shape)}, not 4-D "
                            "((B T), C, H, W) or 3-D ((B T), C, L); only blocks on 2-D feature maps or 1-D sequences "
                            "can be lifted: choose others with where=")
        if x.shape[1] != mixer.channels:
            raise LiftError(f"block {self.name!r} returns {x.shape[1]} channels but its temporal layer was built for "
                            f"{mixer.channels} (read from its layers); pass channels={{{self.name!r}: {x.shape[1]}}} to lift")
        if x.shape[0] % frames:
            raise LiftError(f"block {self.name!r}: batch {x.shape[0]} is not a multiple of T={frames}")
        # the image network's next layers get the memory layout they would have seen (same conv kernels, same rounding)
        return mixer(x, frames).contiguous(memory_format=_memory_format(x))


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.ndim != 4:
        return torch.contiguous_format
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format


def _key(name: str) -> str:
    return name.replace(".", "__")


class _LiftedLayers(nn.Module):
    """Shared machinery: the image network, the temporal layers per lifted block and the frame context."""

    def _setup(
        self,
        image_net: nn.Module,
        num_frames: int,
        where: Any,
        causal: bool,
        temporal: str,
        channels: dict[str, int] | None,
        num_heads: int | None,
    ) -> None:
        if not isinstance(image_net, nn.Module):
            raise LiftError(f"only a torch.nn.Module can be lifted, got {type(image_net).__name__}")
        if num_frames < 1:
            raise LiftError(f"num_frames must be >= 1, got {num_frames}")
        if temporal not in TEMPORAL_KINDS:
            raise LiftError(f"temporal must be one of {', '.join(TEMPORAL_KINDS)}, got {temporal!r}")
        self.image = image_net
        self.num_frames = num_frames
        self.causal = causal
        self.temporal_kind = temporal
        self.temporal = nn.ModuleDict()
        self.lifted_blocks = [] if temporal == "none" else find_blocks(image_net, where)
        self._frames: int | None = None
        modules = dict(image_net.named_modules())
        for name in self.lifted_blocks:
            c = (channels or {}).get(name) or _output_channels(modules[name])
            if c is None:
                raise LiftError(f"cannot tell the output channels of block {name!r}; pass channels={{{name!r}: C}}")
            self.temporal[_key(name)] = TemporalMixer(c, num_frames, temporal, causal, num_heads)
            modules[name].register_forward_hook(_TemporalHook(self, name))

    @contextlib.contextmanager
    def frames(self, num_frames: int) -> Iterator[None]:
        """Within this context the image network's lifted blocks mix ``num_frames`` frames."""
        if not 1 <= num_frames <= self.num_frames:
            raise ValueError(f"this lifted model takes 1..{self.num_frames} frames, got T={num_frames}")
        previous, self._frames = self._frames, num_frames
        try:
            yield
        finally:
            self._frames = previous

    def unlift(self) -> nn.Module:
        """Removes the temporal hooks and returns the image network (its trained spatial weights)."""
        for module in self.image.modules():
            for key, hook in list(module._forward_hooks.items()):
                if isinstance(hook, _TemporalHook) and hook.owner is self:
                    del module._forward_hooks[key]
        return self.image

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the inserted temporal layers."""
        return self.temporal.parameters()


class LiftedNet(_LiftedLayers):
    """A frame network lifted to videos: ``forward(video (B, T, C, H, W), *inputs, **kw) -> (B, T, ...)``.

    A network on signals takes videos of signals (B, T, C, L) the same way.

    The video runs through the image network as (B*T, C, H, W) frames. Tensor inputs of shape (B, T, ...) are
    per frame (flattened to (B*T, ...)), other tensors with leading dimension B are repeated for every frame
    (e.g. the diffusion timestep t (B,)), anything else is passed unchanged. A tensor output (B*T, ...) comes
    back as (B, T, ...); a diffusers output's ``.sample`` or a tuple's first tensor is returned the same way.
    Our :class:`~pseudovideo.models.unet.UNet` (which takes videos) is called with T = 1 per frame.
    """

    def __init__(self, image_net: nn.Module, num_frames: int, where: Any = None, causal: bool = False,
                 temporal: str = "attention", channels: dict[str, int] | None = None,
                 num_heads: int | None = None) -> None:
        super().__init__()
        self._setup(image_net, num_frames, where, causal, temporal, channels, num_heads)
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the whole image network (with its temporal layers) in the backward pass."""
        self.gradient_checkpointing = bool(enabled)

    def forward(self, video: Tensor, *inputs: Any, **kw_inputs: Any) -> Tensor:
        """video (B, T, C, H, W) (or (B, T, C, L)) and per-frame or broadcast inputs -> (B, T, ...) output of every frame."""
        if video.ndim not in (4, 5):
            raise ValueError(f"expected a video of shape (B, T, C, H, W) or (B, T, C, L), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        if isinstance(self.image, UNet) and not any(_is_per_frame(x, b, t) for x in (*inputs, *kw_inputs.values())):
            return self._video_forward(video, *inputs, **kw_inputs)  # our UNet takes videos: same op order
        frames = rearrange(video, "b t c ... -> (b t) c ...")
        inputs = tuple(_per_frame(x, b, t) for x in inputs)
        kw_inputs = {k: _per_frame(v, b, t) for k, v in kw_inputs.items()}
        if self.gradient_checkpointing and torch.is_grad_enabled():
            out = checkpoint(self._frames_forward, t, frames, *inputs, use_reentrant=False, **kw_inputs)
        else:
            out = self._frames_forward(t, frames, *inputs, **kw_inputs)
        return rearrange(out, "(b t) ... -> b t ...", b=b)

    def _video_forward(self, video: Tensor, *inputs: Any, **kw_inputs: Any) -> Tensor:
        """Our UNet on the (B, T, C, H, W) video itself (it flattens frames the same way)."""
        def run(v: Tensor, *args: Any) -> Tensor:
            with self.frames(v.shape[1]):
                return self.image(v, *args, **kw_inputs)

        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(run, video, *inputs, use_reentrant=False)
        return run(video, *inputs)

    def _frames_forward(self, num_frames: int, frames: Tensor, *inputs: Any, **kw_inputs: Any) -> Tensor:
        """The image network on (B*T, C, H, W) frames with the temporal layers mixing T frames."""
        with self.frames(num_frames):
            if isinstance(self.image, UNet):
                return self.image(frames[:, None], *inputs, **kw_inputs)[:, 0]
            out = self.image(frames, *inputs, **kw_inputs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, Tensor):
            raise LiftError(f"{type(self.image).__name__} returned {type(out).__name__}, not a tensor of frames")
        return out


def _is_per_frame(value: Any, batch: int, frames: int) -> bool:
    """Whether ``value`` is a (B, T, ...) tensor of per-frame inputs."""
    return isinstance(value, Tensor) and value.ndim >= 2 and value.shape[:2] == (batch, frames)


def _per_frame(value: Any, batch: int, frames: int) -> Any:
    """(B, T, ...) -> (B*T, ...); (B, ...) -> repeated per frame (B*T, ...); anything else unchanged."""
    if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch:
        return value
    if value.ndim >= 2 and value.shape[1] == frames:
        return rearrange(value, "b t ... -> (b t) ...")
    return value.repeat_interleave(frames, dim=0)


class LiftedTokenizer(_LiftedLayers, VideoTokenizer):
    """One of our frame-by-frame VQ tokenizers (the VQVAE) lifted to a video tokenizer.

    Temporal layers after the encoder's and decoder's blocks mix frames; the quantizer stays per frame. With
    ``causal`` the reconstruction of frame t depends on frames <= t only. When the decoder has temporal layers
    the last frame is decoded from the codes of all T frames, so the rate is T times the image tokenizer's.
    Gradient checkpointing is not available (the base's per-block recomputation would skip the temporal layers).
    """

    def __init__(self, image_net: VideoTokenizer, num_frames: int, where: Any = None, causal: bool = False,
                 temporal: str = "attention", channels: dict[str, int] | None = None,
                 num_heads: int | None = None) -> None:
        VideoTokenizer.__init__(self)
        if not isinstance(image_net, VideoTokenizer):
            raise LiftError(f"LiftedTokenizer lifts a VideoTokenizer (e.g. our VQVAE), got {type(image_net).__name__}")
        self._setup(image_net, num_frames, where, causal, temporal, channels, num_heads)
        self.in_channels = image_net.in_channels
        self.resolution = image_net.resolution

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Not supported for lifted tokenizers (see the class docstring); a no-op with a warning."""
        if enabled:
            warnings.warn("gradient checkpointing is not supported by a lifted tokenizer; training without it", stacklevel=2)

    @property
    def decoder_is_temporal(self) -> bool:
        """Whether any lifted block is in the decoder (module names starting with 'dec', 'decoder', 'post_quant')."""
        return any(name.split(".")[0].startswith(DECODER_PREFIXES) for name in self.lifted_blocks)

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(B, T, C, H, W) -> the base's (latents, indices, aux_losses, stats) with frames mixed in the encoder."""
        with self.frames(video.shape[1]):
            return self.image.encode(video)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, T, ...) latents of the base -> (B, T, C, H, W) video, frames mixed in the decoder."""
        with self.frames(latents.shape[1]):
            return self.image.decode(latents)

    def decode_codes(self, indices: Tensor) -> Tensor:
        """(B, T, ...) code indices of the base -> (B, T, C, H, W) video."""
        with self.frames(indices.shape[1]):
            return self.image.decode_codes(indices)

    def forward(self, video: Tensor) -> TokenizerOutput:
        """Reconstructs a (B, T, C, H, W) video; see :class:`~pseudovideo.models.tokenizer.TokenizerOutput`."""
        return VideoTokenizer.forward(self, video)

    @property
    def last_layer_weight(self) -> Tensor:
        """The base decoder's last layer weight (VQGAN's adaptive GAN weight)."""
        return self.image.last_layer_weight

    @property
    def codebook_size(self) -> int:
        """Number of codes K of the base's quantizer."""
        return self.image.codebook_size

    def rate(self, num_frames: int = 1) -> TokenizerRate:
        """The base's codes per frame, times T when the decoder mixes frames (it then reads every frame's codes)."""
        base = self.image.rate(1)
        positions = base.codes_per_image // base.num_quantizers
        if self.decoder_is_temporal and num_frames > 1:
            return TokenizerRate.from_positions(
                positions * num_frames, base.codebook_size, base.num_quantizers,
                f"lifted {type(self.image).__name__}: temporal layers in the decoder, so the last frame is decoded "
                f"from the codes of all {num_frames} frames ({base.description.split(';')[0]} per frame)",
            )
        return base


def lift(
    image_net: nn.Module,
    num_frames: int,
    where: str | type | Sequence[str | type] | None = None,
    causal: bool = False,
    temporal: str = "attention",
    channels: dict[str, int] | None = None,
    num_heads: int | None = None,
) -> LiftedNet | LiftedTokenizer:
    """The video counterpart of ``image_net``: temporal layers after the blocks matched by ``where``.

    Args:
        image_net: any module on (N, C, H, W) frames (or one of our models). It becomes part of the returned
            model (its weights are shared, not copied); :meth:`LiftedNet.unlift` gives it back without hooks.
        num_frames: largest T the lifted model takes (size of the frame-position table).
        where: blocks to lift, see :func:`find_blocks`; None: :data:`DEFAULT_BLOCKS`.
        causal: frame t only sees frames <= t.
        temporal: "attention", "conv", "both" or "none" (no temporal layer: the image model frame by frame).
        channels: output channels per block name, for blocks whose channels cannot be read from their layers.
        num_heads: heads of the temporal attention (default: most of 8/4/2/1 leaving >= 8 channels per head).

    Returns a :class:`LiftedTokenizer` for our tokenizers, a :class:`LiftedNet` otherwise; at initialisation both
    compute exactly ``image_net`` on every frame.
    """
    cls = LiftedTokenizer if isinstance(image_net, VideoTokenizer) else LiftedNet
    return cls(image_net, num_frames, where=where, causal=causal, temporal=temporal, channels=channels,
               num_heads=num_heads)
