"""The configured dataset (``data`` section) as images or 1-D signals, and whether it has the labels the linear probe
needs. Which builder reads the data is decided by :func:`pseudovideo.config.modality.spatial_dims` (the dataset
spec), here only: :func:`build_split`, :func:`check_split`, :func:`data_cache_name`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from torch import Tensor

from pseudovideo.config import RunConfig
from pseudovideo.config.modality import spatial_dims
from pseudovideo.data.cache import cached_dataset
from pseudovideo.data.datasets import ImageDataset, spread_images
from pseudovideo.data.images import build_dataset, check_dataset_spec
from pseudovideo.data.signals import build_signal_dataset, check_signal_spec, signal_cache_name

__all__ = ["ProbeSkipped", "build_dataset_from_config", "build_split", "check_split", "data_cache_name",
           "labelled_images", "unlabelled_reason"]


def build_split(data: Any, split: str, *, max_images: int | None = None, random_flip: bool = False,
                held_out_fraction: float | None = None) -> Any:
    """The ``split`` of the dataset of a ``data`` config section: images (C, R, R) or signals (C, L) in [-1, 1].

    ``max_images``: that many items evenly spread over the split (None: all); ``random_flip``: images only (signals
    are never flipped); ``held_out_fraction``: None for the section's own.
    """
    fraction = data.held_out_fraction if held_out_fraction is None else held_out_fraction
    if spatial_dims(data) == 1:
        return build_signal_dataset(data.dataset, length=data.length, split=split, window=data.window, stride=data.stride,
                                    channels=data.channels, max_images=max_images, held_out_fraction=fraction)
    return build_dataset(data.dataset, resolution=data.resolution, split=split, root=data.root, channels=data.channels,
                         random_flip=random_flip, download=data.download, skip_bad_files=data.skip_bad_files,
                         max_images=max_images, held_out_fraction=fraction)


def check_split(data: Any, split: str) -> None:
    """Cheap checks of the files (or bundled data) a split of a data section reads, before any long work."""
    if spatial_dims(data) == 1:
        check_signal_spec(data.dataset, split)
        return
    check_dataset_spec(data.dataset, data.root, split, download=data.download, held_out_fraction=data.held_out_fraction,
                       skip_bad_files=data.skip_bad_files)


def data_cache_name(data: Any) -> str:
    """The dataset a data section reads, as a cache-key name: the spec, with a signal dataset's windows."""
    if spatial_dims(data) == 1:
        return signal_cache_name(data.dataset, data.length, data.window, data.stride)
    return data.dataset


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
    # images or signals, as the data's modality says
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
