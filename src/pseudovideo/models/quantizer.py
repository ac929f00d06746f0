"""Vector quantizer of the tokenizers: a thin wrapper around ``vector_quantize_pytorch.VectorQuantize``.

The library does the nearest-code search, EMA codebook updates, dead-code re-initialisation, k-means init and
cosine (l2-normalised) codes. This wrapper owns the in/out projections, computes the VQ-VAE losses itself
(so they are the standard ones in both codebook modes and are also reported in eval mode) and the usage stats.

Losses, with z_e the encoder token in codebook space and e the chosen code (sg = stop-gradient):
    EMA codebook:      L_vq = beta * ||z_e - sg[e]||^2                      (the codebook follows EMA statistics)
    learned codebook:  L_vq = ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2  (codebook loss + commitment)

Everything that changes during training (``embed``, ``embed_avg``, ``cluster_size``, ``initted``) is a
persistent buffer (or the codebook parameter) of the library's codebook, so it is part of ``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

__all__ = ["QuantizerOutput", "VectorQuantizer", "code_usage_stats"]


@dataclass
class QuantizerOutput:
    """Result of :class:`VectorQuantizer`.

    Attributes:
        quantized: (B, N, D) quantized tokens (straight-through gradients to the input in training).
        indices: (B, N) int64 code indices.
        loss: scalar weighted VQ loss L_vq.
        stats: detached scalars: "perplexity", "codebook_usage", "commitment" (unweighted).
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    stats: dict[str, Tensor]


def code_usage_stats(indices: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Perplexity exp(H(p)) of the batch's code histogram p, and the fraction of codes used at least once.

    Args:
        indices: integer code indices of any shape, values in [0, codebook_size).
        codebook_size: K.

    Returns:
        {"perplexity": in [1, K], "codebook_usage": in (0, 1]} as detached float32 scalars.
    """
    flat = indices.detach().reshape(-1)
    # scatter_add instead of bincount: bincount reads the maximum back to the host (a sync on CUDA).
    counts = torch.zeros(codebook_size, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    p = counts / counts.sum().clamp(min=1.0)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()  # 0 log 0 = 0
    return {"perplexity": torch.exp(entropy), "codebook_usage": (counts > 0).float().mean()}


def _forget_known_initted(module: nn.Module, incompatible_keys: object) -> None:
    """Loaded state may hold an un-initialised codebook: read the flag again on the next forward."""
    module._known_initted = False


class VectorQuantizer(nn.Module):
    """Quantizes (B, N, dim) tokens to the nearest of ``codebook_size`` codes of size ``codebook_dim``.

    Args:
        dim: token size D; tokens are projected to ``codebook_dim`` (and back) by linear layers when different.
        codebook_size: number of codes K.
        codebook_dim: code size (None: D).
        commitment_weight: beta of the commitment term.
        ema_codebook: True: codes are EMA cluster means (decay ``ema_decay``); False: codes are learned by the
            codebook loss.
        ema_decay: EMA decay of the codebook statistics (also used for dead-code tracking).
        dead_code_threshold: codes whose EMA cluster size falls below this are replaced by random batch
            tokens (0 disables).
        kmeans_init: initialise the codebook by k-means on the first batch seen.
        cosine_codes: l2-normalise tokens and codes (cosine-similarity lookup); needs ``ema_codebook``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        codebook_dim: int | None = None,
        commitment_weight: float = 0.25,
        ema_codebook: bool = True,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
        cosine_codes: bool = False,
    ) -> None:
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        if dim < 1 or codebook_dim < 1:
            raise ValueError(f"dim and codebook_dim must be >= 1, got dim={dim}, codebook_dim={codebook_dim}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        if commitment_weight < 0:
            raise ValueError(f"commitment_weight must be >= 0, got {commitment_weight}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        if cosine_codes and not ema_codebook:
            raise ValueError("cosine_codes=True needs ema_codebook=True (the library has no learned cosine codebook)")
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.commitment_weight = float(commitment_weight)
        self.ema_codebook = ema_codebook
        self.cosine_codes = cosine_codes
        self.kmeans_init = kmeans_init

        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        # The library sees tokens already in codebook space (no projections of its own); its own commitment
        # loss is off (weight 0) because it weights the codebook term by beta for learned codebooks.
        self.vq = VectorQuantize(
            dim=codebook_dim,
            codebook_size=codebook_size,
            decay=ema_decay,
            kmeans_init=kmeans_init,
            use_cosine_sim=cosine_codes,
            threshold_ema_dead_code=dead_code_threshold,
            commitment_weight=0.0,
            rotation_trick=False,  # plain straight-through gradients (the library defaults to the rotation trick)
            ema_update=ema_codebook,
            learnable_codebook=not ema_codebook,
        )
        # k-means init runs once; remember that it did, so later forwards read no device flag (a host sync).
        self._known_initted = False
        self.register_load_state_dict_post_hook(_forget_known_initted)

    def _initted(self) -> bool:
        """Whether the library's k-means init has run (read from the device until it has, then remembered)."""
        if not self._known_initted:
            self._known_initted = bool(self.vq._codebook.initted)
        return self._known_initted

    @property
    def codebook(self) -> Tensor:
        """(K, codebook_dim) current codes."""
        return self.vq.codebook

    def indices_to_latents(self, indices: Tensor) -> Tensor:
        """(B, N) code indices -> (B, N, dim) quantized tokens (the decoder's input)."""
        codes = F.embedding(indices, self.codebook.detach())  # (B, N, codebook_dim)
        return self.project_out(codes)

    def forward(self, tokens: Tensor) -> QuantizerOutput:
        """Quantizes (B, N, dim) tokens; see :class:`QuantizerOutput`. Training mode updates the EMA codebook."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"expected tokens of shape (B, N, {self.dim}), got {tuple(tokens.shape)}")
        z_e = self.project_in(tokens)  # (B, N, codebook_dim)
        # In training the library updates the codebook in place (EMA, dead codes) after choosing the codes;
        # the commitment target is the code that was chosen, so keep the codebook as it was before.
        # (Before k-means init has run there is no meaningful codebook yet: use the initialised one.)
        needs_init = self.kmeans_init and not self._initted()
        codes_before = self.codebook.detach().float()
        if self.training:
            codes_before = codes_before.clone()
        quantized, indices, _ = self.vq(z_e)  # (B, N, codebook_dim), (B, N)
        if needs_init:
            codes_before = self.codebook.detach().float()
        # The library marks its shared zero buffer as requiring grad in training mode; undo that side effect.
        self.vq.zero.requires_grad_(False)

        z = F.normalize(z_e.float(), dim=-1) if self.cosine_codes else z_e.float()  # what the library compared
        commitment = F.mse_loss(z, F.embedding(indices, codes_before))
        loss = self.commitment_weight * commitment
        if not self.ema_codebook:
            e = F.embedding(indices, self.codebook.float())  # (B, N, codebook_dim), grad to the learned codes
            loss = loss + F.mse_loss(e, z.detach())

        stats = code_usage_stats(indices, self.codebook_size)
        stats["commitment"] = commitment.detach()
        return QuantizerOutput(self.project_out(quantized), indices, loss, stats)

