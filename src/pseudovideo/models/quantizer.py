"""Vector quantizer of the tokenizers: a thin wrapper around ``vector_quantize_pytorch.VectorQuantize``.

The library does the nearest-code search, EMA codebook updates, dead-code re-initialisation, k-means init and
cosine (l2-normalised) codes. This wrapper owns the in/out projections, computes the VQ-VAE losses itself
(so they are the standard ones in both codebook modes and are also reported in eval mode) and the usage stats.

Losses, with z_e the encoder token in codebook space and e the chosen code (sg = stop-gradient):
    EMA codebook:      L_vq = beta * ||z_e - sg[e]||^2                      (the codebook follows EMA statistics)
    learned codebook:  L_vq = ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2  (codebook loss + commitment)

Residual vector quantization (``num_quantizers`` = Q > 1, as in SoundStream (Zeghidour et al., 2021) and
RQ-VAE (Lee et al., 2022)): Q codebooks, stage q quantizing the residual r_q = z_e - (e_1 + ... + e_{q-1}) left by
the stages before it; the decoder reads e_1 + ... + e_Q. It is the standard way to raise a tokenizer's code budget
(Q codes of log2 K bits per position) without changing its grid of positions. The stage losses above (on r_q and
e_q) are summed over the stages, as SoundStream/EnCodec do; straight-through gradients reach z_e through stage 1
only (the sum's gradient with respect to z_e is the identity). With Q = 1 the module is the plain quantizer.

Finite scalar quantization (``fsq_levels``, Mentzer et al. 2023, the library's ``FSQ``): the token is projected to
d = len(levels) numbers, each bounded (tanh) and rounded to one of its L_i levels; the code is the grid point, its
index one of K = prod(L_i), and every grid point is reachable, so the "codebook" (the implicit grid) cannot collapse.
There is no codebook to learn and no VQ loss (L_vq = 0); gradients pass the rounding straight through. With Q > 1
stages it is the library's ``ResidualFSQ`` (each stage quantizes the residual on a finer grid). Rate: Q codes of
log2 K bits per position, as for VQ.

Codebook usage of a whole evaluation (not a batch) is counted by :class:`CodeUsage`.

Compile-friendly: the library's ``VectorQuantize`` modules are kept in eval mode while their codebooks follow the
wrapper's mode (so the EMA updates run in training), and the wrapper applies the straight-through estimator itself,
exactly as the library would; in training mode the library would otherwise mark a shared zero buffer as requiring
grad, which torch.compile cannot trace. Without k-means init the codebook's "is it initialised?" check (a branch
on a device flag) is skipped, as the flag is constant. A training step then compiles to one graph.

Everything that changes during training (``embed``, ``embed_avg``, ``cluster_size``, ``initted``) is a
persistent buffer (or the codebook parameter) of the library's codebook, so it is part of ``state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, ResidualFSQ, VectorQuantize

__all__ = ["QUANTIZERS", "CodeUsage", "QuantizerOutput", "VectorQuantizer", "check_fsq_levels", "code_usage_stats",
           "resolve_fsq_levels"]

QUANTIZERS = ("vq", "fsq")  # vector quantization with a codebook; finite scalar quantization


@dataclass
class QuantizerOutput:
    """Result of :class:`VectorQuantizer`.

    Attributes:
        quantized: (B, N, D) quantized tokens (straight-through gradients to the input in training).
        indices: (B, N) int64 code indices, or (B, N, Q) with residual quantization (Q > 1 stages).
        loss: scalar weighted VQ loss L_vq (summed over the stages).
        stats: detached scalars: "perplexity", "codebook_usage" (means over the stages), "commitment"
            (unweighted, summed over the stages).
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


class CodeUsage:
    """Code histogram of every code a tokenizer emitted over many batches (e.g. a whole evaluation).

    ``add`` takes the indices of one batch: (...) for one quantizer stage or (..., Q) with Q > 1 stages;
    ``stats`` gives, as in :func:`code_usage_stats` but over everything added, the fraction of the K codes used
    at least once and the perplexity exp(H(p)) of the histogram, each the mean over the stages.
    """

    def __init__(self, codebook_size: int, num_quantizers: int = 1) -> None:
        self.codebook_size = codebook_size
        self.num_quantizers = num_quantizers
        self.counts = torch.zeros(num_quantizers, codebook_size, dtype=torch.float64)  # (Q, K)
        self.codes_counted = 0

    def add(self, indices: Tensor) -> None:
        """Counts the codes of ``indices`` ((...) for Q = 1, (..., Q) otherwise; values in [0, K))."""
        flat = indices.detach().long().cpu().reshape(-1, self.num_quantizers)  # (N, Q)
        offsets = torch.arange(self.num_quantizers) * self.codebook_size  # stage q counts into row q
        self.counts.view(-1).index_add_(0, (flat + offsets).reshape(-1), torch.ones(flat.numel(), dtype=torch.float64))
        self.codes_counted += flat.numel()

    def stats(self) -> dict[str, float]:
        """{"codebook_usage": in [0, 1], "codebook_perplexity": in [1, K]} (means over the stages)."""
        p = self.counts / self.counts.sum(dim=1, keepdim=True).clamp(min=1.0)  # (Q, K)
        entropy = -(p * torch.log(p.clamp(min=1e-300))).sum(dim=1)  # (Q,), 0 log 0 = 0
        return {"codebook_usage": float((self.counts > 0).double().mean()),
                "codebook_perplexity": float(torch.exp(entropy).mean())}


