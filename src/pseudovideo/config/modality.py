"""The modality of a run, read from its data: images (2 spatial dimensions) or 1-D signals.

The one place that decides it: ``data.dataset`` names images (``digits``, ``cifar10``, ``folder:PATH``, ...) or
signals (``sktime:NAME``, ``series:PATH``; :mod:`pseudovideo.data.signals`). Everything that depends on it (the
model factory, evaluation's sample shape and metrics, pictures, the memory check) asks this module instead of
testing for 1-D itself. Torch-free, so that config validation stays cheap.

- images: samples (C, R, R) with R = ``data.resolution``;
- signals: samples (C, L) with L = ``data.length`` (required: resampling is never silent), optionally cut into
  windows of ``data.window`` samples every ``data.stride`` first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "IMAGE_ONLY_METRICS",
    "SIGNAL_KINDS",
    "is_signal_spec",
    "modality_name",
    "sample_protocol",
    "sample_shape",
    "sample_size",
    "spatial_dims",
    "unsupported_metric_reason",
    "validate_modality",
]

SIGNAL_KINDS = ("sktime", "series")  # dataset spec prefixes of 1-D signals (pseudovideo.data.signals)
#: evaluation metrics defined on images only (2-D windows, pyramids, Inception or LPIPS networks)
IMAGE_ONLY_METRICS = ("psnr", "ssim", "swd", "lpips", "fid", "kid")
_DATA_DEFAULTS = {"resolution": 16, "random_flip": False, "root": None, "download": False, "skip_bad_files": False}


def is_signal_spec(dataset: str) -> bool:
    """Whether a ``data.dataset`` spec names 1-D signals (``sktime:NAME``, ``series:PATH``)."""
    return isinstance(dataset, str) and dataset.strip().partition(":")[0].strip().lower() in SIGNAL_KINDS


def spatial_dims(data: Any) -> int:
    """Spatial dimensions of the samples of a data section (or a dataset spec): 1 for signals, 2 for images."""
    return 1 if is_signal_spec(getattr(data, "dataset", data)) else 2


def modality_name(data: Any) -> str:
    """``"signals"`` or ``"images"``: the word for a data section's samples in messages and protocols."""
    return "signals" if spatial_dims(data) == 1 else "images"


def sample_size(data: Any) -> int:
    """The size a model is built for: the image side ``data.resolution`` or the signal length ``data.length``."""
    return int(data.length) if spatial_dims(data) == 1 else int(data.resolution)


def sample_shape(data: Any) -> tuple[int, ...]:
    """Spatial shape of one sample: (R, R) for images, (L,) for signals."""
    size = sample_size(data)
    return (size,) * spatial_dims(data)


def sample_protocol(data: Any) -> dict[str, int]:
    """The sample size as evaluation protocols record it: ``{"resolution": R}`` or ``{"length": L}``."""
    return {"length" if spatial_dims(data) == 1 else "resolution": sample_size(data)}


def unsupported_metric_reason(data: Any, metric: str) -> str | None:
    """Why ``metric`` is not computed on this data's samples (None when it is defined for them)."""
    if spatial_dims(data) == 1 and metric in IMAGE_ONLY_METRICS:
        return (f"{metric} is an image metric; this run's data are 1-D signals ({data.dataset}): use mse, snr, cfd "
                "and probe (eval.metrics)")
    return None


def validate_modality(data: Any, config: Any) -> list[str]:
    """Problems (one line each, naming the key) of a run config's settings for its data's modality."""
    signal_keys = {"length": data.length, "window": data.window, "stride": data.stride}
    if spatial_dims(data) == 2:
        return [f"data.{key}={value} applies to 1-D signals (sktime:NAME, series:PATH), not to images "
                f"({data.dataset}); remove it" for key, value in signal_keys.items() if value is not None]
    problems = []
    if data.length is None:
        problems.append(f"data.length: required for signal datasets ({data.dataset}): the length every series (or "
                        "window) is given, resampled when it differs; set it to the series' own length to keep them")
    for key, value in signal_keys.items():
        if value is not None and value < 4:
            problems.append(f"data.{key}: expected an integer >= 4 or null, got {value}")
    if data.stride is not None and data.window is None:
        problems.append("data.stride needs data.window (the windows it spaces)")
    for key, default in _DATA_DEFAULTS.items():
        if getattr(data, key) != default:
            problems.append(f"data.{key}={getattr(data, key)} applies to images; signal datasets ({data.dataset}) "
                            f"use data.length / data.window / data.stride; leave it at its default {default}")
    if data.channels is not None and data.channels < 1:
        problems.append(f"data.channels: expected >= 1 or null, got {data.channels}")
    family = config.model.family
    if family == "cvivit":
        problems.append("model.family=cvivit is an image tokenizer (tubelets of 2-D patches); for signals use vqvae, "
                        "lifted (base vqvae), unet or video_unet")
    loss = config.loss
    if loss.perceptual_weight > 0:
        problems.append(f"loss.perceptual_weight={loss.perceptual_weight}: LPIPS is an image loss; set it to 0 for signals")
    if loss.gan_weight > 0:
        problems.append(f"loss.gan_weight={loss.gan_weight}: the patch-GAN discriminator is 2-D; set it to 0 for signals")
    pv = config.pseudo_video
    learned = dataclasses.asdict(pv.learned)
    if pv.mixture is not None or learned["objective"] != "none" or learned["from_file"]:
        problems.append("pseudo_video.mixture / pseudo_video.learned: learned and mixed corruptions are for images; "
                        "signals use the configured corruptions (objective none, no mixture)")
    return problems
