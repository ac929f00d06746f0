"""train.log_to: log.csv, TensorBoard and optional Weights & Biases (offline mode needs no network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pseudovideo.config import ConfigError, build_config
from pseudovideo.training.runs import train_run

from test_train_cli import TINY

VQVAE = ["model.family=vqvae", "pseudo_video.num_frames=1", "model.vqvae.base_channels=8",
         "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4", "train.steps=2"]


def _config(tmp_path: Path, *overrides: str):
    return build_config(overrides=[*TINY, *VQVAE, f"out_dir={tmp_path}", "name=r", *overrides])


def test_log_to_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.log_to: unknown destination 'mlflow'"):
        _config(tmp_path, "train.log_to=[csv,mlflow]")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"wandb is not installed; pip install '\.\[wandb\]'"):
        _config(tmp_path, "train.log_to=[csv,wandb]")


def test_log_to_csv_only_writes_no_tensorboard(tmp_path: Path) -> None:
    train_run(_config(tmp_path, "train.log_to=[csv]"))
    assert (tmp_path / "r" / "log.csv").is_file() and not (tmp_path / "r" / "tb").exists()


def test_default_logs_to_csv_and_tensorboard(tmp_path: Path) -> None:
    train_run(_config(tmp_path))
    assert (tmp_path / "r" / "log.csv").is_file() and any((tmp_path / "r" / "tb").iterdir())


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (pip install '.[wandb]'); W&B logging is optional")
def test_wandb_offline_logs_without_network_and_resume_keeps_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # nothing written to the home folder
    train_run(_config(tmp_path, "train.log_to=[csv,wandb]"))
    run_dir = tmp_path / "r"
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    offline = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))  # the logged history, ready for `wandb sync`
    train_run(_config(tmp_path, "train.log_to=[csv,wandb]", "train.steps=4"), resume=True)
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id  # the same W&B run continues
