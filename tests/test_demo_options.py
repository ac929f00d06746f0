"""The demo takes key=value overrides, and its loss plot compares the clean-frame term of both models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from pseudovideo import demo as demo_module
from pseudovideo.cli import main
from pseudovideo.config import ConfigError, build_config
from pseudovideo.demo import DemoSettings, diffusion_configs, run_demo, tokenizer_configs
from pseudovideo.training.tasks import build_task


def _settings(out: Path, **changes) -> DemoSettings:
    return DemoSettings(**{"steps": 2, "batch_size": 8, "eval_images": 16, "out_dir": str(out), "progress": False,
                           "device": "cpu", **changes})


def test_demo_overrides_reach_every_run_config(tmp_path: Path) -> None:
    s = _settings(tmp_path, overrides=("train.lr=5e-4", "eval.metrics=[psnr]"))
    for config in [*tokenizer_configs(s, 1), *diffusion_configs(s, 1)]:
        assert config.train.lr == 5e-4 and config.eval.metrics == ["psnr"]
    with pytest.raises(ConfigError, match="--frames"):
        tokenizer_configs(_settings(tmp_path, overrides=("pseudo_video.num_frames=3",)), 1)
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        tokenizer_configs(_settings(tmp_path, overrides=("train.lrr=1",)), 1)


def test_demo_cli_accepts_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(demo_module, "run_demo", lambda settings: seen.setdefault("s", settings) and "report")
    assert main(["demo", "--steps", "2", "train.lr=5e-4", "--out", str(tmp_path)]) == 0
    assert seen["s"].overrides == ("train.lr=5e-4",) and seen["s"].steps == 2


@pytest.mark.parametrize("frames", [1, 3])
def test_recon_clean_is_the_clean_frames_error(frames: int) -> None:
    config = build_config(overrides=[
        "model.family=vqvae", f"pseudo_video.num_frames={frames}", "data.resolution=8",
        "model.vqvae.base_channels=8", "model.vqvae.codebook_size=8", "model.vqvae.codebook_dim=4",
    ])
    task = build_task(config, channels=1)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    loss, scalars = task.training_loss(task.model, images, 0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        video = task.pseudo_videos(images, torch.Generator().manual_seed(0))
    assert scalars["recon_clean"].ndim == 0 and scalars["recon_clean"] > 0
    if frames == 1:  # one frame: the weighted loss is the clean frame's own
        assert torch.allclose(scalars["recon_clean"], scalars["recon"])
    assert torch.equal(video[:, -1], images)


def test_demo_loss_plot_shows_the_clean_frame_term_of_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plots = []
    real_plot = demo_module.plot_curves
    monkeypatch.setattr(demo_module, "plot_curves", lambda series, path, **kw: plots.append((series, kw)) or real_plot(series, path, **kw))
    run_demo(_settings(tmp_path, overrides=("eval.metrics=[psnr]",)))
    (series, kw), = plots
    assert set(series) == {"vqvae", "cvivit"} and kw["ylabel"] == "recon_clean" and "clean-frame" in kw["title"]
    for name in ("vqvae", "cvivit"):
        with open(tmp_path / name / "log.csv") as handle:
            assert "recon_clean" in next(csv.reader(handle))
