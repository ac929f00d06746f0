"""What training and evaluation show a researcher: labelled pictures (inputs beside reconstructions, generated
frames with their out-of-range share), a loss-curve picture per run, previews spread over the data, the protocol's
task line, skipped metrics said once, and a warning when evaluation sampling will outlast training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.evaluation.report import format_eval_markdown

from test_train_cli import TINY, TOKENIZERS, UNET


def png_text(path: Path) -> dict:
    """A labelled picture's text chunks, JSON decoded (title as it is)."""
    with Image.open(path) as png:
        return {k: v if k in ("title", "Software") else json.loads(v) for k, v in png.text.items()}


def _train(tmp_path: Path, name: str, *overrides: str) -> Path:
    assert main(["train", f"out_dir={tmp_path}", f"name={name}", *TINY, *overrides]) == 0
    return tmp_path / name


def test_tokenizer_pictures_put_inputs_beside_reconstructions(tmp_path: Path) -> None:
    video = _train(tmp_path, "cvivit", *TOKENIZERS["cvivit"], "eval.metrics=[psnr]")
    meta = png_text(video / "pictures" / "eval_pseudo_videos_then_reconstructions.png")
    frames = ["t=0\nblur 2\nnoise 0.2", "t=1\nblur 1\nnoise 0.1", "t=2\nclean"]  # the default corruptions at T = 3
    assert meta["groups"] == [["input", 3], ["reconstruction", 3]] and meta["columns"] == frames * 2
    assert meta["marked_columns"] == [2, 5] and len(meta["layout"]["row_y"]) == 4
    assert png_text(video / "pictures" / "pseudo_videos_step0000004.png")["columns"] == frames  # previews too
    image = _train(tmp_path, "vqvae", *TOKENIZERS["vqvae"], "eval.metrics=[psnr]")
    path = image / "pictures" / "eval_pseudo_videos_then_reconstructions.png"
    meta = png_text(path)  # an image model: input and reconstruction side by side, not a one-column strip
    assert meta["groups"] == [["input", 1], ["reconstruction", 1]] and meta["columns"] == ["clean image"] * 2
    tile_h, tile_w = meta["layout"]["tile"]
    with Image.open(path) as png:
        assert png.width >= 2 * tile_w and png.height < 5 * tile_h  # 4 rows of 2 tiles, not 8 rows of 1
    curves = png_text(image / "pictures" / "loss_curves.png")["curves"]
    assert curves == ["loss (total)", "recon_clean (clean-frame reconstruction)"]


def test_diffusion_outputs_label_generated_frames_and_warn_when_sampling_outlasts_training(tmp_path: Path) -> None:
    video = _train(tmp_path, "video", "model.family=video_unet", "pseudo_video.num_frames=3", *UNET)
    meta = png_text(video / "pictures" / "eval_generated_pseudo_videos.png")
    assert "diffusion.clip_x0=last" in meta["title"] and "beyond [-1, 1]" in meta["title"]
    assert [c.splitlines()[0] for c in meta["columns"]] == ["t=0", "t=1", "t=2"]
    assert all(c.splitlines()[-1].startswith("out ") and c.endswith("%") for c in meta["columns"])
    assert "mse_last_frame (clean-frame denoising MSE)" in png_text(video / "pictures" / "loss_curves.png")["curves"]
    assert json.loads((video / "eval.json").read_text())["protocol"]["task"] == "generation (last frame of a generated pseudo video)"
    image = _train(tmp_path, "image", "model.family=unet", "pseudo_video.num_frames=1", *UNET)
    assert json.loads((image / "eval.json").read_text())["protocol"]["task"] == "generation (a generated image)"
    summary = json.loads((image / "train_summary.json").read_text())
    (image / "train_summary.json").write_text(json.dumps({**summary, "wall_time_s": 1e-4}))  # "trained" in 0.1 ms
    eval_config = build_config(overrides=["eval.num_images=16", "eval.batch_size=8", "eval.metrics=[swd]"]).eval
    with pytest.warns(UserWarning, match=r"sampling 16 images will take about .* longer than training took"):
        evaluate_run(image, eval_config)


def test_skipped_metrics_with_one_reason_are_said_once() -> None:
    reason = "FID/KID are SKIPPED: Inception weights: not found"
    result = {"run": "r", "family": "unet", "metrics": {"swd_avg": 1.0}, "protocol": {},
              "skipped": {"fid": reason, "kid": reason, "lpips": "no VGG weights"}}
    text = format_eval_markdown(result)
    assert text.count(reason) == 1 and "| fid, kid | skipped: " + reason in text and "| lpips | skipped: no VGG" in text


def test_preview_images_are_spread_over_the_data() -> None:
    from pseudovideo.data.datasets import TensorImageDataset
    from pseudovideo.training.previews import _preview_images

    count = 80  # like a class-sorted folder: the first 8 items would all be one class
    values = torch.arange(count, dtype=torch.uint8)[:, None, None, None].expand(count, 1, 4, 4).contiguous()
    dataset = TensorImageDataset(values, name="index", resolution=4)
    images = _preview_images(dataset, build_config(overrides=["train.batch_size=16"]).train, torch.device("cpu"))
    picked = ((images[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()  # back to the item index
    assert picked == torch.linspace(0, count - 1, 8).round().long().tolist()


def test_reconstruction_examples_are_spread_over_the_evaluated_images() -> None:
    """The pictured pseudo videos come from images spread over the evaluated set (a class-sorted split's first
    images are all one class), and picking them leaves the reconstructions, and so the metrics, unchanged."""
    from types import SimpleNamespace

    from pseudovideo.evaluation.inference import reconstruct_clean_frames

    class PerfectTokenizer(torch.nn.Module):  # reconstructs every frame exactly: what comes out is what went in
        def forward(self, video: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(recon=video)

    images = torch.linspace(-1, 1, 40)[:, None, None, None].expand(40, 1, 8, 8).contiguous()  # image i: value i
    config = build_config(overrides=["pseudo_video.num_frames=3", "data.resolution=8"])
    recon, example = reconstruct_clean_frames(PerfectTokenizer(), config, images, batch_size=16, seed=0, device=torch.device("cpu"))
    assert torch.equal(recon, images)
    assert example.shape == (2, 4, 3, 1, 8, 8)
    picked = [int(v) for v in ((example[0, :, -1, 0, 0, 0] + 1) / 2 * 39).round()]
    assert picked == [0, 13, 26, 39]  # spread over all 40, across the batches of 16
