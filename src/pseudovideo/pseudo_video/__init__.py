"""Pseudo videos: corruption operators, level schedules, the builder, and what they are measured by."""

from __future__ import annotations

from pseudovideo.pseudo_video.builder import (  # noqa: F401
    CONSTRUCTIONS,
    IMAGE_FREE,
    NOISE_FRAMES_STD,
    SCHEDULE_KEYS,
    PseudoVideoBuilder,
    shuffle_corrupted_frames,
    noise_frames,
    corruption_levels,
    build_pseudo_video_builder,
)

__all__ = [
    "CONSTRUCTIONS",
    "IMAGE_FREE",
    "NOISE_FRAMES_STD",
    "SCHEDULE_KEYS",
    "PseudoVideoBuilder",
    "shuffle_corrupted_frames",
    "noise_frames",
    "corruption_levels",
    "build_pseudo_video_builder",
]
