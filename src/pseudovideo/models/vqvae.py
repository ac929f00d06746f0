"""Convolutional VQVAE: the image tokenizer; on a video every frame is encoded and decoded independently.

Encoder: conv_in, then per resolution level ``num_res_blocks`` residual blocks (GroupNorm + SiLU) and a
stride-2 downsampling conv (except at the last level), a middle residual block, GroupNorm + SiLU and a conv to
``codebook_dim`` channels; the vector quantizer; the decoder mirrors it with nearest-neighbour upsampling.
A (B, T, C, H, W) video becomes (B, T, codebook_dim, H / f, W / f) latents with f = 2 ** (len(channel_mult) - 1).
With ``num_quantizers`` = Q > 1 every latent position holds Q residual codes (more bits per image on the same grid).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.models.layers import Upsample, group_norm
from pseudovideo.models.quantizer import VectorQuantizer, resolve_fsq_levels
from pseudovideo.models.tokenizer import TokenizerRate, VideoTokenizer

__all__ = ["VQVAE", "ResBlock"]


class ResBlock(nn.Module):
    """Residual block x + conv(SiLU(GN(conv(SiLU(GN(x)))))): (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class VQVAE(VideoTokenizer):
    """Convolutional VQVAE applied frame by frame to (B, T, C, H, W) videos (T = 1: images).

    Args:
        in_channels: C.
        resolution: H = W of the inputs; must be divisible by the downsampling factor 2 ** (levels - 1).
        base_channels: width of the first level.
        channel_mult: width multiplier of each resolution level (one level per entry).
        num_res_blocks: residual blocks per level.
        codebook_size: number of codes K.
        codebook_dim: channels of the latent map and size of each code.
        commitment_weight: beta of the commitment loss.
        ema_codebook: EMA codebook updates (True) or a codebook learned by the codebook loss (False).
        ema_decay: decay of the EMA codebook statistics.
        dead_code_threshold: EMA cluster size under which a code is re-initialised from the batch (0: never).
        kmeans_init: k-means initialisation of the codebook on the first batch.
        cosine_codes: l2-normalised codes (cosine-similarity lookup).
        num_quantizers: Q, residual vector quantization stages per latent position (SoundStream / RQ-VAE):
            Q codes of log2 K bits each per position, the standard way to raise the code budget of an image
            tokenizer at a fixed grid (e.g. to match the C-ViViT's rate). 1: plain VQ.
        quantizer: "vq" (a codebook of K codes) or "fsq" (finite scalar quantization with ``fsq_levels``, K = their
            product; the codebook options above are then unused and must keep their defaults).
        fsq_levels: levels per FSQ code dimension (quantizer "fsq" only).
        lookup_dim: size of the codes the VQ lookup compares: the latent is projected to it and back by linear
            layers (ViT-VQGAN's low-dimensional factorised codes, with ``cosine_codes`` its l2-normalised ones);
            None: ``codebook_dim`` (no projection).
    """

    def __init__(
        self,
        in_channels: int = 3,
        resolution: int = 32,
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
        channel_mult = _check_arguments(in_channels, resolution, base_channels, channel_mult, num_res_blocks, fsq_levels,
                                        lookup_dim)
        self.in_channels = in_channels
        self.resolution = resolution
        self.latent_grid = resolution // 2 ** (len(channel_mult) - 1)  # code positions per side of a frame
        widths = [base_channels * m for m in channel_mult]
        ch = self._build_encoder(widths, num_res_blocks, codebook_dim)
        self.quantizer = VectorQuantizer(
            codebook_dim,
            codebook_size=codebook_size,
            codebook_dim=lookup_dim,
            commitment_weight=commitment_weight,
            ema_codebook=ema_codebook,
            ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
            cosine_codes=cosine_codes,
            num_quantizers=num_quantizers,
            fsq_levels=fsq_levels,
        )
        self._build_decoder(widths, num_res_blocks, codebook_dim, ch)

    def _build_encoder(self, widths: list[int], num_res_blocks: int, codebook_dim: int) -> int:
        """Encoder: (N, C, H, W) -> (N, codebook_dim, H / f, W / f); returns its last width."""
        self.enc_in = nn.Conv2d(self.in_channels, widths[0], 3, padding=1)
        self.enc_blocks = nn.ModuleList()
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.enc_blocks.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                self.enc_blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.enc_blocks.append(ResBlock(ch, ch))
        self.enc_out = nn.Sequential(group_norm(ch, eps=1e-6), nn.SiLU(), nn.Conv2d(ch, codebook_dim, 1))
        return ch

    def _build_decoder(self, widths: list[int], num_res_blocks: int, codebook_dim: int, ch: int) -> None:
        """Decoder: (N, codebook_dim, H / f, W / f) -> (N, C, H, W), the encoder's levels in reverse order."""
        self.dec_in = nn.Conv2d(codebook_dim, ch, 3, padding=1)
        self.dec_blocks = nn.ModuleList([ResBlock(ch, ch)])
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                self.dec_blocks.append(ResBlock(ch, widths[level]))
                ch = widths[level]
            if level > 0:
                self.dec_blocks.append(Upsample(ch))
        self.dec_norm = group_norm(ch, eps=1e-6)
        self.dec_out = nn.Conv2d(ch, self.in_channels, 3, padding=1)

    def rate(self, num_frames: int = 1) -> TokenizerRate:
        """Frames are coded independently: the last frame is decoded from its own h x w x Q codes."""
        if num_frames < 1:
            raise ValueError(f"expected at least one frame, got num_frames={num_frames}")
        g, q = self.latent_grid, self.num_quantizers
        stages = f" x {q} residual stages" if q > 1 else ""
        return TokenizerRate.from_positions(
            g * g, self.codebook_size, q,
            f"VQVAE: {g}x{g} code positions{stages} of K={self.codebook_size} ({self.quantizer.description}); frames are coded independently, "
            "so the last frame is decoded from its own codes only",
        )

    @property
    def last_layer_weight(self) -> Tensor:
        """(C, C_dec, 3, 3) weight of the decoder's output conv."""
        return self.dec_out.weight

    def _blocks(self, blocks: nn.ModuleList, h: Tensor) -> Tensor:
        for block in blocks:
            h = self._run_block(block, h)
        return h

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(B, T, C, H, W) video -> quantized latents (B, T, D, h, w), indices (B, T, h, w[, Q]), aux_losses, stats."""
        b, t = self.check_video(video)
        x = rearrange(video, "b t c h w -> (b t) c h w")  # frames are independent
        h = self.enc_out(self._blocks(self.enc_blocks, self.enc_in(x)))  # (B T, D, h, w)
        hh, ww = h.shape[-2:]
        tokens = rearrange(h, "n d h w -> n (h w) d")  # (B T, h w, D)
        out = self.quantizer(tokens)
        latents = rearrange(out.quantized, "(b t) (h w) d -> b t d h w", b=b, h=hh)  # (B, T, D, h, w)
        indices = rearrange(out.indices, "(b t) (h w) ... -> b t h w ...", b=b, h=hh)  # (B, T, h, w[, Q])
        return latents, indices, {"vq": out.loss}, out.stats

    def decode(self, latents: Tensor) -> Tensor:
        """(B, T, D, h, w) quantized latents -> (B, T, C, H, W) video."""
        if latents.ndim != 5:
            raise ValueError(f"expected latents of shape (B, T, D, h, w), got {tuple(latents.shape)}")
        b = latents.shape[0]
        h = self.dec_in(rearrange(latents, "b t d h w -> (b t) d h w"))  # (B T, D_dec, h, w)
        h = self.dec_out(F.silu(self.dec_norm(self._blocks(self.dec_blocks, h))))  # (B T, C, H, W)
        return rearrange(h, "(b t) c h w -> b t c h w", b=b)

    def decode_codes(self, indices: Tensor) -> Tensor:
        """(B, T, h, w) code indices, (B, T, h, w, Q) with Q > 1 stages -> (B, T, C, H, W) video."""
        stages = "" if self.num_quantizers == 1 else ", Q"
        if indices.ndim != 4 + (self.num_quantizers > 1):
            raise ValueError(f"expected indices of shape (B, T, h, w{stages}), got {tuple(indices.shape)}")
        b, t, hh = indices.shape[:3]
        tokens = self.quantizer.indices_to_latents(rearrange(indices, "b t h w ... -> b (t h w) ..."))  # (B, N, D)
        return self.decode(rearrange(tokens, "b (t h w) d -> b t d h w", t=t, h=hh))


def _check_arguments(in_channels: int, resolution: int, base_channels: int, channel_mult: Sequence[int],
                     num_res_blocks: int, fsq_levels: Sequence[int] | None, lookup_dim: int | None) -> tuple[int, ...]:
    """``channel_mult`` as a tuple of ints; ValueError naming the first VQVAE argument that cannot be."""
    if fsq_levels is not None and lookup_dim is not None:
        raise ValueError(f"lookup_dim={lookup_dim} applies to vector quantization; FSQ codes have len(fsq_levels) dimensions")
    channel_mult = tuple(int(m) for m in channel_mult)
    if len(channel_mult) < 1 or min(channel_mult) < 1:
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
    if in_channels < 1 or base_channels < 1 or num_res_blocks < 0:
        raise ValueError(
            f"expected in_channels >= 1, base_channels >= 1, num_res_blocks >= 0; got {in_channels}, "
            f"{base_channels}, {num_res_blocks}"
        )
    factor = 2 ** (len(channel_mult) - 1)
    if resolution < 1 or resolution % factor != 0:
        raise ValueError(
            f"resolution={resolution} is not divisible by the VQVAE's downsampling factor {factor} "
            f"(2 ** (len(channel_mult) - 1) with channel_mult={channel_mult})"
        )
    return channel_mult
