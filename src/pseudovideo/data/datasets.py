"""The dataset classes every loader returns: clean images (C, R, R) in [-1, 1] held in memory or decoded on access,
with their labels and split description, and evenly spread subsets of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pseudovideo.data.decoding import _check_decodable, _convert_channels, _pil_to_uint8, _to_signed_unit, resize_center_crop

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


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be a positive int >= 4, got {resolution!r}")


def _check_channels(channels: int | None, *, allow_none: bool) -> None:
    if channels is None and allow_none:
        return
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 or 3{' or None' if allow_none else ''}, got {channels!r}")
