"""diffusers interop: our image UNet maps exactly onto UNet2DModel; export a run, load it and sample with diffusers'
schedulers; a UNet2DModel folder as the image model (T = 1) or the lifted base of a diffusion run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.diffusion.betas import beta_schedule
from pseudovideo.factory.models import export_run
from pseudovideo.factory.models import load_run
from pseudovideo.models.lift import LiftedNet
from pseudovideo.models.unet import image_unet
from pseudovideo.training.runs import train_run

from _unet_helpers import randomize

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install '.[diffusers]')")

# widths that are multiples of 32 (one GroupNorm group count) and one attention head size (64 / 2 = 32)
MAPPABLE = dict(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), resolution=8,
                num_heads=2)
TINY = [
    "data.dataset=digits", "data.resolution=8", "data.max_images=32", "data.channels=1",
    "train.steps=2", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.image_every=100",
    "train.warmup_steps=1", "train.progress=false", "train.device=cpu", "diffusion.num_timesteps=50",
    "diffusion.sample_steps=3", "eval.num_images=8", "eval.batch_size=8", "eval.metrics=[swd]",
]
UNET = ["model.unet.base_channels=32", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2"]


def _config(tmp_path: Path, name: str, *overrides: str):
    return build_config(overrides=[f"name={name}", f"out_dir={tmp_path / 'runs'}", *TINY, *overrides])


def test_our_image_unet_maps_exactly_onto_unet2dmodel():
    from pseudovideo.interop.export import unet_to_diffusers

    torch.manual_seed(0)
    ours = randomize(image_unet(in_channels=3, **MAPPABLE))
    theirs = unet_to_diffusers(ours)
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        assert (ours(x[:, None], t)[:, 0] - theirs(x, t).sample).abs().max() <= 1e-5


def test_a_level_conditioned_unet_exports_at_level_0():
    from pseudovideo.interop.export import unet_to_diffusers

    torch.manual_seed(0)
    ours = randomize(image_unet(in_channels=3, num_levels=4, **MAPPABLE))
    with torch.no_grad():
        ours.level_embed.weight.mul_(20)  # embeddings of a trained level-conditioned model are far from 0
    theirs = unet_to_diffusers(ours)
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        at_clean = ours(x[:, None], t, level=0)[:, 0]
        assert (at_clean - ours(x[:, None], t, level=3)[:, 0]).abs().max() > 1e-2  # the level matters
        assert (at_clean - theirs(x, t).sample).abs().max() <= 1e-5


def test_export_a_frames_as_images_run_at_the_clean_level(tmp_path):
    config = _config(tmp_path, "ddpm_frames", "model.family=unet", "pseudo_video.num_frames=3",
                     "pseudo_video.frames_as_images=true", *UNET)
    train_run(config)
    out = export_run(config.run_dir, tmp_path / "exported")
    unet = diffusers.UNet2DModel.from_pretrained(str(out)).eval()
    _, ours, _ = load_run(config.run_dir)
    assert ours.num_levels == 3
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert (ours(x[:, None], t, level=0)[:, 0] - unet(x, t).sample).abs().max() <= 1e-5


def test_export_a_run_then_load_and_sample_with_diffusers(tmp_path, capsys):
    config = _config(tmp_path, "ddpm", "model.family=unet", "pseudo_video.num_frames=1", *UNET)
    train_run(config)
    out = tmp_path / "exported"
    assert main(["export", str(config.run_dir), "--format", "diffusers", str(out)]) == 0
    unet = diffusers.UNet2DModel.from_pretrained(str(out)).eval()
    _, ours, _ = load_run(config.run_dir)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert (ours(x[:, None], t)[:, 0] - unet(x, t).sample).abs().max() <= 1e-5
    ddpm = diffusers.DDPMScheduler.from_pretrained(str(out), subfolder="scheduler")
    assert torch.allclose(ddpm.betas.double(), beta_schedule("cosine", 50), atol=1e-7)
    for scheduler in (ddpm, diffusers.DDIMScheduler.from_config(ddpm.config)):
        scheduler.set_timesteps(5)
        sample = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for step in scheduler.timesteps:
                sample = scheduler.step(unet(sample, step).sample, step, sample).prev_sample
        assert sample.shape == (2, 1, 8, 8) and torch.isfinite(sample).all() and sample.abs().max() <= 1.0 + 1e-6


def test_video_runs_export_only_with_drop_temporal_and_tokenizers_not_at_all(tmp_path, capsys):
    video = _config(tmp_path, "video", "model.family=video_unet", "pseudo_video.num_frames=3", *UNET)
    train_run(video)
    assert main(["export", str(video.run_dir), str(tmp_path / "v")]) == 2
    assert "--drop-temporal" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="temporal layers dropped"):
        assert main(["export", str(video.run_dir), str(tmp_path / "v"), "--drop-temporal"]) == 0
    _, model, _ = load_run(video.run_dir)
    unet = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "v")).eval()
    spatial = image_unet(in_channels=1, **MAPPABLE)
    spatial.load_spatial_state_dict(model.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert (spatial(x[:, None], t)[:, 0] - unet(x, t).sample).abs().max() <= 1e-5
    tok = _config(tmp_path, "tok", "model.family=vqvae", "pseudo_video.num_frames=1", "model.vqvae.base_channels=8",
                  "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4", "eval.metrics=[psnr]")
    train_run(tok)
    assert main(["export", str(tok.run_dir), str(tmp_path / "t")]) == 2
    assert "diffusers export supports" in capsys.readouterr().err


def test_a_diffusers_folder_trains_as_image_model_and_lifted_then_exports(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "hub_unet"
    diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    ).save_pretrained(str(folder))
    image = _config(tmp_path, "imported", "model.family=lifted", f"model.lifted.base=diffusers:{folder}",
                    "model.lifted.temporal=none", "pseudo_video.num_frames=1")
    train_run(image)
    assert main(["eval", str(image.run_dir)]) == 0
    assert json.loads((image.run_dir / "eval.json").read_text())["metrics"]["swd_avg"] >= 0
    out = tmp_path / "back"
    assert main(["export", str(image.run_dir), str(out)]) == 0
    _, trained, _ = load_run(image.run_dir)
    reloaded = diffusers.UNet2DModel.from_pretrained(str(out)).eval()
    x, t = torch.randn(2, 1, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert torch.equal(trained(x, t)[:, 0], reloaded(x[:, 0], t).sample)
    video = _config(tmp_path, "lifted", "model.family=lifted", f"model.lifted.base=run:{image.run_dir}",
                    "pseudo_video.num_frames=3")
    train_run(video)
    _, model, _ = load_run(video.run_dir)
    assert isinstance(model, LiftedNet) and type(model.image).__name__ == "UNet2DModel" and model.lifted_blocks


def _small_diffusers_unet() -> "diffusers.UNet2DModel":
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    )


def test_a_diffusers_base_is_checked_against_its_scheduler(tmp_path, capfd):
    """The betas and prediction type saved beside a diffusers UNet (a pipeline's scheduler/ or export's) must be
    the run's diffusion settings: a mismatch is refused naming the keys that match; loading prints no
    "install accelerate" warning."""
    from pseudovideo.config import ConfigError
    from pseudovideo.factory.models import build_model

    pipeline = tmp_path / "pipeline"  # a diffusers pipeline's layout: unet/ beside scheduler/
    _small_diffusers_unet().save_pretrained(str(pipeline / "unet"))
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction").save_pretrained(
        str(pipeline / "scheduler"))
    lifted = [f"model.lifted.base=diffusers:{pipeline / 'unet'}", "model.family=lifted", "pseudo_video.num_frames=3",
              "data.channels=1", "data.resolution=8"]
    with pytest.raises(ConfigError) as err:
        build_model(build_config(overrides=[*lifted, "diffusion.num_timesteps=50"]), 1)
    for needle in ("differs from this run's diffusion section", "diffusion.prediction=v", "diffusion.num_timesteps=1000",
                   "diffusion.beta_schedule=linear"):
        assert needle in str(err.value)
    matching = ["diffusion.prediction=v", "diffusion.beta_schedule=linear", "diffusion.num_timesteps=1000"]
    assert isinstance(build_model(build_config(overrides=[*lifted, *matching]), 1), LiftedNet)
    assert "accelerate" not in capfd.readouterr().err
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear").save_pretrained(str(pipeline / "scheduler"))
    with pytest.raises(ConfigError, match="match none of the beta schedules"):
        build_model(build_config(overrides=[*lifted, *matching]), 1)
    bare = tmp_path / "bare"
    _small_diffusers_unet().save_pretrained(str(bare))
    with pytest.warns(UserWarning, match="no scheduler/scheduler_config.json beside it"):
        build_model(build_config(overrides=[*lifted[1:], f"model.lifted.base=diffusers:{bare}"]), 1)


def test_an_exported_run_lifts_with_its_own_scheduler_only(tmp_path):
    from pseudovideo.config import ConfigError
    from pseudovideo.factory.models import build_model

    config = _config(tmp_path, "ddpm", "model.family=unet", "pseudo_video.num_frames=1", *UNET)
    train_run(config)
    out = export_run(config.run_dir, tmp_path / "exported")
    lifted = _config(tmp_path, "lifted", "model.family=lifted", f"model.lifted.base=diffusers:{out}", "pseudo_video.num_frames=3")
    assert isinstance(build_model(lifted, 1), LiftedNet)  # cosine betas, 50 steps, eps: as trained
    with pytest.raises(ConfigError, match=r"set diffusion.prediction=eps to train and sample it as it was trained"):
        build_model(_config(tmp_path, "v", "model.family=lifted", f"model.lifted.base=diffusers:{out}",
                            "pseudo_video.num_frames=3", "diffusion.prediction=v"), 1)
