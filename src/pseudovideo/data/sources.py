"""The named datasets: scikit-learn's embedded digits and torchvision's CIFAR-10, MNIST and CelebA, read in
torchvision's layout (or downloaded into it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pseudovideo.data.datasets import ImageDataset, LazyImageDataset, spread_subset
from pseudovideo.data.decoding import read_idx_images, read_idx_labels
from pseudovideo.data.splits import _hash_part

DEFAULT_ROOT = "data"  # where torchvision datasets live (or are downloaded to) when no root is given


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
    """MNIST via torchvision.datasets.MNIST (with labels), or raw IDX (.gz) image files (labelled when the label
    file lies beside them) -> (uint8 (N, 1, 28, 28), labels (N,) or None, class names or None, split description).

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
    label_file = _idx_labels_beside(source)
    labels = read_idx_labels(label_file) if label_file is not None else None
    if labels is not None and labels.shape[0] != pixels.shape[0]:
        raise ValueError(f"IDX label file {str(label_file)!r} holds {labels.shape[0]} labels for {pixels.shape[0]} images")
    description = f"MNIST's official {split!r} split ({source.name})"
    if hashed:
        chosen, description = _hash_part([str(i) for i in range(len(pixels))], split, held_out_fraction,
                                          f"MNIST file {source.name} (the only split present; image index)")
        pixels = pixels[torch.tensor(chosen)]
        labels = None if labels is None else labels[torch.tensor(chosen)]
    classes = None if labels is None else [str(d) for d in range(10)]
    return pixels.unsqueeze(1).contiguous(), labels, classes, description  # (N, 1, 28, 28), (N,)


def _idx_labels_beside(images_file: Path) -> Path | None:
    """The IDX label file beside an IDX image file (``t10k-images-idx3-ubyte.gz`` -> ``t10k-labels-idx1-ubyte[.gz]``)."""
    stem = images_file.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte").removesuffix(".gz")
    return next((p for p in (images_file.parent / stem, images_file.parent / f"{stem}.gz") if p.is_file()), None)


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
