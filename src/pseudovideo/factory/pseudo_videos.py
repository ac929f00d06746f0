"""The pseudo-video builder of a ``pseudo_video`` config section, and a one-line description of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pseudovideo.config import PseudoVideoConfig
from pseudovideo.pseudo_video.builder import SCHEDULE_KEYS
from pseudovideo.pseudo_video.builder import build_pseudo_video_builder as _build_builder
from pseudovideo.pseudo_video.corruptions import corruption_params
from pseudovideo.pseudo_video.learned.corruption import LearnedPseudoVideos, load_learned, operators_and_levels

__all__ = ["build_pseudo_video_builder", "configured_learned_builder", "corruption_dicts", "describe_pseudo_video"]


def corruption_dicts(pv_config: PseudoVideoConfig) -> list[dict[str, Any]]:
    """The ``pseudo_video.corruptions`` as the dicts :func:`pseudovideo.pseudo_video.builder.build_pseudo_video_builder` takes."""
    corruptions: list[dict[str, Any]] = []
    for corruption in pv_config.corruptions:
        accepted = (*SCHEDULE_KEYS, *corruption_params(corruption.name))  # e.g. patch_size only for mask
        corruptions.append({k: v for k, v in dataclasses.asdict(corruption).items() if k in accepted})
    return corruptions


def build_pseudo_video_builder(pv_config: PseudoVideoConfig) -> Any:
    """The pseudo-video builder described by a ``pseudo_video`` config section.

    A PseudoVideoBuilder, except with a fixed ``mixture`` or a ``learned.from_file`` (a
    :class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos`).
    A run whose ``learned.objective`` searches or learns its corruption gets it from
    :func:`pseudovideo.training.learned_runs.prepare_corruption`; this function gives its configured starting point.
    """
    learned = configured_learned_builder(pv_config)
    if learned is not None:
        return learned
    return _build_builder(corruption_dicts(pv_config), num_frames=pv_config.num_frames, construction=pv_config.construction)


def describe_pseudo_video(pv_config: PseudoVideoConfig) -> str:
    """One line saying how the run's pseudo videos are made (for eval notes and tables)."""
    if pv_config.construction == "copies":
        return (f"T={pv_config.num_frames}, copies ({pv_config.num_frames} identical clean frames: the capacity "
                "control, corruptions ignored)")
    if pv_config.num_frames == 1:
        return "T=1: the clean images themselves (no corruption applied)"
    if pv_config.construction == "noise_frames":
        return (f"T={pv_config.num_frames}, noise_frames ({pv_config.num_frames - 1} frames of N(0, 0.5^2) noise "
                "then the clean image: the non-informative control, corruptions ignored)")
    corruptions = "+".join(f"{c.name}({c.schedule}, max {c.max_level})" for c in pv_config.corruptions)
    learned = pv_config.learned
    extra = f", mixture {pv_config.mixture}" if pv_config.mixture is not None else ""
    if learned.objective != "none":
        extra += f", learned by {learned.objective}" + (" (per image)" if learned.per_image else "") + (
            " with an operator mixture" if learned.mixture else "") + " from this start"
    if learned.from_file:
        extra += f", learned corruption from {learned.from_file}"
    if learned.searched_by:
        extra += f" ({learned.searched_by})"
    return f"T={pv_config.num_frames}, {pv_config.construction}, {corruptions}{extra}"


def configured_learned_builder(pv: PseudoVideoConfig) -> Any:
    """The builder of a ``learned.from_file`` or a fixed ``mixture`` (LearnedPseudoVideos or PseudoVideoBuilder);
    None when the configured corruption is a plain PseudoVideoBuilder."""
    if pv.learned.from_file:
        learned = load_learned(Path(pv.learned.from_file).expanduser())
        if learned.num_frames != pv.num_frames:
            raise ValueError(f"pseudo_video.learned.from_file {pv.learned.from_file} holds {learned.num_frames}-frame "
                             f"pseudo videos, but pseudo_video.num_frames={pv.num_frames}")
        return learned.as_builder()
    if pv.mixture is None:
        return None
    operators, levels = operators_and_levels(corruption_dicts(pv), pv.num_frames)
    return LearnedPseudoVideos(operators, levels, mode="fixed", mixture=torch.tensor(pv.mixture), objective="none")
