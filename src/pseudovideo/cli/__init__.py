"""Command-line interface: ``pseudovideo <command>``. It only parses arguments and wires modules.

Every command that takes a config accepts ``-c CONFIG.yaml`` and trailing ``key.sub=value``
overrides; the config is validated before any work starts.

Every expected failure (a bad config or argument, a missing, unreadable or corrupt file, a locked
run folder, a diverged training, a full disk, a NaN metric) prints one line on stderr and exits with
status 2; ``--debug`` (or ``PSEUDOVIDEO_DEBUG=1``) shows the full traceback instead. Anything else is
a bug and keeps its traceback. Ctrl-C prints one line (for ``train``: the step reached, the checkpoint
kept and the command that resumes) and exits with status 130.

A ``python:`` model base named by a config, a run folder or an experiment file is imported and run only
with ``--trust-code`` (see :mod:`pseudovideo.interop.trust`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from pseudovideo.cli.help import MAIN_EPILOG, command_help
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
from pseudovideo.config.safe_yaml import QUOTE_LIMIT
from pseudovideo.interop.trust import check_trusted


class UsageError(ValueError):
    """A command-line problem the user can fix."""


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML run config (defaults: built-in)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.steps=100")


def _add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code", action="store_true",
        help="allow a python:package.module:factory model base named by the config, run folder or experiment file "
             "to be imported and run (never done without this flag)",
    )


def _require_positive(value: int, option: str) -> None:
    """Refuses a count argument below 1 before any work starts."""
    if value < 1:
        raise UsageError(f"{option}: expected a positive number, got {value}")


def _name_given(args: argparse.Namespace) -> bool:
    """Whether the run was named, by ``name=`` or by the config file."""
    if any(o.split("=", 1)[0] == "name" for o in args.overrides):
        return True
    return args.config is not None and "name" in read_yaml(args.config)


def _fresh_run_name(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """An unnamed run gets the first free folder out_dir/run, run-2, ... so that no earlier result is replaced."""
    import dataclasses

    from pseudovideo.training.runs import first_free_name

    if _name_given(args):
        return config
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each rank would pick its own free folder
        raise UsageError("under torchrun give the run a name (name=NAME): every rank must write into the same run folder")
    return dataclasses.replace(config, name=first_free_name(config.out_dir, config.name))


def _output_folder(config: RunConfig, args: argparse.Namespace, command: str) -> Path:
    """Where ``show`` / ``diagnose`` write: ``--out``, else OUT_DIR/COMMAND/NAME (the first free NAME, run-2, ...,
    for an unnamed config), never into a trained run's folder."""
    from pseudovideo.training.runs import first_free_name

    if args.out is not None:
        return Path(args.out)
    parent = Path(config.out_dir) / command
    return parent / (config.name if _name_given(args) else first_free_name(parent, config.name))


def _keep_previous(path: Path) -> None:
    """Keeps an earlier result file under a numbered name instead of replacing it, and says so."""
    from pseudovideo.training.runs import keep_previous

    kept = keep_previous(path)
    if kept is not None:
        print(f"earlier {path.name} kept as {kept}")


def _train_defaults(args: argparse.Namespace) -> list[str]:
    """Overrides that make ``train`` without ``-c`` meaningful: an image family trains the image baseline (T = 1).

    The built-in defaults describe 8-frame pseudo videos (what ``show`` and ``diagnose`` look at); a VQVAE or
    DDPM UNet on them would code every frame alone, which is neither the image baseline nor a video model.
    The video families (cvivit, video_unet) keep T = 8; ``pseudo_video.num_frames=N`` always wins.
    """
    if args.config is not None:
        return []
    given = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    family = given.get("model.family", "vqvae")
    if family in ("vqvae", "unet") and "pseudo_video.num_frames" not in given:
        return ["pseudo_video.num_frames=1"]
    return []


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# show / diagnose: pseudo videos of a dataset


