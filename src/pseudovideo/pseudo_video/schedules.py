"""Per-frame corruption level schedules for pseudo videos.

A schedule is a float32 tensor ``levels`` of shape (T,) giving the corruption level of every
frame: ``levels[0]`` is the most corrupted frame (``max_level``), ``levels[T - 1]`` is exactly 0
(the clean image, the last frame of the pseudo video), and levels never increase with t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SCHEDULE_KINDS = ("linear", "cosine", "geometric", "explicit")


def _ramp(num_frames: int) -> Tensor:
    """Return u_t = t / (T - 1) for t = 0..T-1 in float64, shape (T,); requires T >= 2."""
    return torch.arange(num_frames, dtype=torch.float64) / (num_frames - 1)


def linear_levels(num_frames: int, max_level: float) -> Tensor:
    """Levels max_level * (1 - t / (T - 1)), shape (T,) float64; requires T >= 2."""
    return max_level * (1.0 - _ramp(num_frames))


def cosine_levels(num_frames: int, max_level: float) -> Tensor:
    """Levels max_level * cos(pi/2 * t / (T - 1)): flat near frame 0, steep near the clean frame; (T,) float64."""
    return max_level * torch.cos(0.5 * math.pi * _ramp(num_frames))


def geometric_levels(num_frames: int, max_level: float, min_level: float) -> Tensor:
    """Geometric spacing from max_level (frame 0) to min_level (frame T-2), then 0 at frame T-1; (T,) float64."""
    num_corrupted = num_frames - 1
    if num_corrupted == 1:
        corrupted = torch.tensor([max_level], dtype=torch.float64)
    else:
        u = torch.arange(num_corrupted, dtype=torch.float64) / (num_corrupted - 1)
        corrupted = torch.exp(math.log(max_level) + u * (math.log(min_level) - math.log(max_level)))
    return torch.cat([corrupted, torch.zeros(1, dtype=torch.float64)])


def explicit_levels(num_frames: int, levels: Sequence[float]) -> Tensor:
    """Levels given by hand for frames 0..T-2 (length T-1) or all T frames (length T, last 0); (T,) float64."""
    values = torch.as_tensor(list(levels), dtype=torch.float64).flatten()
    if values.numel() == num_frames - 1:
        values = torch.cat([values, torch.zeros(1, dtype=torch.float64)])
    elif values.numel() == num_frames:
        if values[-1] != 0:
            raise ValueError(
                f"explicit levels of length num_frames={num_frames} must end with 0 (the clean frame), "
                f"got last level {values[-1].item()}"
            )
    else:
        raise ValueError(
            f"explicit levels must have length num_frames - 1 = {num_frames - 1} (frames 0..T-2) or "
            f"num_frames = {num_frames} (ending with 0), got {values.numel()} values: {list(levels)}"
        )
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"explicit levels must be finite and non-negative, got {list(levels)}")
    if (values[1:] > values[:-1]).any():
        raise ValueError(f"explicit levels must be non-increasing (frame 0 most corrupted), got {list(levels)}")
    return values


def level_schedule(
    kind: str,
    num_frames: int,
    max_level: float,
    *,
    min_level: float | None = None,
    levels: Sequence[float] | None = None,
) -> Tensor:
    """Return per-frame corruption levels, shape (T,) float32, levels[0] = max_level, levels[T-1] = 0.

    kinds: "linear", "cosine", "geometric" (needs 0 < min_level <= max_level: geometric spacing over
    frames 0..T-2, then 0), "explicit" (needs ``levels`` for frames 0..T-2, or all T with last 0;
    levels[0] must equal max_level). A single frame (T = 1) gives [0].
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {list(SCHEDULE_KINDS)}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    if not math.isfinite(max_level) or max_level < 0:
        raise ValueError(f"max_level must be finite and >= 0, got {max_level!r}")
    if min_level is not None and kind != "geometric":
        raise ValueError(
            f"min_level is only used by the 'geometric' schedule, got min_level={min_level!r} for {kind!r}"
        )
    if levels is not None and kind != "explicit":
        raise ValueError(f"levels is only used by the 'explicit' schedule, got levels={levels!r} for {kind!r}")

    if kind == "geometric":
        if min_level is None or not math.isfinite(min_level) or min_level <= 0:
            raise ValueError(f"the 'geometric' schedule needs min_level > 0, got min_level={min_level!r}")
        if min_level > max_level:
            raise ValueError(f"min_level must be <= max_level, got min_level={min_level!r} > max_level={max_level!r}")
    if kind == "explicit" and levels is None:
        raise ValueError("the 'explicit' schedule needs levels (a list of per-frame levels), got levels=None")

    if num_frames == 1:
        if kind == "explicit":
            explicit_levels(num_frames, levels)  # validates length and values
        return torch.zeros(1, dtype=torch.float32)

    if kind == "linear":
        values = linear_levels(num_frames, max_level)
    elif kind == "cosine":
        values = cosine_levels(num_frames, max_level)
    elif kind == "geometric":
        values = geometric_levels(num_frames, max_level, min_level)
    else:
        values = explicit_levels(num_frames, levels)
        if not math.isclose(values[0].item(), max_level, rel_tol=1e-6, abs_tol=1e-12):
            raise ValueError(
                f"explicit levels start at {values[0].item()} but max_level={max_level!r}; make them agree"
            )

    out = values.to(torch.float32)
    # Pin the endpoints exactly; float32 rounding is monotone so the schedule stays non-increasing.
    if kind != "explicit":
        out[0] = max_level
    out[-1] = 0.0
    return out
