"""Shared interface of the tokenizers (VQVAE, C-ViViT): videos in, reconstructed videos and VQ losses out.

Every tokenizer takes and returns videos (B, T, C, H, W); T = 1 is the image setting. For a pseudo video the
image output is the reconstruction's last frame ``recon[:, -1]``. Training, evaluation and the CLI only use
this interface, so they do not care which model they hold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor, nn

from pseudovideo.models.layers import count_parameters, maybe_checkpoint

if TYPE_CHECKING:
    from pseudovideo.models.quantizer import VectorQuantizer

__all__ = ["TokenizerOutput", "TokenizerRate", "VideoTokenizer", "count_parameters"]


@dataclass
class TokenizerOutput:
    """What a tokenizer's forward returns.

    Attributes:
        recon: (B, T, C, H, W) reconstructed video.
        aux_losses: scalar losses to add to the training objective, already weighted (e.g. ``{"vq": ...}``).
        stats: detached scalars for logging ("perplexity", "codebook_usage", ...).
        indices: integer code indices of the video (model-specific layout, e.g. (B, T, h, w) for the VQVAE,
            with a trailing axis of Q stages under residual quantization).
    """

    recon: Tensor
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)
    indices: Tensor | None = None


@dataclass(frozen=True)
class TokenizerRate:
    """How much code the decoder of the clean (last) frame can read: the tokenizer's rate per image.

    Attributes:
        codes_per_image: code indices the last frame's decoding depends on (positions x quantizer stages).
        bits_per_image: ``codes_per_image * log2(codebook_size)``.
        codebook_size: K of every stage.
        num_quantizers: Q, residual quantization stages per position (1: plain VQ).
        description: where the codes come from, in words (grid, time steps, stages).
    """

    codes_per_image: int
    bits_per_image: float
    codebook_size: int
    num_quantizers: int
    description: str

    @classmethod
    def from_positions(
        cls, positions: int, codebook_size: int, num_quantizers: int, description: str
    ) -> "TokenizerRate":
        """The rate of ``positions`` code positions of ``num_quantizers`` codes each from a K-code codebook."""
        codes = positions * num_quantizers
        return cls(codes, codes * math.log2(codebook_size), codebook_size, num_quantizers, description)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (the ``rate`` entry of ``eval.json``)."""
        return asdict(self)


class VideoTokenizer(nn.Module):
    """Base class of the VQ tokenizers: ``encode`` a video to codes, ``decode`` latents back to a video.

    Subclasses set ``in_channels`` and ``resolution`` and implement :meth:`encode`, :meth:`decode`,
    :meth:`decode_codes`, :meth:`rate` and :attr:`last_layer_weight`; :meth:`forward` composes them.
    Latent layouts are model-specific: the VQVAE uses (B, T, D, h, w) feature maps, C-ViViT (B, t, h, w, D)
    token grids.
    """

    in_channels: int
    resolution: int
    quantizer: VectorQuantizer  # set by subclasses with a quantizer of their own

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    # -- to implement ------------------------------------------------------------------------------------
    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(B, T, C, H, W) video -> (quantized latents, code indices, aux_losses, stats)."""
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """Quantized latents (as returned by :meth:`encode`) -> (B, T, C, H, W) video."""
        raise NotImplementedError

    def decode_codes(self, indices: Tensor) -> Tensor:
        """Code indices (as returned by :meth:`encode`) -> (B, T, C, H, W) video."""
        raise NotImplementedError

    @property
    def last_layer_weight(self) -> Tensor:
        """Weight of the decoder's final layer (VQGAN's adaptive GAN weight takes gradient norms on it)."""
        raise NotImplementedError

    def rate(self, num_frames: int) -> TokenizerRate:
        """Codes (and bits) that the decoder of the last frame of a ``num_frames``-frame video reads."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """Number of codes K of the tokenizer's ``quantizer``."""
        return self.quantizer.codebook_size

    @property
    def num_quantizers(self) -> int:
        """Residual quantization stages Q of its ``quantizer`` (codes per latent position or token)."""
        return self.quantizer.num_quantizers

    def forward(self, video: Tensor) -> TokenizerOutput:
        """Reconstructs a (B, T, C, H, W) video through the quantized bottleneck; see :class:`TokenizerOutput`."""
        latents, indices, aux_losses, stats = self.encode(video)
        recon = self.decode(latents)
        return TokenizerOutput(recon=recon, aux_losses=aux_losses, stats=stats, indices=indices)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute encoder/decoder blocks in the backward pass (saves memory on long pseudo videos)."""
        self.gradient_checkpointing = bool(enabled)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters of the model."""
        return count_parameters(self, trainable_only)

    def check_video(self, video: Tensor) -> tuple[int, int]:
        """Validates a (B, T, C, H, W) input against the model's channels and resolution; returns (B, T)."""
        if video.ndim != 5:
            raise ValueError(f"expected a video of shape (B, T, C, H, W), got shape {tuple(video.shape)}")
        b, t, c, h, w = video.shape
        if c != self.in_channels or h != self.resolution or w != self.resolution:
            raise ValueError(
                f"expected videos of shape (B, T, {self.in_channels}, {self.resolution}, {self.resolution}), "
                f"got {tuple(video.shape)}"
            )
        if t < 1:
            raise ValueError(f"expected at least one frame, got T={t}")
        return b, t

    def _run_block(self, block: Callable[..., Tensor], *args: Any) -> Tensor:
        """Runs ``block(*args)``, recomputed in backward when gradient checkpointing is on and grads are needed.

        Only deterministic, state-free blocks go through here: the quantizer (EMA codebook updates) never does,
        so checkpointing does not update the codebook twice.
        """
        return maybe_checkpoint(self.gradient_checkpointing, block, *args)