def cmd_show(args: argparse.Namespace) -> int:
    """Writes a PNG grid and an animated GIF of pseudo videos for a dataset and a construction."""
    from pseudovideo.data.images import spread_images
    from pseudovideo.pictures import picture_upscale, save_video_gif, save_video_grid
    from pseudovideo.training.tasks import build_dataset_from_config, build_pseudo_video_builder

    _require_positive(args.n, "--n")
    config = _config_from_args(args)
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    builder = build_pseudo_video_builder(config.pseudo_video)
    if config.pseudo_video.learned.objective != "none":
        print(f"note: pseudo_video.learned.objective={config.pseudo_video.learned.objective} is searched or learned by "
              "a run; these are its configured starting point (search-corruptions shows the searched one)")
    images = spread_images(dataset, args.n)  # (N, C, H, W), every class of a class-sorted folder
    video = builder(images, generator=_generator(args.seed))  # (N, T, C, H, W)
    out = _output_folder(config, args, "show")
    stem = f"{dataset.name}_{config.pseudo_video.construction}_T{builder.num_frames}".replace("/", "_").replace(":", "_")
    upscale = picture_upscale(config.data.resolution)
    for name in (f"{stem}.png", f"{stem}.gif", "config.yaml"):
        _keep_previous(out / name)
    grid = save_video_grid(video, out / f"{stem}.png", upscale=upscale, column_labels=builder.frame_labels())
    gif = save_video_gif(video, out / f"{stem}.gif", upscale=upscale)
    save_config(config, out / "config.yaml")
    layout = ("rows = frames, last row clean; columns = signals" if images.ndim == 3  # line plots of signals
              else "rows = images, columns = frames, last column clean")
    print(f"pseudo-video grid ({layout}): {grid}")
    print(f"pseudo-video animation: {gif}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Fits the best linear predictor of the clean frame from the last k frames (paper section 4.1)."""
    import dataclasses

    from pseudovideo.data.images import spread_images
    from pseudovideo.pseudo_video.diagnose import DIAGNOSE_CONSTRUCTIONS, diagnose_constructions, diagnosed_section
    from pseudovideo.pseudo_video.informativeness import plot_informativeness
    from pseudovideo.training.tasks import build_dataset_from_config

    _require_positive(args.n_images, "--n-images")
    config = _config_from_args(args)
    constructions = list(DIAGNOSE_CONSTRUCTIONS.get(args.construction, [args.construction]))
    for construction in constructions:  # the config was checked with its own construction: check these before work
        pv_config = diagnosed_section(config.pseudo_video, construction)
        validate_config(dataclasses.replace(config, pseudo_video=pv_config))
    dataset = build_dataset_from_config(config, split=config.data.train_split)
    images = spread_images(dataset, args.n_images)  # (N, C, H, W), every class of a class-sorted folder
    out = _output_folder(config, args, "diagnose")
    out.mkdir(parents=True, exist_ok=True)
    results, reports = diagnose_constructions(images, config.pseudo_video, constructions, seed=args.seed,
                                              dataset_name=dataset.name)
    path = out / "diagnose.json"
    for name in ("diagnose.json", "config.yaml", "informativeness.png"):
        _keep_previous(out / name)
    config_path = str(args.config) if args.config is not None else None  # null in JSON, not "None"
    path.write_text(json.dumps({"config": config_path, "overrides": args.overrides, "results": results,
                                "informativeness": reports}, indent=2))
    save_config(config, out / "config.yaml")
    plot = plot_informativeness(reports, out / "informativeness.png", title=f"{dataset.name}, {len(images)} images")
    print(f"results: {path}\ninformativeness against the frame index: {plot}")
    return 0


def cmd_search_corruptions(args: argparse.Namespace) -> int:
    """Searches a pseudo-video corruption before training and writes it as a config fragment (and safetensors)."""
    from pseudovideo.pseudo_video.learned.search import write_search

    config = _config_from_args(args)
    out = _output_folder(config, args, "search-corruptions")
    for name in ("corruption.yaml", "corruption.safetensors", "search.json"):
        _keep_previous(out / name)
    write_search(config, args.objective, out, log=print)
    return 0


# --------------------------------------------------------------------------------------------
# train / eval / sample / demo


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a run (or resumes one exactly with --resume RUN_DIR), then evaluates it."""
    from pseudovideo.evaluation.evaluate import evaluate_run, format_eval_markdown
    from pseudovideo.training.runs import load_run_config, train_run

    if args.resume is not None:
        # The saved config is the base; a config file and overrides may change e.g. train.steps.
        base = load_run_config(args.resume)
        tree = merge_config_dict(config_to_dict(base), read_yaml(args.config) if args.config else {})
        config = build_config(tree, args.overrides)
        if config.run_dir.resolve() != Path(args.resume).resolve():
            raise UsageError(f"--resume {args.resume} but the config's run folder is {config.run_dir}; do not change name/out_dir when resuming")
    else:
        defaults = _train_defaults(args)
        config = _fresh_run_name(load_config(args.config, [*defaults, *args.overrides]), args)
        if args.config is None:
            print(f"no -c CONFIG: training model.family={config.model.family} at pseudo_video.num_frames="
                  f"{config.pseudo_video.num_frames} on {config.data.dataset} into {config.run_dir} (see configs/)")
    if not args.trust_code:  # refused here to name the file or override that set the base
        check_trusted(config, trust_code=False, source=_base_source(args))
    result = train_run(config, resume=args.resume is not None, trust_code=args.trust_code)
    print(_train_summary_line(result))
    if not args.no_eval and int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 evaluates
        print(format_eval_markdown(evaluate_run(result.run_dir, device=config.train.device, trust_code=args.trust_code)))
    return 0


def _base_source(args: argparse.Namespace) -> str:
    """Where ``train``'s ``model.lifted.base`` comes from, for the one-line refusal of untrusted code."""
    given = [o for o in args.overrides if o.split("=", 1)[0] == "model.lifted.base"]
    if given:
        return f"the override {given[-1]}"
    if args.config is not None and "base" in ((read_yaml(args.config).get("model") or {}).get("lifted") or {}):
        return f"config file {args.config}"
    if getattr(args, "resume", None) is not None:
        return str(Path(args.resume) / "config.yaml")
    return f"config file {args.config}" if args.config is not None else "the config"


def _train_summary_line(result) -> str:  # noqa: ANN001 - a TrainResult (imported lazily)
    """What this process trained: "trained 20 steps (20 -> 40) in 3 s (85.2 images/s) -> runs/x"."""
    trained = result.steps - result.start_step
    if trained == 0:
        return f"nothing to train: {result.run_dir} is already at step {result.steps}"
    span = f" ({result.start_step} -> {result.steps})" if result.start_step else ""
    return f"trained {trained} steps{span} in {result.wall_time_s:.0f} s ({result.images_per_s:.1f} images/s) -> {result.run_dir}"


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluates a trained run; ``eval.*`` overrides change the protocol (e.g. eval.num_images=10000)."""
    from pseudovideo.evaluation.evaluate import evaluate_run, format_eval_markdown
    from pseudovideo.training.runs import load_run_config

    base = load_run_config(args.run_dir)
    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise UsageError(f"eval only takes eval.* overrides, got {bad}")
    eval_config = build_config(config_to_dict(base), args.overrides).eval
    check_trusted(base, trust_code=args.trust_code, source=str(Path(args.run_dir) / "config.yaml"))  # before any write
    result = evaluate_run(args.run_dir, eval_config, device=args.device, trust_code=args.trust_code)
    print(format_eval_markdown(result))
    print(f"results: {Path(args.run_dir) / 'eval.json'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Writes N generated images (PNG files and a grid) and, for video models, the pseudo videos."""
    from pseudovideo.training.distributed import resolve_device
    from pseudovideo.evaluation.evaluate import generate_videos, save_generated_grid
    from pseudovideo.pictures import picture_upscale, save_image_grid, save_images, save_video_gif
    from pseudovideo.training.runs import load_run
    from pseudovideo.config.modality import modality_name
    from pseudovideo.training.tasks import is_tokenizer

    _require_positive(args.n, "--n")
    _require_positive(args.batch_size, "--batch-size")
    device = resolve_device(args.device)
    bad = [o for o in args.overrides if not o.startswith("diffusion.")]
    if bad:
        raise UsageError(f"sample only takes diffusion.* overrides (sampler, sample_steps, sampling_mode, ...), got {bad}")
    config, model, channels = load_run(args.run_dir, use_ema=not args.raw_weights, device=device, trust_code=args.trust_code)
    if is_tokenizer(config):
        raise UsageError(f"{args.run_dir} holds a {config.model.family} tokenizer; sample needs a diffusion run "
                         "(unet, video_unet or a lifted diffusion model)")
    config = build_config(config_to_dict(config), args.overrides)  # e.g. diffusion.sampler=ddpm
    videos, info = generate_videos(model, config, args.n, channels, batch_size=args.batch_size, seed=args.seed, device=device,
                                   progress=True)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples"
    images = videos[:, -1]
    save_images(images, out / "images")
    upscale = picture_upscale(config.data.resolution)
    print(f"grid: {save_image_grid(images[:64], out / 'grid.png', upscale=upscale)}")
    if videos.shape[1] > 1:
        print(f"pseudo videos: {save_generated_grid(videos[:16], config, out / 'pseudo_videos.png', upscale=upscale)}")
        print(f"animation: {save_video_gif(videos[:16], out / 'pseudo_videos.gif', upscale=upscale)}")
    print(f"{len(images)} {modality_name(config.data)} in {out / 'images'}; sampling: {info}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Writes a run's image denoiser in another library's format (diffusers UNet2DModel + scheduler)."""
    from pseudovideo.interop.export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out, use_ema=not args.raw_weights, drop_temporal=args.drop_temporal,
                         overwrite=args.overwrite, trust_code=args.trust_code)
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
        eval_images=args.eval_images, seed=args.seed, progress=not args.no_progress, overrides=tuple(args.overrides),
    )
    print(run_demo(settings))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Lists every config key (type, default, meaning), as text or markdown, or prints a resolved config."""
    import yaml

    from pseudovideo.config.docs import config_markdown, format_config_list

    if args.markdown:
        print(config_markdown(), end="")
    elif args.list or (args.config is None and not args.overrides):
        print(format_config_list(), end="")
    else:
        print(yaml.safe_dump(config_to_dict(_config_from_args(args)), sort_keys=False), end="")
    return 0


def cmd_feature_net(args: argparse.Namespace) -> int:
    """Trains (or finds in eval.cache_dir) the classifier whose features the cfd metric compares."""
    from pseudovideo.evaluation.feature_net import prepare_feature_net
    from pseudovideo.training.tasks import build_dataset_from_config

    config = _config_from_args(args)
    channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    net = prepare_feature_net(config, channels, retrain=args.retrain)
    print(f"feature net: {net.path}\nweights sha256: {net.sha256}\nheld-out accuracy: {net.accuracy:.4f}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Runs an experiment grid (skipping finished runs, resuming interrupted ones) and writes its tables."""
    from pseudovideo.experiments.runner import run_experiment

    if args.jobs is not None:
        _require_positive(args.jobs, "--jobs")
    # run_experiment prints the plan, the results table and the paths of what it wrote (once).
    run_experiment(args.config, scale=args.scale, out_dir=args.out, only=args.only, overrides=args.overrides, log=print,
                   trust_code=args.trust_code, jobs=args.jobs, launcher=args.launcher, allow_mixed=args.allow_mixed,
                   unrecorded_commit=args.unrecorded_commit)
    return 0


