"""A run's network: built from its config (every ``model.family``, a lifted one from any base), or loaded back
trained from its run folder, or exported from it.

This is the one place where the ``model`` config section meets the model constructors (the model code knows
nothing of configs). ``model.family: lifted`` lifts the image network named by ``model.lifted.base``:

- ``unet`` / ``vqvae``: our image UNet / VQVAE, built from ``model.unet`` / ``model.vqvae`` (fresh weights);
- ``run:RUN_DIR``: the image model of a trained run of ours (its EMA weights when it has them, read by
  :func:`load_run`); a lifted run without temporal layers (``temporal: none``) gives its image network back;
- ``diffusers:PATH`` and ``python:package.module:factory``: networks of other libraries, loaded by
  :mod:`pseudovideo.interop.bases` (a ``python:`` base only with ``trust_code=True``, see
  :mod:`pseudovideo.interop.trust`).

A ``run:`` base is a run built by this module, so building, loading and lifting live together here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pseudovideo.config import ConfigError, RunConfig, model_kind
from pseudovideo.config.modality import sample_size, spatial_dims
from pseudovideo.diffusion.betas import beta_schedule
from pseudovideo.diffusion.process import GaussianDiffusion
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.run_folder import load_run_config, load_trained_model
from pseudovideo.interop.bases import check_base, load_external_base
from pseudovideo.interop.export import check_export_folder, export_model
from pseudovideo.interop.trust import check_trusted
from pseudovideo.models.cvivit import CViViT
from pseudovideo.models.lift import LiftedNet, LiftedTokenizer, LiftError, lift
from pseudovideo.models.unet import image_unet, video_unet
from pseudovideo.models.vqvae import VQVAE
from pseudovideo.models.vqvae1d import SignalVQVAE

__all__ = [
    "DIFFUSION_FAMILIES",
    "TOKENIZER_FAMILIES",
    "build_base",
    "build_diffusion",
    "build_lifted_model",
    "build_model",
    "export_run",
    "is_tokenizer",
    "load_run",
    "model_frames",
    "num_levels",
]


TOKENIZER_FAMILIES = ("vqvae", "cvivit")
DIFFUSION_FAMILIES = ("unet", "video_unet")  # and model.family lifted, by its base: see is_tokenizer


def is_tokenizer(config: RunConfig) -> bool:
    """Whether the run trains a tokenizer (vqvae, cvivit, a lifted tokenizer) rather than a diffusion model."""
    return model_kind(config.model) == "tokenizer"


def model_frames(config: RunConfig) -> int:
    """Frames per sample the model sees: T, or 1 when pseudo-video frames are used as separate images."""
    return 1 if config.pseudo_video.frames_as_images else config.pseudo_video.num_frames


def build_model(config: RunConfig, channels: int, *, trust_code: bool = False) -> nn.Module:
    """The network of ``model.family`` for images with ``channels`` channels at ``data.resolution``, or for signals
    at ``data.length``: the data's modality (:mod:`pseudovideo.config.modality`) picks the 2-D or the 1-D network.

    A ``model.lifted.base: python:...`` base imports and calls user code: only with ``trust_code=True``, else
    :class:`~pseudovideo.interop.trust.UntrustedCodeError` before anything is imported (see :mod:`pseudovideo.interop.trust`).
    """
    family, resolution, dims = config.model.family, sample_size(config.data), spatial_dims(config.data)
    if family == "lifted":
        return build_lifted_model(config, channels, model_frames(config), trust_code=trust_code)
    if family == "vqvae" and dims == 1:
        return SignalVQVAE(in_channels=channels, length=resolution, **_kwargs(config.model.vqvae))
    if family == "vqvae":
        return VQVAE(in_channels=channels, resolution=resolution, **_kwargs(config.model.vqvae))
    if family == "cvivit":
        return CViViT(in_channels=channels, resolution=resolution, **_kwargs(config.model.cvivit))
    unet = _kwargs(config.model.unet)
    del unet["level_conditioning"]
    if family == "unet":
        for key in ("causal_temporal", "frame_position", "temporal_layers", "temporal_mixer"):
            del unet[key]  # options of the temporal layers it does not have
        return image_unet(in_channels=channels, resolution=resolution, num_levels=num_levels(config), spatial_dims=dims, **unet)
    return video_unet(in_channels=channels, resolution=resolution, spatial_dims=dims, **unet)


def num_levels(config: RunConfig) -> int:
    """Levels an image UNet is conditioned on: T when it trains on every frame as an image (and
    ``model.unet.level_conditioning``), else 0 (unconditional)."""
    pv = config.pseudo_video
    conditioned = config.model.family == "unet" and pv.frames_as_images and config.model.unet.level_conditioning
    return pv.num_frames if conditioned else 0


def _kwargs(section: Any) -> dict[str, Any]:
    """A model config section as constructor keyword arguments (lists become tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dataclasses.asdict(section).items()}


