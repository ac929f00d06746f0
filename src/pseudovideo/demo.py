"""The main job: train an image model and its video counterpart on pseudo videos, compare them.

``pseudovideo demo`` (the README's first command) runs, at matched steps, batch and model size:
- the tokenizer pair: VQVAE (image, T = 1) vs C-ViViT (video, T-frame higher-order blur+noise pseudo
  videos), compared on reconstructing the clean image. Both code a frame as the same grid of codes from
  codebooks of the same size, but not at the same rate: the C-ViViT's causal decoder reads the codes of all
  T steps to decode the clean frame (T times the VQVAE's); the table's rate column says so;
- with ``--family diffusion`` (or ``both``): DDPM UNet vs video UNet, compared on generated images.
Defaults fit about 5 minutes on 2 CPU cores on the embedded digits dataset; ``--dataset cifar10``,
``--dataset folder:PATH``, ``--steps`` and ``--device cuda`` scale it up unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from pseudovideo.config import ConfigError, RunConfig, build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.evaluation.inference import held_out_images, reconstruct_clean_frames
from pseudovideo.evaluation.report import group_skipped
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.models import build_model
from pseudovideo.factory.models import load_run
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
from pseudovideo.pictures import picture_upscale, plot_curves, read_csv_series, save_side_by_side, save_video_grid
from pseudovideo.training.distributed import resolve_device
from pseudovideo.training.runs import plan_run, train_run

FAMILIES = ("tokenizer", "diffusion", "both")


@dataclass
class DemoSettings:
    """Command-line knobs of the demo (everything else is in the printed, saved run configs)."""

    dataset: str = "digits"
    root: str | None = None
    resolution: int | None = None  # None: 16 for digits, 32 otherwise
    family: str = "tokenizer"
    steps: int | None = None  # None: the family's default
    frames: int = 5
    batch_size: int = 32
    device: str = "auto"
    out_dir: str = "runs/demo"
    eval_images: int = 500
    seed: int = 0
    progress: bool = True
    overrides: tuple[str, ...] = ()  # key=value applied to every run config of the demo, after its own settings


# Keys the demo sets itself from its options: overriding them would break the matched pair.
_DEMO_OWNED = {"name": "--out (runs are named after their models)", "out_dir": "--out", "model.family": "--family", "pseudo_video.num_frames": "--frames"}


def _demo_config(s: DemoSettings, overrides: list[str]) -> RunConfig:
    """A run config of the demo: its own overrides, then the user's ``s.overrides`` (ConfigError if one is the demo's)."""
    for text in s.overrides:
        key = text.split("=", 1)[0]
        if key in _DEMO_OWNED:
            raise ConfigError(f"demo sets {key} itself; use {_DEMO_OWNED[key]} instead of the override {text!r}")
    return build_config(overrides=[*overrides, *s.overrides])


def _common_overrides(s: DemoSettings, name: str, steps: int) -> list[str]:
    resolution = s.resolution or (16 if s.dataset == "digits" else 32)
    overrides = [
        f"name={name}", f"out_dir={s.out_dir}",
        f"data.dataset={s.dataset}", f"data.resolution={resolution}",
        f"train.steps={steps}", f"train.batch_size={s.batch_size}", f"train.device={s.device}",
        f"train.seed={s.seed}", f"train.progress={str(s.progress).lower()}",
        f"train.warmup_steps={max(1, steps // 20)}", f"train.checkpoint_every={max(1, steps // 2)}",
        f"train.image_every={steps}", f"train.log_every={max(1, steps // 50)}", "train.ema_decay=0.99",
        f"eval.num_images={s.eval_images}", "eval.batch_size=100", f"eval.seed={s.seed + 1234}",
        "pseudo_video.construction=higher_order",
        "pseudo_video.corruptions=[{name: blur, max_level: 1.5}, {name: noise, max_level: 0.2}]",
    ]
    if s.root:
        overrides.append(f"data.root={s.root}")
    return overrides


def _parameters(config: RunConfig, channels: int) -> int:
    return sum(p.numel() for p in build_model(config, channels).parameters())


def tokenizer_configs(s: DemoSettings, channels: int) -> list[RunConfig]:
    """VQVAE (T = 1) and C-ViViT (T = frames) configs with matched steps and nearly equal parameter counts."""
    steps = s.steps or 600
    codebook = ["model.vqvae.codebook_size=256", "model.vqvae.codebook_dim=32", "model.cvivit.codebook_size=256", "model.cvivit.codebook_dim=32"]
    video = _demo_config(s, _common_overrides(s, "cvivit", steps) + codebook + [
        "model.family=cvivit", f"pseudo_video.num_frames={s.frames}", "model.cvivit.patch_size=4",
        "model.cvivit.temporal_patch_size=1", "model.cvivit.dim=96", "model.cvivit.heads=4", "model.cvivit.dim_head=24",
        "model.cvivit.spatial_depth=2", "model.cvivit.temporal_depth=2", "train.lr=1e-3",
    ])
    target = _parameters(video, channels)
    # Matched per frame, not in rate: the VQVAE downsamples 4x and C-ViViT uses 4x4 patches, so each frame
    # is a grid of (H/4) x (W/4) codes of the same 256-code codebook in both; but the C-ViViT decodes the
    # clean frame from the codes of all T time steps (T times the VQVAE's rate; see the rate column).
    # The image model's width is chosen so that its parameter count is closest to the video model's.
    candidates = [
        _demo_config(s, _common_overrides(s, "vqvae", steps) + codebook + [
            "model.family=vqvae", "pseudo_video.num_frames=1", f"model.vqvae.base_channels={width}",
            "model.vqvae.channel_mult=[1,2,2]", "model.vqvae.num_res_blocks=1", "train.lr=1e-3",
        ])
        for width in (16, 24, 32, 40, 48, 56, 64, 80, 96)
    ]
    image = min(candidates, key=lambda c: abs(_parameters(c, channels) - target))
    return [image, video]


def diffusion_configs(s: DemoSettings, channels: int) -> list[RunConfig]:
    """DDPM UNet (T = 1) and video UNet (T = frames) configs with matched steps (the video UNet adds temporal layers)."""
    steps = s.steps or 800
    unet = ["model.unet.base_channels=32", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
            "model.unet.attention_resolutions=[8]", "diffusion.sample_steps=25", "train.lr=1e-3"]
    image = _demo_config(s, _common_overrides(s, "ddpm", steps) + unet + ["model.family=unet", "pseudo_video.num_frames=1"])
    video = _demo_config(s, _common_overrides(s, "video_diffusion", steps) + unet + [
        "model.family=video_unet", f"pseudo_video.num_frames={s.frames}"])
    return [image, video]


def compare_runs(results: Sequence[dict[str, Any]]) -> str:
    """Markdown comparison table of evaluated runs (one row per run)."""
    metric_names = list(dict.fromkeys(
        name for result in results for name in result["metrics"] if not name.startswith("swd_") or name == "swd_avg"
    ))
    header = ["run", "family", "T", "params", "rate (codes / bits per image)", *metric_names, "train img/s",
              "peak mem (MB)", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        train = result.get("train", {})
        cells = [
            Path(result["run"]).name, result["family"], str(result["protocol"].get("frames_seen_by_model", "")),
            f"{train.get('parameters', {}).get('model', 0) / 1e6:.2f}M", _rate_cell(result),
            *[f"{result['metrics'][m]:.4g}" if m in result["metrics"] else "-" for m in metric_names],
            f"{train.get('images_per_s', 0):.1f}", f"{train.get('peak_memory_bytes', 0) / 2**20:.0f}",
            f"{train.get('wall_time_s', 0):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = {name: reason for result in results for name, reason in result["skipped"].items()}
    lines += [f"\n{names}: skipped ({reason})" for names, reason in group_skipped(skipped).items()]
    return "\n".join(lines)


def _rate_cell(result: dict[str, Any]) -> str:
    """'codes / bits' per clean image of a tokenizer's evaluation, '-' for models without a rate (diffusion)."""
    rate = result.get("rate")
    return f"{rate['codes_per_image']} / {rate['bits_per_image']:.0f}" if rate else "-"


