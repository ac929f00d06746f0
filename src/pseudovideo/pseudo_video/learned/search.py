"""The search algorithms behind ``pseudo_video.learned.objective``, on tensors and corruption dicts.

- :func:`ascend_gain`: Adam ascends the differentiable section 4.1 gain (L*_1 - L*_{T-1}) / L*_1 of the best
  linear predictor of the clean frame (:func:`pseudovideo.pseudo_video.informativeness.ridge_gain`) in the
  parameters of a :class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos`; each step draws a
  batch of the images and fresh corruptions.
- :func:`operator_grid` and :func:`scale_corruptions`: RandAugment's two-number grid of operator sets x
  magnitudes, whose points a random search scores.

The searches of a run (its config's settings, its training images, the proxy runs that score a grid point) are
:mod:`pseudovideo.training.corruption_search`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pseudovideo.pseudo_video.informativeness import measure_informativeness, ridge_gain
from pseudovideo.pseudo_video.learned.corruption import LearnedPseudoVideos

__all__ = ["SearchOutcome", "ascend_gain", "held_out_gain", "one_thread", "operator_grid", "scale_corruptions"]


@dataclass
class SearchOutcome:
    """A searched corruption, its score before and after, the seconds it took and per-candidate scores."""

    learned: LearnedPseudoVideos
    objective: str
    score_name: str
    before: float | None
    after: float | None
    seconds: float
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. "informativeness search: gain 0.081 (configured) -> 0.312 (searched) in 41 s"."""
        def text(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4g}"

        return (f"{self.objective} search: {self.score_name} {text(self.before)} (configured) -> {text(self.after)} "
                f"(searched) in {self.seconds:.0f} s")


def held_out_gain(images: Tensor, builder: Any, seed: int) -> float | None:
    """The held-out section 4.1 gain of builder's pseudo videos of images (N, C, H, W) (the `diagnose` estimate)."""
    return measure_informativeness(images, builder, seed=seed)["gain"]


def ascend_gain(learned: LearnedPseudoVideos, images: Tensor, *, steps: int, lr: float, batch: int, seed: int,
                log: Callable[[str], None] | None = None) -> list[float]:
    """Adam ascends the batch gain of ``learned``'s pseudo videos of ``images`` (N, C, H, W) for ``steps`` steps of
    ``batch`` images (drawn, with the corruptions, from a generator seeded ``seed``); then freezes ``learned``.
    Returns the batch gain of every step."""
    params = [p for p in learned.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for step in range(steps):
        order = torch.randperm(images.shape[0], generator=generator)[:batch]
        gain = ridge_gain(learned(images[order], generator=generator), generator)["gain"]
        optimizer.zero_grad(set_to_none=True)
        (-gain).backward()
        optimizer.step()
        history.append(gain.item())
        if log is not None and (step + 1) % max(1, steps // 5) == 0:
            recent = history[-max(1, steps // 5):]
            log(f"  step {step + 1}/{steps}: batch gain {sum(recent) / len(recent):.4f}")
    learned.requires_grad_(False)
    return history


def operator_grid(names: Sequence[str], operator_sets: Sequence[Sequence[str]] | None, magnitudes: Sequence[float],
                  trials: int, seed: int) -> list[tuple[tuple[int, ...], float]]:
    """RandAugment's grid: (indices into ``names`` of an operator set, magnitude) pairs; every non-empty subset of
    ``names`` unless ``operator_sets`` names them; ``trials`` > 0 draws that many points (seeded by ``seed``)."""
    if operator_sets:
        sets = [tuple(i for i, name in enumerate(names) if name in chosen) for chosen in operator_sets]
    else:
        sets = [s for size in range(1, len(names) + 1) for s in itertools.combinations(range(len(names)), size)]
    grid = [(s, float(m)) for s in sets for m in magnitudes]
    if 0 < trials < len(grid):
        order = torch.randperm(len(grid), generator=torch.Generator().manual_seed(seed))[:trials]
        grid = [grid[i] for i in sorted(order.tolist())]
    return grid


def scale_corruptions(corruptions: Sequence[dict[str, Any]], indices: tuple[int, ...], magnitude: float
                      ) -> list[dict[str, Any]]:
    """The corruption dicts at ``indices`` with every level scaled by ``magnitude`` (a mask probability capped at 1)."""
    out = []
    for i in indices:
        spec = dict(corruptions[i])
        cap = 1.0 if spec["name"] == "mask" else float("inf")
        spec["max_level"] = min(cap, float(spec.get("max_level") or 0) * magnitude)
        if spec.get("levels"):
            spec["levels"] = [min(cap, float(v) * magnitude) for v in spec["levels"]]
            spec["max_level"] = spec["levels"][0]
        out.append(spec)
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the block: the search's many small ops run 4x slower split over threads on a
    shared 2-core machine (measured: 87 s vs 20 s of CPU for the CIFAR-10 search), and give the same numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
