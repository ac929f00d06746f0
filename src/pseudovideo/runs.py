"""One run from a config to a run folder, and back: train it, load it for evaluation or sampling.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/``, ``log.csv``, ``tb/``,
``pictures/``, ``train_summary.json`` and, after evaluation, ``eval.json`` / ``eval.md``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pseudovideo.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    load_config,
    save_config,
)
from pseudovideo.data import check_dataset_spec
from pseudovideo.distributed import init_distributed, teardown
from pseudovideo.tasks import build_dataset_from_config, build_model, build_task
from pseudovideo.training import TrainResult, load_trained_model, train


def check_run_inputs(config: RunConfig) -> None:
    """Cheap checks of everything a run reads (dataset names and paths) before any long work."""
    data = config.data
    check_dataset_spec(data.dataset, data.root, data.train_split, download=data.download)


def train_run(config: RunConfig, *, resume: bool = False) -> TrainResult:
    """Trains the run described by ``config`` into ``config.run_dir`` (resuming it exactly if asked)."""
    check_run_inputs(config)
    run_dir = config.run_dir
    if resume and (run_dir / "config.yaml").is_file():
        saved = load_config(run_dir / "config.yaml")
        if config_to_dict(saved)["model"] != config_to_dict(config)["model"]:
            raise ConfigError(f"cannot resume {run_dir}: its saved model config differs from the one given")
    # Join the torchrun process group before building the model: the VQ codebooks enable their
    # cross-rank synchronisation only when the group already exists.
    ctx = init_distributed(config.train.device)
    try:
        dataset = build_dataset_from_config(config, split=config.data.train_split)
        # Resolve the channel count so that evaluation can rebuild the model without reading the data.
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, channels=dataset.channels))
        task = build_task(config, channels=dataset.channels)
        result = train(task, dataset, config.train, run_dir, config_dict=config_to_dict(config), resume=resume)
        if ctx.is_main:
            save_config(config, run_dir / "config.yaml")
    finally:
        teardown(ctx)
    return result


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run folder (FileNotFoundError naming the folder when absent)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml (train a run there first)")
    return load_config(path)


def load_run(
    run_dir: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu", checkpoint: Any = None
) -> tuple[RunConfig, nn.Module, int]:
    """(config, trained model in eval mode on ``device``, image channels) of a finished or running run."""
    config = load_run_config(run_dir)
    channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    model = build_model(config, channels).to(device)
    load_trained_model(run_dir, model, use_ema=use_ema, checkpoint=checkpoint)
    return config, model, channels


def read_train_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``train_summary.json`` of a run (empty when training has not finished)."""
    path = Path(run_dir) / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}
