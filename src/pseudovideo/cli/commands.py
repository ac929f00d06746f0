"""What each ``pseudovideo`` command does (``cmd_*``, one per sub-command): the arguments parsed by
:mod:`pseudovideo.cli.parser` in, the modules that do the work wired together. Heavy modules are imported inside the
commands, so that ``--help`` and a config error stay fast."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pseudovideo.config import (
    RunConfig,
    build_config,
    config_to_dict,
    load_config,
    merge_config_dict,
    read_yaml,
    save_config,
    validate_config,
)
from pseudovideo.config.modality import modality_name, spatial_dims
from pseudovideo.interop.trust import check_trusted


class UsageError(ValueError):
    """A command-line problem the user can fix."""


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


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

    from pseudovideo.factory.run_folder import first_free_name

    if _name_given(args):
        return config
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each rank would pick its own free folder
        raise UsageError("under torchrun give the run a name (name=NAME): every rank must write into the same run folder")
    return dataclasses.replace(config, name=first_free_name(config.out_dir, config.name))


def _output_folder(config: RunConfig, args: argparse.Namespace, command: str) -> Path:
    """Where ``show`` / ``diagnose`` write: ``--out``, else OUT_DIR/COMMAND/NAME (the first free NAME, run-2, ...,
    for an unnamed config), never into a trained run's folder."""
    from pseudovideo.factory.run_folder import first_free_name

    if args.out is not None:
        return Path(args.out)
    parent = Path(config.out_dir) / command
    return parent / (config.name if _name_given(args) else first_free_name(parent, config.name))


def _keep_previous(path: Path) -> None:
    """Keeps an earlier result file under a numbered name instead of replacing it, and says so."""
    from pseudovideo.factory.run_folder import keep_previous

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


def cmd_show(args: argparse.Namespace) -> int:
    """Writes a PNG grid and an animated GIF of pseudo videos for a dataset and a construction."""
    from pseudovideo.data.datasets import spread_images
    from pseudovideo.pictures import picture_upscale, save_video_gif, save_video_grid
    from pseudovideo.factory.datasets import build_dataset_from_config
    from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder

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
    layout = ("rows = frames, last row clean; columns = signals" if spatial_dims(config.data) == 1  # line plots
              else "rows = images, columns = frames, last column clean")
    print(f"pseudo-video grid ({layout}): {grid}")
    print(f"pseudo-video animation: {gif}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Fits the best linear predictor of the clean frame from the last k frames (paper section 4.1)."""
    import dataclasses

    from pseudovideo.data.datasets import spread_images
    from pseudovideo.evaluation.diagnose import DIAGNOSE_CONSTRUCTIONS, diagnose_constructions, diagnosed_section
    from pseudovideo.pseudo_video.informativeness import plot_informativeness
    from pseudovideo.factory.datasets import build_dataset_from_config

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
    from pseudovideo.training.corruption_search import write_search

    config = _config_from_args(args)
    out = _output_folder(config, args, "search-corruptions")
    for name in ("corruption.yaml", "corruption.safetensors", "search.json"):
        _keep_previous(out / name)
    write_search(config, args.objective, out, log=print)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a run (or resumes one exactly with --resume RUN_DIR), then evaluates it."""
    from pseudovideo.evaluation.evaluate import evaluate_run
    from pseudovideo.evaluation.report import format_eval_markdown
    from pseudovideo.factory.run_folder import load_run_config
    from pseudovideo.training.runs import train_run

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
    from pseudovideo.evaluation.evaluate import evaluate_run
    from pseudovideo.evaluation.report import format_eval_markdown
    from pseudovideo.factory.run_folder import load_run_config

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
    from pseudovideo.evaluation.inference import generate_videos
    from pseudovideo.evaluation.report import save_generated_grid
    from pseudovideo.pictures import picture_upscale, save_image_grid, save_images, save_video_gif
    from pseudovideo.factory.models import load_run
    from pseudovideo.factory.models import is_tokenizer

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
    from pseudovideo.interop.export import ExportError
    from pseudovideo.factory.models import export_run

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
    """Trains (or finds in eval.cache_dir) the classifier whose features the cfd / ckd metrics compare."""
    from pseudovideo.factory.feature_net import prepare_feature_net
    from pseudovideo.factory.datasets import build_dataset_from_config

    config = _config_from_args(args)
    channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    net = prepare_feature_net(config, channels, retrain=args.retrain)
    print(f"feature net: {net.path}\nfile sha256: {net.file_sha256}\nweights sha256: {net.sha256}\n"
          f"held-out accuracy: {net.accuracy:.4f}\ndead features: {net.metadata.get('dead_features')}\n"
          f"side: {net.resolution} px, {net.metadata.get('steps')} steps")
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
