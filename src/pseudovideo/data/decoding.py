"""Image files and arrays to tensors: safe decoding (the formats PIL may open, truncated files refused), channel
conversion, resizing with a centre crop, and MNIST's IDX files."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFile, ImageOps
from torch import Tensor


# Truncated files must raise, never decode to half-grey pictures that silently poison training.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# What PIL may decode, whatever a file's name: PIL picks the decoder from the content, and some decoders run
# programs (an EPS file is rendered by running Ghostscript), so a file of any other format is a bad file.
DECODED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM")


def resize_center_crop(image: Tensor, resolution: int) -> Tensor:
    """Resize ``image`` (..., C, h, w) so its shorter side is ``resolution``, then centre-crop to square.

    Bilinear with antialiasing; keeps dtype (uint8 or float). Returns (..., C, R, R).
    """
    if image.shape[-2:] != (resolution, resolution):
        if min(image.shape[-2:]) != resolution:
            image = TF.resize(image, [resolution], antialias=True)
        image = TF.center_crop(image, [resolution, resolution])
    return image


def _read_idx_bytes(path: Path) -> bytes:
    """The whole content of an IDX file, gunzipped when its name ends in .gz; ValueError when unreadable."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err


def read_idx_images(path: str | os.PathLike) -> Tensor:
    """Read an IDX image file (MNIST's raw format, optionally gzipped) into uint8 ``(N, H, W)``."""
    path = Path(path)
    data = _read_idx_bytes(path)
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


def read_idx_labels(path: str | os.PathLike) -> Tensor:
    """Read an IDX label file (MNIST's raw format, optionally gzipped) into int64 ``(N,)``."""
    path = Path(path)
    data = _read_idx_bytes(path)
    if len(data) < 8 or data[:4] != bytes([0, 0, 8, 1]):
        raise ValueError(f"IDX file {str(path)!r} is not a uint8 label file (magic {data[:4].hex()}, expected 00000801)")
    (n,) = struct.unpack(">I", data[4:8])
    if len(data) - 8 != n:
        raise ValueError(f"IDX file {str(path)!r} is truncated: header says {n} labels, got {len(data) - 8} bytes")
    return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).long()  # (N,)


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
