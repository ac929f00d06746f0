"""Datasets of clean images (the last frames of the pseudo videos every model trains on): the spec strings that
name them and :func:`build_dataset`, which builds one.

Every dataset built here yields float32 tensors ``(C, R, R)`` in ``[-1, 1]`` (labels are not yielded),
with ``R`` the requested resolution. Class labels, where the data has them (digits, CIFAR-10, MNIST in
torchvision's layout or as raw IDX files with their label files, a folder with one sub-folder per class), are kept
beside the images in ``.labels`` for the classifier behind the ``cfd`` / ``ckd`` metrics (see
``pseudovideo.metrics.feature_net``); :func:`split_source` tells whether a split has them without decoding it. Entry point: :func:`build_dataset`, driven by a spec string:

- ``"digits"``: scikit-learn's bundled 8x8 handwritten digits, upsampled; needs no network or files.
- ``"cifar10"``, ``"mnist"``, ``"celeba"`` (optionally ``"name:ROOT"``): torchvision's own dataset
  classes, reading ``root`` in torchvision's layout or downloading into it.
- ``"folder:PATH"``: any folder tree of image files, decoded once up front into memory.

Held-out splits: a folder with split sub-folders (``train/`` plus ``valid/`` or ``test/``) uses them.
A folder without them, and MNIST when only one of its two split files is present, is split
deterministically by a hash of each image's relative path (MNIST: its index): a fraction
``held_out_fraction`` (default 10 %) forms the evaluation splits ("valid"/"test") and the rest the
"train" split, so no evaluation image is ever trained on. Each dataset's ``split_description``
says which split was actually used (written into every ``eval.json``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from pseudovideo.data.datasets import (
    ImageDataset,
    TensorImageDataset,
    _check_channels,
    _check_resolution,
    spread_subset,
)
from pseudovideo.data.folders import _build_folder, _folder_class_labels, _folder_split, _hash_split, list_image_files
from pseudovideo.data.sources import (
    DIGITS_SPLITS,
    _build_celeba,
    _check_celeba_files,
    _check_cifar10_files,
    _find_mnist_source,
    _idx_labels_beside,
    _load_cifar10,
    _load_digits,
    _load_mnist,
    _resolve_root,
)
from pseudovideo.data.splits import DEFAULT_HELD_OUT_FRACTION, _check_fraction, _check_split

__all__ = ["DATASET_NAMES", "VALID_SPECS", "SplitSource", "build_dataset", "check_dataset_spec", "parse_dataset_spec",
           "split_source"]

DATASET_NAMES = ("digits", "cifar10", "mnist", "celeba", "folder")
VALID_SPECS = ("digits", "cifar10[:ROOT]", "mnist[:ROOT]", "celeba[:ROOT]", "folder:PATH")


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """Split a dataset spec into ``(name, argument)``.

    ``"digits"`` -> ``("digits", None)``; ``"folder:PATH"`` -> ``("folder", "PATH")``;
    ``"cifar10"`` / ``"cifar10:ROOT"`` -> ``("cifar10", None | "ROOT")`` (same for mnist, celeba).
    Raises ValueError for unknown names or a missing/unexpected argument.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset spec must be a non-empty string, got {spec!r}; valid specs: {', '.join(VALID_SPECS)}")
    name, sep, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset spec {spec!r}; valid specs: {', '.join(VALID_SPECS)}")
    if name == "folder":
        if not arg.strip():
            raise ValueError(f"dataset spec {spec!r} needs a path: 'folder:PATH'")
        return name, arg.strip()
    if name == "digits":
        if sep:
            raise ValueError(f"dataset spec {spec!r}: 'digits' is embedded and takes no argument")
        return name, None
    return name, (arg.strip() or None) if sep else None


def check_dataset_spec(
    spec: str,
    root: str | None = None,
    split: str = "train",
    *,
    download: bool = False,
    held_out_fraction: float | None = None,
    skip_bad_files: bool = False,
) -> tuple[str, str | None]:
    """Validate a spec, split and the files it needs without decoding anything (cheap, for the CLI).

    Returns ``parse_dataset_spec(spec)``. Raises ValueError (bad name/split/fraction, empty folder or
    empty hash split) or FileNotFoundError (missing path or dataset files, unless ``download`` will fetch them).
    """
    name, arg = parse_dataset_spec(spec)
    _check_split(name, split)
    if held_out_fraction is not None:
        _check_fraction(held_out_fraction)
    if name == "folder":
        folder, hashed = _folder_split(Path(arg), split)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the build reports skipped folders
            files = list_image_files(folder, skip_unreadable=skip_bad_files)
        if hashed:
            _hash_split(files, folder, split, DEFAULT_HELD_OUT_FRACTION if held_out_fraction is None else held_out_fraction)
    elif name != "digits":
        data_root = _resolve_root(name, arg, root)
        if not download:
            if name == "cifar10":
                _check_cifar10_files(data_root, split)
            elif name == "mnist":
                _find_mnist_source(data_root, split)
            else:
                _check_celeba_files(data_root)
    return name, arg