# --------------------------------------------------------------------------------------------


# Help of the options declared without one (so that `--help` can show their defaults).
_OPTION_HELP = {
    "seed": "random seed", "n_images": "images of the dataset used", "construction": "pseudo-video construction(s)",
    "device": "auto, cpu, cuda or cuda:N", "n": "number of images", "batch_size": "batch size",
    "out": "output folder", "resolution": "image side (default: 16 for digits, 32 otherwise)",
    "family": "which model pair", "eval_images": "held-out images evaluated", "no_progress": "no progress bars",
}


class _DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option's help, except where there is no default to show; keeps the
    line breaks of the description and of the examples (the epilog)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == [] or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Gives the parser and its sub-commands the defaults-showing formatter and a help for every option."""
    parser.formatter_class = _DefaultsHelpFormatter
    for action in parser._actions:
        if action.option_strings and action.help is None:
            action.help = _OPTION_HELP.get(action.dest, action.dest.replace("_", " "))
        if isinstance(action, argparse._SubParsersAction):
            for sub_parser in action.choices.values():
                _show_defaults(sub_parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``pseudovideo`` argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="pseudovideo",
        description="Train video counterparts of image generative models on pseudo videos.",
        epilog=MAIN_EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of every error")
    from pseudovideo import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="write a PNG grid and a GIF of pseudo videos of a dataset")
    _add_config_arguments(show)
    show.add_argument("--n", type=int, default=8, help="number of images (rows)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", type=Path, default=None, help="output folder (default: OUT_DIR/show/NAME, the config's out_dir and name)")
    show.set_defaults(func=cmd_show)

    diagnose = sub.add_parser("diagnose", help="held-out MSE of predicting the clean frame from the last k frames")
    _add_config_arguments(diagnose)
    diagnose.add_argument("--n-images", type=int, default=2000)
    diagnose.add_argument("--construction", default="both",
                          choices=["both", "all", "first_order", "higher_order", "shuffled", "noise_frames", "copies"],
                          help="pseudo-video construction(s): both = first_order and higher_order; all = every one")
    diagnose.add_argument("--seed", type=int, default=0)
    diagnose.add_argument("--out", type=Path, default=None, help="output folder (default: OUT_DIR/diagnose/NAME, the config's out_dir and name)")
    diagnose.set_defaults(func=cmd_diagnose)

    search = sub.add_parser("search-corruptions", help="search a pseudo-video corruption before training; "
                                                        "writes it as a config fragment")
    _add_config_arguments(search)
    search.add_argument("--objective", choices=["informativeness", "random_search"], default=None,
                        help="the search (default: the config's pseudo_video.learned.objective if it is one of these, "
                             "else informativeness)")
    search.add_argument("--out", type=Path, default=None, help="output folder (default: OUT_DIR/search-corruptions/NAME, from the config's out_dir and name)")
    search.set_defaults(func=cmd_search_corruptions)

    train = sub.add_parser("train", help="train a run from a config (then evaluate it)")
    _add_config_arguments(train)
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run exactly from its newest checkpoint")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    _add_trust_argument(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a trained run (eval.json and eval.md in the run folder)")
    evaluate.add_argument("run_dir", type=Path, help="a trained run's folder, e.g. runs/digits_cvivit (a folder of runs lists them)")
    evaluate.add_argument("overrides", nargs="*", metavar="eval.key=value", help="protocol changes, e.g. eval.num_images=200")
    evaluate.add_argument("--device", default="auto")
    _add_trust_argument(evaluate)
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
    _add_trust_argument(sample)
    sample.set_defaults(func=cmd_sample)

    feature_net = sub.add_parser("feature-net", help="train the dataset classifier behind the cfd metric (cached)")
    _add_config_arguments(feature_net)
    feature_net.add_argument("--retrain", action="store_true", help="train anew even when the cache file exists")
    feature_net.set_defaults(func=cmd_feature_net)

    export = sub.add_parser("export", help="write a diffusion run's image UNet as a diffusers UNet2DModel folder")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out", type=Path, help="output folder (UNet2DModel.from_pretrained(OUT))")
    export.add_argument("--format", choices=["diffusers"], default="diffusers")
    export.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of the EMA")
    export.add_argument("--drop-temporal", action="store_true",
                        help="for video runs: export the image model with the temporal layers removed")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty OUT, replacing the files the export writes (others are kept)")
    _add_trust_argument(export)
    export.set_defaults(func=cmd_export)

    experiment = sub.add_parser("experiment", help="run a grid of runs from configs/experiments/ and tabulate it")
    experiment.add_argument("config", type=Path, help="experiment YAML, e.g. configs/experiments/frames.yaml")
    experiment.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to every run")
    experiment.add_argument("--scale", default="cpu-small", help="a scale of the experiment file (cpu-small, paper)")
    experiment.add_argument("--out", type=Path, default=Path("runs/experiments"))
    experiment.add_argument("--only", default=None, help="glob over run names, e.g. 'cvivit-*' or '*-s0'")
    _add_trust_argument(experiment)
    experiment.add_argument("--jobs", type=int, default=None, metavar="N",
                            help="runs at once: local worker processes with cores/N torch threads each, logs in "
                                 "FOLDER/logs/RUN.log (default 1: in this process); with submitit, Slurm jobs in "
                                 "flight (default: all ready runs)")
    experiment.add_argument("--launcher", choices=["local", "submitit"], default="local",
                            help="submitit: each run a Slurm job (pip install 'pseudovideo[submitit]'), sized by the "
                                 "experiment's slurm: section and slurm.KEY=VALUE overrides")
    experiment.add_argument("--allow-mixed", action="store_true",
                            help="tabulate runs made by different code (git commits), marked in the tables")
    experiment.add_argument("--unrecorded-commit", default=None, metavar="COMMIT",
                            help="the commit of runs made before commits were recorded (shown as stated)")
    experiment.set_defaults(func=cmd_experiment)

    demo = sub.add_parser("demo", help="the main job: image model vs its video counterpart on pseudo videos")
    demo.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to both runs, e.g. train.lr=5e-4")
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

    config = sub.add_parser("config", help="list every config key (type, default, meaning) or print a resolved config")
    _add_config_arguments(config)
    config.add_argument("--list", action="store_true", help="every key with its type, default and meaning (also without -c)")
    config.add_argument("--markdown", action="store_true", help="the same as a markdown document (docs/config.md)")
    config.set_defaults(func=cmd_config)

    for name, command in sub.choices.items():  # `--debug` also after the command name; a description and examples
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.description, command.epilog = command_help(name)
    _show_defaults(parser)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean a problem the user can act on (one-line message, exit 2), not a bug."""
    from PIL import Image

    from pseudovideo.checkpoint import CheckpointError, RunLockedError
    from pseudovideo.evaluation.evaluate import NonFiniteMetricError
    from pseudovideo.experiments.scheduler import RunsFailedError
    from pseudovideo.training.engine import TrainingDivergedError

    return (
        ConfigError, UsageError, ValueError, OSError, CheckpointError, RunLockedError, TrainingDivergedError,
        NonFiniteMetricError, Image.DecompressionBombError, RunsFailedError,
    )


