"""1-D signals: sktime / series-folder data, corruptions along the length, the 1-D models and lift, metrics, pictures,
and end-to-end runs on a shipped dataset (sktime's bundled ItalyPowerDemand and BasicMotions; the timeseries extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pseudovideo
from pseudovideo.cli import main
from pseudovideo.config import ConfigError, build_config
from pseudovideo.data.splits import held_out_mask
from pseudovideo.metrics.signals import mse, snr
from pseudovideo.models.lift import LiftedTokenizer
from pseudovideo.models.unet import image_unet, video_unet
from pseudovideo.models.vqvae1d import SignalVQVAE
from pseudovideo.pseudo_video.builder import build_pseudo_video_builder
from pseudovideo.pseudo_video.corruptions import CORRUPTIONS, build_corruption, heat_blur_matrix
from pseudovideo.pseudo_video.diagnose import markov_order_diagnostic

from _unet_helpers import randomize

pytest.importorskip("sktime", reason="the timeseries extra (sktime) is in the test extra")
from pseudovideo.data.signals import build_signal_dataset  # noqa: E402

TINY_UNET_1D = dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), resolution=16,
                    num_heads=2, spatial_dims=1)
TINY_RUN = ["train.steps=3", "train.batch_size=8", "train.checkpoint_every=3", "train.log_every=1", "train.image_every=3",
            "train.warmup_steps=1", "train.progress=false", "train.device=cpu", "eval.num_images=16", "eval.batch_size=16",
            "eval.feature_net_steps=20", "pseudo_video.num_frames=3"]


def _signals(n: int = 6, c: int = 2, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, length, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- data ------------------------------------------------------------------------------------------------------


def test_sktime_splits_are_normalised_by_the_training_split_per_channel():
    from sktime.datasets import load_UCR_UEA_dataset

    train = build_signal_dataset("sktime:BasicMotions", length=100, split="train")
    test = build_signal_dataset("sktime:BasicMotions", length=100, split="test")
    assert train.signals.shape == (40, 6, 100) and test.signals.shape == (40, 6, 100) and train.channels == 6
    assert torch.equal(train.signals.amin(dim=(0, 2)), -torch.ones(6)) and torch.equal(train.signals.amax(dim=(0, 2)), torch.ones(6))
    assert train.class_names == ["badminton", "running", "standing", "walking"] and train.labels.bincount().tolist() == [10] * 4
    raw, _ = load_UCR_UEA_dataset("BasicMotions", split="test", return_type="numpy3D")  # (40, 6, 100)
    low, high = np.array(train.normalisation["low"])[:, None], np.array(train.normalisation["high"])[:, None]
    expected = np.clip(2 * (raw[7] - low) / (high - low) - 1, -1, 1)  # the training split's min/max, by hand
    torch.testing.assert_close(test.signals[7], torch.from_numpy(expected).float(), rtol=0, atol=1e-6)
    assert test.normalisation == train.normalisation and "official 'test' split" in test.split_description


def test_a_series_folder_windows_series_within_their_split_and_says_it_resamples(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {}
    for label in ("calm", "wild"):
        (tmp_path / label).mkdir()
        for i in range(12):
            length = 20 + i
            series = rng.normal(size=(2, length)) * (1 if label == "calm" else 3)
            if i % 2:
                np.save(tmp_path / label / f"s{i}.npy", series)
                lengths[f"{label}/s{i}.npy"] = length
            else:  # a CSV with a header row: one row per time step, one column per channel
                np.savetxt(tmp_path / label / f"s{i}.csv", series.T, delimiter=",", header="x,y", comments="")
                lengths[f"{label}/s{i}.csv"] = length
    held = dict(zip(sorted(lengths), held_out_mask(sorted(lengths), 0.25)))
    parts = {split: build_signal_dataset(f"series:{tmp_path}", length=16, split=split, window=8, stride=4,
                                         held_out_fraction=0.25) for split in ("train", "test")}
    for split, dataset in parts.items():
        files = [key for key, h in held.items() if h == (split == "test")]  # whole series in one split
        assert len(dataset) == sum((lengths[f] - 8) // 4 + 1 for f in files) and dataset.signals.shape[1:] == (2, 16)
        assert "resampled from 8 to 16 samples" in dataset.split_description
        assert dataset.class_names == ["calm", "wild"]
    assert parts["train"].normalisation == parts["test"].normalisation
    with pytest.raises(ValueError, match="not bundled with the installed sktime.*ItalyPowerDemand"):
        build_signal_dataset("sktime:NoSuchSet", length=16)


def test_signal_settings_are_checked_against_the_modality():
    base = ["data.dataset=sktime:ItalyPowerDemand"]
    with pytest.raises(ConfigError, match="data.length: required for signal datasets"):
        build_config(overrides=base)
    for extra, message in [("data.resolution=32", "data.resolution=32 applies to images"),
                           ("model.family=cvivit", "cvivit is an image tokenizer"),
                           ("loss.gan_weight=0.1", "patch-GAN discriminator is 2-D"),
                           ("data.stride=8", "data.stride needs data.window")]:
        with pytest.raises(ConfigError, match=message):
            build_config(overrides=[*base, "data.length=24", extra])
    with pytest.raises(ConfigError, match="data.length=24 applies to 1-D signals"):
        build_config(overrides=["data.length=24"])
    assert build_config(overrides=[*base, "data.length=24", "data.channels=6"]).data.channels == 6  # any channel count


# -- corruptions, constructions, diagnose ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_operator_on_signals_is_its_one_row_image_version(name):
    op = build_corruption(name, **({"patch_size": 3} if name == "mask" else {}))
    x, level = _signals(), torch.tensor([0.0, 0.3, 1.0, 0.5, 0.9, 1.0])
    out = op.apply(x, level, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.equal(out[0], x[0])  # level 0 untouched
    assert torch.equal(out, op.apply(x[:, :, None], level, torch.Generator().manual_seed(1))[:, :, 0])


def test_blur_mask_and_downsample_act_along_the_length():
    x = _signals(n=2, length=12)
    blurred = build_corruption("blur").apply(x, torch.tensor([0.8, 1.7]))
    for i, sigma in enumerate((0.8, 1.7)):  # the discrete heat kernel of one axis: out = M(sigma) x
        torch.testing.assert_close(blurred[i], x[i] @ heat_blur_matrix(12, sigma).float().T, rtol=0, atol=1e-6)
    masked = build_corruption("mask", patch_size=4, fill_value=0.0).apply(x, torch.tensor([0.5, 1.0]), torch.Generator().manual_seed(0))
    spans = (masked == 0).all(dim=1).reshape(2, 3, 4)  # (N, spans, samples): a span is masked whole, on every channel
    assert bool((spans.all(dim=2) | ~spans.any(dim=2)).all()) and bool(spans[1].all())
    pooled = build_corruption("downsample").apply(x, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(pooled, x.unflatten(2, (6, 2)).mean(3).repeat_interleave(2, dim=2))


def test_pseudo_sequences_keep_the_clean_signal_and_first_order_blur_is_exact():
    x = _signals(n=4, length=32)
    for construction in ("first_order", "higher_order", "copies", "shuffled", "noise_frames"):
        video = build_pseudo_video_builder([{"name": "blur", "max_level": 2.0}, {"name": "noise", "max_level": 0.2}], 5,
                                           construction)(x, torch.Generator().manual_seed(0))
        assert video.shape == (4, 5, 2, 32) and torch.equal(video[:, -1], x)
    blur = [{"name": "blur", "max_level": 2.0}]
    first = build_pseudo_video_builder(blur, 6, "first_order")(x)
    torch.testing.assert_close(first, build_pseudo_video_builder(blur, 6, "higher_order")(x), rtol=0, atol=1e-5)


def test_diagnose_on_signals_flat_for_first_order_noise_falling_for_higher_order():
    x = build_signal_dataset("sktime:ItalyPowerDemand", length=24, split="test").signals[:400]
    noise = [{"name": "noise", "max_level": 0.4}]
    rows = {c: markov_order_diagnostic(x, build_pseudo_video_builder(noise, 6, c), generator=torch.Generator().manual_seed(0))
            for c in ("first_order", "higher_order")}
    first = [row["mse"] / rows["first_order"][0]["mse"] for row in rows["first_order"]]
    higher = [row["mse"] / rows["higher_order"][0]["mse"] for row in rows["higher_order"]]
    assert max(abs(r - 1) for r in first) < 0.03 and higher[-1] < 0.85  # Markov: no gain; independent draws: a gain
    assert rows["first_order"][0]["num_features"] == 3  # one channel x a 1 x 3 span


# -- models and lift -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temporal", ["attention", "conv", "both"])
def test_lifted_1d_unet_is_the_1d_unet_at_init_and_its_temporal_layers_mix_frames(temporal):
    torch.manual_seed(0)
    unet = randomize(image_unet(in_channels=2, **TINY_UNET_1D))
    lifted = pseudovideo.lift(unet, num_frames=3, temporal=temporal).eval()
    x, t = torch.randn(2, 3, 2, 16), torch.tensor([5, 700])
    with torch.no_grad():
        assert (lifted(x, t) - unet(x, t)).abs().max() <= 1e-6  # (B*T, C, L) activations, temporal layers at zero
        randomize(lifted.temporal, seed=1)
        mixed = lifted(x, t)
        changed = x.clone()
        changed[:, 0] += 1  # another first frame changes the other frames' outputs once the frames talk
        assert (lifted(changed, t)[:, 1:] - mixed[:, 1:]).abs().max() > 1e-4


def test_1d_video_unet_and_lifted_signal_vqvae():
    torch.manual_seed(0)
    video = randomize(video_unet(in_channels=2, temporal_mixer="hybrid", causal_temporal=True, **TINY_UNET_1D))
    x, t = torch.randn(2, 4, 2, 16), torch.tensor([3, 9])
    with torch.no_grad():
        later = x.clone()
        later[:, -1] += 1
        assert torch.equal(video(x, t)[:, :-1], video(later, t)[:, :-1])  # causal: earlier frames do not see it
    vqvae = SignalVQVAE(in_channels=2, length=16, base_channels=8, codebook_size=16, codebook_dim=4, num_quantizers=2).eval()
    out = vqvae(x)
    assert out.recon.shape == x.shape and out.indices.shape == (2, 4, 8, 2) and vqvae.rate(4).codes_per_image == 16
    torch.testing.assert_close(vqvae.decode_codes(out.indices), out.recon)
    lifted = pseudovideo.lift(vqvae, num_frames=4, temporal="both").eval()
    assert isinstance(lifted, LiftedTokenizer) and lifted.rate(4).codes_per_image == 64  # the decoder reads all 4 frames
    assert (lifted(x).recon - out.recon).abs().max() <= 1e-6


# -- metrics and pictures ----------------------------------------------------------------------------------------


def test_mse_and_snr_by_hand():
    y = torch.tensor([[[1.0, -1.0, 1.0, -1.0]], [[0.5, 0.5, 0.5, 0.5]]])
    x = y + torch.tensor([[[0.1, -0.1, 0.1, -0.1]], [[0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(mse(x, y), torch.tensor([0.01, 0.0]))
    torch.testing.assert_close(snr(x, y), torch.tensor([20.0, 200.0]))  # 10 log10(4 / 0.04); exact: the cap


def test_signal_pictures_have_frames_as_rows_with_the_clean_frame_last(tmp_path):
    from pseudovideo.pictures import save_image_grid, save_video_gif, save_video_grid

    builder = build_pseudo_video_builder([{"name": "noise", "max_level": 0.3}], 4, "higher_order")
    video = builder(_signals(n=3))
    path = save_video_grid(video, tmp_path / "v.png", column_labels=builder.frame_labels())
    text = Image.open(path).text
    frames = json.loads(text["frames"])
    assert text["kind"] == "signals" and len(frames) == 4 and frames[-1].endswith("clean") and json.loads(text["marked_frames"]) == [3]
    assert save_image_grid(video[:, -1], tmp_path / "g.png").is_file()
    assert Image.open(save_video_gif(video, tmp_path / "v.gif")).n_frames == 4


def test_1d_feature_net_is_cached_with_its_dimensions(tmp_path):
    from pseudovideo.factory.feature_net import feature_net_key, feature_net_skip_reason
    from pseudovideo.metrics.feature_net import FEATURE_DIM, augment, load_feature_net, save_feature_net, train_feature_net

    data = build_signal_dataset("sktime:ItalyPowerDemand", length=24)
    shifted = augment(data.signals[:4], torch.Generator().manual_seed(0), flips=False, padding=3)
    assert shifted.shape == (4, 1, 24) and not torch.equal(shifted, data.signals[:4])  # random shifts along the length
    model, accuracy = train_feature_net(data.signals, data.labels, 2, seed=0, steps=40, flips=False)
    net = save_feature_net(model, accuracy, tmp_path / "net.safetensors", {"dataset": "sktime:ItalyPowerDemand",
                                                                           "resolution": "24"})
    again = load_feature_net(tmp_path / "net.safetensors")
    assert net.metadata["spatial_dims"] == "1" and again.sha256 == net.sha256 and accuracy > 0.6
    assert again.features(data.signals[:5]).shape == (5, FEATURE_DIM)
    assert again.features(resample_all(data.signals[:5], 48)).shape == (5, FEATURE_DIM)  # resampled to its 24 first
    config = build_config(overrides=["data.dataset=sktime:OSULeaf", "data.length=64", "data.window=128", "data.stride=32"])
    key = feature_net_key(config, 1)
    assert key.dataset == "sktime:OSULeaf-w128s32" and key.resolution == 64 and not key.flips
    assert feature_net_skip_reason(config) is None
    regression = build_config(overrides=["data.dataset=sktime:Tecator", "data.length=100"])
    assert "no class labels" in feature_net_skip_reason(regression)


def resample_all(signals: torch.Tensor, length: int) -> torch.Tensor:
    from pseudovideo.data.signals import resample

    return torch.stack([resample(s, length) for s in signals])


# -- end to end ------------------------------------------------------------------------------------------------------


def _run(tmp_path: Path, name: str, *overrides: str) -> list[str]:
    return [f"name={name}", f"out_dir={tmp_path / 'runs'}", f"eval.cache_dir={tmp_path / 'cache'}", *TINY_RUN, *overrides]


def test_train_evaluate_and_sample_on_sktime_signals(tmp_path, capsys):
    tokenizer = _run(tmp_path, "lifted_vqvae", "data.dataset=sktime:ItalyPowerDemand", "data.length=24", "model.family=lifted",
                     "model.lifted.base=vqvae", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16",
                     "model.vqvae.codebook_dim=4", "eval.metrics=[mse,snr,cfd,ckd,probe,ssim]")
    assert main(["train", *tokenizer]) == 0
    run = tmp_path / "runs" / "lifted_vqvae"
    result = json.loads((run / "eval.json").read_text())
    assert {"mse", "snr", "cfd", "ckd", "probe", "probe_random"} <= set(result["metrics"])
    assert "image metric" in result["skipped"]["ssim"] and "1-D" in result["protocol"]["feature_net"]["features"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert result["protocol"]["length"] == 24 and result["protocol"]["normalisation"] == summary["normalisation"]
    assert json.loads(Image.open(run / "pictures" / "eval_pseudo_videos_then_reconstructions.png").text["frames"])[-1].endswith("clean")
    summary["normalisation"]["high"] = [9.0]  # data that normalise otherwise than at training are refused
    (run / "train_summary.json").write_text(json.dumps(summary))
    assert main(["eval", str(run)]) == 2
    assert "normalise differently" in capsys.readouterr().err

    diffusion = _run(tmp_path, "lifted_unet", "data.dataset=sktime:BasicMotions", "data.length=16", "model.family=lifted",
                     "model.lifted.base=unet", "model.unet.base_channels=8", "model.unet.channel_mult=[1,2]",
                     "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=[8]", "model.unet.num_heads=2",
                     "diffusion.num_timesteps=20", "diffusion.sample_steps=3", "eval.metrics=[cfd,mse]")
    assert main(["train", *diffusion]) == 0
    result = json.loads((tmp_path / "runs" / "lifted_unet" / "eval.json").read_text())
    assert "cfd" in result["metrics"] and "diffusion run generates" in result["skipped"]["mse"]
    assert main(["sample", str(tmp_path / "runs" / "lifted_unet"), "--n", "2", "--out", str(tmp_path / "s")]) == 0
    assert np.load(tmp_path / "s" / "images" / "00001.npy").shape == (6, 16)


def test_show_draws_pseudo_sequences_of_a_shipped_dataset(tmp_path, capsys):
    assert main(["show", "data.dataset=sktime:ItalyPowerDemand", "data.length=24", "pseudo_video.num_frames=4", "--n", "3",
                 "--out", str(tmp_path)]) == 0
    assert "rows = frames, last row clean" in capsys.readouterr().out
    text = Image.open(tmp_path / "sktime_ItalyPowerDemand_higher_order_T4.png").text
    assert len(json.loads(text["frames"])) == 4 and json.loads(text["marked_frames"]) == [3]
