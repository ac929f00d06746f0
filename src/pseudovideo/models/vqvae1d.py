"""1-D convolutional VQVAE for signals (the SoundStream / EnCodec pattern): the signal tokenizer.

A frame is a signal (C, L). Encoder: a 7-tap conv, then per resolution level ``num_res_blocks`` residual units
(ELU, a dilated 3-tap conv with dilations 1, 3, 9, ..., ELU, a 1-tap conv, residual) and a strided conv of kernel
2 x stride (stride 2, except after the last level), a last residual unit, ELU and a 3-tap conv to ``codebook_dim``
channels; the vector quantizer (residual VQ with ``num_quantizers`` > 1, as SoundStream); the decoder mirrors it
with transposed convs. Weight normalisation and EnCodec's LSTM are left out, so the network matches our image
VQVAE's sizes and keys (``channel_mult``, ``num_res_blocks``, ...) and lifts the same way (its ``ResBlock``s and
``enc_blocks.*`` / ``dec_blocks.*``). A (B, T, C, L) video of signals becomes (B, T, codebook_dim, L / f) latents
with f = 2 ** (len(channel_mult) - 1); on a video every frame is coded independently.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.models.quantizer import VectorQuantizer, resolve_fsq_levels
from pseudovideo.models.tokenizer import TokenizerRate, VideoTokenizer

__all__ = ["ResBlock", "SignalVQVAE"]

DILATIONS = (1, 3, 9)  # SoundStream's residual units, cycled over the blocks of a level


class ResBlock(nn.Module):
    """Residual unit x + conv1(ELU(conv3_dilated(ELU(x)))) with a 1-tap skip when widths differ: (N, C_in, L) -> (N, C_out, L)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, dilation=dilation, padding=dilation)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 1)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, L) -> (N, C_out, L)."""
        return self.skip(x) + self.conv2(F.elu(self.conv1(F.elu(x))))


def _encoder_blocks(widths: Sequence[int], num_res_blocks: int) -> nn.ModuleList:
    """Per level: residual units (dilations 1, 3, 9, ...) to the level's width, then a stride-2 conv of kernel 4 (not
    after the last level); a last residual unit. (N, widths[0], L) -> (N, widths[-1], L / f)."""
    blocks, ch = nn.ModuleList(), widths[0]
    for level, width in enumerate(widths):
        for index in range(num_res_blocks):
            blocks.append(ResBlock(ch, width, DILATIONS[index % len(DILATIONS)]))
            ch = width
        if level < len(widths) - 1:
            blocks.append(nn.Conv1d(ch, ch, 4, stride=2, padding=1))
    blocks.append(ResBlock(ch, ch))
    return blocks


def _decoder_blocks(widths: Sequence[int], num_res_blocks: int) -> nn.ModuleList:
    """The encoder mirrored: a residual unit, then per level (last first) residual units to its width and a stride-2
    transposed conv (not after the first level). (N, widths[-1], L / f) -> (N, widths[0], L)."""
    ch = widths[-1]
    blocks = nn.ModuleList([ResBlock(ch, ch)])
    for level in reversed(range(len(widths))):
        for index in range(num_res_blocks):
            blocks.append(ResBlock(ch, widths[level], DILATIONS[index % len(DILATIONS)]))
            ch = widths[level]
        if level > 0:
            blocks.append(nn.ConvTranspose1d(ch, ch, 4, stride=2, padding=1))
    return blocks


class SignalVQVAE(VideoTokenizer):
    """1-D VQVAE applied frame by frame to videos of signals (B, T, C, L) (T = 1: signals).

    Args: as :class:`pseudovideo.models.vqvae.VQVAE` (the ``model.vqvae`` config section), with ``length`` (L, divisible
    by 2 ** (len(channel_mult) - 1)) instead of the image side. ``resolution`` is kept as an alias of ``length``
    (the sample size generic code reads).
    """

    def __init__(
        self,
        in_channels: int = 1,
        length: int = 64,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        codebook_size: int = 512,
        codebook_dim: int = 64,
        commitment_weight: float = 0.25,
        ema_codebook: bool = True,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
        cosine_codes: bool = False,
        num_quantizers: int = 1,
        quantizer: str = "vq",
        fsq_levels: Sequence[int] | None = None,
        lookup_dim: int | None = None,
    ) -> None:
        super().__init__()
        fsq_levels = resolve_fsq_levels(quantizer, fsq_levels)
        channel_mult = tuple(int(m) for m in channel_mult)
        if len(channel_mult) < 1 or min(channel_mult) < 1 or in_channels < 1 or base_channels < 1 or num_res_blocks < 0:
            raise ValueError(f"expected in_channels, base_channels >= 1, num_res_blocks >= 0 and a non-empty channel_mult "
                             f"of positive ints; got {in_channels}, {base_channels}, {num_res_blocks}, {channel_mult}")
        factor = 2 ** (len(channel_mult) - 1)
        if length < 1 or length % factor:
            raise ValueError(f"length={length} (data.length) is not divisible by the VQVAE's downsampling factor {factor} "
                             f"(2 ** (len(channel_mult) - 1) with channel_mult={channel_mult})")
        self.in_channels = in_channels
        self.length = self.resolution = length
        self.latent_length = length // factor  # code positions per signal
        widths = [base_channels * m for m in channel_mult]
        self.enc_in = nn.Conv1d(in_channels, widths[0], 7, padding=3)  # (N, C, L) -> (N, codebook_dim, L / f)
        self.enc_blocks = _encoder_blocks(widths, num_res_blocks)
        self.enc_out = nn.Sequential(nn.ELU(), nn.Conv1d(widths[-1], codebook_dim, 3, padding=1))
        self.quantizer = VectorQuantizer(
            codebook_dim, codebook_size=codebook_size, codebook_dim=lookup_dim, commitment_weight=commitment_weight,
            ema_codebook=ema_codebook, ema_decay=ema_decay, dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init, cosine_codes=cosine_codes, num_quantizers=num_quantizers, fsq_levels=fsq_levels,
        )
        self.dec_in = nn.Conv1d(codebook_dim, widths[-1], 7, padding=3)  # (N, codebook_dim, L / f) -> (N, C, L)
        self.dec_blocks = _decoder_blocks(widths, num_res_blocks)
        self.dec_out = nn.Sequential(nn.ELU(), nn.Conv1d(widths[0], in_channels, 7, padding=3))

    def rate(self, num_frames: int = 1) -> TokenizerRate:
        """Frames are coded independently: the last frame is decoded from its own L/f x Q codes."""
        if num_frames < 1:
            raise ValueError(f"expected at least one frame, got num_frames={num_frames}")
        n, q = self.latent_length, self.num_quantizers
        stages = f" x {q} residual stages" if q > 1 else ""
        return TokenizerRate.from_positions(
            n, self.codebook_size, q,
            f"1-D VQVAE: {n} code positions{stages} of K={self.codebook_size} ({self.quantizer.description}); frames are "
            "coded independently, so the last frame is decoded from its own codes only",
        )

    @property
    def last_layer_weight(self) -> Tensor:
        """(C, C_dec, 7) weight of the decoder's output conv."""
        return self.dec_out[-1].weight

    def check_video(self, video: Tensor) -> tuple[int, int]:
        """Validates a (B, T, C, L) input against the model's channels and length; returns (B, T)."""
        if video.ndim != 4 or video.shape[2] != self.in_channels or video.shape[3] != self.length or video.shape[1] < 1:
            raise ValueError(f"expected videos of signals of shape (B, T, {self.in_channels}, {self.length}), "
                             f"got {tuple(video.shape)}")
        return video.shape[0], video.shape[1]

    def _blocks(self, blocks: nn.ModuleList, h: Tensor) -> Tensor:
        for block in blocks:
            h = self._run_block(block, h)
        return h

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(B, T, C, L) -> quantized latents (B, T, D, l), indices (B, T, l[, Q]), aux_losses, stats."""
        b, _ = self.check_video(video)
        h = self.enc_out(self._blocks(self.enc_blocks, self.enc_in(rearrange(video, "b t c l -> (b t) c l"))))
        out = self.quantizer(rearrange(h, "n d l -> n l d"))  # tokens (B T, l, D)
        latents = rearrange(out.quantized, "(b t) l d -> b t d l", b=b)
        indices = rearrange(out.indices, "(b t) l ... -> b t l ...", b=b)
        return latents, indices, {"vq": out.loss}, out.stats

    def decode(self, latents: Tensor) -> Tensor:
        """(B, T, D, l) quantized latents -> (B, T, C, L)."""
        if latents.ndim != 4:
            raise ValueError(f"expected latents of shape (B, T, D, l), got {tuple(latents.shape)}")
        b = latents.shape[0]
        h = self.dec_in(rearrange(latents, "b t d l -> (b t) d l"))
        return rearrange(self.dec_out(self._blocks(self.dec_blocks, h)), "(b t) c l -> b t c l", b=b)

    def decode_codes(self, indices: Tensor) -> Tensor:
        """(B, T, l) code indices, (B, T, l, Q) with Q > 1 stages -> (B, T, C, L)."""
        if indices.ndim != 3 + (self.num_quantizers > 1):
            raise ValueError(f"expected indices of shape (B, T, l{'' if self.num_quantizers == 1 else ', Q'}), "
                             f"got {tuple(indices.shape)}")
        t = indices.shape[1]
        tokens = self.quantizer.indices_to_latents(rearrange(indices, "b t l ... -> b (t l) ..."))  # (B, N, D)
        return self.decode(rearrange(tokens, "b (t l) d -> b t d l", t=t))
