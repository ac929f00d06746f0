"""Datasets: what models train and are evaluated on.

Images (every dataset today): :func:`~pseudovideo.data.images.build_dataset` builds a dataset of clean images
(C, R, R) in [-1, 1] from a spec string (``digits``, ``cifar10[:ROOT]``, ``mnist[:ROOT]``, ``celeba[:ROOT]``,
``folder:PATH``); the dataset classes are in :mod:`~pseudovideo.data.datasets`, the named sources in
:mod:`~pseudovideo.data.sources`, image folders in :mod:`~pseudovideo.data.folders`, file decoding in
:mod:`~pseudovideo.data.decoding`, held-out splits in :mod:`~pseudovideo.data.splits`, and the per-process cache of
decoded datasets in :mod:`~pseudovideo.data.cache`. Another modality (e.g. 1-D signals) gets its own module beside
``images.py``, sharing the splits and the cache. The names below are the package's API
(``from pseudovideo.data import build_dataset, spread_images``).
"""

from __future__ import annotations

from pseudovideo.data.datasets import ImageDataset, LazyImageDataset, TensorImageDataset, spread_images, spread_subset
from pseudovideo.data.decoding import DECODED_FORMATS, read_idx_images, read_idx_labels, resize_center_crop
from pseudovideo.data.folders import IMAGE_EXTENSIONS, list_image_files
from pseudovideo.data.images import (
    DATASET_NAMES,
    VALID_SPECS,
    SplitSource,
    build_dataset,
    check_dataset_spec,
    parse_dataset_spec,
    split_source,
)
from pseudovideo.data.sources import (
    CELEBA_FILES,
    CELEBA_FOLDER,
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_META,
    DEFAULT_ROOT,
    DIGITS_SPLITS,
    DIGITS_TRAIN_SIZE,
    MNIST_PREFIX,
)
from pseudovideo.data.splits import DEFAULT_HELD_OUT_FRACTION, SPLITS, held_out_mask

__all__ = [
    "CELEBA_FILES",
    "CELEBA_FOLDER",
    "CIFAR10_FILES",
    "CIFAR10_FOLDER",
    "CIFAR10_META",
    "DATASET_NAMES",
    "DECODED_FORMATS",
    "DEFAULT_HELD_OUT_FRACTION",
    "DEFAULT_ROOT",
    "DIGITS_SPLITS",
    "DIGITS_TRAIN_SIZE",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "SplitSource",
    "LazyImageDataset",
    "MNIST_PREFIX",
    "SPLITS",
    "TensorImageDataset",
    "VALID_SPECS",
    "build_dataset",
    "check_dataset_spec",
    "held_out_mask",
    "list_image_files",
    "parse_dataset_spec",
    "read_idx_images",
    "read_idx_labels",
    "resize_center_crop",
    "spread_images",
    "split_source",
    "spread_subset",
]
