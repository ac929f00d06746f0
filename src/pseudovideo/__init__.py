"""pseudovideo: train video counterparts of image generative models on pseudo videos.

A pseudo video is a short clip built by progressively corrupting an image (blur, noise, ...);
its last frame is the clean image. The public Python API is importable from here, e.g.::

    from pseudovideo import build_pseudo_video_builder, CViViT, load_config, train_run, load_run

Names are imported lazily on first use, so ``import pseudovideo`` (and the CLI's start-up) stays
cheap. See docs/api.md for examples and README.md for the command-line tool.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (or (module, name there) for a renamed export)
_EXPORTS: dict[str, str | tuple[str, str]] = {
    # pseudo videos
    "PseudoVideoBuilder": "pseudovideo.pseudo_video",
    "build_pseudo_video_builder": "pseudovideo.pseudo_video",
    "Corruption": "pseudovideo.corruptions",
    "GaussianBlur": "pseudovideo.corruptions",
    "GaussianNoise": "pseudovideo.corruptions",
    "Downsample": "pseudovideo.corruptions",
    "PatchMask": "pseudovideo.corruptions",
    "Compose": "pseudovideo.corruptions",
    "build_corruption": "pseudovideo.corruptions",
    "level_schedule": "pseudovideo.schedules",
    # learned corruptions and how informative a pseudo video is
    "LearnedPseudoVideos": "pseudovideo.learned_corruptions",
    "save_learned": "pseudovideo.learned_corruptions",
    "load_learned": "pseudovideo.learned_corruptions",
    "search_corruption": "pseudovideo.corruption_search",
    "measure_informativeness": "pseudovideo.informativeness",
    "ridge_gain": "pseudovideo.informativeness",
    # lifting any image model to its video counterpart
    "lift": "pseudovideo.lifting",
    "LiftError": "pseudovideo.lifting",
    # models
    "VideoTokenizer": "pseudovideo.models.tokenizer",
    "TokenizerOutput": "pseudovideo.models.tokenizer",
    "VQVAE": "pseudovideo.models.vqvae",
    "CViViT": "pseudovideo.models.cvivit",
    "UNet": "pseudovideo.models.unet",
    "image_unet": "pseudovideo.models.unet",
    "video_unet": "pseudovideo.models.unet",
    "GaussianDiffusion": "pseudovideo.diffusion",
    "beta_schedule": "pseudovideo.diffusion",
    # config
    "RunConfig": "pseudovideo.config",
    "ConfigError": "pseudovideo.config",
    "build_config": "pseudovideo.config",
    "config_to_dict": "pseudovideo.config",
    "load_config": "pseudovideo.config",
    "save_config": "pseudovideo.config",
    "UntrustedCodeError": "pseudovideo.trust",
    # data
    "ImageDataset": "pseudovideo.data",
    "TensorImageDataset": "pseudovideo.data",
    "build_dataset": "pseudovideo.data",
    # training, runs, evaluation
    "pseudo_video_builder_from_config": ("pseudovideo.tasks", "build_pseudo_video_builder"),
    "build_model": "pseudovideo.tasks",
    "build_diffusion": "pseudovideo.tasks",
    "build_task": "pseudovideo.tasks",
    "train": "pseudovideo.training",
    "TrainResult": "pseudovideo.training",
    "train_run": "pseudovideo.runs",
    "load_run": "pseudovideo.runs",
    "load_run_config": "pseudovideo.runs",
    "evaluate_run": "pseudovideo.evaluation",
    # metrics on your own tensors (N, C, H, W) in [-1, 1]
    "psnr": "pseudovideo.metrics",
    "ssim": "pseudovideo.metrics",
    "sliced_wasserstein_distance": "pseudovideo.metrics",
    "InceptionFeatureStats": "pseudovideo.metrics",
    "build_inception": "pseudovideo.metrics",
    "resolve_inception_weights": "pseudovideo.metrics",
    "inception_features": "pseudovideo.metrics",
    "frechet_distance": "pseudovideo.metrics",
    "fid_kid": "pseudovideo.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Imports a public name from its module on first access (PEP 562)."""
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'pseudovideo' has no attribute {name!r}")
    module, attribute = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from pseudovideo.config import ConfigError, RunConfig, build_config, config_to_dict, load_config, save_config
    from pseudovideo.corruptions import (
        Compose, Corruption, Downsample, GaussianBlur, GaussianNoise, PatchMask, build_corruption,
    )
    from pseudovideo.data import ImageDataset, TensorImageDataset, build_dataset
    from pseudovideo.diffusion import GaussianDiffusion, beta_schedule
    from pseudovideo.corruption_search import search_corruption
    from pseudovideo.evaluation import evaluate_run
    from pseudovideo.informativeness import measure_informativeness, ridge_gain
    from pseudovideo.learned_corruptions import LearnedPseudoVideos, load_learned, save_learned
    from pseudovideo.metrics import (
        InceptionFeatureStats, build_inception, fid_kid, frechet_distance, inception_features, psnr, resolve_inception_weights,
        sliced_wasserstein_distance, ssim,
    )
    from pseudovideo.models.cvivit import CViViT
    from pseudovideo.models.tokenizer import TokenizerOutput, VideoTokenizer
    from pseudovideo.models.unet import UNet, image_unet, video_unet
    from pseudovideo.models.vqvae import VQVAE
    from pseudovideo.pseudo_video import PseudoVideoBuilder, build_pseudo_video_builder
    from pseudovideo.runs import load_run, load_run_config, train_run
    from pseudovideo.schedules import level_schedule
    from pseudovideo.tasks import build_diffusion, build_model, build_task
    from pseudovideo.tasks import build_pseudo_video_builder as pseudo_video_builder_from_config
    from pseudovideo.training import TrainResult, train
    from pseudovideo.trust import UntrustedCodeError
