"""The one-line description and the examples shown by every command's ``--help`` (as git and torchrun do).

Kept apart from cli.py so that the parser stays short: :func:`command_help` gives ``(description, epilog)``.
"""

from __future__ import annotations

__all__ = ["COMMAND_HELP", "MAIN_EPILOG", "command_help"]

_RUN_FOLDER = (
    "run folder: OUT_DIR/NAME, from the config's out_dir (default runs) and name; without a name the first free\n"
    "  runs/run, runs/run-2, ... Train a variant of a config beside it with name=NAME (a folder holding another\n"
    "  run is refused, never reused)."
)

COMMAND_HELP: dict[str, tuple[str, str]] = {
    "show": (
        "Draw pseudo videos of a dataset: a labelled PNG grid (columns = frames, clean last) and a GIF.",
        "writes into --out, else OUT_DIR/show/NAME (out_dir and name of the config), never into a trained run's folder.\n\n"
        "examples:\n"
        "  pseudovideo show pseudo_video.num_frames=8 --n 4\n"
        "  pseudovideo show -c configs/digits_cvivit.yaml              # -> runs/show/digits_cvivit/\n"
        "  pseudovideo show data.dataset=folder:.data/cifar10-jpeg data.resolution=32\n"
        "  pseudovideo show data.dataset=sktime:ItalyPowerDemand data.length=24   # 1-D signals: line plots, frames as rows",
    ),
    "diagnose": (
        "Paper sec. 4.1: how well the last k frames linearly predict the clean frame, first vs higher order.",
        "writes diagnose.json into --out, else OUT_DIR/diagnose/NAME (out_dir and name of the config).\n\n"
        "examples:\n"
        "  pseudovideo diagnose --n-images 500\n"
        "  pseudovideo diagnose \"pseudo_video.corruptions=[{name: noise, max_level: 0.5}]\" --construction higher_order",
    ),
    "search-corruptions": (
        "Search a pseudo-video corruption before training (informativeness gain or random search with proxy runs).",
        "prints the configured and the searched schedule; writes corruption.yaml (a config fragment),\n"
        "corruption.safetensors (for pseudo_video.learned.from_file) and search.json into --out, else\n"
        "OUT_DIR/search-corruptions/NAME (out_dir and name of the config).\n\n"
        "examples:\n"
        "  pseudovideo search-corruptions -c configs/learned_corruptions_search.yaml\n"
        "  pseudovideo search-corruptions -c configs/learned_corruptions_search.yaml --objective random_search",
    ),
    "train": (
        "Train a run from a config into its run folder, then evaluate it (eval.json, eval.md, pictures/).",
        _RUN_FOLDER + "\n"
        "evaluation: eval.metrics picks among psnr, ssim, lpips (tokenizers), swd, fid, kid and cfd (the Frechet\n"
        "  distance in a small classifier trained on the dataset, see `pseudovideo feature-net`); --no-eval skips it.\n"
        "every key with its default and meaning: pseudovideo config --list (or docs/config.md).\n\n"
        "examples:\n"
        "  pseudovideo train -c configs/digits_cvivit.yaml\n"
        "  pseudovideo train -c configs/digits_cvivit.yaml model.cvivit.clean_frame_context=own name=cvivit_own\n"
        "  pseudovideo train model.family=unet train.steps=200 \"eval.metrics=[swd,cfd]\"\n"
        "  pseudovideo train --resume runs/digits_cvivit train.steps=2000     # continue exactly\n"
        "  pseudovideo train data.dataset=sktime:ItalyPowerDemand data.length=24 model.family=lifted   # 1-D signals",
    ),
    "eval": (
        "Evaluate a trained run on the clean frame (PSNR, SSIM, LPIPS, SWD, CFD, FID, KID), protocol included.",
        "writes RUN_DIR/eval.json and eval.md (an earlier evaluation is kept as eval-1.json, ...).\n\n"
        "examples:\n"
        "  pseudovideo eval runs/digits_cvivit\n"
        "  pseudovideo eval runs/digits_ddpm eval.num_images=200 \"eval.metrics=[swd,cfd]\"\n"
        "  pseudovideo eval runs/                   # lists the runs inside",
    ),
    "sample": (
        "Generate images and, for video models, their pseudo videos from a diffusion run.",
        "examples:\n"
        "  pseudovideo sample runs/digits_video_diffusion --n 64\n"
        "  pseudovideo sample runs/digits_ddpm --n 16 diffusion.sampler=ddpm --out samples/",
    ),
    "feature-net": (
        "Train (or find cached) the dataset classifier whose features the cfd metric compares.",
        "examples:\n"
        "  pseudovideo feature-net data.dataset=digits\n"
        "  pseudovideo feature-net -c configs/cifar10_cvivit.yaml --retrain",
    ),
    "export": (
        "Write a diffusion run's image UNet as a diffusers UNet2DModel folder with its scheduler config.",
        "examples:\n"
        "  pseudovideo export runs/digits_ddpm exported/        # UNet2DModel.from_pretrained('exported/')\n"
        "  pseudovideo export runs/digits_video_diffusion exported/ --drop-temporal",
    ),
    "experiment": (
        "Run a grid of runs (configs/experiments/), skipping finished ones, and tabulate the results.",
        "examples:\n"
        "  pseudovideo experiment configs/experiments/frames.yaml --scale cpu-small\n"
        "  pseudovideo experiment configs/experiments/tokenizer-pair.yaml --only '*-s0' train.device=cuda",
    ),
    "demo": (
        "The main job: an image model and its video counterpart on pseudo videos, trained and compared.",
        "examples:\n"
        "  pseudovideo demo                                     # tokenizers on digits, ~3 CPU minutes\n"
        "  pseudovideo demo --family diffusion --steps 300\n"
        "  pseudovideo demo --dataset cifar10 --root DIR --device cuda train.lr=5e-4",
    ),
    "config": (
        "Print the resolved config as YAML, or every key with its type, default and meaning (--list).",
        "examples:\n"
        "  pseudovideo config                                   # the key list (as --list)\n"
        "  pseudovideo config -c configs/digits_cvivit.yaml train.steps=50     # the resolved YAML\n"
        "  pseudovideo config --markdown > docs/config.md",
    ),
}

MAIN_EPILOG = (
    "examples:\n"
    "  pseudovideo demo                                   # the main job, ~3 CPU minutes\n"
    "  pseudovideo train -c configs/digits_cvivit.yaml\n"
    "  pseudovideo COMMAND --help                         # what a command does, with examples"
)


def command_help(name: str) -> tuple[str, str]:
    """``(description, epilog)`` of the sub-command ``name`` for its ``--help``."""
    return COMMAND_HELP[name]
