"""How far first-order pseudo-video frames are from the higher-order frames at the same levels.

A first- vs higher-order comparison tests the Markov order only when every frame has the same marginal
law in both constructions. That holds exactly for one operator and for compositions of blur and noise
(:func:`pseudovideo.pseudo_video.exact_composition.first_order_exact`); for other compositions this module measures the
per-frame gap on real images, so that experiment tables can print it beside the runs it concerns
(:func:`pseudovideo.experiments.tables.first_order_marginals_note`).

The measured quantities, per frame t, over images, channels and pixels: the residual variance
E[(frame_t - x)^2] and the residual mean E[frame_t - x] of each construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pseudovideo.pseudo_video.builder import PseudoVideoBuilder, build_pseudo_video_builder

__all__ = ["MarginalMismatch", "builders_mismatch", "marginal_mismatch"]


@dataclass(frozen=True)
class MarginalMismatch:
    """Per-frame residual variance and mean (T,) of first- and higher-order pseudo videos of the same images."""

    variance_first: tuple[float, ...]
    variance_higher: tuple[float, ...]
    mean_first: tuple[float, ...]
    mean_higher: tuple[float, ...]
    num_images: int

    @property
    def variance_ratio(self) -> tuple[float, ...]:
        """First / higher residual variance per corrupted frame (T - 1,): 1 where the marginals agree."""
        return tuple(f / h if h > 0 else float("nan") for f, h in zip(self.variance_first[:-1], self.variance_higher[:-1]))

    @property
    def max_variance_gap(self) -> tuple[float, int]:
        """(largest |first / higher - 1| over the corrupted frames, its frame)."""
        gaps = [abs(r - 1) for r in self.variance_ratio]
        frame = max(range(len(gaps)), key=gaps.__getitem__) if gaps else 0
        return (gaps[frame] if gaps else 0.0), frame

    @property
    def max_mean_gap(self) -> float:
        """Largest |first - higher| residual mean over the frames."""
        return max((abs(f - h) for f, h in zip(self.mean_first, self.mean_higher)), default=0.0)

    def describe(self) -> str:
        """One line, e.g. "residual variance first/higher up to -59 % (frame 0: 0.051 vs 0.124), mean gap 5.6e-04"."""
        gap, frame = self.max_variance_gap
        ratio = self.variance_ratio[frame] if self.variance_ratio else 1.0
        return (f"residual variance first/higher up to {100 * (ratio - 1):+.0f} % (frame {frame}: "
                f"{self.variance_first[frame]:.3g} vs {self.variance_higher[frame]:.3g}), residual mean gap up to "
                f"{self.max_mean_gap:.2g}, on {self.num_images} images")


def marginal_mismatch(
    corruptions: Sequence[Mapping[str, object]], num_frames: int, images: Tensor, seed: int = 0
) -> MarginalMismatch:
    """Per-frame residual variance and mean of both constructions of ``images`` (N, C, H, W) in [-1, 1].

    ``corruptions``: the pseudo-video operator dicts (as :func:`pseudovideo.pseudo_video.builder.build_pseudo_video_builder`
    takes them). The two constructions draw from generators seeded ``seed`` and ``seed + 1``.
    """
    first = build_pseudo_video_builder(corruptions, num_frames, "first_order")
    higher = build_pseudo_video_builder(corruptions, num_frames, "higher_order")
    return builders_mismatch(first, higher, images, seed)


def builders_mismatch(first: PseudoVideoBuilder, higher: PseudoVideoBuilder, images: Tensor, seed: int = 0
                      ) -> MarginalMismatch:
    """:func:`marginal_mismatch` of two built constructions (same operators and levels) of ``images`` (N, C, H, W)."""
    residual_first = first(images, torch.Generator().manual_seed(seed)) - images[:, None]  # (N, T, C, H, W)
    residual_higher = higher(images, torch.Generator().manual_seed(seed + 1)) - images[:, None]
    dims = (0, *range(2, residual_first.ndim))  # all but the frame axis: (0, 2, 3, 4) for images, (0, 2, 3) for signals

    def values(t: Tensor) -> tuple[float, ...]:
        return tuple(float(v) for v in t.double())

    return MarginalMismatch(
        variance_first=values(residual_first.square().mean(dims)), variance_higher=values(residual_higher.square().mean(dims)),
        mean_first=values(residual_first.mean(dims)), mean_higher=values(residual_higher.mean(dims)),
        num_images=int(images.shape[0]),
    )
