"""Runs with a learned corruption: saved with the run, recorded with its objective, reloaded for evaluation,
adversarial ascent within its budget with an exact resume; the controls train with every family; every run's
summary and `diagnose` report the informativeness numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.factory.run_folder import load_run_config
from pseudovideo.pseudo_video.builder import build_pseudo_video_builder
from pseudovideo.pseudo_video.informativeness import measure_informativeness
from pseudovideo.pseudo_video.learned.corruption import load_learned
from pseudovideo.training.learned_runs import LEARNED_FILE, run_builder
from pseudovideo.training.runs import train_run

TINY = {
    "data": {"resolution": 8, "max_images": 64},
    "model": {"family": "lifted", "lifted": {"base": "vqvae"},
              "vqvae": {"base_channels": 8, "channel_mult": [1], "codebook_size": 16, "codebook_dim": 8},
              "unet": {"base_channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attention_resolutions": [],
                       "num_heads": 1},
              "cvivit": {"patch_size": 4, "dim": 16, "spatial_depth": 1, "temporal_depth": 1, "heads": 1, "dim_head": 8,
                         "codebook_size": 16, "codebook_dim": 8}},
    "pseudo_video": {"num_frames": 4, "corruptions": [{"name": "blur", "max_level": 1.5}, {"name": "noise", "max_level": 0.3}]},
    "train": {"steps": 2, "batch_size": 8, "warmup_steps": 0, "lr_schedule": "constant", "progress": False,
              "checkpoint_every": 2, "log_to": ["csv"], "image_every": 1000},
    "diffusion": {"num_timesteps": 50, "sample_steps": 2},
    "eval": {"num_images": 8, "batch_size": 8, "metrics": ["psnr"]},
}


def _config(tmp_path: Path, name: str, *overrides: str):
    return build_config({**TINY, "name": name, "out_dir": str(tmp_path)}, list(overrides))


def test_a_searched_corruption_is_saved_with_the_run_recorded_and_reloaded(tmp_path: Path) -> None:
    search = ["pseudo_video.learned.objective=informativeness", "pseudo_video.learned.search_steps=3",
              "pseudo_video.learned.search_images=32", "pseudo_video.learned.search_batch=16"]
    first = train_run(_config(tmp_path, "s0", *search))
    saved = load_learned(first.run_dir / LEARNED_FILE)
    summary = json.loads((first.run_dir / "train_summary.json").read_text())
    assert summary["corruption"]["objective"] == "informativeness" == summary["corruption"]["produced_by"] == saved.objective
    assert summary["corruption"]["levels"] == [[float(v) for v in row] for row in saved.levels]
    assert set(summary["informativeness"]) >= {"gain", "psnr", "ssim", "diversity"} and summary["informativeness"]["gain"] is not None
    config = load_run_config(first.run_dir)
    assert torch.equal(run_builder(config, first.run_dir).levels, saved.levels)  # evaluation uses the saved one
    assert "psnr" in evaluate_run(first.run_dir)["metrics"]
    second = train_run(_config(tmp_path, "s1", *search, "train.seed=1"))  # the same search (cached), another seed
    assert (second.run_dir / LEARNED_FILE).read_bytes() == (first.run_dir / LEARNED_FILE).read_bytes()


def test_adversarial_corruption_ascends_within_its_budget_and_resumes_exactly(tmp_path: Path) -> None:
    adversarial = ["pseudo_video.learned.objective=adversarial", "pseudo_video.learned.lr=0.3",
                   "pseudo_video.learned.budget=0.2", "train.steps=4"]
    straight = train_run(_config(tmp_path, "straight", *adversarial))
    train_run(_config(tmp_path, "split", *adversarial[:-1], "train.steps=2"))
    resumed = train_run(_config(tmp_path, "split", *adversarial), resume=True)
    assert resumed.start_step == 2
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(straight.run_dir / "checkpoints" / "step_0000004" / name))
        b = load_file(str(resumed.run_dir / "checkpoints" / "step_0000004" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    learned = load_learned(straight.run_dir / LEARNED_FILE)
    assert torch.equal(learned.levels, load_learned(resumed.run_dir / LEARNED_FILE).levels)
    configured = build_pseudo_video_builder([{"name": "blur", "max_level": 1.5}, {"name": "noise", "max_level": 0.3}], 4).levels
    moved = (learned.levels - configured) / configured[0]
    assert bool((moved.abs() > 1e-3).any()) and bool((moved.abs() <= 0.2 + 1e-6).all())  # it moved, within the budget
    assert torch.equal(learned.levels[0], configured[0]) and bool((learned.levels[-1] == 0).all())
    checkpoint = straight.run_dir / "checkpoints" / "step_0000004"
    assert torch.equal(run_builder(load_run_config(straight.run_dir), straight.run_dir, checkpoint).levels, learned.levels)
    summary = json.loads((straight.run_dir / "train_summary.json").read_text())
    assert summary["corruption"]["produced_by"] == "adversarial" and "budget 0.2" in summary["corruption"]["description"]


@pytest.mark.parametrize("family", ["cvivit", "video_unet", "lifted"])
def test_the_controls_train_with_every_family(tmp_path: Path, family: str) -> None:
    for construction in ("shuffled", "noise_frames"):
        result = train_run(_config(tmp_path, f"{family}-{construction}", f"model.family={family}",
                                   f"pseudo_video.construction={construction}", "train.steps=1"))
        summary = json.loads((result.run_dir / "train_summary.json").read_text())
        assert summary["informativeness"]["construction"] == construction and summary["corruption"]["objective"] == "none"


def test_informativeness_numbers_tell_the_controls_apart() -> None:
    from pseudovideo.data.images import build_dataset

    dataset = build_dataset("digits", resolution=16, split="train", max_images=300)
    images = torch.stack([dataset.load(i) for i in range(len(dataset))])
    noise = [{"name": "noise", "max_level": 0.5}]
    reports = {c: measure_informativeness(images, build_pseudo_video_builder(noise, 5, c)) for c in
               ("first_order", "higher_order", "noise_frames", "copies")}
    assert reports["higher_order"]["gain"] > 0.1 and abs(reports["first_order"]["gain"]) < 0.02  # Markov: no gain
    assert abs(reports["noise_frames"]["gain"]) < 0.05 and max(reports["noise_frames"]["ssim"]) < 0.05
    assert reports["copies"]["gain"] is None and reports["copies"]["diversity"] == [0.0] * 4
    psnr = reports["higher_order"]["psnr"]
    assert psnr == sorted(psnr)  # information kept rises towards the clean frame


def test_diagnose_reports_informativeness_per_construction_with_a_plot(tmp_path: Path) -> None:
    assert main(["diagnose", "--n-images", "60", "--construction", "all", "--out", str(tmp_path),
                 "pseudo_video.num_frames=4", "data.resolution=8"]) == 0
    result = json.loads((tmp_path / "diagnose.json").read_text())
    assert list(result["informativeness"]) == ["first_order", "higher_order", "shuffled", "noise_frames", "copies"]
    assert "copies" not in result["results"] and len(result["informativeness"]["shuffled"]["psnr"]) == 3
    assert result["informativeness"]["higher_order"]["gain"] == pytest.approx(
        (result["results"]["higher_order"][0]["mse"] - result["results"]["higher_order"][-1]["mse"])
        / result["results"]["higher_order"][0]["mse"])
    assert (tmp_path / "informativeness.png").stat().st_size > 1000