def check_fsq_levels(levels: Sequence[int], codebook_size: int) -> str | None:
    """Why ``levels`` cannot be FSQ levels of a K = ``codebook_size`` quantizer (None when they can)."""
    levels = list(levels)
    if not levels or any(isinstance(l, bool) or not isinstance(l, int) or l < 3 for l in levels):
        return f"expected a non-empty list of integers >= 3 (e.g. [8, 6, 5] for 240 codes), got {levels}"
    if math.prod(levels) != codebook_size:
        return (f"levels {levels} give {math.prod(levels)} codes but codebook_size is {codebook_size}: "
                "codebook_size must be the product of the levels (e.g. [4, 4, 4, 4] or [8, 8, 4] for 256)")
    return None


def resolve_fsq_levels(quantizer: str, fsq_levels: Sequence[int] | None) -> list[int] | None:
    """The FSQ levels a tokenizer's ``quantizer`` / ``fsq_levels`` arguments ask for (None: vector quantization)."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    if quantizer == "fsq":
        if fsq_levels is None:
            raise ValueError("quantizer='fsq' needs fsq_levels (e.g. [4, 4, 4, 4] for 256 codes)")
        return list(fsq_levels)
    if fsq_levels is not None:
        raise ValueError(f"fsq_levels={list(fsq_levels)} is used only with quantizer='fsq', got quantizer='vq'")
    return None


def _no_kmeans_init(data: Tensor, mask: Tensor | None = None) -> None:
    """Stands in for the codebook's ``init_embed_`` when there is no k-means init (its flag is always true)."""
    return None


def _forget_known_initted(module: nn.Module, incompatible_keys: object) -> None:
    """Loaded state may hold an un-initialised codebook: read the flag again on the next forward."""
    module._known_initted = False


