"""Command-line interface: ``pseudovideo <command>``. It only parses arguments and wires modules.

Every command that takes a config accepts ``-c CONFIG.yaml`` and trailing ``key.sub=value``
overrides; the config is validated before any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from pseudovideo.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_to_dict,
    load_config,
    merge_config_dict,
    read_yaml,
    save_config,
    validate_config,
)


class UsageError(ValueError):
    """A command-line problem the user can fix."""


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML run config (defaults: built-in)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.steps=100")


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# show / diagnose: pseudo videos of a dataset


def cmd_show(args: argparse.Namespace) -> int:
    """Writes a PNG grid and an animated GIF of pseudo videos for a dataset and a construction."""
    from pseudovideo.data import spread_images
    from pseudovideo.pictures import picture_upscale, save_video_gif, save_video_grid
    from pseudovideo.tasks import build_dataset_from_config, build_pseudo_video_builder

    config = _config_from_args(args)
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    builder = build_pseudo_video_builder(config.pseudo_video)
    images = spread_images(dataset, args.n)  # (N, C, H, W), every class of a class-sorted folder
    video = builder(images, generator=_generator(args.seed))  # (N, T, C, H, W)
    out = Path(args.out) if args.out else config.run_dir / "show"
    stem = f"{dataset.name}_{config.pseudo_video.construction}_T{builder.num_frames}".replace("/", "_").replace(":", "_")
    upscale = picture_upscale(config.data.resolution)
    grid = save_video_grid(video, out / f"{stem}.png", upscale=upscale)
    gif = save_video_gif(video, out / f"{stem}.gif", upscale=upscale)
    save_config(config, out / "config.yaml")
    print(f"pseudo-video grid (rows = images, columns = frames, last column clean): {grid}")
    print(f"pseudo-video animation: {gif}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Fits the best linear predictor of the clean frame from the last k frames (paper section 4.1)."""
    import dataclasses

    from pseudovideo.data import spread_images
    from pseudovideo.diagnose import format_diagnostic_table, markov_order_diagnostic
    from pseudovideo.tasks import build_dataset_from_config, build_pseudo_video_builder

    config = _config_from_args(args)
    constructions = ["first_order", "higher_order"] if args.construction == "both" else [args.construction]
    for construction in constructions:  # the config was checked with its own construction: check these before work
        pv_config = dataclasses.replace(config.pseudo_video, construction=construction)
        validate_config(dataclasses.replace(config, pseudo_video=pv_config))
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    images = spread_images(dataset, args.n_images)  # (N, C, H, W), every class of a class-sorted folder
    out = Path(args.out) if args.out else config.run_dir / "diagnose"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for construction in constructions:
        pv_config = dataclasses.replace(config.pseudo_video, construction=construction)
        builder = build_pseudo_video_builder(pv_config)
        rows = markov_order_diagnostic(images, builder, generator=_generator(args.seed))
        results[construction] = rows
        corruption = "+".join(c.name for c in pv_config.corruptions)
        title = f"{dataset.name}, {construction}, {corruption}, T={builder.num_frames}, {len(images)} images"
        print(format_diagnostic_table(rows, title))
        print()
    path = out / "diagnose.json"
    path.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides, "results": results}, indent=2))
    save_config(config, out / "config.yaml")
    print(f"results: {path}")
    return 0


