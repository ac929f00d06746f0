"""C-ViViT: the causal video tokenizer of Phenaki (Villegas et al., 2022), here trained on pseudo videos.

Encoder: the first frame is embedded on its own by a p x p patch embedding; the other T - 1 frames are embedded
as spatio-temporal tubelets of ``temporal_patch_size`` (tp) frames x p x p pixels, giving t = 1 + (T - 1) / tp
time steps of (H / p) x (W / p) tokens. A spatial transformer mixes the tokens of each time step, then a
CAUSAL temporal transformer mixes each spatial position across time steps (step i attends to steps <= i).
The tokens are vector-quantized; the decoder mirrors the encoder (causal temporal transformer, spatial
transformer) and un-patchifies step 0 back to one frame and every later step back to tp frames.

Causality means the codes and reconstruction of frames <= t never depend on later frames. In a pseudo video
the LAST frame is the clean image, so it is coded with every earlier (more corrupted) frame as context, which
is what the method relies on. With ``clean_frame_context="all"`` (Phenaki's causal decoder) the last frame is
also DECODED from the codes of every time step: its rate is t x h x w codes, t times an image tokenizer's on
the same grid. ``clean_frame_context="own"`` lets the decoder's last time step attend to itself only, so the
last frame is decoded from the last step's h x w codes (the rate of an image tokenizer on the same grid) while
the encoder still sees the whole pseudo video; the other steps stay causal.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from pseudovideo.models.layers import multi_head_attention
from pseudovideo.models.quantizer import VectorQuantizer, resolve_fsq_levels
from pseudovideo.models.tokenizer import TokenizerRate, VideoTokenizer

__all__ = ["CViViT", "Attention", "TransformerBlock", "num_time_steps", "CLEAN_FRAME_CONTEXTS"]

CLEAN_FRAME_CONTEXTS = ("all", "own")  # which time steps the decoder's last step reads


def num_time_steps(num_frames: int, temporal_patch_size: int) -> int:
    """Time steps t = 1 + (T - 1) / tp of a T-frame video; ValueError when T - 1 is not divisible by tp."""
    if num_frames < 1 or (num_frames - 1) % temporal_patch_size != 0:
        raise ValueError(
            f"C-ViViT embeds the first frame alone and the other T-1 frames in tubelets of "
            f"temporal_patch_size={temporal_patch_size} frames, so T-1 must be divisible by {temporal_patch_size}; "
            f"got T={num_frames} (T-1={num_frames - 1})"
        )
    return 1 + (num_frames - 1) // temporal_patch_size


class Attention(nn.Module):
    """Multi-head self-attention via ``scaled_dot_product_attention``: (N, L, dim) -> (N, L, dim)."""

    def __init__(self, dim: int, heads: int, dim_head: int, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """(N, L, dim) -> (N, L, dim); with ``causal`` position i attends to positions <= i only.

        ``attn_mask`` (L, L) boolean (True: may attend) replaces the causal mask when given.
        """
        if attn_mask is not None:
            return self.to_out(multi_head_attention(self.to_qkv(x), self.heads, attn_mask=attn_mask))
        return self.to_out(multi_head_attention(self.to_qkv(x), self.heads, is_causal=self.causal))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block x + Attn(LN(x)), then x + MLP(LN(x)): (N, L, dim) -> (N, L, dim)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: float, causal: bool) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """(N, L, dim) -> (N, L, dim); ``attn_mask`` as in :meth:`Attention.forward`."""
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class CViViT(VideoTokenizer):
    """Phenaki's causal video tokenizer for (B, T, C, H, W) videos with (T - 1) % temporal_patch_size == 0.

    Args:
        in_channels: C.
        resolution: H = W, divisible by ``patch_size``.
        patch_size: spatial patch side p.
        temporal_patch_size: frames per tubelet tp (after the first frame); 1 accepts any T.
        dim: token width.
        spatial_depth: transformer blocks of each spatial transformer (encoder and decoder).
        temporal_depth: blocks of each causal temporal transformer.
        heads: attention heads.
        dim_head: width of each head.
        mlp_ratio: MLP hidden width / dim.
        codebook_size: number of codes K.
        codebook_dim: code size (tokens are projected to it before the lookup and back after).
        commitment_weight: beta of the commitment loss.
        ema_codebook: EMA codebook updates (True) or a codebook learned by the codebook loss (False).
        ema_decay: decay of the EMA codebook statistics.
        dead_code_threshold: EMA cluster size under which a code is re-initialised from the batch (0: never).
        max_frames: longest video accepted; sets the number of learned time-step embeddings.
        kmeans_init: k-means initialisation of the codebook on the first batch.
        cosine_codes: l2-normalised codes (cosine-similarity lookup).
        num_quantizers: Q, residual vector quantization stages per token (1: plain VQ).
        clean_frame_context: "all": the decoder's last time step attends to every step (causal decoder,
            rate t x h x w x Q codes for the last frame); "own": to itself only (rate h x w x Q codes).
        quantizer: "vq" (a codebook of K codes) or "fsq" (finite scalar quantization with ``fsq_levels``, K = their
            product; tokens are projected to len(fsq_levels) numbers, so ``codebook_dim`` and the codebook options
            are unused).
        fsq_levels: levels per FSQ code dimension (quantizer "fsq" only).
    """

    def __init__(
        self,
        in_channels: int = 3,
        resolution: int = 32,
        patch_size: int = 4,
        temporal_patch_size: int = 1,
        dim: int = 128,
        spatial_depth: int = 2,
        temporal_depth: int = 2,
        heads: int = 4,
        dim_head: int = 32,
        mlp_ratio: float = 4.0,
        codebook_size: int = 512,
        codebook_dim: int = 32,
        commitment_weight: float = 0.25,
        ema_codebook: bool = True,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        max_frames: int = 32,
        kmeans_init: bool = False,
        cosine_codes: bool = False,
        num_quantizers: int = 1,
        clean_frame_context: str = "all",
        quantizer: str = "vq",
        fsq_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        fsq_levels = resolve_fsq_levels(quantizer, fsq_levels)
        _check_arguments(in_channels, resolution, patch_size, temporal_patch_size, dim, spatial_depth, temporal_depth,
                         heads, dim_head, mlp_ratio, max_frames, clean_frame_context)
        self.in_channels = in_channels
        self.resolution = resolution
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.max_frames = max_frames
        self.clean_frame_context = clean_frame_context
        self.grid = resolution // patch_size  # tokens per side of a time step
        self.max_time_steps = 1 + (max_frames - 1) // temporal_patch_size
        block = (dim, heads, dim_head, mlp_ratio)
        self._build_encoder(block, spatial_depth, temporal_depth)
        self.quantizer = VectorQuantizer(
            dim,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim if fsq_levels is None else None,
            commitment_weight=commitment_weight,
            ema_codebook=ema_codebook,
            ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
            cosine_codes=cosine_codes,
            num_quantizers=num_quantizers,
            fsq_levels=fsq_levels,
        )
        self._build_decoder(block, spatial_depth, temporal_depth)

    def _build_encoder(self, block: tuple[int, int, int, float], spatial_depth: int, temporal_depth: int) -> None:
        """First-frame and tubelet embeddings, positions, spatial then causal temporal transformers."""
        dim, p, tp = block[0], self.patch_size, self.temporal_patch_size
        self.first_frame_embed = nn.Linear(self.in_channels * p * p, dim)
        self.tubelet_embed = nn.Linear(self.in_channels * tp * p * p, dim)
        self.enc_spatial_pos = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)
        self.enc_time_pos = nn.Parameter(torch.randn(self.max_time_steps, dim) * 0.02)
        self.enc_spatial = _transformer(block, spatial_depth, causal=False)
        self.enc_temporal = _transformer(block, temporal_depth, causal=True)
        self.enc_norm = nn.LayerNorm(dim)

    def _build_decoder(self, block: tuple[int, int, int, float], spatial_depth: int, temporal_depth: int) -> None:
        """Positions, causal temporal then spatial transformers, and the un-patchify head (mirrors the encoder)."""
        dim, p, tp = block[0], self.patch_size, self.temporal_patch_size
        self.dec_time_pos = nn.Parameter(torch.randn(self.max_time_steps, dim) * 0.02)
        self.dec_spatial_pos = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)
        self.dec_temporal = _transformer(block, temporal_depth, causal=True)
        self.dec_spatial = _transformer(block, spatial_depth, causal=False)
        self.dec_norm = nn.LayerNorm(dim)
        # Time un-patchify: step 0 -> 1 frame token, later steps -> tp frame tokens; then one shared pixel head
        # per frame token, so a single final layer produces every frame (also the VQGAN adaptive-weight layer).
        self.first_frame_unembed = nn.Linear(dim, dim)
        self.tubelet_unembed = nn.Linear(dim, tp * dim)
        self.to_pixels = nn.Linear(dim, self.in_channels * p * p)

    def rate(self, num_frames: int) -> TokenizerRate:
        """Codes the last frame of a ``num_frames``-frame video is decoded from: every time step's ("all")
        or the last step's only ("own"), h x w x Q codes per step."""
        steps = self.num_time_steps(num_frames)
        read = steps if self.clean_frame_context == "all" else 1
        g, q = self.grid, self.num_quantizers
        stages = f" x {q} residual stages" if q > 1 else ""
        if self.clean_frame_context == "all":
            how = f"causal decoder: the last frame is decoded from the codes of all {steps} time steps"
        else:
            how = f"clean_frame_context=own: the last frame is decoded from the last of {steps} time steps only"
        return TokenizerRate.from_positions(
            read * g * g, self.codebook_size, q,
            f"C-ViViT: {read} time step(s) x {g}x{g} code positions{stages} of K={self.codebook_size} "
            f"({self.quantizer.description}); {how}",
        )

    @property
    def last_layer_weight(self) -> Tensor:
        """(C p p, dim) weight of the shared per-frame pixel head (the decoder's final layer)."""
        return self.to_pixels.weight

    def num_time_steps(self, num_frames: int) -> int:
        """Time steps t = 1 + (T - 1) / tp; ValueError when T does not fit tp or exceeds ``max_frames``."""
        steps = num_time_steps(num_frames, self.temporal_patch_size)
        if num_frames > self.max_frames:
            raise ValueError(f"video has T={num_frames} frames but the model's max_frames={self.max_frames}")
        return steps

    def num_frames(self, time_steps: int) -> int:
        """Frames T = 1 + (t - 1) * tp of ``time_steps`` time steps."""
        return 1 + (time_steps - 1) * self.temporal_patch_size

    # -- transformers ----------------------------------------------------------------------------------------
    def _spatial(self, blocks: nn.ModuleList, x: Tensor, pos: Tensor) -> Tensor:
        """Spatial transformer within each time step: (B, t, h, w, D) -> (B, t, h, w, D)."""
        b, t = x.shape[:2]
        x = rearrange(x, "b t h w d -> (b t) (h w) d") + pos  # (B t, h w, D)
        for block in blocks:
            x = self._run_block(block, x)
        return rearrange(x, "(b t) (h w) d -> b t h w d", b=b, h=self.grid)

    def _temporal(self, blocks: nn.ModuleList, x: Tensor, pos: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Causal temporal transformer at each spatial position: (B, t, h, w, D) -> (B, t, h, w, D).

        ``attn_mask`` (t, t) boolean replaces the causal mask when given.
        """
        b, t = x.shape[:2]
        x = rearrange(x, "b t h w d -> (b h w) t d") + pos[:t]  # (B h w, t, D)
        for block in blocks:
            x = self._run_block(block, x, attn_mask)
        return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=self.grid)

    # -- tokenizer interface -------------------------------------------------------------------------------
    def embed(self, video: Tensor) -> Tensor:
        """Patch / tubelet embedding: (B, T, C, H, W) -> (B, t, h, w, D) with t = 1 + (T - 1) / tp."""
        p, tp = self.patch_size, self.temporal_patch_size
        first = rearrange(video[:, :1], "b 1 c (h p1) (w p2) -> b 1 h w (c p1 p2)", p1=p, p2=p)
        tokens = [self.first_frame_embed(first)]  # (B, 1, h, w, D)
        if video.shape[1] > 1:
            rest = rearrange(video[:, 1:], "b (t pt) c (h p1) (w p2) -> b t h w (c pt p1 p2)", pt=tp, p1=p, p2=p)
            tokens.append(self.tubelet_embed(rest))  # (B, t - 1, h, w, D)
        return torch.cat(tokens, dim=1)

    def unembed(self, tokens: Tensor) -> Tensor:
        """Inverse of :meth:`embed`: (B, t, h, w, D) -> (B, T, C, H, W) with T = 1 + (t - 1) * tp."""
        p, tp = self.patch_size, self.temporal_patch_size
        frames = [self.first_frame_unembed(tokens[:, :1])]  # (B, 1, h, w, D)
        if tokens.shape[1] > 1:
            rest = self.tubelet_unembed(tokens[:, 1:])  # (B, t - 1, h, w, tp D)
            frames.append(rearrange(rest, "b t h w (pt d) -> b (t pt) h w d", pt=tp))  # (B, T - 1, h, w, D)
        pixels = self.to_pixels(torch.cat(frames, dim=1))  # (B, T, h, w, C p p)
        return rearrange(pixels, "b t h w (c p1 p2) -> b t c (h p1) (w p2)", p1=p, p2=p)

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(B, T, C, H, W) video -> quantized tokens (B, t, h, w, D), indices (B, t, h, w[, Q]), aux_losses, stats."""
        b, num_frames = self.check_video(video)
        t = self.num_time_steps(num_frames)
        x = self._spatial(self.enc_spatial, self.embed(video), self.enc_spatial_pos)
        x = self.enc_norm(self._temporal(self.enc_temporal, x, self.enc_time_pos))  # (B, t, h, w, D)
        out = self.quantizer(rearrange(x, "b t h w d -> b (t h w) d"))
        latents = rearrange(out.quantized, "b (t h w) d -> b t h w d", t=t, h=self.grid)  # (B, t, h, w, D)
        indices = rearrange(out.indices, "b (t h w) ... -> b t h w ...", t=t, h=self.grid)  # (B, t, h, w[, Q])
        return latents, indices, {"vq": out.loss}, out.stats

    def decode(self, latents: Tensor) -> Tensor:
        """(B, t, h, w, D) quantized tokens -> (B, T, C, H, W) video with T = 1 + (t - 1) * tp."""
        if latents.ndim != 5 or latents.shape[2] != self.grid or latents.shape[3] != self.grid:
            raise ValueError(
                f"expected latents of shape (B, t, {self.grid}, {self.grid}, D), got {tuple(latents.shape)}"
            )
        if latents.shape[1] > self.max_time_steps:
            raise ValueError(f"latents have {latents.shape[1]} time steps, the model at most {self.max_time_steps}")
        x = self._temporal(self.dec_temporal, latents, self.dec_time_pos, self._decoder_time_mask(latents))
        x = self.dec_norm(self._spatial(self.dec_spatial, x, self.dec_spatial_pos))  # (B, t, h, w, D)
        return self.unembed(x)

    def _decoder_time_mask(self, latents: Tensor) -> Tensor | None:
        """(t, t) boolean mask of the decoder's temporal attention (True: may attend), None for the causal one.

        With ``clean_frame_context="own"`` the last step attends to itself only; the others stay causal.
        """
        t = latents.shape[1]
        if self.clean_frame_context == "all" or t == 1:
            return None
        mask = torch.ones(t, t, dtype=torch.bool, device=latents.device).tril()
        mask[-1, :-1] = False
        return mask

    def decode_codes(self, indices: Tensor) -> Tensor:
        """(B, t, h, w) code indices, (B, t, h, w, Q) with Q > 1 stages -> (B, T, C, H, W) video."""
        stages = "" if self.num_quantizers == 1 else ", Q"
        if indices.ndim != 4 + (self.num_quantizers > 1):
            raise ValueError(f"expected indices of shape (B, t, h, w{stages}), got {tuple(indices.shape)}")
        t = indices.shape[1]
        tokens = self.quantizer.indices_to_latents(rearrange(indices, "b t h w ... -> b (t h w) ..."))  # (B, N, D)
        return self.decode(rearrange(tokens, "b (t h w) d -> b t h w d", t=t, h=self.grid))


def _transformer(block: tuple[int, int, int, float], depth: int, causal: bool) -> nn.ModuleList:
    """``depth`` transformer blocks of (dim, heads, dim_head, mlp_ratio) ``block``."""
    dim, heads, dim_head, mlp_ratio = block
    return nn.ModuleList(TransformerBlock(dim, heads, dim_head, mlp_ratio, causal) for _ in range(depth))


def _check_arguments(in_channels: int, resolution: int, patch_size: int, temporal_patch_size: int, dim: int,
                     spatial_depth: int, temporal_depth: int, heads: int, dim_head: int, mlp_ratio: float,
                     max_frames: int, clean_frame_context: str) -> None:
    """ValueError naming the first C-ViViT argument that cannot be."""
    if patch_size < 1 or resolution < 1 or resolution % patch_size != 0:
        raise ValueError(f"resolution={resolution} is not divisible by patch_size={patch_size}")
    if temporal_patch_size < 1:
        raise ValueError(f"temporal_patch_size must be >= 1, got {temporal_patch_size}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if min(in_channels, dim, heads, dim_head) < 1 or min(spatial_depth, temporal_depth) < 0:
        raise ValueError(
            f"expected positive in_channels, dim, heads, dim_head and depths >= 0; got in_channels={in_channels}, "
            f"dim={dim}, heads={heads}, dim_head={dim_head}, spatial_depth={spatial_depth}, "
            f"temporal_depth={temporal_depth}"
        )
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
    if clean_frame_context not in CLEAN_FRAME_CONTEXTS:
        raise ValueError(f"clean_frame_context must be one of {CLEAN_FRAME_CONTEXTS}, got {clean_frame_context!r}")
