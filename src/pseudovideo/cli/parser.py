"""The ``pseudovideo`` argument parser: one sub-command per job, each with its description, examples
(:mod:`pseudovideo.cli.help`) and the defaults of its options in ``--help``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pseudovideo._version import __version__
from pseudovideo.cli.commands import (
    cmd_config,
    cmd_demo,
    cmd_diagnose,
    cmd_eval,
    cmd_experiment,
    cmd_export,
    cmd_feature_net,
    cmd_sample,
    cmd_search_corruptions,
    cmd_show,
    cmd_train,
)
from pseudovideo.cli.help import MAIN_EPILOG, command_help

__all__ = ["build_parser"]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="YAML run config (defaults: built-in)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.steps=100")


def _add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code", action="store_true",
        help="allow a python:package.module:factory model base named by the config, run folder or experiment file "
             "to be imported and run (never done without this flag)",
    )


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pseudo_video_commands(sub)
    _add_run_commands(sub)
    _add_experiment_command(sub)
    _add_demo_and_config_commands(sub)
    for name, command in sub.choices.items():  # `--debug` also after the command name; a description and examples
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.description, command.epilog = command_help(name)
    _show_defaults(parser)
    return parser


def _add_pseudo_video_commands(sub: argparse._SubParsersAction) -> None:
    """show, diagnose and search-corruptions: pseudo videos of a dataset, before any training."""
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


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """train, eval, sample, feature-net and export: a run and what is done with its folder."""
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

    feature_net = sub.add_parser("feature-net", help="train the dataset classifier behind the cfd / ckd metrics (cached)")
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


def _add_experiment_command(sub: argparse._SubParsersAction) -> None:
    """experiment: a grid of runs from an experiment file, tabulated."""
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


def _add_demo_and_config_commands(sub: argparse._SubParsersAction) -> None:
    """demo (the main job) and config (the key reference, a resolved config)."""
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
