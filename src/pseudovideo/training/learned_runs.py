"""A run's learned corruption: searched or loaded before training, saved with the run, reloaded for evaluation.

``RUN_DIR/learned_corruption.safetensors`` holds the corruption a run trained on, whatever produced it: the
informativeness or random search (run before training; the search is deterministic for
``pseudo_video.learned.seed`` and cached in ``OUT_DIR/.corruption-search/``, so the seeds of an experiment share
it), a ``learned.from_file`` (copied), or the adversarial ascent (written at the end; every checkpoint's state
holds the corruption of its step, which resume and evaluation use). ``train_summary.json`` records under
``corruption`` the objective that produced it, its description, levels and mixture, and under
``informativeness`` the numbers of :mod:`pseudovideo.pseudo_video.informativeness` of the pseudo videos the run trained on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pseudovideo.config import RunConfig, config_to_dict
from pseudovideo.pseudo_video.learned.adversarial import AdversarialLearner
from pseudovideo.pseudo_video.learned.corruption import (
    LearnedPseudoVideos,
    describe_schedule,
    load_learned,
    save_learned,
)

__all__ = ["LEARNED_FILE", "corruption_note", "corruption_record", "prepare_corruption",
           "run_builder"]

LEARNED_FILE = "learned_corruption.safetensors"
CHECKPOINT_KEY = "learned_corruption"
SEARCH_CACHE = ".corruption-search"
SUMMARY_IMAGES = 256  # training images the run summary's informativeness numbers are measured on


def _search_key(config: RunConfig) -> str:
    """What a search's result depends on: the data, the pseudo-video section and, for proxy runs, the model."""
    tree = config_to_dict(config)
    parts = {"data": tree["data"], "pseudo_video": tree["pseudo_video"]}
    if config.pseudo_video.learned.objective == "random_search":
        train = {k: tree["train"][k] for k in ("batch_size", "lr", "betas", "weight_decay", "grad_clip", "device")}
        parts.update(model=tree["model"], loss=tree["loss"], diffusion=tree["diffusion"], train=train)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def searched_corruption(config: RunConfig, log: Callable[[str], None] | None = None) -> Path:
    """The file of the search of ``learned.objective`` for this config: from the cache under out_dir, or searched
    now and cached."""
    from pseudovideo.training.corruption_search import search_corruption

    objective = config.pseudo_video.learned.objective
    cache = Path(config.out_dir) / SEARCH_CACHE / f"{objective}-{_search_key(config)}.safetensors"
    if cache.is_file():
        if log:
            log(f"{objective} search: reusing {cache}")
        return cache
    outcome = search_corruption(config, log)
    if log:
        log(outcome.summary())
    return save_learned(outcome.learned, cache)


def prepare_corruption(
    config: RunConfig, channels: int, *, resume: bool, log: Callable[[str], None] | None = None
) -> tuple[Any, AdversarialLearner | None]:
    """(builder, adversarial learner) of a run before training; (None, None) when the configured corruption is used.

    Searches (or reloads the run folder's corruption on resume), copies a ``from_file`` into the run folder, or
    sets up the adversarial corruption at the configured schedule.
    """
    from pseudovideo.training.corruption_search import initial_learned

    learned_config, run_file = config.pseudo_video.learned, config.run_dir / LEARNED_FILE
    if learned_config.objective == "adversarial":
        learned = initial_learned(config, channels, "budget")
        return learned, AdversarialLearner(learned, learned_config.lr, learned_config.every)
    if learned_config.objective == "none":
        if learned_config.from_file:
            source = Path(learned_config.from_file).expanduser()
            policy = load_learned(source).policy
            if policy is not None and policy.channels != channels:
                raise ValueError(f"pseudo_video.learned.from_file {source} holds a per-image policy for {policy.channels}-channel "
                                 f"images, but the data has {channels} channels (data.channels)")
            run_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, run_file)
        return None, None
    if not (resume and run_file.is_file()):
        found = searched_corruption(config, log)
        run_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, run_file)  # byte for byte: the seeds of an experiment train on one file
    return load_learned(run_file).as_builder(), None


def _learned_of(builder: Any) -> LearnedPseudoVideos | None:
    return builder if isinstance(builder, LearnedPseudoVideos) else None


