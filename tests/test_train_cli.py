"""End-to-end runs of `pseudovideo train / eval / sample` on tiny configs (digits, a few steps, CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo.cli import main
from pseudovideo.config import load_config

TINY = [
    "data.dataset=digits", "data.resolution=8", "data.max_images=64",
    "train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.image_every=4",
    "train.warmup_steps=1", "train.progress=false", "train.device=cpu",
    "eval.num_images=16", "eval.batch_size=8", "eval.metrics=[psnr,ssim,swd,lpips,fid]",
]
TOKENIZERS = {
    "vqvae": ["model.family=vqvae", "pseudo_video.num_frames=1", "model.vqvae.base_channels=8",
              "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4"],
    "cvivit": ["model.family=cvivit", "pseudo_video.num_frames=3", "model.cvivit.dim=16", "model.cvivit.heads=2",
               "model.cvivit.dim_head=8", "model.cvivit.spatial_depth=1", "model.cvivit.temporal_depth=1",
               "model.cvivit.codebook_size=16", "model.cvivit.codebook_dim=4", "model.cvivit.temporal_patch_size=2"],
}
UNET = ["model.unet.base_channels=8", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2", "diffusion.num_timesteps=20",
        "diffusion.sample_steps=3", "eval.metrics=[swd]"]


def _write_config(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    """A YAML config file for a run (so that `-c` is exercised), with overrides left on the command line."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nout_dir: {tmp_path / 'runs'}\n")
    return path


@pytest.mark.parametrize("family", ["vqvae", "cvivit"])
def test_train_then_eval_a_tokenizer(tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, family, [])
    assert main(["train", "-c", str(config), *TINY, *TOKENIZERS[family]]) == 0
    run = tmp_path / "runs" / family
    result = json.loads((run / "eval.json").read_text())
    assert 0 < result["metrics"]["psnr"] < 100
    assert -1 <= result["metrics"]["ssim"] <= 1
    assert result["metrics"]["swd_avg"] >= 0
    assert set(result["skipped"]) <= {"lpips", "fid"}  # need downloaded weights; reasons are given
    assert all(reason for reason in result["skipped"].values())
    if "fid" in result["skipped"]:  # the reason names the file to copy and where
        assert "weights-inception-2015-12-05-6726825d.pth" in result["skipped"]["fid"]
    assert result["protocol"]["model_weights"] == "ema"
    assert result["protocol"]["num_images"] == 16
    # rate of the clean frame, by hand: K = 16 codes (4 bits); VQVAE 8/2 = 4x4 codes; C-ViViT 8/4 = 2x2 codes
    # in each of 1 + (3 - 1) / 2 = 2 time steps, all read by its causal decoder
    codes = {"vqvae": 16, "cvivit": 8}[family]
    assert result["rate"] == {"codes_per_image": codes, "bits_per_image": 4.0 * codes, "codebook_size": 16,
                              "num_quantizers": 1, "description": result["rate"]["description"]}
    assert f"Rate: {codes} codes = {4 * codes} bits per clean image" in (run / "eval.md").read_text()
    assert (run / "pictures" / "eval_reconstructions.png").is_file()
    assert load_config(run / "config.yaml").data.channels == 1  # resolved and saved
    # eval again with another protocol, via the CLI
    assert main(["eval", str(run), "eval.num_images=8", "eval.metrics=[psnr]", "eval.use_ema=false"]) == 0
    again = json.loads((run / "eval.json").read_text())
    assert set(again["metrics"]) == {"psnr"} and again["protocol"]["model_weights"] == "raw"
    assert "psnr" in capsys.readouterr().out


