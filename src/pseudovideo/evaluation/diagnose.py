"""The ``diagnose`` command's work: the paper's section 4.1 test and the informativeness numbers of the pseudo
videos a config describes, per construction (:mod:`pseudovideo.pseudo_video.diagnose` and
:mod:`pseudovideo.pseudo_video.informativeness` compute them on a builder)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
from pseudovideo.pseudo_video.builder import PseudoVideoBuilder
from pseudovideo.pseudo_video.diagnose import format_diagnostic_table, format_informativeness, markov_order_diagnostic
from pseudovideo.pseudo_video.informativeness import measure_informativeness

__all__ = ["DIAGNOSE_CONSTRUCTIONS", "diagnose_constructions", "diagnosed_section"]


DIAGNOSE_CONSTRUCTIONS = {
    "both": ("first_order", "higher_order"),
    "all": ("first_order", "higher_order", "shuffled", "noise_frames", "copies"),
}


def diagnosed_section(pv_config: Any, construction: str) -> Any:
    """The ``pseudo_video`` section diagnosed for ``construction``: a fixed mixture or learned file keeps its own
    construction; a learned objective is diagnosed at its configured starting point (objective none)."""
    if pv_config.mixture is not None or pv_config.learned.from_file:
        return pv_config
    start = dataclasses.replace(pv_config.learned, objective="none", mixture=False, per_image=False)
    return dataclasses.replace(pv_config, construction=construction, learned=start)


def diagnose_constructions(
    images: Tensor, pv_config: Any, constructions: Sequence[str], *, seed: int, dataset_name: str,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The L*_k table and the informativeness numbers (:mod:`pseudovideo.pseudo_video.informativeness`) of each construction.

    images (N, C, H, W); ``pv_config``: a ``pseudo_video`` config section whose construction is replaced by each
    of ``constructions``. A configured learned corruption (a fixed mixture or ``learned.from_file``) is one
    higher-order builder: it is diagnosed alone, under the name ``learned``. Returns ({construction: L*_k rows},
    {construction: informativeness report}); copies has no L*_k table (every frame is the clean image).
    """
    builders = {c: build_pseudo_video_builder(diagnosed_section(pv_config, c)) for c in constructions}
    if any(not isinstance(b, PseudoVideoBuilder) for b in builders.values()):
        builders = {"learned": next(iter(builders.values()))}
        log("a learned corruption is configured (pseudo_video.mixture or learned.from_file): diagnosing it alone")
    if pv_config.learned.objective != "none":
        log(f"note: pseudo_video.learned.objective={pv_config.learned.objective} is searched or learned by a run; "
            "this diagnoses its configured starting point (search-corruptions shows the searched one)")
    tables, reports = {}, {}
    for name, builder in builders.items():
        corruption = "+".join(c.name for c in pv_config.corruptions)
        title = f"{dataset_name}, {name}, {corruption}, T={builder.num_frames}, {len(images)} images"
        if name != "copies":
            with torch.no_grad():
                tables[name] = markov_order_diagnostic(images, builder, generator=torch.Generator().manual_seed(seed))
            log(format_diagnostic_table(tables[name], title))
        reports[name] = measure_informativeness(images, builder, seed=seed, rows=tables.get(name))
        log(format_informativeness(reports[name], title) + "\n")
    return tables, reports