@dataclass(frozen=True)
class SplitSource:
    """What a split is made of, found without decoding images (see :func:`split_source`).

    ``hashed``: the split is a hash-chosen part of a source without splits (it depends on held_out_fraction);
    ``labelled``: the split has class labels; ``fingerprint``: for folders, sha256 over the sorted relative paths
    and byte sizes of the split folder's image files (the same data extracted elsewhere has the same one), else
    "" (the spec names the data).
    """

    hashed: bool
    labelled: bool
    fingerprint: str


def split_source(spec: str, root: str | None = None, split: str = "train", *, download: bool = False,
                 skip_bad_files: bool = False, held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
                 fingerprint: bool = True) -> SplitSource:
    """Cheap facts about ``split`` of a dataset spec (a file listing at most, no image is decoded);
    ``fingerprint=False`` skips the folder fingerprint (the file sizes). Labels are judged on the split's own files
    (``held_out_fraction`` picks a hashed split). Raises ValueError / FileNotFoundError for a bad spec or missing
    data, as :func:`check_dataset_spec` does.
    """
    name, arg = parse_dataset_spec(spec)
    _check_split(name, split)
    if name == "folder":
        folder, hashed = _folder_split(Path(arg), split)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the build reports skipped folders
            files = list_image_files(folder, skip_unreadable=skip_bad_files)
        digest = hashlib.sha256()
        if fingerprint:
            start = len(str(folder)) + 1  # str slicing: pathlib's relative_to is slow on 50k files
            for f in map(str, files):
                digest.update(f"{f[start:]}\0{os.path.getsize(f)}\n".encode())
        part = _hash_split(files, folder, split, held_out_fraction)[0] if hashed else files
        labelled = _folder_class_labels(folder, part)[0] is not None
        return SplitSource(hashed, labelled, digest.hexdigest() if fingerprint else "")
    if name == "mnist":
        data_root = _resolve_root(name, arg, root)
        source, hashed = (None, False) if download else _find_mnist_source(data_root, split)
        labelled = source is None or _idx_labels_beside(source) is not None
        return SplitSource(hashed, labelled, "")
    return SplitSource(False, name != "celeba", "")


def build_dataset(
    spec: str,
    *,
    resolution: int,
    split: str = "train",
    root: str | None = None,
    channels: int | None = None,
    random_flip: bool = False,
    download: bool = False,
    skip_bad_files: bool = False,
    max_images: int | None = None,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
) -> ImageDataset:
    """Build the clean-image dataset named by ``spec`` (see :func:`parse_dataset_spec`).

    Items are float32 ``(C, R, R)`` tensors in [-1, 1] with R = ``resolution`` (>= 4); ``channels``
    (1 or 3, default: the data's own) converts grey <-> RGB; ``max_images`` keeps N images evenly
    spaced over a fixed order (sorted file order for folders, so every class folder is represented); ``root`` is where torchvision datasets live
    (default ``"data"``; ignored by digits and folder specs), downloaded there when ``download``;
    ``skip_bad_files`` skips unreadable files of a folder (listed in
    ``.bad_files``) instead of raising; ``held_out_fraction`` (in (0, 1)) is the share held out for
    evaluation where the data has no split of its own (see the module docstring). The returned
    dataset's ``split_description`` names the split used.
    """
    _check_resolution(resolution)
    _check_fraction(held_out_fraction)
    _check_channels(channels, allow_none=True)
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
    name, arg = parse_dataset_spec(spec)
    _check_split(name, split)
    common = dict(resolution=resolution, channels=channels, random_flip=random_flip)

    if name == "folder":
        return _build_folder(
            arg, split, max_images=max_images, skip_bad_files=skip_bad_files, held_out_fraction=held_out_fraction, **common
        )
    if name == "digits":
        digits, labels = _load_digits(split, resolution)
        keep = spread_subset(len(digits), max_images)
        dataset = TensorImageDataset(digits[keep], name="digits", labels=labels[keep], class_names=[str(d) for d in range(10)], **common)
        dataset.split_description = DIGITS_SPLITS[split]
        return dataset
    data_root = _resolve_root(name, arg, root)
    if name == "celeba":
        return _build_celeba(data_root, split, download, max_images=max_images, **common)
    if name == "cifar10":
        images, labels, classes = _load_cifar10(data_root, split, download)
        description = f"CIFAR-10's official {split!r} split"
    else:
        images, labels, classes, description = _load_mnist(data_root, split, download, held_out_fraction)
    keep = spread_subset(len(images), max_images)
    dataset = TensorImageDataset(
        images[keep], name=name, labels=None if labels is None else labels[keep], class_names=classes, **common
    )
    dataset.split_description = description
    return dataset


