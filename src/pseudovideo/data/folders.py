"""``folder:PATH`` datasets: every image file of a folder tree (following links, visiting each real folder once),
its split sub-folders or a hash split, class labels from one sub-folder per class."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from pseudovideo.data.datasets import TensorImageDataset, spread_subset
from pseudovideo.data.decoding import _decode_or_error
from pseudovideo.data.splits import SPLITS, _hash_part

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_image_files(folder: str | os.PathLike, *, skip_unreadable: bool = False) -> list[Path]:
    """All image files (``IMAGE_EXTENSIONS``, any case) under ``folder``, recursively, in sorted order.

    Hidden files and folders (name starting with '.', e.g. macOS '._x.jpg') are ignored. Symbolic
    links are followed, but each real folder is visited once (a link loop does not repeat images).
    Raises FileNotFoundError if ``folder`` is missing, NotADirectoryError if it is a file,
    PermissionError naming the first folder that cannot be read (with ``skip_unreadable``, those
    folders are skipped with a warning counting them), ValueError if it holds no image file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"image folder {str(folder)!r} is a file, expected a folder of images")
    found: list[str] = []
    unreadable: list[OSError] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable.append):
        real = os.path.realpath(dirpath)
        if real in visited:  # a link back to a folder already seen (e.g. a loop)
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for fname in filenames:
            if not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS):
                found.append(fname if rel == "." else os.path.join(rel, fname))
    _report_unreadable(folder, unreadable, skip_unreadable)
    if not found:
        raise ValueError(
            f"image folder {str(folder)!r} holds no image files (accepted extensions, any case, "
            f"searched recursively: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return [folder / rel for rel in sorted(found)]


def _report_unreadable(folder: Path, errors: list[OSError], skip: bool) -> None:
    if not errors:
        return
    first = errors[0]
    where = first.filename or folder
    if not skip or os.path.realpath(where) == os.path.realpath(folder):
        raise PermissionError(
            first.errno, f"image folder {str(where)!r} cannot be read ({first.strerror}); fix its permissions"
            + ("" if skip else ", or set data.skip_bad_files=true to skip unreadable folders and files")
        )
    warnings.warn(f"skipped {len(errors)} unreadable folder(s) under {str(folder)!r} (first: {where})", stacklevel=3)


def _folder_split(path: Path, split: str) -> tuple[Path, bool]:
    """(folder to read, whether to split it by path hash) for ``split`` of the image folder ``path``.

    Split sub-folders are used when ``path`` has ``train/`` and ``valid/`` or ``test/``; otherwise the
    images under ``path/train`` (or ``path`` itself) are split by path hash, so train and evaluation never overlap.
    """
    if not path.exists():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    present = [name for name in SPLITS["folder"] if (path / name).is_dir()]
    if "train" in present and len(present) > 1:
        if split not in present:
            raise FileNotFoundError(
                f"image folder {str(path)!r} has split sub-folders {present} but no {split!r}; "
                f"use one of them (data.train_split / data.eval_split) or add {str(path / split)!r}"
            )
        return path / split, False
    return (path / "train" if "train" in present else path), True


def _build_folder(
    path: str,
    split: str,
    *,
    resolution: int,
    channels: int | None,
    random_flip: bool,
    max_images: int | None,
    skip_bad_files: bool,
    held_out_fraction: float,
) -> TensorImageDataset:
    """Decode every image file of a folder tree's ``split`` up front into uint8 (N, C, R, R) in memory."""
    folder, hashed = _folder_split(Path(path), split)
    files = list_image_files(folder, skip_unreadable=skip_bad_files)
    if hashed:
        files, description = _hash_split(files, folder, split, held_out_fraction)
    else:
        description = f"the {split!r} sub-folder of {path}"
    files = [files[i] for i in spread_subset(len(files), max_images).tolist()]
    workers = max(1, min(16, 2 * (os.cpu_count() or 1), len(files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_decode_or_error, [(f, resolution, channels) for f in files]))

    bad = [(str(f), r) for f, r in zip(files, results) if isinstance(r, str)]
    if bad and not skip_bad_files:
        first, reason = bad[0]
        others = f" ({len(bad) - 1} more bad file(s) after it)" if len(bad) > 1 else ""
        raise ValueError(
            f"image file {first!r} is not a readable image or is truncated ({reason}){others}; "
            f"fix or remove it, or set data.skip_bad_files=true to skip unreadable files"
        )
    good = [r for r in results if not isinstance(r, str)]
    if not good:
        raise ValueError(f"none of the {len(files)} image files under {str(folder)!r} could be decoded")
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image file(s) under {str(folder)!r} "
            f"(first: {bad[0][0]}: {bad[0][1]}); a training run lists them in RUN_DIR/skipped_files.txt",
            stacklevel=3,
        )
    out_channels = channels or max(t.shape[0] for t in good)
    images = torch.empty(len(good), out_channels, resolution, resolution, dtype=torch.uint8)  # (N, C, R, R)
    for i, t in enumerate(good):
        images[i].copy_(t)  # broadcasts grey (1, R, R) into RGB when the folder is mixed
    labels, classes = _folder_class_labels(folder, [f for f, r in zip(files, results) if not isinstance(r, str)])
    dataset = TensorImageDataset(
        images,
        name=f"folder:{path}",
        resolution=resolution,
        channels=out_channels,
        random_flip=random_flip,
        bad_files=[f for f, _ in bad],
        labels=labels,
        class_names=classes,
    )
    dataset.split_description = description
    return dataset


def _folder_class_labels(folder: Path, files: Sequence[Path]) -> tuple[Tensor | None, list[str] | None]:
    """ImageFolder-style labels: the first sub-folder of ``folder`` holding each file, classes sorted by name.

    Returns (labels (N,), class names), or (None, None) when some file lies directly in ``folder`` or there
    are fewer than two classes (nothing to classify).
    """
    firsts = [f.relative_to(folder).parts for f in files]
    if any(len(parts) < 2 for parts in firsts):
        return None, None
    classes = sorted({parts[0] for parts in firsts})
    if len(classes) < 2:
        return None, None
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[parts[0]] for parts in firsts], dtype=torch.long), classes


def _hash_split(files: list[Path], folder: Path, split: str, fraction: float) -> tuple[list[Path], str]:
    """The files of ``split`` when ``folder`` has no split sub-folders, keyed by their relative path."""
    keys = [f.relative_to(folder).as_posix() for f in files]
    chosen, description = _hash_part(keys, split, fraction, f"folder {str(folder)!r} (relative path)")
    return [files[i] for i in chosen], description
