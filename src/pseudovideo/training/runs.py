"""One run from a config to a run folder: check its inputs, plan it (train, resume, evaluate or skip), train it.

The run folder's layout and reading it back (its config, its trained model) are in
:mod:`pseudovideo.factory.run_folder` and :func:`pseudovideo.factory.models.load_run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from pseudovideo.checkpoint import list_checkpoints
from pseudovideo.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    describe_diff,
    dict_diff,
    load_config,
)
from pseudovideo.factory.datasets import build_dataset_from_config, check_split, unlabelled_reason
from pseudovideo.factory.feature_net import feature_net_skip_reason
from pseudovideo.factory.run_folder import first_free_name, read_train_summary
from pseudovideo.interop.trust import check_trusted
from pseudovideo.metrics.feature_net import FEATURE_NET_VERSION
from pseudovideo.training.distributed import init_distributed, resolve_device, teardown
from pseudovideo.training.engine import train
from pseudovideo.training.learned_runs import corruption_record, finish_corruption, prepare_corruption, summary_informativeness
from pseudovideo.training.memory import check_training_memory
from pseudovideo.training.randomness import seeded
from pseudovideo.training.result import TrainResult
from pseudovideo.training.tasks import build_task


def check_run_inputs(config: RunConfig) -> None:
    """Cheap checks of everything a run reads (dataset names, paths, both splits, an explicit cfd feature-net
    file) before any long work."""
    data = config.data
    for split in dict.fromkeys((data.train_split, data.eval_split)):
        check_split(data, split)  # image files or signal data, as the data's modality says
    net = config.eval.feature_net
    if {"cfd", "ckd"} & set(config.eval.metrics):
        if net and not Path(net).expanduser().is_file():
            raise FileNotFoundError(f"eval.feature_net: feature-net weights file {net!r} does not exist")
        reason = feature_net_skip_reason(config)
        if reason:  # said now, before training, and recorded in eval.json
            warnings.warn(f"cfd/ckd will be skipped: {reason}", stacklevel=2)
    if "probe" in config.eval.metrics and (reason := unlabelled_reason(config)):
        warnings.warn(f"probe: evaluation will skip it: {reason}", stacklevel=2)  # decided now, recorded in eval.json


# Keys that may differ between a run folder's saved config and the wanted one without making it another
# run: how it is shown or where it runs, not what it computes.
INCIDENTAL_KEYS = ("train.progress", "train.device", "train.num_workers", "train.log_to", "train.wandb_project")
# Keys that may grow or change while an interrupted (or shorter) run is resumed from its checkpoints.
RESUMABLE_KEYS = (
    "train.steps", "train.checkpoint_every", "train.image_every", "train.log_every", "train.keep_last",
    "train.divergence_factor",
)


def config_diff(saved: RunConfig, wanted: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Differences that matter between a run folder's saved config and the wanted one: key -> (saved, wanted)."""
    diff = dict_diff(config_to_dict(saved), config_to_dict(wanted))
    if wanted.data.channels is None:
        diff.pop("data.channels", None)  # the saved config holds the channel count resolved from the data
    for key in INCIDENTAL_KEYS:
        diff.pop(key, None)
    return diff


def _training_diff(saved: RunConfig, wanted: RunConfig) -> dict[str, tuple[Any, Any]]:
    """:func:`config_diff` without the ``eval`` section (evaluation does not change the trained weights)."""
    return {k: v for k, v in config_diff(saved, wanted).items() if not k.startswith("eval.")}


def stale_feature_net(eval_json: Path) -> bool:
    """Whether an eval.json holds cfd/ckd made by a feature net of another version than today's (e.g. the old
    ``cfd-cnn-v1``), whose values must not be mixed with new ones."""
    try:
        result = json.loads(eval_json.read_text())
    except (OSError, ValueError):
        return True  # unreadable: evaluate again
    if not {"cfd", "ckd"} & set(result.get("metrics", {})):
        return False
    return result.get("protocol", {}).get("feature_net", {}).get("version") != FEATURE_NET_VERSION


def plan_run(config: RunConfig) -> tuple[str, str]:
    """``(action, reason)`` for the run folder of ``config``, from what it holds.

    - finished (train_summary.json at the configured steps, eval.json, saved config equal): ``skip``, unless
      its cfd/ckd come from an older feature net (``stale_feature_net``): then ``evaluate``;
    - trained with the same config but not (or differently) evaluated: ``evaluate``;
    - checkpoints of the same run (only steps or bookkeeping intervals differ): ``resume``;
    - no run there yet: ``train``.
    A folder holding another run (a different config) raises ConfigError naming the differing keys.
    """
    run_dir = config.run_dir
    checkpoints = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        if checkpoints:
            raise ConfigError(f"run folder {run_dir} holds checkpoints but no config.yaml; delete it or choose another --out")
        return "train", "new run"
    if not checkpoints:  # nothing to keep: stopped before its first checkpoint
        return "train", "run folder without checkpoints"
    try:
        saved = load_config(saved_path)
    except ConfigError as err:
        raise ConfigError(f"run folder {run_dir} holds a config this version cannot read ({err}); delete it or choose another --out") from None
    train_diff = _training_diff(saved, config)
    newest = checkpoints[-1][0]
    if not train_diff:
        if read_train_summary(run_dir).get("steps") == config.train.steps:
            if (run_dir / "eval.json").is_file() and not config_diff(saved, config):  # nor an eval.* key
                if stale_feature_net(run_dir / "eval.json"):
                    return "evaluate", f"trained; its cfd/ckd were made by another feature net than {FEATURE_NET_VERSION}"
                return "skip", "finished and evaluated"
            return "evaluate", "trained; evaluation missing or made with another eval section"
        return "resume", f"interrupted at step {newest}"
    if set(train_diff) <= set(RESUMABLE_KEYS):
        if newest > config.train.steps:
            raise ConfigError(
                f"run folder {run_dir} has a checkpoint at step {newest}, beyond train.steps={config.train.steps}; "
                f"delete it or choose another --out"
            )
        return "resume", f"continues from step {newest} ({describe_diff(train_diff)})"
    raise ConfigError(f"run folder {run_dir} holds a different run ({describe_diff(train_diff)}); delete it or choose another --out")


