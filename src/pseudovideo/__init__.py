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

from pseudovideo._version import __version__

# public name -> module that defines it (or (module, name there) for a renamed export)
_EXPORTS: dict[str, str | tuple[str, str]] = {
    # pseudo videos
    "PseudoVideoBuilder": "pseudovideo.pseudo_video.builder",
    "build_pseudo_video_builder": "pseudovideo.pseudo_video.builder",
    "Corruption": "pseudovideo.pseudo_video.corruptions",
    "GaussianBlur": "pseudovideo.pseudo_video.corruptions",
    "GaussianNoise": "pseudovideo.pseudo_video.corruptions",
    "Downsample": "pseudovideo.pseudo_video.corruptions",
    "PatchMask": "pseudovideo.pseudo_video.corruptions",
    "Compose": "pseudovideo.pseudo_video.corruptions",
    "build_corruption": "pseudovideo.pseudo_video.corruptions",
    "level_schedule": "pseudovideo.pseudo_video.schedules",
    # learned corruptions and how informative a pseudo video is
    "LearnedPseudoVideos": "pseudovideo.pseudo_video.learned.corruption",
    "save_learned": "pseudovideo.pseudo_video.learned.corruption",
    "load_learned": "pseudovideo.pseudo_video.learned.corruption",
    "search_corruption": "pseudovideo.training.corruption_search",
    "measure_informativeness": "pseudovideo.pseudo_video.informativeness",
    "ridge_gain": "pseudovideo.pseudo_video.informativeness",
    # lifting any image model to its video counterpart
    "lift": "pseudovideo.models.lift",
    "LiftError": "pseudovideo.models.lift",
    # models
    "VideoTokenizer": "pseudovideo.models.tokenizer",
    "TokenizerOutput": "pseudovideo.models.tokenizer",
    "VQVAE": "pseudovideo.models.vqvae",
    "CViViT": "pseudovideo.models.cvivit",
    "UNet": "pseudovideo.models.unet",
    "image_unet": "pseudovideo.models.unet",
    "video_unet": "pseudovideo.models.unet",
    "GaussianDiffusion": "pseudovideo.diffusion.process",
    "beta_schedule": "pseudovideo.diffusion.betas",
    # config
    "RunConfig": "pseudovideo.config",
    "ConfigError": "pseudovideo.config",
    "build_config": "pseudovideo.config",
    "config_to_dict": "pseudovideo.config",
    "load_config": "pseudovideo.config",
    "save_config": "pseudovideo.config",
    "UntrustedCodeError": "pseudovideo.interop.trust",
    # data
    "ImageDataset": "pseudovideo.data.datasets",
    "TensorImageDataset": "pseudovideo.data.datasets",
    "build_dataset": "pseudovideo.data.images",
    # training, runs, evaluation
    "pseudo_video_builder_from_config": ("pseudovideo.factory.pseudo_videos", "build_pseudo_video_builder"),
    "build_model": "pseudovideo.factory.models",
    "build_diffusion": "pseudovideo.factory.models",
    "build_task": "pseudovideo.training.tasks",
    "train": "pseudovideo.training.engine",
    "TrainResult": "pseudovideo.training.result",
    "train_run": "pseudovideo.training.runs",
    "load_run": "pseudovideo.factory.models",
    "load_run_config": "pseudovideo.factory.run_folder",
    "evaluate_run": "pseudovideo.evaluation.evaluate",
    # metrics on your own tensors (N, C, H, W) in [-1, 1]
    "psnr": "pseudovideo.metrics.image",
    "ssim": "pseudovideo.metrics.image",
    "sliced_wasserstein_distance": "pseudovideo.metrics.image",
    "InceptionFeatureStats": "pseudovideo.metrics.inception",
    "build_inception": "pseudovideo.metrics.inception",
    "resolve_inception_weights": "pseudovideo.metrics.inception",
    "inception_features": "pseudovideo.metrics.inception",
    "frechet_distance": "pseudovideo.metrics.inception",
    "fid_kid": "pseudovideo.metrics.inception",
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
    from pseudovideo.pseudo_video.corruptions import (
        Compose, Corruption, Downsample, GaussianBlur, GaussianNoise, PatchMask, build_corruption,
    )
    from pseudovideo.data.datasets import ImageDataset, TensorImageDataset
    from pseudovideo.data.images import build_dataset
    from pseudovideo.diffusion.process import GaussianDiffusion
    from pseudovideo.diffusion.betas import beta_schedule
    from pseudovideo.training.corruption_search import search_corruption
    from pseudovideo.evaluation.evaluate import evaluate_run
    from pseudovideo.pseudo_video.informativeness import measure_informativeness, ridge_gain
    from pseudovideo.pseudo_video.learned.corruption import LearnedPseudoVideos, load_learned, save_learned
    from pseudovideo.metrics import (
        InceptionFeatureStats, build_inception, fid_kid, frechet_distance, inception_features, psnr, resolve_inception_weights,
        sliced_wasserstein_distance, ssim,
    )
    from pseudovideo.models.cvivit import CViViT
    from pseudovideo.models.tokenizer import TokenizerOutput, VideoTokenizer
    from pseudovideo.models.unet import UNet, image_unet, video_unet
    from pseudovideo.models.vqvae import VQVAE
    from pseudovideo.pseudo_video.builder import PseudoVideoBuilder, build_pseudo_video_builder
    from pseudovideo.factory.models import load_run
    from pseudovideo.factory.run_folder import load_run_config
    from pseudovideo.training.runs import train_run
    from pseudovideo.pseudo_video.schedules import level_schedule
    from pseudovideo.factory.models import build_diffusion, build_model
    from pseudovideo.training.tasks import build_task
    from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder as pseudo_video_builder_from_config
    from pseudovideo.training.result import TrainResult
    from pseudovideo.training.engine import train
    from pseudovideo.interop.trust import UntrustedCodeError
