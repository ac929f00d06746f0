"""Experiments: a grid of runs described in one YAML file, trained, evaluated and tabulated together.

An experiment file (``configs/experiments/*.yaml``) names *variants* (an image model, a video model,
...); each variant may expand over *grid axes* (numbers of frames, constructions, corruptions, widths)
and every combination is trained once per seed. A *scale* (``cpu-small``, ``paper``) adds the
overrides that size every run (dataset, resolution, steps, model widths)::

    name: frames
    description: image model vs video model as T grows
    metrics: [psnr, ssim, swd_avg]                      # table columns, one plot each
    plot: {x: pseudo_video.num_frames, group_by: [pair], panels: null, kind: line}
    seeds: {cpu-small: [0], paper: [0, 1, 2]}           # or one list for every scale
    scales:
      cpu-small: {data.dataset: "folder:.data/cifar10-jpeg", train.steps: 300}
      paper: {data.dataset: "folder:.data/cifar10-jpeg", train.steps: 100000}
    base: {pseudo_video.construction: higher_order}
    runs:
      - {name: vqvae, labels: {pair: tokenizer}, overrides: {model.family: vqvae, pseudo_video.num_frames: 1}}
      - name: cvivit
        labels: {pair: tokenizer}
        overrides: {model.family: cvivit}
        scales: {paper: {model.cvivit.dim: 256}}        # this variant's own per-scale overrides
        grid:
          pseudo_video.num_frames: [4, 8, 18]           # a config key and its values
          corruption:                                   # a named axis: label -> overrides
            blur: {pseudo_video.corruptions: [{name: blur, max_level: 2.0}]}
            noise: {pseudo_video.corruptions: [{name: noise, max_level: 0.3}]}

A variant with ``only_scales: [paper]`` exists at those scales only; two variants may share a name
when their ``only_scales`` are disjoint (other widths at another scale). Top-level keys starting with
``_`` are ignored, to hold YAML anchors shared by several variants.

Overrides are ``{dotted.key: value}`` mappings (nested mappings are flattened; list indices such as
``pseudo_video.corruptions.0.max_level`` work). They apply in this order, later ones winning:
``base``, ``scales[scale]``, the variant's ``overrides``, the variant's ``scales[scale]``, its grid
values, the seed (``train.seed``), then the command line's extra overrides. Run names encode the
variant, the grid values and the seed (``cvivit-T8-blur-s0``); run folders live in
``<out>/<experiment>/<scale>/<run>``.

A run can start from the trained weights of an earlier run of the same experiment (a warm start): string
values may hold ``{experiment_dir}`` (this scale's folder of run folders) and ``{seed}`` (the run's seed), e.g.
``model.lifted.base: "run:{experiment_dir}/ddpm-pre-s{seed}"`` with ``model.lifted.kind`` set (the base run
does not exist yet when the configs are checked). The runner reads these dependencies from the configs and
starts a run only after the runs it names have finished, whatever their order in the file (a cycle is refused).

Paired comparisons (run A minus run B trained with the same seed) are listed under ``differences``::

    differences:
      - name: video_minus_image
        of: {variant: cvivit, pseudo_video.num_frames: 8}   # selector: column -> value
        minus: {variant: vqvae}
        match: [seed]                                       # columns paired runs share (seed always)
        only_scales: [paper]                                # optional
      - name: first_minus_higher
        of: {pseudo_video.construction: first_order}
        minus: {pseudo_video.construction: higher_order}
        match: [seed, corruption]                           # one difference per corruption

Selector columns are ``variant``, labels, grid axes (a named axis by its label) and dotted config
keys (the run's resolved value). Each side must select exactly one run per value of the ``match``
columns, and every run must have a partner on the other side; otherwise ConfigError, before training.
Keep sizes (resolution, steps, frames) out of ``description``: results.md states the resolved ones.

:func:`run_experiment` validates every run config and input path before any training, trains the
runs one after the other (skipping finished ones and resuming interrupted ones), evaluates them all
with one protocol, measures training FLOPs per image, and writes ``results.csv``,
``results_summary.csv`` (mean and Student-t 95 % interval over seeds per variant),
``differences.csv``, ``results.md`` and PNG plots (``plot_<metric>.png``; ``plot_rd_<metric>.png``,
metric against bits per image, when the runs' eval.json reports a rate) into the experiment folder.
``jobs=N`` runs N runs at once in worker processes (logs in ``logs/RUN.log``), ``launcher="submitit"`` each
run as a Slurm job, sized by the optional ``slurm:`` section (one mapping, or one per scale; keys and meanings in
:data:`pseudovideo.experiments.launchers.SLURM_MEANINGS`)::

    slurm:
      paper: {partition: gpu, gpus_per_run: 1, cpus_per_run: 8, time_minutes: 720, mem_gb: 32}

Every row records the code that made the run (git commit of the package's tree, dirty or not: see
:mod:`pseudovideo.training.provenance`); tables refuse to mix runs of different code unless ``allow_mixed``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pseudovideo.config import ConfigError, check_name as _check_name, flatten_overrides, read_yaml
from pseudovideo.experiments.launchers import parse_slurm_section

__all__ = ["Difference", "ExperimentSpec", "PlotSpec", "Variant", "load_experiment", "parse_experiment"]

# Keys that the runner sets itself.
RESERVED_KEYS = ("name", "out_dir", "train.seed")
# Result columns every row has (besides the run's identity, grid axes and metrics).
RESULT_COLUMNS = (
    "flops_per_image", "parameters", "train_images_per_s", "train_frames_per_s", "peak_memory_mb", "train_seconds",
)
@dataclass
class PlotSpec:
    """What the plots show: each metric against column ``x``, one line (or bar) per ``group_by`` value.

    Columns are config keys (``pseudo_video.num_frames``), grid axes, variant labels, ``variant``,
    ``seed`` or result columns (``flops_per_image``). ``panels`` splits a plot into one panel per
    value of a column (independent y axes); ``kind`` is ``line`` (numeric x) or ``bar`` (categorical x).
    """

    x: str = "variant"
    group_by: list[str] = field(default_factory=list)
    panels: str | None = None
    kind: str = "line"


@dataclass
class Variant:
    """A named kind of run: overrides, constant ``labels`` (extra table columns) and grid axes.

    ``grid`` maps an axis to either a list of values of a config key, or (a *named* axis) a mapping
    label -> overrides. ``scales`` holds this variant's own overrides per scale; ``only_scales``
    restricts the variant to some scales (e.g. a costly model at ``paper`` only).
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any] | dict[str, dict[str, Any]]] = field(default_factory=dict)
    only_scales: list[str] | None = None  # run this variant at these scales only (None: at every scale)