# The logged quantity plotted for both models of a pair: the CLEAN frame's term, which an image model
# (T = 1) and a video model (all frames, frame-weighted) share; their total losses are not comparable.
LOSS_CURVES = {
    "tokenizer": ("recon_clean", "clean-frame reconstruction loss (training)"),
    "diffusion": ("mse_last_frame", "clean-frame denoising MSE (training)"),
}


def _loss_curves(run_dirs: Sequence[Path], family: str, path: Path) -> Path:
    """One curve per run of the clean-frame loss term of ``family`` (:data:`LOSS_CURVES`), on a log scale."""
    key, label = LOSS_CURVES[family]
    series = {run_dir.name: read_csv_series(run_dir / "log.csv", [key])[key] for run_dir in run_dirs}
    return plot_curves(series, path, title=f"{label}, both models", ylabel=key, logy=True)


def _tokenizer_pictures(configs: Sequence[RunConfig], out: Path, device: torch.device) -> list[Path]:
    """Side-by-side reconstructions of both models, a pseudo-video strip, loss curves."""
    video_config = configs[-1]
    images = held_out_images(video_config, 16)
    rows, labels = [images], ["original"]
    for config in configs:
        _, model, _ = load_run(config.run_dir, device=device)
        recon, _ = reconstruct_clean_frames(model, config, images, batch_size=16, seed=0, device=device)
        rows.append(recon)
        labels.append(f"{config.model.family} (T={config.pseudo_video.num_frames})")
    upscale = picture_upscale(video_config.data.resolution)
    builder = build_pseudo_video_builder(video_config.pseudo_video)
    strip = builder(images[:6], generator=torch.Generator().manual_seed(0))
    return [
        save_side_by_side(rows, labels, out / "reconstructions_side_by_side.png", upscale=upscale),
        save_video_grid(strip, out / "pseudo_video_strip.png", upscale=upscale, column_labels=builder.frame_labels()),
        _loss_curves([c.run_dir for c in configs], "tokenizer", out / "loss_curves.png"),
    ]


