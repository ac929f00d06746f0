"""Checks of the ``pseudo_video.learned`` and ``pseudo_video.mixture`` keys (called by config.validate_config).

Every impossible setting is refused before any work with one line naming the key: a learned schedule with one
frame, an adversarial budget of 0, downsample in a differentiable mixture, a learned objective on a construction
that ignores the corruptions, nothing learnable, a fixed mixture whose rows are not probabilities, ...
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pseudovideo.config.sections import ConfigError

#: operators whose level carries gradient (pseudovideo.pseudo_video.learned.differentiable); downsample keeps discrete octaves
LEARNABLE_OPERATORS = ("blur", "noise", "mask")
KEY = "pseudo_video.learned"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _validate_ranges(learned: Any) -> None:
    """Range checks of the numeric keys (whatever the objective)."""
    for name, low in (("search_steps", 1), ("search_images", 8), ("search_batch", 4), ("every", 1), ("proxy_steps", 1),
                      ("proxy_images", 1), ("trials", 0)):
        value = getattr(learned, name)
        _require(value >= low, f"{KEY}.{name}: expected an integer >= {low}, got {value}")
    for name in ("search_lr", "lr"):
        value = getattr(learned, name)
        _require(math.isfinite(value) and value > 0, f"{KEY}.{name}: expected a number > 0, got {value}")
    _require(len(learned.magnitudes) >= 1 and all(math.isfinite(m) and m > 0 for m in learned.magnitudes),
             f"{KEY}.magnitudes: expected a non-empty list of numbers > 0, got {learned.magnitudes}")


def validate_fixed_mixture(pv: Any) -> None:
    """``pseudo_video.mixture``: (T-1) rows of K probabilities summing to 1, for higher-order frames."""
    mixture, k, t = pv.mixture, len(pv.corruptions), pv.num_frames
    key = "pseudo_video.mixture"
    _require(pv.construction == "higher_order",
             f"{key}: a mixture draws each higher-order frame's operator; got construction {pv.construction!r}")
    _require(k >= 2, f"{key}: a mixture chooses among >= 2 corruptions, got {k}")
    _require(len(mixture) == t - 1 and all(len(row) == k for row in mixture),
             f"{key}: expected {t - 1} rows (frames 0..T-2) of {k} probabilities (one per corruption), got {mixture}")
    for i, row in enumerate(mixture):
        _require(all(math.isfinite(p) and p >= 0 for p in row) and abs(sum(row) - 1) <= 1e-4,
                 f"{key}.{i}: expected probabilities >= 0 summing to 1, got {row}")


def _validate_search_space(pv: Any) -> None:
    """random_search: the operator sets name configured corruptions."""
    names = [c.name for c in pv.corruptions]
    for i, chosen in enumerate(pv.learned.operator_sets or []):
        _require(len(chosen) >= 1 and len(set(chosen)) == len(chosen) and set(chosen) <= set(names),
                 f"{KEY}.operator_sets.{i}: expected distinct names among the configured corruptions {names}, got {chosen}")
    _require(not pv.frames_as_images, f"{KEY}.objective=random_search scores a video model's clean frame; "
                                      "pseudo_video.frames_as_images trains an image model on the frames")
    _require(not pv.learned.mixture and not pv.learned.per_image,
             f"{KEY}.objective=random_search searches operator sets and maximum levels; it learns no mixture or "
             "per-image policy (set mixture and per_image false, or use objective informativeness / adversarial)")


def _validate_gradient_objective(pv: Any) -> None:
    """informativeness / adversarial: something differentiable to learn, on higher-order frames."""
    learned, objective = pv.learned, pv.learned.objective
    names = [c.name for c in pv.corruptions]
    if objective == "informativeness":
        _require(pv.num_frames >= 3, f"{KEY}.objective=informativeness compares the last corrupted frame with all "
                                     f"T-1 of them: needs pseudo_video.num_frames >= 3, got {pv.num_frames}")
    if objective == "adversarial":
        _require(0 < learned.budget <= 1, f"{KEY}.budget: an adversarial budget is the largest move of a frame's "
                                          f"normalised level, a number in (0, 1] (0 lets nothing move), got {learned.budget}")
    if learned.mixture:
        _require(len(names) >= 2, f"{KEY}.mixture: a mixture chooses among >= 2 corruptions, got {names}")
        _require("downsample" not in names,
                 f"{KEY}.mixture: downsample is not differentiable (discrete octaves), so a differentiable mixture "
                 "cannot include it; remove it from pseudo_video.corruptions or set mixture false")
    learnable = [n for n in names if n in LEARNABLE_OPERATORS]
    _require(bool(learnable) or learned.mixture,
             f"{KEY}.objective={objective}: nothing to learn: {names} keep their discrete octaves (downsample is not "
             "differentiable); add blur, noise or mask, or set mixture true")
    _require(pv.num_frames >= 3 or learned.mixture,
             f"{KEY}.objective={objective} with pseudo_video.num_frames=2: the fixed endpoints (max at frame 0, 0 at "
             "the clean frame) leave no level to learn; use num_frames >= 3 or mixture true")


def validate_learned(pv: Any) -> None:
    """ConfigError for an impossible ``pseudo_video.learned`` / ``pseudo_video.mixture`` setting (module docstring)."""
    learned, objective = pv.learned, pv.learned.objective
    _validate_ranges(learned)
    if pv.mixture is not None:
        validate_fixed_mixture(pv)
    if objective == "none":
        for flag in ("mixture", "per_image"):
            _require(not getattr(learned, flag),
                     f"{KEY}.{flag}=true needs {KEY}.objective informativeness or adversarial (objective none learns nothing)")
        if learned.from_file is not None:
            _require(Path(learned.from_file).expanduser().is_file(),
                     f"{KEY}.from_file: learned corruption file {learned.from_file!r} does not exist")
            _require(pv.mixture is None, f"{KEY}.from_file holds its own mixture; remove pseudo_video.mixture")
        return
    _require(learned.from_file is None,
             f"{KEY}.from_file is used as it is, so {KEY}.objective must be none, got {objective!r}")
    _require(pv.num_frames >= 2, f"{KEY}.objective={objective}: a learned schedule needs pseudo_video.num_frames >= 2, "
                                 "got 1 (the only frame is the clean image)")
    _require(pv.construction not in ("copies", "noise_frames"),
             f"{KEY}.objective={objective}: construction {pv.construction!r} ignores the corruptions, nothing to learn")
    _require(pv.mixture is None, f"{KEY}.objective={objective} learns the corruption; remove the fixed pseudo_video.mixture")
    _require(pv.construction == "higher_order",
             f"{KEY}.objective={objective} learns higher-order frames (each made from the clean image); got "
             f"pseudo_video.construction={pv.construction!r}")
    if objective == "random_search":
        _validate_search_space(pv)
    else:
        _validate_gradient_objective(pv)
