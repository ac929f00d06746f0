"""Datasets of clean images: the last frames of the pseudo videos every model trains on.

Every dataset built here yields float32 tensors ``(C, R, R)`` in ``[-1, 1]`` (labels are not yielded),
with ``R`` the requested resolution. Class labels, where the data has them (digits, CIFAR-10, MNIST in
torchvision's layout, a folder with one sub-folder per class), are kept beside the images in ``.labels``
for the classifier behind the ``cfd`` metric (see ``pseudovideo.evaluation.feature_net``). Entry point: :func:`build_dataset`, driven by a spec string:

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

import gzip
import hashlib
import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFile, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASET_NAMES",
    "IMAGE_EXTENSIONS",
    "DEFAULT_ROOT",
    "ImageDataset",
    "TensorImageDataset",
    "LazyImageDataset",
    "build_dataset",
    "parse_dataset_spec",
    "check_dataset_spec",
    "resize_center_crop",
    "list_image_files",
    "read_idx_images",
    "held_out_mask",
    "DEFAULT_HELD_OUT_FRACTION",
]

DATASET_NAMES = ("digits", "cifar10", "mnist", "celeba", "folder")
VALID_SPECS = ("digits", "cifar10[:ROOT]", "mnist[:ROOT]", "celeba[:ROOT]", "folder:PATH")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# What PIL may decode, whatever a file's name: PIL picks the decoder from the content, and some decoders run
# programs (an EPS file is rendered by running Ghostscript), so a file of any other format is a bad file.
DECODED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM")
DEFAULT_ROOT = "data"  # where torchvision datasets live (or are downloaded to) when no root is given

SPLITS = {
    "digits": ("train", "test"),
    "cifar10": ("train", "test"),
    "mnist": ("train", "test"),
    "celeba": ("train", "valid", "test"),
    "folder": ("train", "valid", "test"),
}
DEFAULT_HELD_OUT_FRACTION = 0.1  # share of a split-less folder (or lone MNIST file) held out for evaluation
DIGITS_TRAIN_SIZE = 1500  # of the 1797 bundled digits; the remaining 297 are the test split
DIGITS_SPLITS = {"train": "digits 1-1500 of scikit-learn's 1797", "test": "held-out digits 1501-1797 of scikit-learn's 1797"}

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}
CIFAR10_META = "batches.meta"
MNIST_PREFIX = {"train": "train", "test": "t10k"}
CELEBA_FOLDER = "celeba"
CELEBA_FILES = (
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)

# Truncated files must raise, never decode to half-grey pictures that silently poison training.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# ----------------------------------------------------------------------------------------------
# Dataset classes
# ----------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Base class of all clean-image datasets: items are float32 ``(C, R, R)`` tensors in [-1, 1].

    Attributes: ``name`` (the spec it was built from), ``resolution`` (R), ``channels`` (C, 1 or 3),
    ``random_flip`` (horizontal flip with probability 0.5 per item, drawn from torch's global RNG so
    a seeded training loop stays deterministic), ``bad_files`` (files skipped as unreadable) and
    ``labels`` / ``class_names`` (int64 ``(N,)`` class indices and their names, or None when unlabelled) and
    ``split_description`` (which images form this split, e.g. "held-out 10 % of ... by path hash").
    Subclasses implement ``__len__`` and :meth:`load`.
    """

    def __init__(
        self,
        *,
        name: str,
        resolution: int,
        channels: int,
        random_flip: bool = False,
        bad_files: Sequence[str] = (),
    ) -> None:
        _check_resolution(resolution)
        _check_channels(channels, allow_none=False)
        self.name = name
        self.resolution = resolution
        self.channels = channels
        self.random_flip = bool(random_flip)
        self.bad_files: list[str] = list(bad_files)
        self.labels: Tensor | None = None
        self.class_names: list[str] | None = None
        self.split_description = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Tensor:
        """Item ``index`` without augmentation: float32 ``(C, R, R)`` in [-1, 1]."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Tensor:
        """Item ``index`` as float32 ``(C, R, R)`` in [-1, 1], flipped left-right at random if enabled."""
        image = self.load(index)
        if self.random_flip and torch.rand(()).item() < 0.5:
            image = image.flip(-1)
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, len={len(self)}, resolution={self.resolution}, "
            f"channels={self.channels}, random_flip={self.random_flip})"
        )


class TensorImageDataset(ImageDataset):
    """Images held in memory as one tensor ``images`` of shape ``(N, C0, h, w)``.

    ``images`` is uint8 in [0, 255] or floating in [-1, 1]; optional ``labels`` (N,) index ``class_names``. Items whose size differs from R are
    resized (shorter side) and centre-cropped on access; channels are converted to ``channels``
    (grey -> RGB by repetition, RGB -> grey by ITU-R 601 luma).
    """

    def __init__(
        self,
        images: Tensor,
        *,
        name: str,
        resolution: int,
        channels: int | None = None,
        random_flip: bool = False,
        bad_files: Sequence[str] = (),
        labels: Tensor | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
        super().__init__(
            name=name,
            resolution=resolution,
            channels=images.shape[1] if channels is None else channels,
            random_flip=random_flip,
            bad_files=bad_files,
        )
        self.images = images
        if labels is not None:
            if labels.shape != (images.shape[0],) or class_names is None:
                raise ValueError(f"labels must be (N,) = ({images.shape[0]},) with class_names, got {tuple(labels.shape)}")
            self.labels, self.class_names = labels.long(), list(class_names)

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        """Item ``index`` without augmentation: float32 ``(C, R, R)`` in [-1, 1]."""
        image = self.images[index]  # (C0, h, w)
        if image.shape[-2:] != (self.resolution, self.resolution):
            image = resize_center_crop(image, self.resolution)
        return _convert_channels(_to_signed_unit(image), self.channels)


class LazyImageDataset(ImageDataset):
    """Images decoded on access from a sequence of PIL images (e.g. torchvision's CelebA, 200k files).

    ``source[i]`` returns a PIL image; ``describe(i)`` names item i in error messages.
    """

    def __init__(
        self,
        source: Sequence[Image.Image],
        *,
        name: str,
        resolution: int,
        channels: int,
        random_flip: bool = False,
        describe: Callable[[int], str] | None = None,
    ) -> None:
        super().__init__(name=name, resolution=resolution, channels=channels, random_flip=random_flip)
        self.source = source
        self.describe = describe or (lambda i: f"item {i} of {name}")

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> Tensor:
        """Item ``index`` without augmentation: float32 ``(C, R, R)`` in [-1, 1]."""
        try:
            pil = self.source[index]
            _check_decodable(pil)
            pil.load()
            image = _pil_to_uint8(pil, self.channels)  # (C, h, w)
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"cannot decode image {self.describe(index)}: {err}") from err
        return _to_signed_unit(resize_center_crop(image, self.resolution))


# ----------------------------------------------------------------------------------------------
# Spec parsing and cheap validation
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------


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


def spread_subset(total: int, count: int | None) -> Tensor:
    """Indices of ``count`` items evenly spaced over ``total`` ordered items (all when None).

    Sorted image folders and dataset files are grouped by class, so the first N items would all be
    one class; evenly spaced indices keep every class while staying deterministic.
    """
    if count is None or count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()


def spread_images(dataset: ImageDataset, count: int) -> Tensor:
    """``count`` images evenly spread over ``dataset`` (see :func:`spread_subset`), (N, C, H, W), no random flips."""
    return torch.stack([dataset.load(i) for i in spread_subset(len(dataset), count).tolist()])


def held_out_mask(keys: Sequence[str], fraction: float) -> list[bool]:
    """True for the keys (relative paths, indices) held out for evaluation: ``fraction`` of them, by hash.

    Each key's fate depends on the key alone (the first 8 bytes of its SHA-256 read as a number in
    [0, 1)), so the split is the same on every machine and adding files never moves existing ones.
    """
    _check_fraction(fraction)
    return [int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction for key in keys]


def _check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction must be a number in (0, 1) (e.g. 0.1), got {fraction!r}")


def _hash_part(keys: Sequence[str], split: str, fraction: float, what: str) -> tuple[list[int], str]:
    """Indices of ``keys`` in ``split`` (evaluation splits: the held-out ones; train: the rest) and its description."""
    held = held_out_mask(keys, fraction)
    evaluating = split != "train"
    chosen = [i for i, h in enumerate(held) if h == evaluating]
    share = f"{fraction:.0%}" if evaluating else f"{1 - fraction:.0%}"
    part = "held-out" if evaluating else "training part (not held out)"
    if not chosen:
        raise ValueError(
            f"the {part} {share} of {what} ({len(keys)} images) is empty; change data.held_out_fraction "
            f"(now {fraction}) or give the data its own split sub-folders"
        )
    return chosen, f"{part} {share} of {what} by hash ({len(chosen)} of {len(keys)} images)"


# ----------------------------------------------------------------------------------------------
# Image helpers
# ----------------------------------------------------------------------------------------------


def resize_center_crop(image: Tensor, resolution: int) -> Tensor:
    """Resize ``image`` (..., C, h, w) so its shorter side is ``resolution``, then centre-crop to square.

    Bilinear with antialiasing; keeps dtype (uint8 or float). Returns (..., C, R, R).
    """
    if image.shape[-2:] != (resolution, resolution):
        if min(image.shape[-2:]) != resolution:
            image = TF.resize(image, [resolution], antialias=True)
        image = TF.center_crop(image, [resolution, resolution])
    return image


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


def read_idx_images(path: str | os.PathLike) -> Tensor:
    """Read an IDX image file (MNIST's raw format, optionally gzipped) into uint8 ``(N, H, W)``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err
    if len(data) < 16:
        raise ValueError(f"IDX file {str(path)!r} is too short ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != 3:
        raise ValueError(
            f"IDX file {str(path)!r} is not a uint8 image file (magic {data[:4].hex()}, expected 00000803)"
        )
    n, h, w = struct.unpack(">III", data[4:16])
    if len(data) - 16 != n * h * w:
        raise ValueError(f"IDX file {str(path)!r} is truncated: header says {n}x{h}x{w}, got {len(data) - 16} bytes")
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(n, h, w)  # (N, H, W)


def _to_signed_unit(image: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float32 in [-1, 1]."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(127.5).sub_(1.0)
    return image.to(torch.float32)


def _convert_channels(image: Tensor, channels: int) -> Tensor:
    """(C0, H, W) -> (channels, H, W): grey -> RGB by repetition, RGB -> grey by luma."""
    if image.shape[-3] == channels:
        return image
    if channels == 3:
        return image.expand(3, *image.shape[-2:]).contiguous()  # (3, H, W)
    return TF.rgb_to_grayscale(image, num_output_channels=1)  # (1, H, W)


_GREY_BANDS = {("L",), ("L", "A"), ("1",), ("I",), ("F",), ("La",)}


def _pil_is_grey(img: Image.Image) -> bool:
    return img.getbands() in _GREY_BANDS or img.mode.startswith("I;16")


def _pil_to_uint8(img: Image.Image, channels: int | None) -> Tensor:
    """A loaded PIL image -> uint8 (C, h, w) with C = ``channels`` (None: 1 for grey modes, else 3)."""
    ImageOps.exif_transpose(img, in_place=True)
    if channels is None:
        channels = 1 if _pil_is_grey(img) else 3
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.float64)  # 16-bit grey: map 0..65535 -> 0..255
        if img.mode.startswith("I;16") or arr.max() > 255:
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # mode L
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    return TF.pil_to_tensor(img)  # (C, h, w)


class _BadImage(Exception):
    """A file that could not be decoded; carries the reason."""


def _decode_file(path: Path, resolution: int, channels: int | None) -> Tensor:
    """Fully decode one image file -> uint8 (C, R, R); raises _BadImage on any decoding problem.

    Only regular files are opened: reading a named pipe (or a device) called ``x.png`` would block forever.
    """
    buffer = None
    try:
        mode = os.stat(path).st_mode  # follows symbolic links, opens nothing
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file but a {_file_kind(mode)}")
        data = path.read_bytes()
        buffer = io.BytesIO(data)
        with Image.open(buffer) as img:
            _check_decodable(img)
            img.load()  # a full decode: truncated files raise here
            if img.format == "PNG" and data.rfind(b"IEND") < 0:
                raise OSError("PNG file is truncated (no IEND chunk)")
            image = _pil_to_uint8(img, channels)  # (C, h, w)
    except Exception as err:  # noqa: BLE001 - any decoder failure means a bad file; reported by name
        text = str(err).replace(repr(buffer), repr(str(path))) if buffer is not None else str(err)
        raise _BadImage(f"{type(err).__name__}: {text}") from err
    return resize_center_crop(image, resolution)


def _check_decodable(img: Image.Image) -> None:
    """OSError unless PIL identified ``img`` (opened, not yet decoded) as one of :data:`DECODED_FORMATS`."""
    if img.format not in DECODED_FORMATS:
        raise OSError(f"its content is a {img.format} file, not one of the decoded formats {', '.join(DECODED_FORMATS)}")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _decode_or_error(args: tuple[Path, int, int | None]) -> Tensor | str:
    try:
        return _decode_file(*args)
    except _BadImage as err:
        return str(err)


# ----------------------------------------------------------------------------------------------
# Per-dataset loaders
# ----------------------------------------------------------------------------------------------


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be a positive int >= 4, got {resolution!r}")


def _check_channels(channels: int | None, *, allow_none: bool) -> None:
    if channels is None and allow_none:
        return
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 or 3{' or None' if allow_none else ''}, got {channels!r}")


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; expected one of {SPLITS[name]}")


def _resolve_root(name: str, arg: str | None, root: str | None) -> Path:
    if arg is not None and root is not None and Path(arg) != Path(root):
        raise ValueError(f"dataset spec '{name}:{arg}' names a root that differs from root={root!r}; give only one")
    return Path(arg or root or DEFAULT_ROOT)


def _load_digits(split: str, resolution: int) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits: float32 (N, 1, R, R) in [-1, 1] and labels (N,); train = first 1500, test = rest."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).to(torch.float32)  # (1797, 8, 8), values 0..16
    labels = torch.from_numpy(bunch.target).long()  # (1797,)
    part = slice(None, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    pixels, labels = pixels[part], labels[part]
    images = (pixels / 16.0 * 2.0 - 1.0).unsqueeze(1)  # (N, 1, 8, 8)
    images = torch.nn.functional.interpolate(
        images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False
    )
    return images.clamp_(-1.0, 1.0), labels  # (N, 1, R, R), (N,)


def _cifar10_base(root: Path) -> Path:
    """Accept the root given to torchvision, or the cifar-10-batches-py folder itself."""
    if root.name == CIFAR10_FOLDER and (root / CIFAR10_META).exists():
        return root.parent
    return root


def _check_cifar10_files(root: Path, split: str) -> None:
    base = _cifar10_base(root) / CIFAR10_FOLDER
    missing = [f for f in CIFAR10_FILES[split] + [CIFAR10_META] if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 files not found under root {str(root)!r} (missing {', '.join(missing)}). Expected "
            f"torchvision's layout: {str(root)}/{CIFAR10_FOLDER}/{{data_batch_1..data_batch_5, test_batch, "
            f"batches.meta}}; set data.download=true to fetch it there"
        )


def _load_cifar10(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor, list[str]]:
    """CIFAR-10 via torchvision.datasets.CIFAR10 -> uint8 (N, 3, 32, 32), labels (N,), class names."""
    from torchvision.datasets import CIFAR10

    if not download:
        _check_cifar10_files(root, split)
    base = _cifar10_base(root)
    try:
        ds = CIFAR10(str(base), train=split == "train", download=download)
    except RuntimeError as err:
        raise ValueError(
            f"CIFAR-10 files under {str(base / CIFAR10_FOLDER)!r} failed torchvision's integrity check "
            f"(md5): {err}. Delete them and set data.download=true to fetch a fresh copy"
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return images, torch.as_tensor(ds.targets).long(), list(ds.classes)


def _mnist_torchvision_complete(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all(
        (raw / f"{prefix}-{kind}-ubyte").is_file()
        for prefix in MNIST_PREFIX.values()
        for kind in ("images-idx3", "labels-idx1")
    )


def _find_idx_images(root: Path, split: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw"):
        for suffix in ("", ".gz"):
            path = folder / f"{MNIST_PREFIX[split]}-images-idx3-ubyte{suffix}"
            if path.is_file():
                return path
    return None


def _find_mnist_source(root: Path, split: str) -> tuple[Path | None, bool]:
    """Where ``split`` comes from: (None, False) for torchvision's complete layout, (IDX file, False) when
    both split files are there, (the lone IDX file, True) when only one is (split it by index hash).
    Raises FileNotFoundError if there is no MNIST file at all."""
    if _mnist_torchvision_complete(root):
        return None, False
    other = "test" if split == "train" else "train"
    path, other_path = _find_idx_images(root, split), _find_idx_images(root, other)
    if path is not None:
        return path, other_path is None
    if other_path is not None:
        return other_path, True
    raise FileNotFoundError(
        f"MNIST files not found under root {str(root)!r}. Expected torchvision's layout "
        f"{str(root)}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte, or the raw IDX files "
        f"({MNIST_PREFIX[split]}-images-idx3-ubyte[.gz]) directly in {str(root)!r}; "
        f"set data.download=true to fetch them"
    )


def _load_mnist(
    root: Path, split: str, download: bool, held_out_fraction: float
) -> tuple[Tensor, Tensor | None, list[str] | None, str]:
    """MNIST via torchvision.datasets.MNIST (with labels), or raw IDX (.gz) image files (unlabelled)
    -> (uint8 (N, 1, 28, 28), labels (N,) or None, class names or None, split description).

    With only one split file present (e.g. the test split shipped alone), ``split`` is a deterministic
    part of it: the held-out ``held_out_fraction`` (by index hash) for evaluation, the rest for training.
    """
    from torchvision.datasets import MNIST

    source, hashed = (None, False) if download else _find_mnist_source(root, split)
    if source is None:
        ds = MNIST(str(root), train=split == "train", download=download)
        pixels = ds.data  # (N, 28, 28)
        description = f"MNIST's official {split!r} split"
        return pixels.unsqueeze(1).contiguous(), ds.targets.long(), [str(d) for d in range(10)], description
    pixels = read_idx_images(source)  # (N, 28, 28)
    description = f"MNIST's official {split!r} split ({source.name})"
    if hashed:
        chosen, description = _hash_part([str(i) for i in range(len(pixels))], split, held_out_fraction,
                                          f"MNIST file {source.name} (the only split present; image index)")
        pixels = pixels[torch.tensor(chosen)]
    return pixels.unsqueeze(1).contiguous(), None, None, description  # (N, 1, 28, 28)


def _check_celeba_files(root: Path) -> None:
    base = root / CELEBA_FOLDER
    missing = [f for f in CELEBA_FILES if not (base / f).is_file()]
    if not (base / "img_align_celeba").is_dir():
        missing.insert(0, "img_align_celeba/")
    if missing:
        raise FileNotFoundError(
            f"CelebA files not found under root {str(root)!r} (missing {', '.join(missing)}). Expected "
            f"torchvision's layout: {str(root)}/{CELEBA_FOLDER}/{{img_align_celeba/*.jpg, "
            f"{', '.join(CELEBA_FILES)}}}; set data.download=true to fetch it there (needs gdown)"
        )


class _CelebAImages(Sequence):
    """torchvision CelebA viewed as a sequence of PIL images (targets dropped), restricted to ``indices``."""

    def __init__(self, ds, indices: list[int]) -> None:
        self.ds = ds
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Image.Image:
        return self.ds[self.indices[index]][0]  # IndexError past the end, as a sequence should


def _build_celeba(
    root: Path,
    split: str,
    download: bool,
    *,
    resolution: int,
    channels: int | None,
    random_flip: bool,
    max_images: int | None,
) -> ImageDataset:
    """CelebA via torchvision.datasets.CelebA, decoded lazily (about 200k JPEGs)."""
    from torchvision.datasets import CelebA

    if not download:
        _check_celeba_files(root)
    try:
        ds = CelebA(str(root), split=split, target_type=[], download=download)
    except RuntimeError as err:
        raise ValueError(
            f"CelebA files under {str(root / CELEBA_FOLDER)!r} failed torchvision's integrity check (md5): "
            f"{err}. Delete them and set data.download=true to fetch a fresh copy"
        ) from err
    indices = spread_subset(len(ds), max_images).tolist()  # like every other dataset, not the first N
    folder = root / CELEBA_FOLDER / "img_align_celeba"
    dataset = LazyImageDataset(
        _CelebAImages(ds, indices),
        name="celeba",
        resolution=resolution,
        channels=3 if channels is None else channels,
        random_flip=random_flip,
        describe=lambda i: str(folder / ds.filename[indices[i]]),
    )
    dataset.split_description = f"CelebA's official {split!r} split"
    return dataset


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
