"""Will a run fit in memory? A lower bound of what training needs, checked before anything is allocated.

``data.resolution=100000`` is a valid integer, and the run would fail minutes later allocating terabytes
(or be killed by the kernel). :func:`check_training_memory` refuses it at once with one line. The estimate
is a *lower bound*, so a run that could fit is never refused; it counts:

- ``batch``: one training batch of pseudo videos in float32, 4 x B x T x C x R x R bytes (B the batch of this
  process, T the frames the model sees, C the channels, R = ``data.resolution``);
- ``activations``: the output of the model's first layer and its gradient, at 2 bytes a number (bf16 or fp16
  under mixed precision; float32 needs twice that), 2 x 2 x B x T x W x R x R bytes with W the layer's width
  (``base_channels`` of the VQVAE or UNet, ``dim`` / patch^2 for the C-ViViT's tokens); later layers, not counted,
  add more;
- ``dataset``: images the loader holds decoded at R: the embedded digits (1,500 float32 images; other
  datasets are decoded on access or kept at their own size, not counted here).

The batch and activations are compared with the free memory of the training device (the GPU's free
memory on CUDA, else the machine's available RAM, which also holds the dataset).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
from pathlib import Path

import torch

from pseudovideo.config import ConfigError, RunConfig
from pseudovideo.config.modality import sample_shape
from pseudovideo.data.sources import DIGITS_TRAIN_SIZE

__all__ = ["available_memory", "check_training_memory", "estimate_training_memory"]

FLOAT_BYTES = 4  # float32: the pseudo videos, the digits
HALF_BYTES = 2  # the least an activation takes (bf16 / fp16 under mixed precision)
_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "celeba": 3}


def _first_layer_width(config: RunConfig) -> float:
    """Numbers per pixel of the model's first layer output (0 when unknown, e.g. a python: base)."""
    model = config.model
    family = model.lifted.base if model.family == "lifted" else model.family
    if family == "vqvae":
        return model.vqvae.base_channels
    if family in ("unet", "video_unet"):
        return model.unet.base_channels
    if family == "cvivit":
        return model.cvivit.dim / model.cvivit.patch_size**2  # one dim-vector per patch of p x p pixels
    return 0.0


def estimate_training_memory(config: RunConfig, channels: int | None = None) -> dict[str, int]:
    """Lower bounds in bytes of what a training step of ``config`` holds: ``batch``, ``activations``, ``dataset``
    (see the module docstring for what each counts)."""
    name = config.data.dataset.partition(":")[0].strip().lower()
    channels = channels or config.data.channels or _CHANNELS.get(name, 1)
    pixels = math.prod(sample_shape(config.data))  # R x R pixels, or L samples of a signal
    world_size = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    batch = math.ceil(config.train.batch_size / world_size)
    frames = config.pseudo_video.num_frames  # frames_as_images: T one-frame samples per image, the same count
    return {
        "batch": batch * frames * channels * pixels * FLOAT_BYTES,
        "activations": int(2 * batch * frames * _first_layer_width(config) * pixels * HALF_BYTES),
        "dataset": DIGITS_TRAIN_SIZE * pixels * FLOAT_BYTES if name == "digits" else 0,
    }


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: the GPU's free memory, or the machine's available RAM (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if num_bytes < 1000 or unit == "PB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")


def check_training_memory(config: RunConfig, device: torch.device, channels: int | None = None) -> None:
    """ConfigError (one line) when the lower bound of :func:`estimate_training_memory` exceeds the free memory."""
    parts = estimate_training_memory(config, channels)
    on_device = parts["batch"] + parts["activations"]
    needs = [(on_device + parts["dataset"], torch.device("cpu"))] if device.type != "cuda" else [
        (on_device, device), (parts["dataset"], torch.device("cpu"))]
    for need, where in needs:
        free = available_memory(where)
        if free is None or need <= free:
            continue
        counted = ", ".join(f"{name} {_size(size)}" for name, size in parts.items() if size)
        raise ConfigError(
            f"data.resolution={config.data.resolution} with train.batch_size={config.train.batch_size} and "
            f"{config.pseudo_video.num_frames} frame(s) needs at least {_size(need)} of {where.type} memory ({counted}; "
            f"see pseudovideo.training.memory), but {_size(free)} is free: lower data.resolution or train.batch_size"
        )


def reset_peak_memory(device: torch.device) -> None:
    """Starts a fresh peak-memory window, so that runs sharing one process each get their own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing "5" to clear_refs resets the process's RSS high-water mark (VmHWM).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory in bytes since :func:`reset_peak_memory`: the CUDA allocator's peak, or the process RSS peak on
    CPU (Linux VmHWM; elsewhere the process lifetime peak)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    # Elsewhere, the lifetime peak of the process (an upper bound when runs share a process).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