def train_run(config: RunConfig, *, resume: bool = False, trust_code: bool = False, check_inputs: bool = True) -> TrainResult:
    """Trains the run described by ``config`` into ``config.run_dir`` (resuming it exactly if asked).

    A ``python:`` model base (see :mod:`pseudovideo.interop.trust`) is imported and run only with ``trust_code=True``;
    without it UntrustedCodeError is raised before any work. A run that cannot fit in memory is refused
    before anything is allocated (see :mod:`pseudovideo.training.memory`). A run folder that already holds checkpoints is
    refused unless resuming: with the command that continues it when only resumable keys (:data:`RESUMABLE_KEYS`)
    differ, else with a free ``name=`` for the new run. ``check_inputs=False`` skips :func:`check_run_inputs`, for a
    caller that has checked them already (the experiment runner checks every run's data once before the first run).
    """
    check_trusted(config, trust_code=trust_code)
    if check_inputs:
        check_run_inputs(config)
    check_training_memory(config, resolve_device(config.train.device, int(os.environ.get("LOCAL_RANK", "0"))))
    run_dir = config.run_dir
    changed = _non_resumable_diff(config)
    if resume and changed:
        raise ConfigError(f"cannot resume {run_dir}: it holds a different run ({describe_diff(changed)}); "
                          f"train this config under another name (name={first_free_name(config.out_dir, config.name)})")
    if not resume:
        _refuse_occupied_folder(config, changed)
    # Join the torchrun process group before building the model: the VQ codebooks enable their
    # cross-rank synchronisation only when the group already exists.
    ctx = init_distributed(config.train.device)
    try:
        dataset = build_dataset_from_config(config, split=config.data.train_split)
        # Resolve the channel count so that evaluation can rebuild the model without reading the data.
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, channels=dataset.channels))
        log = print if config.train.progress and ctx.is_main else None
        builder, learner = prepare_corruption(config, dataset.channels, resume=resume, log=log)  # (None, None): as configured
        with seeded(config.train.seed):  # initial weights (and codebooks) follow train.seed
            task = build_task(config, channels=dataset.channels, builder=builder, trust_code=trust_code)
        task.corruption_learner = learner
        # train() writes config_dict to run_dir/config.yaml (rank 0) before the first step
        result = train(task, dataset, config.train, run_dir, config_dict=config_to_dict(config), resume=resume)
        if ctx.is_main:
            _record_corruption(config, dataset, task.builder, learner)
    finally:
        teardown(ctx)
    return result


def _non_resumable_diff(config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Keys that make ``config`` another run than the one saved in its run folder (empty when none is saved)."""
    saved_path = config.run_dir / "config.yaml"
    if not saved_path.is_file():
        return {}
    try:
        saved = load_config(saved_path)
    except ConfigError as err:
        raise ConfigError(f"run folder {config.run_dir} holds a config this version cannot read ({err}); train under "
                          f"another name (name={first_free_name(config.out_dir, config.name)}) or delete it") from None
    diff = _training_diff(saved, config)
    return {k: v for k, v in diff.items() if k not in RESUMABLE_KEYS}


def _refuse_occupied_folder(config: RunConfig, changed: dict[str, tuple[Any, Any]]) -> None:
    """ConfigError when the run folder already holds checkpoints, naming what works: ``--resume`` for the same
    run, a free ``name=`` for another one."""
    run_dir = config.run_dir
    checkpoints = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    if not checkpoints:
        return
    free = first_free_name(config.out_dir, config.name)
    if changed or not (run_dir / "config.yaml").is_file():
        what = f"a different run ({describe_diff(changed)})" if changed else "checkpoints without a config.yaml"
        raise ConfigError(f"run folder {run_dir} holds {what}; train this config under another name: name={free} "
                          f"(or delete {run_dir})")
    raise ConfigError(
        f"run folder {run_dir} already holds this run (checkpoints up to step {checkpoints[-1][0]}); continue it with "
        f"`pseudovideo train --resume {run_dir}` (train_run(config, resume=True) in Python), or train it anew "
        f"under another name: name={free}"
    )


def _record_corruption(config: RunConfig, dataset: Any, builder: Any, learner: Any) -> None:
    """Adds to train_summary.json the corruption the run trained on (and its objective) and its informativeness."""
    finish_corruption(config, builder, learner)
    path = config.run_dir / "train_summary.json"
    summary = read_train_summary(config.run_dir)
    summary["corruption"] = corruption_record(config, builder)
    summary["informativeness"] = summary_informativeness(dataset, builder, seed=config.eval.seed)
    if getattr(dataset, "normalisation", None) is not None:  # signals: what evaluation must normalise with
        summary["normalisation"] = dataset.normalisation
    path.write_text(json.dumps(summary, indent=1))
