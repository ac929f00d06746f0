"""Pseudo videos: an image (B, C, H, W) in [-1, 1] becomes a clip (B, T, C, H, W) whose last frame is the image.

:mod:`~pseudovideo.pseudo_video.corruptions` (the operators), :mod:`~pseudovideo.pseudo_video.schedules` (their
levels per frame) and :mod:`~pseudovideo.pseudo_video.builder` (first- and higher-order constructions and the
controls; exact blur + noise steps in :mod:`~pseudovideo.pseudo_video.exact_composition`); what a pseudo video is
worth: :mod:`~pseudovideo.pseudo_video.diagnose` (the paper's section 4.1 test),
:mod:`~pseudovideo.pseudo_video.informativeness`, :mod:`~pseudovideo.pseudo_video.marginals`; and
:mod:`~pseudovideo.pseudo_video.learned` corruptions. Nothing here reads a config (that is
:mod:`pseudovideo.factory.pseudo_videos`). The names below are the former module's API
(``from pseudovideo.pseudo_video import build_pseudo_video_builder``).
"""

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