@dataclass
class Difference:
    """A paired comparison: runs selected by ``of`` minus runs selected by ``minus``, pair by pair.

    Selectors map columns (``variant``, labels, grid axes, config keys) to the value a run must have.
    Runs are paired when they agree on every ``match`` column (``seed`` always among them); the
    other ``match`` columns split the comparison into one group per value (e.g. one per corruption).
    """

    name: str
    of: dict[str, Any]
    minus: dict[str, Any]
    match: list[str] = field(default_factory=lambda: ["seed"])
    only_scales: list[str] | None = None  # compute at these scales only (None: at every scale)


@dataclass
class ExperimentSpec:
    """One experiment file: variants x grid axes x seeds, sized by a scale; see the module docstring."""

    name: str
    description: str
    metrics: list[str]
    plot: PlotSpec
    seeds: dict[str, list[int]]  # scale -> seeds
    scales: dict[str, dict[str, Any]]
    base: dict[str, Any]
    runs: list[Variant]
    differences: list[Difference] = field(default_factory=list)
    slurm: dict[str, dict[str, Any]] = field(default_factory=dict)  # scale -> Slurm settings (--launcher submitit)


_SPEC_KEYS = ("name", "description", "metrics", "plot", "seeds", "scales", "base", "runs", "differences", "slurm")
_DIFFERENCE_KEYS = ("name", "of", "minus", "match", "only_scales")
_VARIANT_KEYS = ("name", "overrides", "labels", "scales", "only_scales", "grid")
_PLOT_KEYS = ("x", "group_by", "panels", "kind")
_METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "kid_std", "swd_avg", "cfd", "ckd", "ckd_std", "probe",
            "probe_random", "sampling_images_per_s", "mse", "snr")


def _check_keys(data: dict[str, Any], valid: Sequence[str], where: str) -> None:
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; valid keys: {', '.join(valid)}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted.key: value, got {value!r}")
    return value


def _overrides(value: Any, where: str) -> dict[str, Any]:
    flat = flatten_overrides(_mapping(value, where))
    for key in flat:
        if key in RESERVED_KEYS:
            what = "the seeds list" if key == "train.seed" else "the runner (run name and --out)"
            raise ConfigError(f"{where}.{key}: this key is set by {what}; remove it")
    return flat