class VectorQuantizer(nn.Module):
    """Quantizes (B, N, dim) tokens to the nearest of ``codebook_size`` codes of size ``codebook_dim``.

    Args:
        dim: token size D; tokens are projected to ``codebook_dim`` (and back) by linear layers when different.
        codebook_size: number of codes K (of every stage).
        codebook_dim: code size (None: D).
        commitment_weight: beta of the commitment term.
        ema_codebook: True: codes are EMA cluster means (decay ``ema_decay``); False: codes are learned by the
            codebook loss.
        ema_decay: EMA decay of the codebook statistics (also used for dead-code tracking).
        dead_code_threshold: codes whose EMA cluster size falls below this are replaced by random batch
            tokens (0 disables).
        kmeans_init: initialise the codebook by k-means on the first batch seen.
        cosine_codes: l2-normalise tokens and codes (cosine-similarity lookup); needs ``ema_codebook`` and
            ``num_quantizers=1`` (the residual of a unit vector is not one).
        num_quantizers: Q, stages of residual vector quantization (1: plain VQ); see the module docstring.
        fsq_levels: finite scalar quantization with these levels per code dimension instead of a codebook (K must
            be their product; ``codebook_dim`` is then len(fsq_levels), and the codebook options above must stay
            at their defaults); None: vector quantization.
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
        num_quantizers: int = 1,
        fsq_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        codebook_dim = _checked_codebook_dim(dim, codebook_size, codebook_dim, commitment_weight, ema_codebook, ema_decay,
                                             dead_code_threshold, kmeans_init, cosine_codes, num_quantizers, fsq_levels)
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.commitment_weight = float(commitment_weight)
        self.ema_codebook = ema_codebook
        self.cosine_codes = cosine_codes
        self.kmeans_init = kmeans_init
        self.num_quantizers = num_quantizers
        self.fsq_levels = None if fsq_levels is None else [int(level) for level in fsq_levels]

        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self._build_stages(codebook_size, codebook_dim, ema_codebook, ema_decay, dead_code_threshold, kmeans_init,
                           cosine_codes, num_quantizers)
        if not kmeans_init:
            for vq in self.stages:
                vq._codebook.init_embed_ = _no_kmeans_init
        self.train(self.training)
        # k-means init runs once; remember that it did, so later forwards read no device flag (a host sync).
        self._known_initted = False
        self.register_load_state_dict_post_hook(_forget_known_initted)

    def _build_stages(self, codebook_size: int, codebook_dim: int, ema_codebook: bool, ema_decay: float,
                      dead_code_threshold: float, kmeans_init: bool, cosine_codes: bool, num_quantizers: int) -> None:
        """The library's quantizers: FSQ (no codebook) or the VQ stage(s) of (residual) vector quantization."""
        # The library sees tokens already in codebook space (no projections of its own); its own commitment
        # loss is off (weight 0) because it weights the codebook term by beta for learned codebooks.
        library_kwargs = dict(
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
        if self.fsq_levels is not None:  # no codebook: the library's FSQ on the projected tokens (no parameters)
            self.fsq = (FSQ(self.fsq_levels, dim=codebook_dim) if num_quantizers == 1
                        else ResidualFSQ(levels=self.fsq_levels, num_quantizers=num_quantizers, dim=codebook_dim))
        else:
            self.vq = VectorQuantize(**library_kwargs)  # stage 1 (the only one when Q = 1)
            # Stages 2..Q of residual quantization; empty for Q = 1, so state_dict and weights are the plain VQ's.
            self.residual_vqs = nn.ModuleList(VectorQuantize(**library_kwargs) for _ in range(num_quantizers - 1))

    def train(self, mode: bool = True) -> "VectorQuantizer":
        """Sets the training mode; the library quantizers stay in eval mode, their codebooks follow ``mode``."""
        super().train(mode)
        for vq in self.stages:
            vq.training = False  # no straight-through / requires_grad_ side effects inside the library
            vq._codebook.training = mode  # EMA updates and dead-code replacement in training
        return self

    @property
    def stages(self) -> list[VectorQuantize]:
        """The Q library vector quantizers, stage 1 first (none with FSQ)."""
        return [] if self.fsq_levels is not None else [self.vq, *self.residual_vqs]

    @property
    def description(self) -> str:
        """The quantizer in words (for rate descriptions), e.g. "FSQ levels 8x6x5" or "VQ"."""
        return "VQ" if self.fsq_levels is None else "FSQ levels " + "x".join(str(level) for level in self.fsq_levels)

    def _initted(self) -> bool:
        """Whether the library's k-means init has run (read from the device until it has, then remembered)."""
        if not self._known_initted:
            self._known_initted = all(bool(vq._codebook.initted) for vq in self.stages)
        return self._known_initted

    @property
    def codebook(self) -> Tensor:
        """(K, codebook_dim) current codes of the first stage (FSQ: its implicit grid)."""
        if self.fsq_levels is not None:
            return self.fsq.layers[0].implicit_codebook if self.num_quantizers > 1 else self.fsq.implicit_codebook
        return self.vq.codebook

    def indices_to_latents(self, indices: Tensor) -> Tensor:
        """(B, N) code indices, or (B, N, Q) for Q > 1 stages -> (B, N, dim) quantized tokens (the decoder's input)."""
        if self.fsq_levels is not None and self.num_quantizers == 1:
            return self.project_out(self.fsq.indices_to_codes(indices))  # (B, N) -> (B, N, d) -> (B, N, dim)
        if self.num_quantizers == 1:
            codes = F.embedding(indices, self.codebook.detach())  # (B, N, codebook_dim)
            return self.project_out(codes)
        if indices.ndim < 1 or indices.shape[-1] != self.num_quantizers:
            raise ValueError(
                f"expected indices with a trailing axis of the {self.num_quantizers} quantizer stages, "
                f"got shape {tuple(indices.shape)}"
            )
        if self.fsq_levels is not None:
            return self.project_out(self.fsq.get_output_from_indices(indices))
        codes = sum(F.embedding(indices[..., q], vq.codebook.detach()) for q, vq in enumerate(self.stages))
        return self.project_out(codes)  # (B, N, dim)

    def _quantize_stage(
        self, vq: VectorQuantize, z_e: Tensor, needs_init: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One library quantizer on (B, N, codebook_dim) tokens: (quantized, indices, commitment, codebook loss)."""
        # In training the library updates the codebook in place (EMA, dead codes) after choosing the codes;
        # the commitment target is the code that was chosen, so keep the codebook as it was before.
        # (Before k-means init has run there is no meaningful codebook yet: use the initialised one.)
        codes_before = vq.codebook.detach().float()
        if self.training:
            codes_before = codes_before.clone()
        quantized, indices, _ = vq(z_e)  # (B, N, codebook_dim), (B, N)
        if needs_init:
            codes_before = vq.codebook.detach().float()
        if self.training and z_e.requires_grad:  # the library's straight-through estimator, on its own input
            compared = vq._codebook.transform_input(z_e)  # l2-normalised for cosine codes
            quantized = compared + (quantized - compared).detach()

        z = F.normalize(z_e.float(), dim=-1) if self.cosine_codes else z_e.float()  # what the library compared
        commitment = F.mse_loss(z, F.embedding(indices, codes_before))
        codebook_loss = None
        if not self.ema_codebook:
            e = F.embedding(indices, vq.codebook.float())  # (B, N, codebook_dim), grad to the learned codes
            codebook_loss = F.mse_loss(e, z.detach())
        return quantized, indices, commitment, codebook_loss

    def forward(self, tokens: Tensor) -> QuantizerOutput:
        """Quantizes (B, N, dim) tokens; see :class:`QuantizerOutput`. Training mode updates the EMA codebooks."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"expected tokens of shape (B, N, {self.dim}), got {tuple(tokens.shape)}")
        z_e = self.project_in(tokens)  # (B, N, codebook_dim)
        if self.fsq_levels is not None:
            return self._forward_fsq(z_e)
        needs_init = self.kmeans_init and not self._initted()
        residual, quantized = z_e, None
        indices, commitments, codebook_losses, usage = [], [], [], []
        for vq in self.stages:
            stage_q, stage_indices, commitment, codebook_loss = self._quantize_stage(vq, residual, needs_init)
            # Straight-through gradients go to z_e through stage 1 alone; later stages add values only.
            quantized = stage_q if quantized is None else quantized + stage_q.detach()
            residual = residual - stage_q.detach()  # what the next stage quantizes
            indices.append(stage_indices)
            commitments.append(commitment)
            codebook_losses.append(codebook_loss)
            usage.append(code_usage_stats(stage_indices, self.codebook_size))

        commitment = commitments[0] if len(commitments) == 1 else torch.stack(commitments).sum()
        loss = self.commitment_weight * commitment
        if not self.ema_codebook:
            loss = loss + (codebook_losses[0] if len(codebook_losses) == 1 else torch.stack(codebook_losses).sum())
        stats = usage[0] if len(usage) == 1 else {k: torch.stack([u[k] for u in usage]).mean() for k in usage[0]}
        stats["commitment"] = commitment.detach()
        all_indices = indices[0] if len(indices) == 1 else torch.stack(indices, dim=-1)  # (B, N) or (B, N, Q)
        return QuantizerOutput(self.project_out(quantized), all_indices, loss, stats)

    def _forward_fsq(self, z_e: Tensor) -> QuantizerOutput:
        """FSQ of (B, N, d) projected tokens: no loss; stats as for VQ ("commitment" is 0: there is none)."""
        quantized, indices = self.fsq(z_e)  # (B, N, d), (B, N) or (B, N, Q) int32
        indices = indices.long()
        stages = [indices] if self.num_quantizers == 1 else indices.unbind(-1)
        usage = [code_usage_stats(stage, self.codebook_size) for stage in stages]
        stats = usage[0] if len(usage) == 1 else {k: torch.stack([u[k] for u in usage]).mean() for k in usage[0]}
        zero = z_e.new_zeros((), dtype=torch.float32)
        stats["commitment"] = zero
        return QuantizerOutput(self.project_out(quantized), indices, zero, stats)


def _checked_codebook_dim(dim: int, codebook_size: int, codebook_dim: int | None, commitment_weight: float,
                          ema_codebook: bool, ema_decay: float, dead_code_threshold: float, kmeans_init: bool,
                          cosine_codes: bool, num_quantizers: int, fsq_levels: Sequence[int] | None) -> int:
    """The size of the codes (``codebook_dim``, else len(fsq_levels), else ``dim``); ValueError naming the first
    argument of :class:`VectorQuantizer` that cannot be."""
    if fsq_levels is not None:
        problem = check_fsq_levels(fsq_levels, codebook_size)
        if problem:
            raise ValueError(f"fsq_levels: {problem}")
        if kmeans_init or cosine_codes or dead_code_threshold > 0 or not ema_codebook:
            raise ValueError("fsq_levels: FSQ has no codebook; kmeans_init, cosine_codes, dead_code_threshold and "
                             "ema_codebook=False apply to vector quantization only")
        if codebook_dim not in (None, len(fsq_levels)):
            raise ValueError(f"fsq_levels: FSQ codes have len(fsq_levels)={len(fsq_levels)} dimensions, got "
                             f"codebook_dim={codebook_dim} (leave it None)")
        codebook_dim = len(fsq_levels)
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
    if num_quantizers < 1:
        raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
    if cosine_codes and num_quantizers > 1:
        raise ValueError(
            f"cosine_codes=True needs num_quantizers=1, got {num_quantizers}: residual quantization subtracts "
            "codes from tokens, and the residual of a unit vector is not a unit vector"
        )
    return codebook_dim