def test_resume_through_the_cli_continues_from_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, "resumed", [])
    assert main(["train", "-c", str(config), "--no-eval", *TINY, *TOKENIZERS["vqvae"]]) == 0
    run = tmp_path / "runs" / "resumed"
    assert main(["train", "--resume", str(run), "--no-eval", "train.steps=6"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["start_step"] == 4 and summary["steps"] == 6
    with open(run / "log.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4, 5, 6]
    # changing the model, the data or the pseudo videos when resuming is refused with a clear message
    assert main(["train", "--resume", str(run), "train.steps=8", "model.vqvae.base_channels=16"]) == 2
    assert main(["train", "--resume", str(run), "train.steps=8", "pseudo_video.construction=first_order"]) == 2
    assert "pseudo_video.construction" in capsys.readouterr().err


def test_a_bad_eval_split_stops_train_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, "badsplit", [])
    assert main(["train", "-c", str(config), *TINY, *TOKENIZERS["vqvae"], "data.eval_split=valid"]) == 2
    assert "unknown split 'valid'" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "badsplit" / "checkpoints").exists()  # nothing was trained


def test_train_refuses_to_overwrite_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, "twice", [])
    args = ["train", "-c", str(config), "--no-eval", *TINY, *TOKENIZERS["vqvae"], "train.steps=2"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds this run (checkpoints up to step 2)" in capsys.readouterr().err


def test_tokenizer_with_gan_and_frames_as_images(tmp_path: Path) -> None:
    """The data-control setting (an image model on every frame) with the patch-GAN active from step 1."""
    config = _write_config(tmp_path, "gan", [])
    overrides = [*TINY, *TOKENIZERS["vqvae"], "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true",
                 "loss.gan_weight=0.1", "loss.gan_start_step=1", "loss.discriminator_channels=8", "data.resolution=16"]
    assert main(["train", "-c", str(config), "--no-eval", *overrides]) == 0
    with open(tmp_path / "runs" / "gan" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["d_loss"] == "" and float(rows[-1]["d_loss"]) > 0  # the discriminator starts at step 1
    assert float(rows[-1]["g_loss"]) != 0


def test_gan_of_an_image_model_on_every_frame_judges_only_the_clean_frames() -> None:
    from pseudovideo.config import build_config
    from pseudovideo.training.tasks import build_task

    overrides = [*TINY, *TOKENIZERS["vqvae"], "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true",
                 "loss.gan_weight=0.1", "loss.discriminator_channels=8", "data.resolution=16"]
    task = build_task(build_config(overrides=overrides), channels=3)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    task.training_loss(task.model, images, step=0, generator=torch.Generator().manual_seed(1))
    real, fake = task._last
    assert real.shape == fake.shape == (2, 3, 16, 16)  # B clean frames, not the B*T corrupted ones
    torch.testing.assert_close(real, images, rtol=0, atol=0)


@pytest.mark.parametrize("family,frames", [("unet", 1), ("video_unet", 3)])
def test_train_and_sample_a_diffusion_model(tmp_path: Path, family: str, frames: int) -> None:
    config = _write_config(tmp_path, family, [])
    overrides = [*TINY, *UNET, f"model.family={family}", f"pseudo_video.num_frames={frames}"]
    assert main(["train", "-c", str(config), *overrides]) == 0
    run = tmp_path / "runs" / family
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"]["sampling_images_per_s"] > 0 and result["metrics"]["swd_avg"] >= 0
    assert result["protocol"]["sampler"]["sampler"] == "ddim"
    assert "rate" not in result  # a rate is a tokenizer's
    out = tmp_path / "samples"
    assert main(["sample", str(run), "--n", "5", "--batch-size", "4", "--out", str(out), "--device", "cpu"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 5
    with Image.open(out / "images" / "00000.png") as first:  # native size, no grid border
        assert first.size == (8, 8)
    assert (out / "grid.png").is_file()
    assert (out / "pseudo_videos.gif").is_file() == (frames > 1)
    # the sampler is chosen at sampling time: ancestral DDPM over all 20 timesteps
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "ddpm"), "--device", "cpu",
                 "diffusion.sampler=ddpm"]) == 0
    assert len(list((tmp_path / "ddpm" / "images").glob("*.png"))) == 2
    assert main(["sample", str(run), "--n", "2", "train.steps=3"]) == 2


def test_sample_refuses_a_tokenizer_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path, "tok", [])
    assert main(["train", "-c", str(config), "--no-eval", *TINY, *TOKENIZERS["vqvae"], "train.steps=1"]) == 0
    assert main(["sample", str(tmp_path / "runs" / "tok"), "--n", "2"]) == 2
    assert "sample needs a diffusion run" in capsys.readouterr().err


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


