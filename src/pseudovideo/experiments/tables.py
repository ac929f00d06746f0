"""Experiment tables: one row per run (metrics, rate, codebook, informativeness, loss terms, notes), means over
seeds with their intervals, paired differences, and the CSV and markdown files they are written to."""

from __future__ import annotations

import dataclasses
import json

from pseudovideo.config import RunConfig, config_to_dict
from pseudovideo.data.images import spread_images
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder as builder_of
from pseudovideo.pseudo_video.marginals import builders_mismatch


NOTE_IMAGES = 64  # images of the run's evaluation split that a table note is measured on


_NOTES: dict[str, str] = {}  # measured notes by (data, pseudo_video) config: the seeds of a variant share one


def first_order_marginals_note(config: RunConfig) -> str:
    """For a first-order run of composed corruptions: whether its frames have the higher-order marginals; else ''.

    Exact compositions say so; for the others the gap is measured on images spread over the run's evaluation
    split, and the note says that a first - higher difference of such a run is not a test of the order alone.
    """
    pv = config.pseudo_video
    if pv.construction != "first_order" or pv.num_frames < 2 or len(pv.corruptions) < 2:
        return ""
    first = builder_of(pv)
    if first.first_order_exact:
        return "equal to higher order's at every frame (exact construction)"
    key = json.dumps({"data": config_to_dict(config.data), "pv": config_to_dict(pv)}, sort_keys=True)
    if key not in _NOTES:
        images = spread_images(build_dataset_from_config(config, split=config.data.eval_split), NOTE_IMAGES)
        higher = builder_of(dataclasses.replace(pv, construction="higher_order"))
        _NOTES[key] = (f"NOT equal to higher order's: {builders_mismatch(first, higher, images).describe()}; its "
                       "first − higher differences compare different amounts of corruption, not the order alone")
    return _NOTES[key]