def _diffusion_pictures(configs: Sequence[RunConfig], out: Path) -> list[Path]:
    paths = []
    for config in configs:
        samples = config.run_dir / "pictures" / "eval_samples.png"
        if samples.is_file():
            paths.append(samples)
    paths.append(_loss_curves([c.run_dir for c in configs], "diffusion", out / "diffusion_loss_curves.png"))
    return paths


def run_demo(settings: DemoSettings) -> str:
    """Trains, evaluates and compares the demo's model pair(s); returns the printed report."""
    if settings.family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got {settings.family!r}")
    probe = _demo_config(settings, _common_overrides(settings, "probe", 1))
    channels = build_dataset_from_config(probe, split=probe.data.eval_split).channels
    device = resolve_device(settings.device)
    out = Path(settings.out_dir)
    report = []
    families = ["tokenizer", "diffusion"] if settings.family == "both" else [settings.family]
    for family in families:
        configs = tokenizer_configs(settings, channels) if family == "tokenizer" else diffusion_configs(settings, channels)
        results = []
        for config in configs:
            print(f"\n== training {config.name}: {config.model.family}, T={config.pseudo_video.num_frames}, "
                  f"{config.train.steps} steps, run folder {config.run_dir}", flush=True)
            action, reason = plan_run(config)  # a folder holding other settings is an error naming them
            if action in ("train", "resume"):
                train_run(config, resume=action == "resume")
            else:
                print(f"   ({reason}: not trained again; delete the folder to retrain)")
            results.append(evaluate_run(config.run_dir, device=settings.device))
        pictures = (_tokenizer_pictures(configs, out, device) if family == "tokenizer" else _diffusion_pictures(configs, out))
        what = "reconstruction of the clean image" if family == "tokenizer" else "generated images (last frames)"
        table = compare_runs(results)
        report += [f"\n### {family} pair on {settings.dataset}: {what}, equal steps and batch\n", table, "\npictures:"]
        report += [f"  {p}" for p in pictures]
    text = "\n".join(report)
    (out / "comparison.md").write_text(text + "\n")
    return text + f"\n\ncomparison table: {out / 'comparison.md'}"