def test_image_unet_on_every_frame_is_level_conditioned_and_samples_clean() -> None:
    """The data-control's diffusion arm: the UNet learns each frame's level and is sampled at level 0."""
    from pseudovideo.config import build_config
    from pseudovideo.training.tasks import AtLevel, build_task, frame_levels, sampling_model
    from pseudovideo.factory.models import build_model

    overrides = [*TINY, *UNET, "model.family=unet", "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true"]
    config = build_config(overrides=overrides)
    task = build_task(config, channels=1)
    assert task.model.num_levels == 3 and task.level_conditioned
    assert frame_levels(2, 3).tolist() == [2, 1, 0, 2, 1, 0]  # the (b t) order of _split_frames; 0 = clean
    seen = []
    model = task.model
    original = model.forward
    model.forward = lambda x, t, level=None: (seen.append(level), original(x, t, level=level))[1]
    task.training_loss(model, torch.zeros(2, 1, 8, 8), step=0, generator=torch.Generator().manual_seed(0))
    assert seen[-1].tolist() == [2, 1, 0, 2, 1, 0]
    sampler = sampling_model(model)
    assert isinstance(sampler, AtLevel) and sampler.level == 0
    task.preview(model, torch.zeros(2, 1, 8, 8), torch.Generator().manual_seed(0))
    assert seen[-1] == 0  # previews sample the clean level
    off = build_config(overrides=[*overrides, "model.unet.level_conditioning=false"])
    assert build_model(off, 1).num_levels == 0
    plain = build_config(overrides=[*TINY, *UNET, "model.family=unet", "pseudo_video.num_frames=1"])
    assert build_model(plain, 1).num_levels == 0 and sampling_model(build_model(plain, 1)) is not None


def test_train_and_eval_a_level_conditioned_image_unet(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "frames", [])
    overrides = [*TINY, *UNET, "model.family=unet", "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true"]
    assert main(["train", "-c", str(config), *overrides]) == 0
    result = json.loads((tmp_path / "runs" / "frames" / "eval.json").read_text())
    assert "sampled at level 0" in result["protocol"]["level_conditioning"]
    assert result["metrics"]["swd_avg"] >= 0


def test_eval_json_records_the_split_actually_used(tmp_path: Path) -> None:
    """A flat folder is split by path hash, and eval.json says so (no 'test' for trained-on images)."""
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(40):
        Image.new("L", (8, 8), 6 * i).save(folder / f"{i:02d}.png")
    config = _write_config(tmp_path, "flat", [])
    overrides = [*TINY, *TOKENIZERS["vqvae"], f"data.dataset=folder:{folder}", "data.max_images=null",
                 "data.held_out_fraction=0.25", "eval.metrics=[psnr]"]
    assert main(["train", "-c", str(config), *overrides]) == 0
    result = json.loads((tmp_path / "runs" / "flat" / "eval.json").read_text())
    assert result["protocol"]["split"].startswith("held-out 25% of folder")
    assert "by hash" in result["protocol"]["split"] and result["protocol"]["num_images"] < 40
    digits = _write_config(tmp_path, "digits", [])
    assert main(["train", "-c", str(digits), *TINY, *TOKENIZERS["vqvae"], "eval.metrics=[psnr]", "train.steps=1"]) == 0
    split = json.loads((tmp_path / "runs" / "digits" / "eval.json").read_text())["protocol"]["split"]
    assert split.startswith("held-out digits 1501-1797")


def test_train_summary_states_the_loss_terms(tmp_path: Path) -> None:
    from pseudovideo.experiments.tables import describe_loss_terms

    config = _write_config(tmp_path, "terms", [])
    overrides = [*TINY, *TOKENIZERS["cvivit"], "loss.gan_weight=0.1", "loss.gan_start_step=2",
                 "loss.discriminator_channels=8", "loss.perceptual_weight=0.1", "eval.metrics=[psnr]",
                 "data.resolution=16"]
    assert main(["train", "-c", str(config), *overrides]) == 0
    summary = json.loads((tmp_path / "runs" / "terms" / "train_summary.json").read_text())
    terms = summary["loss_terms"]
    assert set(terms) == {"reconstruction", "vq", "perceptual", "adversarial"}
    assert terms["adversarial"] == {**terms["adversarial"], "active": True, "weight": 0.1, "start_step": 2}
    assert terms["vq"]["commitment_weight"] == 0.25 and terms["reconstruction"]["kind"] == "l1"
    eval_terms = json.loads((tmp_path / "runs" / "terms" / "eval.json").read_text())["train"]["loss_terms"]
    assert eval_terms == terms  # eval.json copies the training summary
    if not terms["perceptual"]["active"]:  # no LPIPS weights on this machine: said so, with the reason
        assert "weights not found" in terms["perceptual"]["reason"]
    line = describe_loss_terms(terms)
    assert "adversarial 0.1 from step 2" in line and line.startswith("reconstruction 1 + vq 1")