def _seed_list(seeds: Any, where: str) -> list[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: repeated seed in {seeds}")
    return list(seeds)


def parse_experiment(data: dict[str, Any], source: str = "experiment") -> ExperimentSpec:
    """Checks and types an experiment mapping (as read from YAML); raises ConfigError naming the bad key.

    Run configs are not built here (see :func:`pseudovideo.experiments.grid.expand_experiment`).
    """
    # Top-level keys starting with "_" are ignored: they hold YAML anchors shared by several sections.
    data = {k: v for k, v in data.items() if not str(k).startswith("_")}
    _check_keys(data, _SPEC_KEYS, source)
    for key in ("name", "scales", "runs"):
        if key not in data:
            raise ConfigError(f"{source}: missing required key '{key}'")
    name = _check_name(data["name"], f"{source}: name")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description: expected a string, got {description!r}")
    metrics = _parse_metrics(data.get("metrics", ["psnr", "ssim", "swd_avg"]), source)
    plot = _parse_plot(data.get("plot"), source)
    scales_data = _mapping(data["scales"], f"{source}: scales")
    if not scales_data:
        raise ConfigError(f"{source}: scales: define at least one scale (e.g. cpu-small, paper)")
    scales = {_check_name(s, f"{source}: scales"): _overrides(v, f"{source}: scales.{s}") for s, v in scales_data.items()}
    seeds = _parse_seeds(data.get("seeds", [0]), scales, source)
    base = _overrides(data.get("base"), f"{source}: base")
    if not isinstance(data["runs"], list) or not data["runs"]:
        raise ConfigError(f"{source}: runs: expected a non-empty list of variants")
    variants = [_parse_variant(item, f"{source}: runs.{i}", scales) for i, item in enumerate(data["runs"])]
    # A name may repeat only between variants for disjoint scales (e.g. other widths at paper scale).
    for scale in scales:
        names = [v.name for v in variants if v.only_scales is None or scale in v.only_scales]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"{source}: runs: variant name(s) {', '.join(repeated)} repeated at scale {scale} "
                              f"(names may repeat only with disjoint only_scales)")
    differences = _parse_differences(data.get("differences"), list(scales), source)
    return ExperimentSpec(name=name, description=description.strip(), metrics=list(metrics), plot=plot,
                          seeds=seeds, scales=scales, base=base, runs=variants, differences=differences,
                          slurm=parse_slurm_section(data.get("slurm"), list(scales), source))


def _parse_metrics(metrics: Any, source: str) -> list[str]:
    """The ``metrics:`` list (the table columns, one plot each)."""
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"{source}: metrics: expected a non-empty list, got {metrics!r}")
    for metric in metrics:
        if metric not in _METRICS and not re.fullmatch(r"swd_\d+", str(metric)):
            raise ConfigError(f"{source}: metrics: unknown metric {metric!r}; valid: {', '.join(_METRICS)}, swd_<side>")
    return metrics


def _parse_plot(value: Any, source: str) -> PlotSpec:
    """The ``plot:`` section (see :class:`PlotSpec`)."""
    plot_data = _mapping(value, f"{source}: plot")
    _check_keys(plot_data, _PLOT_KEYS, f"{source}: plot")
    plot = PlotSpec(**plot_data)
    if isinstance(plot.group_by, str):
        plot.group_by = [plot.group_by]
    if not isinstance(plot.x, str) or not isinstance(plot.group_by, list):
        raise ConfigError(f"{source}: plot: x must be a column name and group_by a list of them, got {plot_data!r}")
    if plot.kind not in ("line", "bar"):
        raise ConfigError(f"{source}: plot.kind: expected line or bar, got {plot.kind!r}")
    return plot


def _parse_seeds(seeds_data: Any, scales: dict[str, Any], source: str) -> dict[str, list[int]]:
    """The ``seeds:`` of every scale: one list for all, or a mapping scale -> list."""
    per_scale = isinstance(seeds_data, dict)
    if per_scale:
        _check_keys(seeds_data, list(scales), f"{source}: seeds")
        missing = [s for s in scales if s not in seeds_data]
        if missing:
            raise ConfigError(f"{source}: seeds: no seeds for scale(s) {', '.join(missing)}")
    else:
        seeds_data = {scale: seeds_data for scale in scales}
    return {scale: _seed_list(value, f"{source}: seeds" + (f".{scale}" if per_scale else ""))
            for scale, value in seeds_data.items()}


