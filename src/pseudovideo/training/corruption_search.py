"""Searching a pseudo-video corruption before training: the informativeness search and the random search.

- **Informativeness search** (``pseudo_video.learned.objective: informativeness``): Adam ascends the section 4.1
  gain (L*_1 - L*_{T-1}) / L*_1 of the best linear predictor of the clean frame
  (:func:`pseudovideo.pseudo_video.informativeness.ridge_gain`, the closed-form ridge fit made differentiable) in the
  schedule's parameters (free mode: monotone, endpoints fixed), the operator mixture and the per-image policy
  when asked. Each step: ``search_batch`` of the ``search_images`` training images, fresh corruption draws, the
  ridge fit on three quarters of the batch and scored on the rest. Cost: ``search_steps`` x (one batch of
  pseudo videos, forward and backward, and two ridge solves of (T-1) x C x 9 + 1 unknowns).
- **Random search** (``objective: random_search``, RandAugment's two-number grid): operator set x magnitude,
  every non-empty subset of the configured corruptions (or ``operator_sets``) with every maximum level scaled by
  each of ``magnitudes`` (a mask probability capped at 1); ``trials`` points drawn at random (0: all). Each point
  is scored by a short *proxy run*: the run's own model, batch and learning rate, ``proxy_steps`` AdamW steps
  (no EMA, no GAN or perceptual loss, seed ``learned.seed``), scored on ``proxy_images`` images held out of the
  *training* split (the evaluation split, which the runs are judged on, is never seen) by the clean frame's quality: tokenizers the PSNR of its reconstruction, diffusion models the denoising MSE of the
  clean frame (4 passes with fixed timesteps and noise). The best point is the baseline every learned corruption
  must beat (the hand-set corruption is the grid point "all operators, magnitude 1").

Both are deterministic for a seed on the CPU (same data, seed and thread count) and return a
:class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos` with the objective and a description recorded.
The algorithms on tensors are :mod:`pseudovideo.pseudo_video.learned.search`; this module runs them for a run config
(its settings, its training images, the proxy runs of :mod:`pseudovideo.training.proxy`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pseudovideo.config import RunConfig
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.pseudo_videos import corruption_dicts
from pseudovideo.pseudo_video.learned.corruption import LearnedPseudoVideos, operators_and_levels
from pseudovideo.pseudo_video.learned.search import (
    SearchOutcome,
    ascend_gain,
    held_out_gain,
    one_thread,
    operator_grid,
    scale_corruptions,
)
from pseudovideo.training.randomness import seeded

__all__ = ["grid_points", "initial_learned", "informativeness_search", "random_search", "search_corruption",
           "search_images", "write_search"]


def _corruption_dicts(config: RunConfig) -> list[dict[str, Any]]:
    return corruption_dicts(config.pseudo_video)


def initial_learned(config: RunConfig, channels: int, mode: str) -> LearnedPseudoVideos:
    """The configured corruption as a LearnedPseudoVideos in ``mode`` (free or budget), with the mixture and
    per-image policy of ``pseudo_video.learned`` (the policy's weights drawn from ``learned.seed``)."""
    pv, learned = config.pseudo_video, config.pseudo_video.learned
    operators, levels = operators_and_levels(_corruption_dicts(config), pv.num_frames)
    with seeded(learned.seed):
        return LearnedPseudoVideos(
            operators, levels, mode=mode, budget=learned.budget if mode == "budget" else None,
            mixture=learned.mixture, policy_channels=channels if learned.per_image else None,
            objective=learned.objective,
        )


def informativeness_search(
    config: RunConfig, train_images: Tensor, held_out: Tensor, log: Callable[[str], None] | None = None
) -> SearchOutcome:
    """Ascends the differentiable gain from the configured schedule (module docstring); train_images (N, C, H, W).

    ``held_out`` (M, C, H, W): images the configured and searched corruptions are compared on (the exact
    ridge diagnostic, not the batch estimate the search ascends).
    """
    settings = config.pseudo_video.learned
    start = time.perf_counter()
    learned = initial_learned(config, train_images.shape[1], "free")
    before = held_out_gain(held_out, learned.as_builder(), settings.seed)
    batch = min(settings.search_batch, train_images.shape[0])
    ascend_gain(learned, train_images, steps=settings.search_steps, lr=settings.search_lr, batch=batch, seed=settings.seed,
                log=log)
    after = held_out_gain(held_out, learned.as_builder(), settings.seed)
    seconds = time.perf_counter() - start
    learned.description = (f"informativeness search: seed {settings.seed}, {settings.search_steps} Adam steps (lr "
                           f"{settings.search_lr:g}) of {batch} of {train_images.shape[0]} training images of "
                           f"{config.data.dataset}; held-out gain {before:.4g} (configured) -> {after:.4g} on "
                           f"{held_out.shape[0]} other training images")
    return SearchOutcome(learned, "informativeness", "gain", before, after, seconds)


def grid_points(config: RunConfig) -> list[tuple[tuple[int, ...], float]]:
    """RandAugment's grid: (indices of an operator set, magnitude) pairs, drawn as ``trials`` asks."""
    settings, names = config.pseudo_video.learned, [c.name for c in config.pseudo_video.corruptions]
    return operator_grid(names, settings.operator_sets, settings.magnitudes, settings.trials, settings.seed)


def scaled_corruptions(config: RunConfig, indices: tuple[int, ...], magnitude: float) -> list[dict[str, Any]]:
    """The corruption dicts of the operator set ``indices`` with every level scaled by ``magnitude``."""
    return scale_corruptions(_corruption_dicts(config), indices, magnitude)


def random_search(
    config: RunConfig, train_images: Tensor, held_out: Tensor, log: Callable[[str], None] | None = None
) -> SearchOutcome:
    """Scores every drawn grid point by a proxy run (module docstring) and keeps the best as a fixed corruption."""
    from pseudovideo.training.proxy import proxy_score

    settings = config.pseudo_video.learned
    start = time.perf_counter()
    names = [c.name for c in config.pseudo_video.corruptions]
    candidates = []
    for indices, magnitude in grid_points(config):
        corruptions = scaled_corruptions(config, indices, magnitude)
        operators, levels = operators_and_levels(corruptions, config.pseudo_video.num_frames)
        candidate = LearnedPseudoVideos(operators, levels, mode="fixed", objective="random_search")
        score, metric = proxy_score(config, candidate.as_builder(), train_images, held_out)
        label = f"{'+'.join(names[i] for i in indices)} x{magnitude:g}"
        candidates.append({"operators": [names[i] for i in indices], "magnitude": magnitude, metric: score,
                           "learned": candidate, "label": label})
        if log is not None:
            log(f"  {label}: proxy {metric} {score:.4f}")
    higher_better = metric == "psnr"
    best = max(candidates, key=lambda c: c[metric] if higher_better else -c[metric])
    configured = next((c[metric] for c in candidates if c["magnitude"] == 1.0 and len(c["operators"]) == len(names)), None)
    learned = best.pop("learned")
    learned.description = (f"random search: seed {settings.seed}, {len(candidates)} grid points (operator set x "
                           f"magnitude), proxy {settings.proxy_steps} steps scored by the clean frame's {metric} on "
                           f"{held_out.shape[0]} held-out training images; best {best['label']} ({metric} {best[metric]:.4g})")
    for c in candidates:
        c.pop("learned", None)
    return SearchOutcome(learned, "random_search", f"proxy {metric}", configured, best[metric],
                         time.perf_counter() - start, candidates)


def search_images(config: RunConfig) -> tuple[Tensor, Tensor]:
    """(search images, held-out images), both from the training split (never the evaluation split, which the run is
    judged on): images spread over it, a random ``proxy_images`` (random_search) or 256 (informativeness) of them held
    out to score the candidates, the rest (``search_images``; random_search: proxy_steps x batch) to search on."""
    settings = config.pseudo_video.learned
    count, held = settings.search_images, 256
    if settings.objective == "random_search":  # the images the proxy runs see at most
        count, held = settings.proxy_steps * config.train.batch_size, settings.proxy_images
    total = count + held if config.data.max_images is None else min(count + held, config.data.max_images)
    data = dataclasses.replace(config.data, max_images=total, random_flip=False)
    dataset = build_dataset_from_config(dataclasses.replace(config, data=data), split=config.data.train_split)
    images = torch.stack([dataset.load(i) for i in range(len(dataset))])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(settings.seed))
    held = min(held, len(images) // 4)
    return images[order[held:held + count]], images[order[:held]]


def search_corruption(config: RunConfig, log: Callable[[str], None] | None = None,
                      images: tuple[Tensor, Tensor] | None = None) -> SearchOutcome:
    """Runs the search of ``pseudo_video.learned.objective`` (informativeness or random_search) on the config's data."""
    objective = config.pseudo_video.learned.objective
    if objective not in ("informativeness", "random_search"):
        raise ValueError(f"pseudo_video.learned.objective={objective!r} is not a search before training; expected "
                         "informativeness or random_search (adversarial learns during training)")
    train_images, held_out = images if images is not None else search_images(config)
    if objective == "random_search":
        return random_search(config, train_images, held_out, log)
    with one_thread():
        return informativeness_search(config, train_images, held_out, log)


def search_config(config: RunConfig, objective: str | None) -> RunConfig:
    """``config`` with ``learned.objective`` set to the search asked for (default: its own search, else
    informativeness), validated: a search needs the settings a run with that objective needs."""
    from pseudovideo.config import validate_config

    own = config.pseudo_video.learned.objective
    chosen = objective or (own if own in ("informativeness", "random_search") else "informativeness")
    learned = dataclasses.replace(config.pseudo_video.learned, objective=chosen)
    config = dataclasses.replace(config, pseudo_video=dataclasses.replace(config.pseudo_video, learned=learned))
    validate_config(config)
    return config


def write_search(config: RunConfig, objective: str | None, out: Path, log: Callable[[str], None] = print) -> SearchOutcome:
    """Runs a search and writes into ``out``: corruption.yaml (the config fragment), corruption.safetensors (the
    learned corruption, for ``pseudo_video.learned.from_file``) and search.json (scores, timing); prints the
    configured and the searched schedule."""
    import json

    from pseudovideo.pseudo_video.learned.corruption import describe_schedule, fragment_yaml, save_learned

    config = search_config(config, objective)
    start = time.perf_counter()
    images = search_images(config)
    log(f"{config.pseudo_video.learned.objective} search on {images[0].shape[0]} training images of "
        f"{config.data.dataset} (data read in {time.perf_counter() - start:.0f} s)")
    log("configured schedule:\n" + describe_schedule(initial_learned(config, images[0].shape[1], "free")))
    outcome = search_corruption(config, log, images=images)
    total = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    weights = save_learned(outcome.learned, out / "corruption.safetensors")
    if outcome.learned.policy is None:
        fragment = fragment_yaml(outcome.learned, outcome.learned.description)
    else:  # a per-image policy has weights: the fragment points at them
        import yaml

        fragment = yaml.safe_dump({"pseudo_video": {"learned": {"objective": "none", "from_file": str(weights.resolve())}}})
    (out / "corruption.yaml").write_text(fragment)
    record = {"objective": outcome.objective, "score": outcome.score_name, "configured": outcome.before,
              "searched": outcome.after, "search_seconds": outcome.seconds, "total_seconds": total,
              "description": outcome.learned.description, "candidates": outcome.candidates}
    (out / "search.json").write_text(json.dumps(record, indent=1))
    log("searched schedule:\n" + describe_schedule(outcome.learned))
    log(f"{outcome.summary()}; {total:.0f} s in all")
    log(f"config fragment: {out / 'corruption.yaml'} (copy its pseudo_video section into a config), or train on the "
        f"file itself: pseudo_video.learned.from_file={weights}")
    return outcome
