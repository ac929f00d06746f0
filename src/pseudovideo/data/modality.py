"""A data section's split as a dataset of images (C, R, R) or signals (C, L): the data's modality decides.

:func:`build_split` is the one function that turns a ``data`` config section into a dataset; which builder it
calls is decided by :func:`pseudovideo.config.modality.spatial_dims` (the dataset spec), nowhere else.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from pseudovideo.config.modality import spatial_dims

__all__ = ["build_split", "check_split", "data_cache_name"]


def build_split(data: Any, split: str, *, max_images: int | None = None, random_flip: bool = False,
                held_out_fraction: float | None = None) -> Dataset:
    """The ``split`` of the dataset of a ``data`` config section: images (C, R, R) or signals (C, L) in [-1, 1].

    ``max_images``: that many items evenly spread over the split (None: all); ``random_flip``: images only (signals
    are never flipped); ``held_out_fraction``: None for the section's own.
    """
    fraction = data.held_out_fraction if held_out_fraction is None else held_out_fraction
    if spatial_dims(data) == 1:
        from pseudovideo.data.signals import build_signal_dataset

        return build_signal_dataset(data.dataset, length=data.length, split=split, window=data.window, stride=data.stride,
                                    channels=data.channels, max_images=max_images, held_out_fraction=fraction)
    from pseudovideo.data.images import build_dataset

    return build_dataset(data.dataset, resolution=data.resolution, split=split, root=data.root, channels=data.channels,
                         random_flip=random_flip, download=data.download, skip_bad_files=data.skip_bad_files,
                         max_images=max_images, held_out_fraction=fraction)


def check_split(data: Any, split: str) -> None:
    """Cheap checks of the files (or bundled data) a split of a data section reads, before any long work."""
    if spatial_dims(data) == 1:
        from pseudovideo.data.signals import check_signal_spec

        check_signal_spec(data.dataset, split)
        return
    from pseudovideo.data.images import check_dataset_spec

    check_dataset_spec(data.dataset, data.root, split, download=data.download, held_out_fraction=data.held_out_fraction,
                       skip_bad_files=data.skip_bad_files)


def data_cache_name(data: Any) -> str:
    """The dataset a data section reads, as a cache-key name: the spec, with a signal dataset's windows."""
    if spatial_dims(data) == 1:
        from pseudovideo.data.signals import signal_cache_name

        return signal_cache_name(data.dataset, data.length, data.window, data.stride)
    return data.dataset