def _parse_variant(item: Any, where: str, scales: dict[str, Any]) -> Variant:
    """One entry of ``runs:`` (see :class:`Variant`); ``where`` names it in errors."""
    item = _mapping(item, where)
    _check_keys(item, _VARIANT_KEYS, where)
    if "name" not in item:
        raise ConfigError(f"{where}: missing required key 'name'")
    vname = _check_name(item["name"], f"{where}.name")
    where = f"{where} ({vname})"
    labels = _mapping(item.get("labels"), f"{where}.labels")
    vscales = _mapping(item.get("scales"), f"{where}.scales")
    only = item.get("only_scales")
    if only is not None and (not isinstance(only, list) or not only):
        raise ConfigError(f"{where}.only_scales: expected a non-empty list of scale names, got {only!r}")
    for scale in [*vscales, *(only or [])]:
        if scale not in scales:
            raise ConfigError(f"{where}: scale {scale!r} is not one of the experiment's scales ({', '.join(scales)})")
    grid = {axis: _parse_axis(values, f"{where}.grid.{axis}", axis)
            for axis, values in _mapping(item.get("grid"), f"{where}.grid").items()}
    return Variant(
        name=vname, overrides=_overrides(item.get("overrides"), f"{where}.overrides"), labels=dict(labels),
        scales={s: _overrides(v, f"{where}.scales.{s}") for s, v in vscales.items()}, grid=grid,
        only_scales=list(only) if only is not None else None,
    )


def _parse_axis(values: Any, where: str, axis: str) -> list[Any] | dict[str, dict[str, Any]]:
    """A grid axis: a list of values of the config key ``axis``, or (a named axis) a mapping label -> overrides."""
    if isinstance(values, dict):  # named axis: label -> overrides
        if not values:
            raise ConfigError(f"{where}: expected at least one label")
        return {_check_name(str(label), where): _overrides(ov, f"{where}.{label}") for label, ov in values.items()}
    if isinstance(values, list) and values:
        if axis in RESERVED_KEYS:
            raise ConfigError(f"{where}: this key is set by the runner; use seeds for train.seed")
        return list(values)
    raise ConfigError(f"{where}: expected a non-empty list of values or a mapping label -> overrides, got {values!r}")


def _parse_selector(value: Any, where: str) -> dict[str, Any]:
    selector = _mapping(value, where)
    if not selector:
        raise ConfigError(f"{where}: expected a mapping column -> value selecting runs (e.g. {{variant: vqvae}})")
    return flatten_overrides(selector)


def _parse_differences(data: Any, scales: Sequence[str], source: str) -> list[Difference]:
    """The ``differences:`` list (see :class:`Difference`); runs are not looked at here."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{source}: differences: expected a list of {{name, of, minus, match, only_scales}}")
    out: list[Difference] = []
    for i, item in enumerate(data):
        where = f"{source}: differences.{i}"
        item = _mapping(item, where)
        _check_keys(item, _DIFFERENCE_KEYS, where)
        for key in ("name", "of", "minus"):
            if key not in item:
                raise ConfigError(f"{where}: missing required key '{key}'")
        name = _check_name(item["name"], f"{where}.name")
        where = f"{source}: differences.{i} ({name})"
        match = item.get("match", ["seed"])
        if not isinstance(match, list) or not all(isinstance(k, str) for k in match):
            raise ConfigError(f"{where}.match: expected a list of column names (e.g. [seed, corruption]), got {match!r}")
        match = ["seed", *[k for k in dict.fromkeys(match) if k != "seed"]]
        only = item.get("only_scales")
        if only is not None and (not isinstance(only, list) or not only or any(s not in scales for s in only)):
            raise ConfigError(f"{where}.only_scales: expected a non-empty list of the experiment's scales "
                              f"({', '.join(scales)}), got {only!r}")
        out.append(Difference(name=name, of=_parse_selector(item["of"], f"{where}.of"),
                              minus=_parse_selector(item["minus"], f"{where}.minus"), match=match,
                              only_scales=list(only) if only is not None else None))
    for scale in scales:  # a name may repeat only between differences for disjoint scales
        names = [d.name for d in out if d.only_scales is None or scale in d.only_scales]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"{source}: differences: name(s) {', '.join(repeated)} repeated at scale {scale}")
    return out


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Reads and checks an experiment YAML file (ConfigError naming the file and the bad key)."""
    return parse_experiment(read_yaml(path), source=str(path))