def build_diffusion(config: RunConfig) -> GaussianDiffusion:
    """The Gaussian diffusion process of the ``diffusion`` config section."""
    d = config.diffusion
    return GaussianDiffusion(beta_schedule(d.beta_schedule, d.num_timesteps), prediction=d.prediction)


def _from_run(run_dir: str, channels: int, trust_code: bool) -> nn.Module:
    """The image model of the trained run ``run_dir`` (a ``run:`` base), in training mode."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise ConfigError(f"model.lifted.base=run:{run_dir}: no run there (no config.yaml); train it first")
    config, model, run_channels = load_run(run_dir, use_ema=True, trust_code=trust_code)
    if run_channels != channels:
        raise ConfigError(f"model.lifted.base=run:{run_dir} was trained on {run_channels}-channel images, this run has {channels}")
    if isinstance(model, (LiftedNet, LiftedTokenizer)):
        if model.lifted_blocks:
            raise ConfigError(f"model.lifted.base=run:{run_dir} is already a lifted video model ({len(model.lifted_blocks)} "
                              "temporal layers); lift its image model (a run with model.lifted.temporal: none) instead")
        model = model.unlift()
    if config.model.family in ("video_unet", "cvivit"):
        raise ConfigError(f"model.lifted.base=run:{run_dir} is a {config.model.family} run, a video model; "
                          "lifting needs an image model (unet, vqvae or a lifted run with temporal: none)")
    return model.train()


def build_base(config: RunConfig, channels: int, *, trust_code: bool = False) -> nn.Module:
    """The image network named by ``model.lifted.base`` (see the module docstring); a ``python:`` base (or a
    ``run:`` base built from one) only with ``trust_code=True``, else UntrustedCodeError before any import."""
    base = config.model.lifted.base
    if base in ("unet", "vqvae"):
        return build_model(dataclasses.replace(config, model=dataclasses.replace(config.model, family=base)), channels)
    if not base.startswith("run:"):
        return load_external_base(config, channels, trust_code=trust_code)  # diffusers: or python:
    net = _from_run(base.split(":", 1)[1], channels, trust_code)
    check_base(net, config, channels)
    return net


def build_lifted_model(
    config: RunConfig, channels: int, num_frames: int, *, trust_code: bool = False
) -> LiftedNet | LiftedTokenizer:
    """The base of ``model.lifted`` lifted to ``num_frames`` frames; ConfigError naming the key when it cannot be
    (``trust_code``: see :func:`build_base`)."""
    lifted = config.model.lifted
    net = build_base(config, channels, trust_code=trust_code)
    try:
        return lift(net, num_frames, where=lifted.where, causal=lifted.causal, temporal=lifted.temporal,
                    num_heads=lifted.num_heads)
    except LiftError as err:
        raise ConfigError(f"model.lifted.where (base {lifted.base}): {err}") from None


def load_run(
    run_dir: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu", checkpoint: Any = None,
    trust_code: bool = False,
) -> tuple[RunConfig, nn.Module, int]:
    """(config, trained model in eval mode on ``device``, image channels) of a finished or running run.

    A run folder is data: when its ``config.yaml`` names a ``python:`` model base (directly or through a
    ``run:`` base), the code is imported and run only with ``trust_code=True``, else UntrustedCodeError names it
    before anything is imported or read.
    """
    config = load_run_config(run_dir)
    check_trusted(config, trust_code=trust_code, source=str(Path(run_dir) / "config.yaml"))
    channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    model = build_model(config, channels, trust_code=trust_code).to(device)
    load_trained_model(run_dir, model, use_ema=use_ema, checkpoint=checkpoint)
    return config, model, channels


def export_run(
    run_dir: str | Path, out: str | Path, *, use_ema: bool = True, drop_temporal: bool = False, overwrite: bool = False,
    trust_code: bool = False,
) -> Path:
    """Writes the image denoiser of a diffusion run as a diffusers folder ``out``; returns it
    (:mod:`pseudovideo.interop.export` says what can be exported).

    ``out`` must be new or empty unless ``overwrite``, which replaces only the files the export writes
    (``config.json``, the weights, ``scheduler/scheduler_config.json``): the export never deletes a file.
    ``trust_code``: see :func:`load_run`.
    """
    out = Path(out)
    check_export_folder(out, overwrite)
    config, model, _ = load_run(run_dir, use_ema=use_ema, trust_code=trust_code)
    return export_model(model, config, out, drop_temporal=drop_temporal, source=str(run_dir))
