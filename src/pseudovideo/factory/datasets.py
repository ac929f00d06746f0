"""The configured dataset (``data`` section) as images, and whether it has the labels the linear probe needs."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from torch import Tensor

from pseudovideo.config import RunConfig
from pseudovideo.data.cache import cached_dataset
from pseudovideo.data.datasets import ImageDataset, spread_images
from pseudovideo.data.modality import build_split

__all__ = ["ProbeSkipped", "build_dataset_from_config", "labelled_images", "unlabelled_reason"]


def build_dataset_from_config(config: RunConfig, *, split: str, spread: int | None = None) -> ImageDataset:
    """The configured dataset split as images (C, H, W) or signals (C, L) in [-1, 1] (flips only for training images).

    ``spread``: decode only that many images evenly spread over a split other than the training split (the images
    ``spread_images(whole split, spread)`` picks, unless ``data.skip_bad_files`` drops files: then the whole split).
    """
    data = config.data
    mixed_channels = data.channels is None and data.dataset.startswith("folder:")  # counted over the images read
    if spread is not None and (split == data.train_split or data.skip_bad_files or mixed_channels):
        spread = None  # a training subset or skipped bad files would move the spread: decode the whole split
    max_images = data.max_images if split == data.train_split else spread
    random_flip = data.random_flip and split == data.train_split
    key = (split, max_images, random_flip, *sorted(dataclasses.asdict(data).items()))
    # images or signals, as the data's modality says (pseudovideo.data.modality)
    return cached_dataset(key, lambda: build_split(data, split, max_images=max_images, random_flip=random_flip))


class ProbeSkipped(ValueError):
    """The probe cannot be computed for this run (no labels, no feature layer); the message says why."""


def labelled_images(config: RunConfig, split: str, count: int) -> tuple[Tensor, Tensor, int, str]:
    """``count`` images evenly spaced over ``split`` (N, C, H, W) in [-1, 1], their labels (N,), the class count
    and the split's description; ProbeSkipped when the dataset has no labels."""
    data = config.data
    dataset = build_split(data, split, max_images=count)  # images or signals
    if dataset.labels is None or dataset.class_names is None:
        raise ProbeSkipped(
            f"dataset {data.dataset!r} has no class labels (labels exist for digits, cifar10, mnist in torchvision's "
            "layout, folder:PATH with one sub-folder per class, sktime classification sets and series:PATH with class "
            "sub-folders), so no linear probe can be trained")
    return spread_images(dataset, len(dataset)), dataset.labels, len(dataset.class_names), dataset.split_description


@functools.lru_cache(maxsize=32)
def _unlabelled_reason(data_key: tuple[Any, ...], count: int) -> str | None:
    config = RunConfig(data=dataclasses.replace(RunConfig().data, **dict(data_key)))
    try:
        labelled_images(config, config.data.eval_split, count)
    except ProbeSkipped as err:
        return str(err)
    return None


def unlabelled_reason(config: RunConfig) -> str | None:
    """Why the probe of ``config`` will be skipped for want of labels (None when its evaluation images have them).

    Reads the evaluation images (``eval.num_images`` of them), as evaluation will; cached per data section.
    """
    return _unlabelled_reason(tuple(sorted(dataclasses.asdict(config.data).items())), config.eval.num_images)
