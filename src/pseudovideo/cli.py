"""Command-line interface: ``pseudovideo <command>``. It only parses arguments and wires modules.

Every command that takes a config accepts ``-c CONFIG.yaml`` and trailing ``key.sub=value``
overrides; the config is validated before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from pseudovideo.config import ConfigError, RunConfig, load_config, save_config


class UsageError(ValueError):
    """A command-line problem the user can fix."""


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML run config (defaults: built-in)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.steps=100")


def _generator(seed: int, device: str = "cpu"):
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def _picture_upscale(resolution: int) -> int:
    """Integer upscale so that small images (16x16 digits, 32x32 CIFAR) are visible in a viewer."""
    return max(1, 64 // resolution)


# --------------------------------------------------------------------------------------------
# show / diagnose: pseudo videos of a dataset


def cmd_show(args: argparse.Namespace) -> int:
    """Writes a PNG grid and an animated GIF of pseudo videos for a dataset and a construction."""
    import torch

    from pseudovideo.pictures import save_video_gif, save_video_grid
    from pseudovideo.tasks import build_dataset_from_config, build_pseudo_video_builder

    config = _config_from_args(args)
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    builder = build_pseudo_video_builder(config.pseudo_video)
    count = min(args.n, len(dataset))
    images = torch.stack([dataset[i] for i in range(count)])  # (N, C, H, W)
    video = builder(images, generator=_generator(args.seed))  # (N, T, C, H, W)
    out = Path(args.out) if args.out else config.run_dir / "show"
    stem = f"{dataset.name}_{config.pseudo_video.construction}_T{builder.num_frames}".replace("/", "_").replace(":", "_")
    upscale = _picture_upscale(config.data.resolution)
    grid = save_video_grid(video, out / f"{stem}.png", upscale=upscale)
    gif = save_video_gif(video, out / f"{stem}.gif", upscale=upscale)
    save_config(config, out / "config.yaml")
    print(f"pseudo-video grid (rows = images, columns = frames, last column clean): {grid}")
    print(f"pseudo-video animation: {gif}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Fits the best linear predictor of the clean frame from the last k frames (paper section 4.1)."""
    import dataclasses

    import torch

    from pseudovideo.diagnose import format_diagnostic_table, markov_order_diagnostic
    from pseudovideo.tasks import build_dataset_from_config, build_pseudo_video_builder

    config = _config_from_args(args)
    constructions = ["first_order", "higher_order"] if args.construction == "both" else [args.construction]
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    count = min(args.n_images, len(dataset))
    images = torch.stack([dataset[i] for i in range(count)])  # (N, C, H, W)
    out = Path(args.out) if args.out else config.run_dir / "diagnose"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for construction in constructions:
        pv_config = dataclasses.replace(config.pseudo_video, construction=construction)
        builder = build_pseudo_video_builder(pv_config)
        rows = markov_order_diagnostic(images, builder, generator=_generator(args.seed))
        results[construction] = rows
        corruption = "+".join(c.name for c in pv_config.corruptions)
        title = f"{dataset.name}, {construction}, {corruption}, T={builder.num_frames}, {count} images"
        print(format_diagnostic_table(rows, title))
        print()
    path = out / "diagnose.json"
    path.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides, "results": results}, indent=2))
    save_config(config, out / "config.yaml")
    print(f"results: {path}")
    return 0


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``pseudovideo`` argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="pseudovideo",
        description="Train video counterparts of image generative models on pseudo videos.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="write a PNG grid and a GIF of pseudo videos of a dataset")
    _add_config_arguments(show)
    show.add_argument("--n", type=int, default=8, help="number of images (rows)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/show)")
    show.set_defaults(func=cmd_show)

    diagnose = sub.add_parser("diagnose", help="held-out MSE of predicting the clean frame from the last k frames")
    _add_config_arguments(diagnose)
    diagnose.add_argument("--n-images", type=int, default=2000)
    diagnose.add_argument("--construction", choices=["both", "first_order", "higher_order"], default="both")
    diagnose.add_argument("--seed", type=int, default=0)
    diagnose.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/diagnose)")
    diagnose.set_defaults(func=cmd_diagnose)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; user errors print one clear line and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError, FileNotFoundError, ValueError) as err:
        print(f"pseudovideo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
