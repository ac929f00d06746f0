"""Pictures during training: the task's previews (pseudo videos, reconstructions or samples) of a fixed set of
images, drawn without moving the training's random streams."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pseudovideo.config import TrainConfig
from pseudovideo.training.batches import _BatchFetcher
from pseudovideo.training.precision import autocast


PREVIEW_IMAGES = 8  # clean images given to task.preview


_PREVIEW_STEP = 2**31 - 1  # augmentation seed stream of the preview images (no training step has it)


def _preview_images(dataset: Dataset, settings: TrainConfig, device: torch.device) -> Tensor:
    """The clean images every preview draws (N, C, H, W): the same items each time, spread over the data."""
    from pseudovideo.data.datasets import spread_subset

    count = min(PREVIEW_IMAGES, len(dataset), settings.batch_size)
    fetcher = _BatchFetcher(dataset, settings.seed)
    # the same items at every preview, spread over the data (a class-sorted folder's first items are one class)
    items = list(enumerate(spread_subset(len(dataset), count).tolist()))
    return fetcher[(_PREVIEW_STEP, items)].to(device)  # (N, C, H, W)


def _save_previews(
    task: Any, model: nn.Module, images: Tensor, seed: int, pictures_dir: Path, step: int, precision: str
) -> list[Path]:
    """Saves ``task.preview`` (a TrainingTask's) of ``images`` (N, C, H, W) at ``step`` as PNG grids in ``pictures_dir``."""
    was_training = model.training
    model.eval()
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)  # same noise at every preview
    py_state, np_state = random.getstate(), np.random.get_state()
    # previews must not move the training RNGs, or a resumed run would differ from an uninterrupted one
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            with torch.no_grad(), autocast(precision, device):
                pictures = task.preview(model, images, generator)
        finally:
            model.train(was_training)
            random.setstate(py_state)
            np.random.set_state(np_state)
    if not pictures:
        return []
    from pseudovideo.pictures import picture_upscale, save_image_grid, save_video_grid

    builder = getattr(task, "builder", None)  # the task's pseudo videos name the frame columns (levels)
    saved = []
    sample_ndim = images.ndim - 1  # (C, H, W) images, or (C, L) signals: the data says
    for name, picture in pictures.items():
        picture = picture.detach().float().cpu()
        path = pictures_dir / f"{name}_step{step:07d}.png"
        if picture.ndim == sample_ndim + 1:  # (N, C, H, W)
            saved.append(save_image_grid(picture, path, nrow=min(8, picture.shape[0]), upscale=picture_upscale(picture.shape[-1])))
        elif picture.ndim == sample_ndim + 2:  # (B, T, C, H, W)
            labels = builder.frame_labels() if builder is not None and builder.num_frames == picture.shape[1] else None
            saved.append(save_video_grid(picture, path, upscale=picture_upscale(picture.shape[-1]), column_labels=labels))
        else:
            raise ValueError(
                f"task.preview returned {name!r} of shape {tuple(picture.shape)}; expected (N, C, H, W) or (B, T, C, H, W)"
            )
    return saved