def corruption_record(config: RunConfig, builder: Any) -> dict[str, Any]:
    """What train_summary.json records about the corruption a run trained on (and which objective produced it)."""
    learned_config = config.pseudo_video.learned
    record: dict[str, Any] = {"objective": learned_config.objective, "searched_by": learned_config.searched_by}
    run_file = config.run_dir / LEARNED_FILE
    if run_file.is_file():
        saved = load_learned(run_file)
        record.update(file=str(run_file), sha256=hashlib.sha256(run_file.read_bytes()).hexdigest(),
                      produced_by=saved.objective, description=saved.description)
    learned = _learned_of(builder)
    levels = learned.levels if learned is not None else getattr(builder, "levels", None)
    if levels is not None:
        record["operators"] = [op.name for op in builder.operators]
        record["levels"] = [[float(v) for v in row] for row in levels]
    if learned is not None and learned.mixture is not None:
        record["mixture"] = [[float(v) for v in row] for row in learned.mixture]
    record["per_image"] = bool(learned is not None and learned.policy is not None)
    return record


def corruption_note(record: dict[str, Any]) -> str:
    """One line from a train summary's ``corruption`` record of a learned corruption ('' for a configured one)."""
    produced_by = record.get("produced_by") or (record.get("objective") if record.get("objective") != "none" else None)
    if not produced_by and not record.get("searched_by"):
        return ""
    columns = list(zip(*record.get("levels") or []))
    names = record.get("operators") or [""] * len(columns)
    levels = ", ".join(f"{name} [" + " ".join(f"{v:.3g}" for v in column) + "]" for name, column in zip(names, columns))
    mixture = record.get("mixture")
    extra = (" per image (policy; levels at its start)" if record.get("per_image") else "") + (
        f", mixture {[[round(p, 2) for p in row] for row in mixture]}" if mixture else "")
    return f"{produced_by or record['searched_by']}: {levels}{extra}"


def finish_corruption(config: RunConfig, builder: Any, learner: AdversarialLearner | None) -> None:
    """After training: the adversarial corruption is written to the run folder (with its objective)."""
    if learner is None:
        return
    learned = learner.learned
    learned.description = (f"adversarial ascent of the training loss: budget {learned.budget:g}, Adam lr "
                           f"{config.pseudo_video.learned.lr:g} every {config.pseudo_video.learned.every} step(s), "
                           f"{config.train.steps} steps")
    save_learned(learned, config.run_dir / LEARNED_FILE)


def run_builder(config: RunConfig, run_dir: str | Path, checkpoint_folder: str | Path | None = None) -> Any:
    """The pseudo-video builder a trained run used (for evaluation): the adversarial corruption of the evaluated
    checkpoint, the run folder's learned corruption, or the configured one."""
    from pseudovideo.training.corruption_search import initial_learned
    from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder

    objective = config.pseudo_video.learned.objective
    if objective == "adversarial" and checkpoint_folder is not None:
        state = torch.load(Path(checkpoint_folder) / "state.pt", map_location="cpu", weights_only=True)
        learned = initial_learned(config, config.data.channels or 3, "budget")
        learned.load_state_dict(state[CHECKPOINT_KEY]["module"])
        return learned.requires_grad_(False).as_builder()
    run_file = Path(run_dir) / LEARNED_FILE
    if run_file.is_file():
        return load_learned(run_file).as_builder()
    return build_pseudo_video_builder(config.pseudo_video)


def summary_informativeness(dataset: Any, builder: Any, seed: int) -> dict[str, Any]:
    """The informativeness numbers of ``builder`` on SUMMARY_IMAGES training images spread over ``dataset``."""
    from pseudovideo.data.datasets import spread_subset
    from pseudovideo.pseudo_video.informativeness import measure_informativeness

    indices = spread_subset(len(dataset), SUMMARY_IMAGES).tolist()
    images = torch.stack([dataset.load(i) for i in indices])
    learned = _learned_of(builder)
    with torch.no_grad():
        if learned is not None:
            learned = learned.to("cpu")
        return measure_informativeness(images, learned if learned is not None else builder, seed=seed)


def describe(builder: Any) -> str:
    """The schedule table of a learned corruption (for logs), '' for a plain builder."""
    learned = _learned_of(builder)
    return describe_schedule(learned) if learned is not None else ""