# --------------------------------------------------------------------------------------------
# train / eval / sample / demo


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a run (or resumes one exactly with --resume RUN_DIR), then evaluates it."""
    from pseudovideo.evaluation import evaluate_run, format_eval_markdown
    from pseudovideo.runs import load_run_config, train_run

    if args.resume is not None:
        # The saved config is the base; a config file and overrides may change e.g. train.steps.
        base = load_run_config(args.resume)
        tree = merge_config_dict(config_to_dict(base), read_yaml(args.config) if args.config else {})
        config = build_config(tree, args.overrides)
        if config.run_dir.resolve() != Path(args.resume).resolve():
            raise UsageError(f"--resume {args.resume} but the config's run folder is {config.run_dir}; do not change name/out_dir when resuming")
    else:
        if args.config is None and not args.overrides:
            raise UsageError("train needs -c CONFIG.yaml (see configs/), key=value overrides, or --resume RUN_DIR")
        config = _config_from_args(args)
    result = train_run(config, resume=args.resume is not None)
    print(f"trained {result.steps} steps in {result.wall_time_s:.0f} s ({result.images_per_s:.1f} images/s) -> {result.run_dir}")
    if not args.no_eval and int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 evaluates
        print(format_eval_markdown(evaluate_run(result.run_dir, device=config.train.device)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluates a trained run; ``eval.*`` overrides change the protocol (e.g. eval.num_images=10000)."""
    from pseudovideo.evaluation import evaluate_run, format_eval_markdown
    from pseudovideo.runs import load_run_config

    base = load_run_config(args.run_dir)
    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise UsageError(f"eval only takes eval.* overrides, got {bad}")
    eval_config = build_config(config_to_dict(base), args.overrides).eval
    result = evaluate_run(args.run_dir, eval_config, device=args.device)
    print(format_eval_markdown(result))
    print(f"results: {Path(args.run_dir) / 'eval.json'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Writes N generated images (PNG files and a grid) and, for video models, the pseudo videos."""
    from pseudovideo.distributed import resolve_device
    from pseudovideo.evaluation import generate_videos
    from pseudovideo.pictures import picture_upscale, save_image_grid, save_images, save_video_gif, save_video_grid
    from pseudovideo.runs import load_run
    from pseudovideo.tasks import is_tokenizer

    device = resolve_device(args.device)
    bad = [o for o in args.overrides if not o.startswith("diffusion.")]
    if bad:
        raise UsageError(f"sample only takes diffusion.* overrides (sampler, sample_steps, sampling_mode, ...), got {bad}")
    config, model, channels = load_run(args.run_dir, use_ema=not args.raw_weights, device=device)
    if is_tokenizer(config):
        raise UsageError(f"{args.run_dir} holds a {config.model.family} tokenizer; sample needs a diffusion run "
                         "(unet, video_unet or a lifted diffusion model)")
    config = build_config(config_to_dict(config), args.overrides)  # e.g. diffusion.sampler=ddpm
    videos, info = generate_videos(model, config, args.n, channels, batch_size=args.batch_size, seed=args.seed, device=device)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples"
    images = videos[:, -1]
    save_images(images, out / "images")
    upscale = picture_upscale(config.data.resolution)
    print(f"grid: {save_image_grid(images[:64], out / 'grid.png', upscale=upscale)}")
    if videos.shape[1] > 1:
        print(f"pseudo videos: {save_video_grid(videos[:16], out / 'pseudo_videos.png', upscale=upscale)}")
        print(f"animation: {save_video_gif(videos[:16], out / 'pseudo_videos.gif', upscale=upscale)}")
    print(f"{len(images)} images in {out / 'images'}; sampling: {info}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Writes a run's image denoiser in another library's format (diffusers UNet2DModel + scheduler)."""
    from pseudovideo.diffusers_export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out, use_ema=not args.raw_weights, drop_temporal=args.drop_temporal)
    except ExportError as err:
        raise UsageError(str(err)) from None
    print(f"diffusers UNet2DModel: {out} (scheduler: {out / 'scheduler'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Trains and compares an image model and its video counterpart on pseudo videos."""
    from pseudovideo.demo import DemoSettings, run_demo

    settings = DemoSettings(
        dataset=args.dataset, root=args.root, resolution=args.resolution, family=args.family, steps=args.steps,
        frames=args.frames, batch_size=args.batch_size, device=args.device, out_dir=str(args.out),
        eval_images=args.eval_images, seed=args.seed, progress=not args.no_progress,
    )
    print(run_demo(settings))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Runs an experiment grid (skipping finished runs, resuming interrupted ones) and writes its tables."""
    from pseudovideo.experiments import run_experiment

    # run_experiment prints the plan, the results table and the paths of what it wrote (once).
    run_experiment(args.config, scale=args.scale, out_dir=args.out, only=args.only, overrides=args.overrides, log=print)
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

    train = sub.add_parser("train", help="train a run from a config (then evaluate it)")
    _add_config_arguments(train)
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run exactly from its newest checkpoint")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a trained run (eval.json and eval.md in the run folder)")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("overrides", nargs="*", metavar="eval.key=value")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=cmd_eval)

    sample = sub.add_parser("sample", help="generate images and pseudo videos from a diffusion run")
    sample.add_argument("run_dir", type=Path)
    sample.add_argument("overrides", nargs="*", metavar="diffusion.key=value", help="e.g. diffusion.sampler=ddpm")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="auto")
    sample.add_argument("--raw-weights", action="store_true", help="sample with the raw weights instead of the EMA")
    sample.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/samples)")
    sample.set_defaults(func=cmd_sample)

    export = sub.add_parser("export", help="write a diffusion run's image UNet as a diffusers UNet2DModel folder")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out", type=Path, help="output folder (UNet2DModel.from_pretrained(OUT))")
    export.add_argument("--format", choices=["diffusers"], default="diffusers")
    export.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of the EMA")
    export.add_argument("--drop-temporal", action="store_true",
                        help="for video runs: export the image model with the temporal layers removed")
    export.set_defaults(func=cmd_export)

    experiment = sub.add_parser("experiment", help="run a grid of runs from configs/experiments/ and tabulate it")
    experiment.add_argument("config", type=Path, help="experiment YAML, e.g. configs/experiments/frames.yaml")
    experiment.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to every run")
    experiment.add_argument("--scale", default="cpu-small", help="a scale of the experiment file (cpu-small, paper)")
    experiment.add_argument("--out", type=Path, default=Path("runs/experiments"))
    experiment.add_argument("--only", default=None, help="glob over run names, e.g. 'cvivit-*' or '*-s0'")
    experiment.set_defaults(func=cmd_experiment)

    demo = sub.add_parser("demo", help="the main job: image model vs its video counterpart on pseudo videos")
    demo.add_argument("--dataset", default="digits", help="digits (embedded), cifar10, mnist, celeba or folder:PATH")
    demo.add_argument("--root", default=None, help="local root of a torchvision dataset")
    demo.add_argument("--resolution", type=int, default=None)
    demo.add_argument("--family", choices=["tokenizer", "diffusion", "both"], default="tokenizer")
    demo.add_argument("--steps", type=int, default=None, help="training steps of each model (default: per family)")
    demo.add_argument("--frames", type=int, default=5, help="frames T of the video model's pseudo videos")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--eval-images", type=int, default=500)
    demo.add_argument("--device", default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; user errors print one clear line and exit with status 2."""
    parser = build_parser()
    # Overrides may come after options (`experiment CFG --scale paper train.device=cuda`); argparse
    # leaves those as unknown arguments, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    unknown = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError, FileNotFoundError, ValueError) as err:
        print(f"pseudovideo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