MAX_ERROR_LINE = 10 * QUOTE_LIMIT  # characters of a one-line error (values in it are quoted shorter still)


def error_line(err: BaseException) -> str:
    """The one-line description of an expected failure (a full disk also says what it means for the run)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC and "checkpoint" not in text:
        text += "; the disk is full: free space and resume the run (its complete checkpoints are kept)"
    if len(text) > MAX_ERROR_LINE:
        text = f"{text[:MAX_ERROR_LINE]}... ({len(text) - MAX_ERROR_LINE:,} more characters cut)"
    return text


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
    return f"pseudovideo: {category.__name__}: {message}\n"


@contextlib.contextmanager
def _short_warnings() -> Iterator[None]:
    """Warnings print as one line, without the source line of the module that raised them."""
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("PSEUDOVIDEO_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; expected failures print one clear line and exit with status 2 (see the module doc)."""
    parser = build_parser()
    # Overrides may come after options (`experiment CFG --scale paper train.device=cuda`); argparse
    # leaves those as unknown arguments, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    unknown = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    with _short_warnings():
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt as err:  # Ctrl-C: what was kept and how to go on, in one line
            if _debug_requested(args):
                raise
            print(f"pseudovideo {args.command}: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:
            if _debug_requested(args) or not isinstance(err, expected_errors()):
                raise
            print(f"pseudovideo {args.command}: error: {error_line(err)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
