"""A per-image corruption policy: a small CNN that maps a clean image to its schedule parameters and mixture.

"A separate model that predicts the augmentation for a given image" (the paper's open questions): two strided
3x3 convolutions (``width`` and 2 x ``width`` channels, SiLU), a global average pool and two linear heads, one
for the schedule parameters theta (R, K) that :class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos`
turns into monotone levels with fixed endpoints, one for the operator-mixture logits (T-1, K). The heads start
with zero weights and the shared schedule's parameters as biases, so an untrained policy gives every image the
configured (or searched) schedule; it is then trained by the run's objective (informativeness or adversarial).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["CorruptionPolicy"]


class CorruptionPolicy(nn.Module):
    """Clean images (B, C, H, W) -> schedule parameters (B, R, K) and mixture logits (B, T-1, K) or None."""

    def __init__(self, channels: int, schedule_shape: tuple[int, int], mixture_shape: tuple[int, int] | None,
                 width: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.schedule_shape, self.mixture_shape = tuple(schedule_shape), mixture_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.schedule_head = nn.Linear(2 * width, schedule_shape[0] * schedule_shape[1])
        self.mixture_head = nn.Linear(2 * width, mixture_shape[0] * mixture_shape[1]) if mixture_shape else None

    @torch.no_grad()
    def start_at(self, theta: Tensor, mixture_logits: Tensor | None) -> None:
        """Zero the heads' weights and set their biases so that every image gets theta (R, K) and the logits."""
        self.schedule_head.weight.zero_()
        self.schedule_head.bias.copy_(theta.flatten())
        if self.mixture_head is not None:
            self.mixture_head.weight.zero_()
            self.mixture_head.bias.copy_(mixture_logits.flatten() if mixture_logits is not None else 0.0)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """images (B, C, H, W) -> (theta (B, R, K), mixture logits (B, T-1, K) or None)."""
        features = self.features(images)  # (B, 2 * width)
        theta = rearrange(self.schedule_head(features), "b (r k) -> b r k", k=self.schedule_shape[1])
        if self.mixture_head is None:
            return theta, None
        return theta, rearrange(self.mixture_head(features), "b (t k) -> b t k", k=self.mixture_shape[1])
