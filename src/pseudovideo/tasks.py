"""From a typed config to the objects a run needs: dataset, pseudo-video builder, model, task.

A *task* is what the training engine trains (see :class:`pseudovideo.training.TrainingTask`): it
turns a batch of clean images into pseudo videos and a loss. The model code knows nothing of
tasks or configs; this module is the only place where config fields meet constructors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pseudovideo.config import PseudoVideoConfig, RunConfig
from pseudovideo.data import ImageDataset, build_dataset
from pseudovideo.pseudo_video import PseudoVideoBuilder, build_pseudo_video_builder as _build_builder


def build_dataset_from_config(config: RunConfig, *, split: str) -> ImageDataset:
    """The configured dataset split as images (C, H, W) in [-1, 1] (flips only for training)."""
    data = config.data
    return build_dataset(
        data.dataset,
        resolution=data.resolution,
        split=split,
        root=data.root,
        channels=data.channels,
        random_flip=data.random_flip and split == data.train_split,
        download=data.download,
        skip_bad_files=data.skip_bad_files,
        max_images=data.max_images if split == data.train_split else None,
    )


def build_pseudo_video_builder(pv_config: PseudoVideoConfig) -> PseudoVideoBuilder:
    """The PseudoVideoBuilder described by a ``pseudo_video`` config section."""
    corruptions: list[dict[str, Any]] = []
    for corruption in pv_config.corruptions:
        spec = dataclasses.asdict(corruption)
        if corruption.name != "mask":  # patch_size and fill_value are mask-only parameters
            del spec["patch_size"], spec["fill_value"]
        corruptions.append(spec)
    return _build_builder(corruptions, num_frames=pv_config.num_frames, construction=pv_config.construction)
