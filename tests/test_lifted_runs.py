"""model.family=lifted: config validation, lifted diffusion and tokenizer runs, exact resume, warm start from a run."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pseudovideo.cli import main
from pseudovideo.config import ConfigError, build_config
from pseudovideo.factory.models import build_model, is_tokenizer
from pseudovideo.factory.models import load_run
from pseudovideo.models.lift import LiftedNet, LiftedTokenizer
from pseudovideo.training.runs import train_run

TINY = [
    "data.dataset=digits", "data.resolution=8", "data.max_images=64", "data.channels=1",
    "train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.image_every=100",
    "train.warmup_steps=1", "train.progress=false", "train.device=cpu",
    "eval.num_images=8", "eval.batch_size=8", "eval.metrics=[psnr,swd]",
]
UNET = ["model.unet.base_channels=8", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2", "diffusion.num_timesteps=20",
        "diffusion.sample_steps=3"]
VQVAE = ["model.vqvae.base_channels=8", "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4"]


def _config(tmp_path: Path, name: str, *overrides: str):
    return build_config(overrides=[f"name={name}", f"out_dir={tmp_path / 'runs'}", *TINY, *overrides])


def test_lifted_kind_follows_the_base_and_bad_bases_name_the_key(tmp_path):
    assert not is_tokenizer(_config(tmp_path, "a", "model.family=lifted", "model.lifted.base=unet"))
    assert is_tokenizer(_config(tmp_path, "b", "model.family=lifted", "model.lifted.base=vqvae"))
    with pytest.raises(ConfigError, match="model.lifted.base: expected unet, vqvae, run:RUN_DIR"):
        _config(tmp_path, "c", "model.family=lifted", "model.lifted.base=resnet")
    with pytest.raises(ConfigError, match="model.lifted.base: .* is not a diffusers model folder"):
        _config(tmp_path, "d", "model.family=lifted", f"model.lifted.base=diffusers:{tmp_path}")
    with pytest.raises(ConfigError, match="model.lifted.kind: cannot tell"):
        _config(tmp_path, "e", "model.family=lifted", "model.lifted.base=python:mypkg.nets:make")
    with pytest.raises(ConfigError, match="model.lifted.kind='tokenizer' contradicts"):
        _config(tmp_path, "f", "model.family=lifted", "model.lifted.base=unet", "model.lifted.kind=tokenizer")


def test_bad_where_and_non_liftable_bases_are_config_errors(tmp_path, monkeypatch):
    config = _config(tmp_path, "w", "model.family=lifted", "model.lifted.base=unet", *UNET, "model.lifted.where=[Nope]")
    with pytest.raises(ConfigError, match=r"model.lifted.where .*no block of UNet matches.*UNetBlock"):
        build_model(config, 1)
    module = types.ModuleType("lift_test_factories")
    module.not_a_module = lambda: "a string"
    module.no_blocks = lambda in_channels: torch.nn.Conv2d(in_channels, in_channels, 3, padding=1)
    monkeypatch.setitem(sys.modules, "lift_test_factories", module)
    bad = _config(tmp_path, "p", "model.family=lifted", "model.lifted.base=python:lift_test_factories:not_a_module",
                  "model.lifted.kind=diffusion")
    with pytest.raises(ConfigError, match="returned str, not a torch.nn.Module"):
        build_model(bad, 1, trust_code=True)
    leaf = _config(tmp_path, "q", "model.family=lifted", "model.lifted.base=python:lift_test_factories:no_blocks",
                   "model.lifted.kind=diffusion")
    with pytest.raises(ConfigError, match="model.lifted.where .*no block of Conv2d"):
        build_model(leaf, 1, trust_code=True)
    tok = _config(tmp_path, "r", "model.family=lifted", "model.lifted.base=python:lift_test_factories:no_blocks",
                  "model.lifted.kind=tokenizer")
    with pytest.raises(ConfigError, match="not a VideoTokenizer"):
        build_model(tok, 1, trust_code=True)


def test_lifted_diffusion_run_resumes_bit_exactly_and_samples(tmp_path):
    config = _config(tmp_path, "lifted_unet", "model.family=lifted", "model.lifted.base=unet", *UNET,
                     "pseudo_video.num_frames=3", "model.lifted.temporal=both", "diffusion.sampling_mode=autoregressive")
    train_run(config)
    run = config.run_dir
    final = run / "checkpoints" / "step_0000004"
    expected = {name: load_file(str(final / name)) for name in ("model.safetensors", "ema.safetensors")}
    assert any(".temporal." in k or k.startswith("temporal.") for k in expected["model.safetensors"])
    shutil.rmtree(final)
    (run / "train_summary.json").unlink()
    assert main(["train", "--resume", str(run), "--no-eval"]) == 0
    for name, weights in expected.items():
        again = load_file(str(final / name))
        assert weights.keys() == again.keys()
        assert all(torch.equal(weights[k], again[k]) for k in weights), name
    assert main(["eval", str(run)]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["family"] == "lifted" and result["metrics"]["swd_avg"] >= 0
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0


def test_lifted_tokenizer_run_reports_the_rate_of_its_temporal_decoder(tmp_path):
    config = _config(tmp_path, "lifted_vqvae", "model.family=lifted", "model.lifted.base=vqvae", *VQVAE,
                     "pseudo_video.num_frames=3", "model.lifted.causal=true", "train.steps=2")
    train_run(config)
    assert main(["eval", str(config.run_dir)]) == 0
    result = json.loads((config.run_dir / "eval.json").read_text())
    assert result["rate"]["codes_per_image"] == 3 * 16  # 4x4 codes per frame, decoder mixes 3 frames
    _, model, _ = load_run(config.run_dir)
    assert isinstance(model, LiftedTokenizer) and model.causal


def test_warm_start_from_a_trained_run_starts_at_its_weights(tmp_path):
    image = _config(tmp_path, "image", "model.family=unet", *UNET, "pseudo_video.num_frames=1", "train.steps=2")
    train_run(image)
    _, trained, _ = load_run(image.run_dir, use_ema=True)
    for temporal, frames in (("none", 1), ("attention", 3)):
        warm = _config(tmp_path, f"warm_{temporal}", "model.family=lifted", f"model.lifted.base=run:{image.run_dir}",
                       f"model.lifted.temporal={temporal}", f"pseudo_video.num_frames={frames}", *UNET)
        assert not is_tokenizer(warm)
        model = build_model(warm, 1).eval()
        assert isinstance(model, LiftedNet) and (len(model.lifted_blocks) > 0) == (temporal != "none")
        x, t = torch.randn(2, frames, 1, 8, 8), torch.tensor([3, 17])
        with torch.no_grad():
            assert (model(x, t) - trained(x, t)).abs().max() <= 1e-6
    missing = _config(tmp_path, "m", "model.family=lifted", f"model.lifted.base=run:{tmp_path / 'nothing'}",
                      "model.lifted.kind=diffusion", *UNET)
    with pytest.raises(ConfigError, match="no run there"):
        build_model(missing, 1)


def test_a_python_factory_base_is_lifted(tmp_path, monkeypatch):
    from pseudovideo.models.unet import image_unet

    module = types.ModuleType("lift_test_user_nets")
    module.my_unet = lambda in_channels, resolution: image_unet(
        in_channels=in_channels, resolution=resolution, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(4,), num_heads=2)
    monkeypatch.setitem(sys.modules, "lift_test_user_nets", module)
    config = _config(tmp_path, "py", "model.family=lifted", "model.lifted.base=python:lift_test_user_nets:my_unet",
                     "model.lifted.kind=diffusion", "model.lifted.temporal=conv", "pseudo_video.num_frames=3", *UNET)
    model = build_model(config, 1, trust_code=True)  # user code: only when trusted (see test_trust_code.py)
    assert isinstance(model, LiftedNet) and model.temporal_kind == "conv" and model.image.resolution == 8
    train_run(config, trust_code=True)
    assert (config.run_dir / "checkpoints" / "step_0000004").is_dir()
