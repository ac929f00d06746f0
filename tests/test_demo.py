"""The README's main job on a tiny budget: `pseudovideo demo` trains, evaluates and compares a model pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pseudovideo.config import ConfigError
from pseudovideo.demo import DemoSettings, run_demo


def _settings(out: Path, **changes) -> DemoSettings:
    # a 20-step cfd/ckd feature net in the test's own cache (the demo's default trains a 400-step one on first use)
    feature_net = (f"eval.cache_dir={out / 'cache'}", "eval.feature_net_steps=20")
    return DemoSettings(**{"steps": 2, "batch_size": 8, "eval_images": 16, "out_dir": str(out), "progress": False,
                           "device": "cpu", "overrides": feature_net, **changes})


def test_demo_compares_the_tokenizer_pair_and_reuses_only_matching_runs(tmp_path: Path) -> None:
    report = run_demo(_settings(tmp_path))
    assert "| vqvae | vqvae | 1 |" in report and "| cvivit | cvivit | 5 |" in report
    # rate column: 16x16 digits, 4x4 codes of K = 256 (8 bits) per frame; the C-ViViT's decoder reads all 5 steps
    assert "rate (codes / bits per image)" in report
    assert "| 16 / 128 |" in report and "| 80 / 640 |" in report
    assert "cfd" in report and "ckd" in report  # default metrics on a labelled dataset
    for picture in ("reconstructions_side_by_side.png", "pseudo_video_strip.png", "loss_curves.png", "comparison.md"):
        assert (tmp_path / picture).is_file(), picture
    # More steps continue the same runs; other frames are another run, refused with the key named.
    run_demo(_settings(tmp_path, steps=3))
    assert json.loads((tmp_path / "cvivit" / "train_summary.json").read_text())["steps"] == 3
    with pytest.raises(ConfigError, match="pseudo_video.num_frames"):
        run_demo(_settings(tmp_path, frames=3, steps=3))
