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

import csv
import dataclasses
import difflib
import fnmatch
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pseudovideo.config import (
    ConfigError,
    RunConfig,
    build_config,
    check_name as _check_name,
    config_to_dict,
    describe_diff,
    dict_diff,
    flatten_overrides,
    read_yaml,
)
from pseudovideo.config.modality import sample_shape
from pseudovideo.data.cache import reuse_datasets
from pseudovideo.training.distributed import resolve_device
from pseudovideo.pseudo_video.informativeness import INFO_COLUMNS, INFO_NOTE, INFO_TITLES, summary_numbers
from pseudovideo.training.learned_runs import corruption_note
from pseudovideo.pseudo_video.marginals import first_order_marginals_note
from pseudovideo.experiments.launchers import choose_launcher, parse_slurm_section
from pseudovideo.training.provenance import CODE_COLUMNS, check_stated_commit, run_code, table_code_lines
from pseudovideo.training.runs import check_run_inputs, plan_run, read_train_summary
from pseudovideo.experiments.scheduler import (
    RunsFailedError,
    RunTask,
    check_bases_available,
    dependency_order,
    execute_run,
    failure_message,
    planned_code_rows,
    prepare_feature_nets,
    record_flops,
    run_dependencies,
    run_tasks,
)
from pseudovideo.evaluation.stats import Interval, format_interval, mean_interval, paired_difference
from pseudovideo.interop.trust import check_trusted

__all__ = [
    "PlotSpec",
    "Variant",
    "Difference",
    "DifferencePairs",
    "ExperimentSpec",
    "ExperimentRun",
    "RunPlan",
    "ExperimentResult",
    "parse_experiment",
    "load_experiment",
    "expand_experiment",
    "plan_runs",
    "count_flops",
    "training_flops_per_image",
    "aggregate_over_seeds",
    "resolve_differences",
    "summary_rows",
    "difference_rows",
    "describe_sizes",
    "flatten_overrides",
    "write_results",
    "run_experiment",
]

# Keys that the runner sets itself.
RESERVED_KEYS = ("name", "out_dir", "train.seed")
# Short labels of common grid axes in run names (``cvivit-T8-s0``); other keys use their last part.
AXIS_LABELS = {
    "pseudo_video.num_frames": "T",
    "model.vqvae.base_channels": "w",
    "model.unet.base_channels": "w",
    "model.cvivit.dim": "d",
    "train.batch_size": "b",
    "train.steps": "steps",
    "pseudo_video.construction": "",
}
# Result columns every row has (besides the run's identity, grid axes and metrics).
RESULT_COLUMNS = (
    "flops_per_image", "parameters", "train_images_per_s", "train_frames_per_s", "peak_memory_mb", "train_seconds",
)
# Optional result columns, present when the runs' eval.json / train summary report them.
RATE_COLUMNS = ("codes_per_image", "bits_per_image")
RATE_TITLES = {"codes_per_image": "codes/image", "bits_per_image": "bits/image"}
# Tokenizers' codebook usage and perplexity over their evaluation's codes (eval.json's "codebook").
CODEBOOK_COLUMNS = ("codebook_usage", "codebook_perplexity")
MEASURED_COLUMNS = (*RATE_COLUMNS, *CODEBOOK_COLUMNS)
MEASURED_TITLES = {**RATE_TITLES, "codebook_usage": "codebook usage", "codebook_perplexity": "perplexity"}
OPTIONAL_COLUMNS = (*MEASURED_COLUMNS, *INFO_COLUMNS, "loss_terms")
# Sizes that results.md and the log state as resolved (after every override), instead of the description.
SIZE_KEYS = ("data.resolution", "train.steps", "train.batch_size", "pseudo_video.num_frames", "eval.num_images")
_TAR_HINT = "mkdir -p {parent} && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C {parent}"


# --------------------------------------------------------------------------------------------
# Schema


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


@dataclass
class ExperimentRun:
    """One expanded run: its name, where it came from (variant, labels, grid values, seed) and its config."""

    name: str
    variant: str
    labels: dict[str, Any]
    axes: dict[str, Any]  # grid axis -> value (config-key axes) or label (named axes)
    seed: int
    config: RunConfig
    overrides: list[str]  # the ``key=value`` overrides that built ``config`` (after the defaults)


@dataclass
class RunPlan:
    """What the runner will do with a run: ``train``, ``resume``, ``evaluate`` (trained already) or ``skip``."""

    run: ExperimentRun
    action: str
    reason: str


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` wrote and did."""

    out_dir: Path
    csv_path: Path
    markdown_path: Path
    plot_paths: list[Path]
    markdown: str
    rows: list[dict[str, Any]]
    actions: dict[str, str]  # run name -> action taken (train, resume, evaluate, skip)
    unfinished: list[str]  # expanded runs without results yet (e.g. left out by ``only``)
    summary_path: Path | None = None  # results_summary.csv: per variant, mean and 95 % interval over seeds
    differences_path: Path | None = None  # differences.csv (None when the experiment has no differences here)
    differences: list[dict[str, Any]] = field(default_factory=list)  # its rows


_SPEC_KEYS = ("name", "description", "metrics", "plot", "seeds", "scales", "base", "runs", "differences", "slurm")
_DIFFERENCE_KEYS = ("name", "of", "minus", "match", "only_scales")
_VARIANT_KEYS = ("name", "overrides", "labels", "scales", "only_scales", "grid")
_PLOT_KEYS = ("x", "group_by", "panels", "kind")
_METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "kid_std", "swd_avg", "cfd", "probe", "probe_random",
            "sampling_images_per_s", "mse", "snr")


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

    Run configs are not built here (see :func:`expand_experiment`).
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
    metrics = data.get("metrics", ["psnr", "ssim", "swd_avg"])
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"{source}: metrics: expected a non-empty list, got {metrics!r}")
    for metric in metrics:
        if metric not in _METRICS and not re.fullmatch(r"swd_\d+", str(metric)):
            raise ConfigError(f"{source}: metrics: unknown metric {metric!r}; valid: {', '.join(_METRICS)}, swd_<side>")
    plot_data = _mapping(data.get("plot"), f"{source}: plot")
    _check_keys(plot_data, _PLOT_KEYS, f"{source}: plot")
    plot = PlotSpec(**plot_data)
    if isinstance(plot.group_by, str):
        plot.group_by = [plot.group_by]
    if not isinstance(plot.x, str) or not isinstance(plot.group_by, list):
        raise ConfigError(f"{source}: plot: x must be a column name and group_by a list of them, got {plot_data!r}")
    if plot.kind not in ("line", "bar"):
        raise ConfigError(f"{source}: plot.kind: expected line or bar, got {plot.kind!r}")
    scales_data = _mapping(data["scales"], f"{source}: scales")
    if not scales_data:
        raise ConfigError(f"{source}: scales: define at least one scale (e.g. cpu-small, paper)")
    scales = {_check_name(s, f"{source}: scales"): _overrides(v, f"{source}: scales.{s}") for s, v in scales_data.items()}
    seeds_data = data.get("seeds", [0])
    if isinstance(seeds_data, dict):
        _check_keys(seeds_data, list(scales), f"{source}: seeds")
        missing = [s for s in scales if s not in seeds_data]
        if missing:
            raise ConfigError(f"{source}: seeds: no seeds for scale(s) {', '.join(missing)}")
    else:
        seeds_data = {scale: seeds_data for scale in scales}
    seeds = {scale: _seed_list(value, f"{source}: seeds" + (f".{scale}" if isinstance(data.get("seeds"), dict) else ""))
             for scale, value in seeds_data.items()}
    base = _overrides(data.get("base"), f"{source}: base")
    if not isinstance(data["runs"], list) or not data["runs"]:
        raise ConfigError(f"{source}: runs: expected a non-empty list of variants")
    variants = []
    for i, item in enumerate(data["runs"]):
        where = f"{source}: runs.{i}"
        item = _mapping(item, where)
        _check_keys(item, _VARIANT_KEYS, where)
        if "name" not in item:
            raise ConfigError(f"{where}: missing required key 'name'")
        vname = _check_name(item["name"], f"{where}.name")
        where = f"{source}: runs.{i} ({vname})"
        labels = _mapping(item.get("labels"), f"{where}.labels")
        vscales = _mapping(item.get("scales"), f"{where}.scales")
        only = item.get("only_scales")
        if only is not None and (not isinstance(only, list) or not only):
            raise ConfigError(f"{where}.only_scales: expected a non-empty list of scale names, got {only!r}")
        for scale in [*vscales, *(only or [])]:
            if scale not in scales:
                raise ConfigError(f"{where}: scale {scale!r} is not one of the experiment's scales ({', '.join(scales)})")
        grid: dict[str, Any] = {}
        for axis, values in _mapping(item.get("grid"), f"{where}.grid").items():
            if isinstance(values, dict):  # named axis: label -> overrides
                if not values:
                    raise ConfigError(f"{where}.grid.{axis}: expected at least one label")
                grid[axis] = {_check_name(str(label), f"{where}.grid.{axis}"): _overrides(ov, f"{where}.grid.{axis}.{label}")
                              for label, ov in values.items()}
            elif isinstance(values, list) and values:
                if axis in RESERVED_KEYS:
                    raise ConfigError(f"{where}.grid.{axis}: this key is set by the runner; use seeds for train.seed")
                grid[axis] = list(values)
            else:
                raise ConfigError(f"{where}.grid.{axis}: expected a non-empty list of values or a mapping label -> overrides, got {values!r}")
        variants.append(Variant(
            name=vname, overrides=_overrides(item.get("overrides"), f"{where}.overrides"), labels=dict(labels),
            scales={s: _overrides(v, f"{where}.scales.{s}") for s, v in vscales.items()}, grid=grid,
            only_scales=list(only) if only is not None else None,
        ))
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


# --------------------------------------------------------------------------------------------
# Expansion


def _override_text(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML flow syntax, which build_config parses


def _value_label(axis: str, value: Any) -> str:
    prefix = AXIS_LABELS.get(axis, axis.rsplit(".", 1)[-1])
    if isinstance(value, bool):
        return prefix if value else f"no_{prefix}"
    if isinstance(value, (list, tuple)):
        text = "x".join(str(v) for v in value)
    else:
        text = str(value)
    return prefix + re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(key)
    return node


def _fill_placeholders(text: str, folder: Path, seed: int) -> str:
    """``{experiment_dir}`` -> this scale's folder of run folders, ``{seed}`` -> the run's seed."""
    return text.replace("{experiment_dir}", json.dumps(str(folder))[1:-1]).replace("{seed}", str(seed))


def expand_experiment(
    spec: ExperimentSpec, scale: str, out_dir: str | Path = "runs/experiments", overrides: Sequence[str] = ()
) -> list[ExperimentRun]:
    """Every run of ``spec`` at ``scale``, with its config built and validated (nothing is trained).

    Raises ConfigError naming the run and the key when any run config is invalid, when run names
    collide, when the runs would not share one evaluation protocol, or when a plot column is unknown.
    """
    if scale not in spec.scales:
        raise ConfigError(f"experiment {spec.name}: unknown scale {scale!r}; this experiment defines {', '.join(spec.scales)}")
    folder = Path(out_dir) / spec.name / scale
    runs: list[ExperimentRun] = []
    for variant in spec.runs:
        if variant.only_scales is not None and scale not in variant.only_scales:
            continue
        axes = list(variant.grid.items())
        for combo in itertools.product(*[list(values) for _, values in axes]):
            parts, axis_values, grid_texts = [variant.name], {}, []
            for (axis, values), choice in zip(axes, combo):
                axis_values[axis] = choice
                if isinstance(values, dict):  # named axis: the label and its overrides
                    parts.append(choice)
                    grid_texts += [_override_text(k, v) for k, v in values[choice].items()]
                else:
                    parts.append(_value_label(axis, choice))
                    grid_texts.append(_override_text(axis, choice))
            # Layers in order of precedence (build_config applies overrides in order, later ones win).
            layers = [spec.base, spec.scales[scale], variant.overrides, variant.scales.get(scale, {})]
            texts = [_override_text(k, v) for layer in layers for k, v in layer.items()] + grid_texts
            for seed in spec.seeds[scale]:
                name = "-".join([*parts, f"s{seed}"])
                filled = [_fill_placeholders(text, folder, seed) for text in texts]
                texts_seed = [*filled, f"train.seed={seed}", *overrides, f"name={name}", f"out_dir={folder}"]
                try:
                    config = build_config(None, texts_seed)
                except ConfigError as err:
                    raise ConfigError(f"experiment {spec.name}, scale {scale}, run {name}: {err}") from None
                runs.append(ExperimentRun(name=name, variant=variant.name, labels=dict(variant.labels),
                                          axes=dict(axis_values), seed=seed, config=config, overrides=texts_seed))
    if not runs:
        raise ConfigError(f"experiment {spec.name}: no variant runs at scale {scale!r} (see the variants' only_scales)")
    names = [run.name for run in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"experiment {spec.name}: run names collide: {', '.join(repeated)} (give the variants distinct names)")
    run_dependencies(runs, folder, spec.name)  # every run: base names a run of this experiment, no cycle
    reference = config_to_dict(runs[0].config)["eval"]
    for run in runs[1:]:
        diff = dict_diff(reference, config_to_dict(run.config)["eval"], "eval")
        if diff:
            raise ConfigError(
                f"experiment {spec.name}: run {run.name} is evaluated differently from {runs[0].name} "
                f"({describe_diff(diff)}); every run of an experiment shares one eval section (set it in base or scales)"
            )
    resolve_differences(spec, scale, runs)  # selectors are checked before anything trains
    columns = _identity_columns(spec, runs)
    for key in [spec.plot.x, *spec.plot.group_by, *([spec.plot.panels] if spec.plot.panels else [])]:
        if key not in columns and key not in (*spec.metrics, *RESULT_COLUMNS):
            try:
                _lookup(config_to_dict(runs[0].config), key)
            except KeyError:
                raise ConfigError(
                    f"experiment {spec.name}: plot column {key!r} is neither a config key nor one of "
                    f"{', '.join([*columns, *RESULT_COLUMNS])}"
                ) from None
    return runs


@dataclass
class DifferencePairs:
    """A difference resolved against the runs of one scale: (of run, minus run) name pairs per group.

    ``groups`` holds, per value of the ``match`` columns other than ``seed`` (an empty dict when there
    are none), the pairs of run names, one pair per seed.
    """

    difference: Difference
    groups: list[tuple[dict[str, Any], list[tuple[str, str]]]]


_MISSING = object()


def _run_value(run: ExperimentRun, key: str, tree: dict[str, Any]) -> Any:
    """A run's value of a column: variant, seed, run, a label, a grid axis, else a config key (``tree``)."""
    special = {"variant": run.variant, "seed": run.seed, "run": run.name}
    if key in special:
        return special[key]
    if key in run.labels:
        return run.labels[key]
    if key in run.axes:
        return run.axes[key]
    try:
        return _lookup(tree, key)
    except KeyError:
        return _MISSING


def _select(
    runs: Sequence[ExperimentRun], trees: dict[str, dict], selector: dict[str, Any], where: str
) -> list[ExperimentRun]:
    """The runs whose columns equal every value of ``selector``; ConfigError when a key is unknown or nothing matches."""
    for key in selector:
        if all(_run_value(run, key, trees[run.name]) is _MISSING for run in runs):
            raise ConfigError(f"{where}: unknown column {key!r} (not a label, grid axis or config key of any run; "
                              f"use variant, a label, a grid axis or a dotted config key)")
    chosen = [run for run in runs if all(_run_value(run, k, trees[run.name]) == v for k, v in selector.items())]
    if not chosen:
        seen = {k: sorted({json.dumps(_run_value(r, k, trees[r.name]), default=str) for r in runs
                           if _run_value(r, k, trees[r.name]) is not _MISSING}) for k in selector}
        values = "; ".join(f"{k} takes {', '.join(v)}" for k, v in seen.items())
        raise ConfigError(f"{where}: {selector} matches no run ({values})")
    return chosen


def _by_match(
    runs: Sequence[ExperimentRun], trees: dict[str, dict], match: Sequence[str], where: str
) -> dict[str, ExperimentRun]:
    """Runs keyed by their ``match`` values; ConfigError when two runs share them (an ambiguous selector)."""
    keyed: dict[str, ExperimentRun] = {}
    for run in runs:
        key = json.dumps([_run_value(run, k, trees[run.name]) for k in match], default=str)
        if key in keyed:
            same = ", ".join(f"{k}={_run_value(run, k, trees[run.name])}" for k in match)
            raise ConfigError(f"{where}: ambiguous: runs {keyed[key].name} and {run.name} both have {same}; add a "
                              f"column that tells them apart to the selector, or to match to compare them group by group")
        keyed[key] = run
    return keyed


def resolve_differences(spec: ExperimentSpec, scale: str, runs: Sequence[ExperimentRun]) -> list[DifferencePairs]:
    """Pairs the runs of each of ``spec.differences`` at ``scale`` (see :class:`Difference`).

    Raises ConfigError naming the difference when a selector names an unknown column, matches no
    run, matches two runs with the same ``match`` values, when a run has no partner on the other
    side, or when a run is on both sides.
    """
    trees = {run.name: config_to_dict(run.config) for run in runs}
    resolved = []
    for diff in spec.differences:
        if diff.only_scales is not None and scale not in diff.only_scales:
            continue
        where = f"experiment {spec.name}, scale {scale}, difference {diff.name}"
        for key in diff.match:
            if all(_run_value(run, key, trees[run.name]) is _MISSING for run in runs):
                raise ConfigError(f"{where}: match: unknown column {key!r} (not a label, grid axis or config key of any run)")
        of = _by_match(_select(runs, trees, diff.of, f"{where}: of"), trees, diff.match, f"{where}: of")
        minus = _by_match(_select(runs, trees, diff.minus, f"{where}: minus"), trees, diff.match, f"{where}: minus")
        both = sorted({r.name for r in of.values()} & {r.name for r in minus.values()})
        if both:
            raise ConfigError(f"{where}: run(s) {', '.join(both)} selected by both of and minus")
        for side, mine, other in (("of", of, minus), ("minus", minus, of)):
            lonely = [run.name for key, run in mine.items() if key not in other]
            if lonely:
                raise ConfigError(f"{where}: {side} run(s) {', '.join(lonely)} have no partner with equal "
                                  f"{', '.join(diff.match)} on the other side")
        groups: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {}
        for key, run in of.items():
            group = {k: _run_value(run, k, trees[run.name]) for k in diff.match if k != "seed"}
            entry = groups.setdefault(json.dumps(group, default=str), (group, []))
            entry[1].append((run.name, minus[key].name))
        resolved.append(DifferencePairs(difference=diff, groups=list(groups.values())))
    return resolved


def _identity_columns(spec: ExperimentSpec, runs: Sequence[ExperimentRun]) -> list[str]:
    """run, variant, labels, grid axes (in order of appearance), seed."""
    extra = list(dict.fromkeys(k for run in runs for k in [*run.labels, *run.axes]))
    return ["run", "variant", *extra, "seed"]


# --------------------------------------------------------------------------------------------
# Planning: what to do with each run folder


def plan_runs(runs: Sequence[ExperimentRun]) -> list[RunPlan]:
    """What to do with each run folder (see :func:`pseudovideo.training.runs.plan_run`); a folder holding another run
    raises ConfigError naming the differing keys, before anything is trained."""
    return [RunPlan(run, *plan_run(run.config)) for run in runs]


def _check_inputs(runs: Sequence[ExperimentRun]) -> None:
    """Dataset checks of every distinct data section; a missing CIFAR-10 folder names the tar command."""
    seen = set()
    for run in runs:
        data = run.config.data
        key = (data.dataset, data.root, data.train_split, data.eval_split, data.download, data.held_out_fraction)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_run_inputs(run.config)
        except FileNotFoundError as err:
            message = f"run {run.name}: data.dataset={data.dataset}: {err}"
            if data.dataset.startswith("folder:"):
                folder = Path(data.dataset.split(":", 1)[1])
                message += f" (paths are relative to the current folder {os.getcwd()})"
                if folder.name == "cifar10-jpeg":
                    parent = folder.parent.as_posix() or "."
                    message += f". Unpack CIFAR-10 there first: {_TAR_HINT.format(parent=parent)}"
                else:
                    message += ". Create it, or point data.dataset at another folder in the experiment's scales"
            raise FileNotFoundError(message) from None


# --------------------------------------------------------------------------------------------
# FLOPs


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of calling ``fn()`` (which may run a backward pass), counted by
    ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of matmuls, convolutions and
    attention, on any device; elementwise operations are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def training_flops_per_image(
    config: RunConfig, *, channels: int | None = None, batch_size: int = 2, device: str | torch.device = "cpu", seed: int = 0,
    trust_code: bool = False,
) -> float:
    """Floating-point operations of one training step per clean image (forward + backward of the loss).

    Builds the run's task (fresh weights), runs ``task.training_loss`` on ``batch_size`` random images
    (B, C, H, W) in [-1, 1] at the step ``train.steps - 1`` (every loss term active, the discriminator's
    loss included when the task has one), back-propagates it, and counts the operations with
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention: 2 FLOPs per
    multiply-add; elementwise operations are not counted). A video model pays for all T frames of the
    pseudo video of each image; with ``frames_as_images`` the image model pays for T one-frame samples.
    ``channels`` defaults to ``data.channels``, else the dataset's own (read from the eval split).
    ``trust_code``: see :func:`~pseudovideo.training.tasks.build_model`.
    """
    from pseudovideo.training.tasks import build_dataset_from_config, build_task

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if channels is None:
        channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        task = build_task(config, channels, trust_code=trust_code)
        task.model.to(device).train()
        if task.discriminator is not None:
            task.discriminator.to(device).train()
        task.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        shape = sample_shape(config.data)  # (R, R) images or (L,) signals
        images = torch.rand(batch_size, channels, *shape, generator=generator, device=device) * 2 - 1  # (B, C, H, W)
        step = max(config.train.steps - 1, 0)

        def one_step() -> None:
            loss, _ = task.training_loss(task.model, images, step, generator)
            loss.backward()
            d_out = task.discriminator_loss(step)
            if d_out is not None:
                d_out[0].backward()

        flops = count_flops(one_step)
    return flops / batch_size


# --------------------------------------------------------------------------------------------
# Results


def aggregate_over_seeds(
    rows: Sequence[dict[str, Any]], group_columns: Sequence[str], value_columns: Sequence[str], confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Groups result rows by ``group_columns`` (seed excluded) and summarises ``value_columns`` over seeds.

    Returns one dict per group (in order of first appearance) holding the group columns, ``seeds``
    (how many rows) and, for each value column with at least one number, a
    :class:`pseudovideo.evaluation.stats.Interval` (mean, Student-t half-width at ``confidence``, n, sample std;
    no half-width for one seed). Empty and non-finite cells are ignored.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(c) for c in group_columns), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(group_columns, key))
        entry["seeds"] = len(members)
        for column in value_columns:
            values = [v for m in members if (v := _as_number(m.get(column))) is not None]
            if values:
                entry[column] = mean_interval(values, confidence)
        out.append(entry)
    return out


def _format_loss_terms(terms: Any) -> str:
    """A train summary's ``loss_terms`` as a compact column: the active terms with their weights,
    e.g. ``"reconstruction:1 vq:1 adversarial:0.1@100"`` (``@`` the start step; empty when there are none)."""
    if not isinstance(terms, dict) or not terms:
        return ""
    return " ".join(
        f"{name}:{term.get('weight', 1):g}" + (f"@{term['start_step']}" if term.get("start_step") else "")
        for name, term in terms.items() if term.get("active")
    )


def _run_label(run_name: str, seed: Any) -> str:
    """The run name without its seed suffix (``cvivit-T8-s0`` -> ``cvivit-T8``): one label per variant."""
    suffix = f"-s{seed}"
    return run_name[: -len(suffix)] if run_name.endswith(suffix) else run_name


def _result_row(run: ExperimentRun, columns: Sequence[str], metrics: Sequence[str], extra_keys: Sequence[str],
                unrecorded: str | None = None) -> dict[str, Any]:
    """One results.csv row of a finished run (eval.json, train_summary.json, flops.json); ``unrecorded``: the
    stated commit of runs made before commits were recorded."""
    run_dir = run.config.run_dir
    result = json.loads((run_dir / "eval.json").read_text())
    summary = result.get("train") or read_train_summary(run_dir)
    flops = json.loads((run_dir / "flops.json").read_text())["flops_per_image"] if (run_dir / "flops.json").is_file() else None
    row: dict[str, Any] = {c: "" for c in columns}
    row.update({"run": run.name, "variant": run.variant, **run.labels, **run.axes, "seed": run.seed})
    tree = config_to_dict(run.config)
    # Config-key columns (grid axes of other variants included) hold every run's own value.
    for key in [c for c in columns if row.get(c, "") == "" and c not in (*metrics, *RESULT_COLUMNS, *OPTIONAL_COLUMNS)]:
        if _has_key(tree, key):
            extra_keys = [*extra_keys, key]
    for key in extra_keys:
        value = _lookup(tree, key)
        row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    for metric in metrics:
        row[metric] = result["metrics"].get(metric, "")
    rate = result.get("rate") or {}  # tokenizers: what the decoder of the clean frame can read
    frames_per_s = summary.get("frames_per_s")
    row.update({
        "codes_per_image": rate.get("codes_per_image", ""),
        "bits_per_image": rate.get("bits_per_image", ""),
        **{c: (result.get("codebook") or {}).get(c, "") for c in CODEBOOK_COLUMNS},
        "loss_terms": _format_loss_terms(summary.get("loss_terms")),
        "flops_per_image": flops if flops is not None else "",
        "parameters": summary.get("parameters", {}).get("model", ""),
        "train_images_per_s": summary.get("images_per_s", ""),
        "train_frames_per_s": frames_per_s if frames_per_s is not None else "",
        "peak_memory_mb": summary["peak_memory_bytes"] / 2**20 if "peak_memory_bytes" in summary else "",
        "train_seconds": summary.get("wall_time_s", ""),
    })
    row.update({k: "" if v is None else v for k, v in summary_numbers(summary.get("informativeness") or {}).items()})
    row.update(run_code(summary, result, unrecorded))  # commit, dirty, evaluated_at, _code
    row["_label"] = _run_label(run.name, run.seed)
    row["_rate"] = rate.get("description", "")
    row["_skipped"] = result.get("skipped", {})
    row["_protocol"] = result.get("protocol", {})
    row["_loss_terms"] = describe_loss_terms(summary.get("loss_terms") or {})
    row["_marginals"] = first_order_marginals_note(run.config)  # composed corruptions, first order only
    row["_corruption"] = corruption_note(summary.get("corruption") or {})  # a learned corruption: what produced it
    return row


def describe_loss_terms(terms: dict[str, dict[str, Any]]) -> str:
    """One line from a train summary's ``loss_terms``, e.g. "reconstruction 1 + vq 1 + adversarial 0.1 from step 100"."""
    parts = []
    for name, term in terms.items():
        if term.get("active"):
            start = f" from step {term['start_step']}" if term.get("start_step") else ""
            parts.append(f"{name} {term.get('weight', 1):g}{start}")
        elif term.get("reason"):
            parts.append(f"{name} off ({term['reason']})")
    return " + ".join(parts) if parts else "not recorded"


def _write_csv(rows: Sequence[dict[str, Any]], header: Sequence[str], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in header})
    return path


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def _interval_columns(interval: Interval) -> dict[str, Any]:
    """The CSV columns of an interval: n, mean, std, ci95_low, ci95_high, ci95_half_width (blank for n = 1)."""
    return {"n": interval.n, "mean": interval.mean, "std": _blank(interval.std), "ci95_low": _blank(interval.low),
            "ci95_high": _blank(interval.high), "ci95_half_width": _blank(interval.half_width)}


INTERVAL_HEADER = ("n", "mean", "std", "ci95_low", "ci95_high", "ci95_half_width")


def summary_rows(
    groups: Sequence[dict[str, Any]], group_columns: Sequence[str], value_columns: Sequence[str]
) -> list[dict[str, Any]]:
    """results_summary.csv rows (one per group and quantity) from :func:`aggregate_over_seeds` groups."""
    return [{**{c: group[c] for c in group_columns}, "metric": column, **_interval_columns(group[column])}
            for group in groups for column in value_columns if column in group]


def _group_text(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def difference_rows(resolved: Sequence[DifferencePairs], rows: Sequence[dict[str, Any]], metrics: Sequence[str],
                    confidence: float = 0.95) -> list[dict[str, Any]]:
    """differences.csv rows: per difference, group and metric, the paired difference (of minus minus) over the
    seeds where both runs are finished, with its Student-t interval (:func:`pseudovideo.evaluation.stats.paired_difference`)."""
    by_run = {row["run"]: row for row in rows}
    out = []
    for pairs in resolved:
        for group, pair_list in pairs.groups:
            done = [(a, b) for a, b in pair_list if a in by_run and b in by_run]
            for metric in metrics:
                values = [(x, y) for a, b in done
                          if (x := _as_number(by_run[a].get(metric))) is not None
                          and (y := _as_number(by_run[b].get(metric))) is not None]
                if not values:
                    continue
                interval = paired_difference([x for x, _ in values], [y for _, y in values], confidence)
                out.append({"difference": pairs.difference.name, "group": _group_text(group), "metric": metric,
                            **_interval_columns(interval), "pairs": len(done),
                            "of_runs": " ".join(a for a, _ in done), "minus_runs": " ".join(b for _, b in done)})
    return out


DIFFERENCE_HEADER = ("difference", "group", "metric", *INTERVAL_HEADER, "of_runs", "minus_runs")


def _interval_of(row: dict[str, Any]) -> Interval:
    return Interval(mean=row["mean"], half_width=row["ci95_half_width"] or None, n=row["n"], std=row["std"] or None)


def _differences_markdown(
    spec: ExperimentSpec, resolved: Sequence[DifferencePairs], diff_rows: Sequence[dict[str, Any]]
) -> list[str]:
    """The paired-differences table of results.md (one line per difference and group)."""
    if not resolved:
        return []
    lines = ["", "## Paired differences", "",
             "Each line: the runs selected by *of* minus those selected by *minus*, paired by seed (and by the "
             "group's columns); mean ± half-width of the Student-t 95 % interval of the per-pair differences, over "
             "the pairs whose two runs are finished (no interval with one pair; an interval that excludes 0 is a "
             "difference at that level).", "",
             "| difference | of − minus | group | pairs | " + " | ".join(spec.metrics) + " |",
             "|---|---|---|---:|" + "---:|" * len(spec.metrics)]
    for pairs in resolved:
        diff = pairs.difference
        selectors = f"{_group_text(diff.of)} − {_group_text(diff.minus)}"
        for group, pair_list in pairs.groups:
            text = _group_text(group)
            found = {r["metric"]: r for r in diff_rows if r["difference"] == diff.name and r["group"] == text}
            done = max((r["pairs"] for r in found.values()), default=0)
            cells = [format_interval(_interval_of(found[m]), show_n=found[m]["n"] != done) if m in found else "-"
                     for m in spec.metrics]
            lines.append(f"| {diff.name} | {selectors} | {text or '-'} | {done}/{len(pair_list)} | " + " | ".join(cells) + " |")
    return lines


def describe_sizes(runs: Sequence[ExperimentRun]) -> str:
    """The sizes every run was built with, after every override (``SIZE_KEYS``); where runs differ, the value
    of each variant (run names without their seed), e.g. ``train.steps: 300 (vqvae, cvivit), 150 (ddpm)``."""
    parts = []
    trees = [(run, config_to_dict(run.config)) for run in runs]
    signals = [run.config.data.length is not None for run in runs]  # 1-D signals: their length (and no image side)
    keys = SIZE_KEYS if not any(signals) else (*(k for k in SIZE_KEYS if k != "data.resolution" or not all(signals)),
                                               "data.length")
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for run, tree in trees:
            labels = by_value.setdefault(json.dumps(_lookup(tree, key)), [])
            if (label := _run_label(run.name, run.seed)) not in labels:
                labels.append(label)
        if len(by_value) == 1:
            parts.append(f"{key}={next(iter(by_value))}")
        else:
            parts.append(f"{key}: " + ", ".join(f"{value} ({', '.join(labels)})" for value, labels in by_value.items()))
    return "; ".join(parts)


def _results_table(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], group_columns: Sequence[str],
                   optional: Sequence[str], mixed: bool = False) -> list[str]:
    """The main results.md table: one line per variant (mean ± 95 % half-width over seeds); with ``mixed``, a
    last column names the code of each variant's runs."""
    rate = [c for c in (*MEASURED_COLUMNS, *INFO_COLUMNS) if c in optional]
    values = [*spec.metrics, *rate, "flops_per_image", "parameters", "train_images_per_s"]
    groups = aggregate_over_seeds(rows, [*group_columns, "_label"], values)
    header = [*group_columns, "seeds", *spec.metrics, *[{**MEASURED_TITLES, **INFO_TITLES}[c] for c in rate],
              *(["loss terms"] if "loss_terms" in optional else []), "GFLOPs/image", "params (M)", "train img/s",
              *(["code"] if mixed else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(group_columns) + "---:|" * (len(header) - len(group_columns))]
    for group in groups:
        flops = group.get("flops_per_image")
        params = group.get("parameters")
        cells = [str(group[c]) for c in group_columns] + [str(group["seeds"])]
        cells += [format_interval(group.get(m), show_n=False) for m in spec.metrics]
        cells += [f"{group[c].mean:.4g}" if c in group else "-" for c in rate]
        if "loss_terms" in optional:
            terms = dict.fromkeys(r["loss_terms"] for r in rows if r["_label"] == group["_label"] and r["loss_terms"])
            cells.append(" / ".join(terms) or "-")
        cells += [f"{flops.mean / 1e9:.4g}" if flops else "-", f"{params.mean / 1e6:.3g}" if params else "-",
                  format_interval(group.get("train_images_per_s"), show_n=False)]
        if mixed:
            cells.append(" / ".join(dict.fromkeys(r["_code"] for r in rows if r["_label"] == group["_label"])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown(spec: ExperimentSpec, scale: str, rows: Sequence[dict[str, Any]], group_columns: Sequence[str],
              unfinished: Sequence[str], *, sizes: str = "", optional: Sequence[str] = (),
              resolved: Sequence[DifferencePairs] = (), diff_rows: Sequence[dict[str, Any]] = (),
              code_lines: Sequence[str] = (), mixed: bool = False) -> str:
    lines = [f"# Experiment {spec.name} ({scale})", ""]
    if spec.description:
        lines += [spec.description, ""]
    if code_lines:
        lines += [*code_lines, ""]
    if sizes:
        lines += [f"Sizes as run (after every override): {sizes}.", ""]
    lines += [f"Mean ± half-width of the Student-t 95 % interval over seeds {spec.seeds[scale]} (no interval with one "
              "seed); GFLOPs/image: forward + backward of one training step per clean image (matmuls, convolutions, "
              "attention).", ""]
    lines += _results_table(spec, rows, group_columns, optional, mixed)
    skipped = {name: reason for row in rows for name, reason in row["_skipped"].items() if name in spec.metrics}
    lines += [f"\n{name}: skipped ({reason})" for name, reason in skipped.items()]
    rates = dict.fromkeys(f"{row['_label']}: {row['_rate']}" for row in rows if row["_rate"])
    if rates:
        lines += ["", "Rate (codes and bits per clean image that its decoder reads): " + "; ".join(rates)]
    if any(c in optional for c in INFO_COLUMNS):
        lines += ["", INFO_NOTE]
    learned = dict.fromkeys(f"{row['_label']}: {row['_corruption']}" for row in rows if row.get("_corruption"))
    if learned:
        lines += ["", "Learned corruptions (each operator's levels at frames 0..T-1): " + "; ".join(learned)]
    marginals = dict.fromkeys(f"{row['_label']}: {row['_marginals']}" for row in rows if row.get("_marginals"))
    if marginals:
        lines += ["", "First-order frames against higher-order frames at the same levels: " + "; ".join(marginals)]
    low = [row["run"] for row in rows if (u := _as_number(row.get("codebook_usage"))) is not None and u < 0.25]
    if low:
        lines += ["", f"Warning: codebook usage under 25 % in {len(low)} run(s): {', '.join(low)}."]
    if rows:
        by_variant = {str(row.get("variant") or row["run"]): row.get("_loss_terms", "not recorded") for row in rows}
        lines += ["", "Loss terms: " + "; ".join(f"{variant}: {terms}" for variant, terms in by_variant.items())]
        protocol = rows[0]["_protocol"]
        keep = ("num_images", "eval_split", "split", "resolution", "model_weights", "seed")
        lines += ["", "Evaluation: " + ", ".join(f"{k}={protocol[k]}" for k in keep if k in protocol)
                  + "; tokenizers: reconstruction of the clean last frame; diffusion: generated images (last frames)."]
    lines += _differences_markdown(spec, resolved, diff_rows)
    if unfinished:
        lines += ["", f"Not finished yet ({len(unfinished)}): {', '.join(unfinished)}"]
    return "\n".join(lines) + "\n"


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _error(interval: Interval) -> float:
    return interval.half_width or 0.0


def _new_figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _plot(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path | None:
    """Metric against ``plot.x``: mean over seeds with 95 % interval error bars, one line/bar set per group, per panel."""
    plot = spec.plot
    rows = [r for r in rows if _as_number(r.get(metric)) is not None]
    if not rows:
        return None
    panel_values = list(dict.fromkeys(r[plot.panels] for r in rows)) if plot.panels else [None]
    fig = _new_figure(5.2 * len(panel_values))
    for p, panel in enumerate(panel_values):
        ax = fig.add_subplot(1, len(panel_values), p + 1)
        members = [r for r in rows if plot.panels is None or r[plot.panels] == panel]
        groups = aggregate_over_seeds(members, [*plot.group_by, plot.x], [metric])
        series: dict[tuple, list[tuple[Any, Interval]]] = {}
        for g in groups:
            series.setdefault(tuple(g[c] for c in plot.group_by), []).append((g[plot.x], g[metric]))
        categories = list(dict.fromkeys(g[plot.x] for g in groups))
        numeric = plot.kind == "line" and all(_as_number(c) is not None for c in categories)
        width = 0.8 / max(len(series), 1)
        for s, (key, points) in enumerate(series.items()):
            label = ", ".join(str(k) for k in key) or metric
            if numeric:
                points = sorted(points, key=lambda item: _as_number(item[0]))
            ys = [iv.mean for _, iv in points]
            errs = [_error(iv) for _, iv in points]
            if plot.kind == "line":
                xs = [_as_number(x) if numeric else categories.index(x) for x, _ in points]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
            else:
                xs = [categories.index(x) - 0.4 + width * (s + 0.5) for x, _ in points]
                ax.bar(xs, ys, width=width, yerr=errs, capsize=3, label=label)
        if not numeric:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=20)
        ax.set_xlabel(plot.x)
        ax.set_ylabel(f"{metric} (mean, 95 % interval)")
        ax.set_title(f"{spec.name}: {metric}" + (f" ({plot.panels}={panel})" if plot.panels else ""))
        ax.grid(True, alpha=0.3)
        if len(series) > 1 or plot.group_by:
            ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _plot_rate_distortion(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path | None:
    """Metric against bits per clean image: one point per variant (mean over seeds, 95 % interval error bars)."""
    rows = [r for r in rows if _as_number(r.get("bits_per_image")) is not None and _as_number(r.get(metric)) is not None]
    if not rows:
        return None
    fig = _new_figure(6.0)
    ax = fig.add_subplot(1, 1, 1)
    for group in aggregate_over_seeds(rows, ["_label"], ["bits_per_image", metric]):
        x, y = group["bits_per_image"], group[metric]
        ax.errorbar([x.mean], [y.mean], yerr=[_error(y)], xerr=[_error(x)], marker="o", capsize=3, linestyle="none")
        ax.annotate(group["_label"], (x.mean, y.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    bits = [_as_number(r["bits_per_image"]) for r in rows]
    if min(bits) > 0 and max(bits) / min(bits) > 4:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per clean image (codes × log2 codebook size)")
    ax.set_ylabel(f"{metric} (mean, 95 % interval)")
    ax.set_title(f"{spec.name}: {metric} vs rate")
    ax.grid(True, alpha=0.3)
    return _save_figure(fig, path)


def write_results(spec: ExperimentSpec, scale: str, runs: Sequence[ExperimentRun], folder: str | Path, *,
                  allow_mixed: bool = False, unrecorded_commit: str | None = None) -> ExperimentResult:
    """Writes the tables and plots of the finished runs among ``runs`` into ``folder``.

    results.csv (one row per run), results_summary.csv (per variant and quantity: mean, 95 % interval, n),
    differences.csv (the ``differences:`` of the experiment, when it has some at this scale), results.md,
    plot_<metric>.png and, when eval.json reports a rate, plot_rd_<metric>.png. Trains nothing; the
    returned result's ``actions`` is empty. Every row names the code that made it (commit, dirty, evaluated_at);
    runs of different code raise ConfigError before anything is written, unless ``allow_mixed`` (then marked).
    ``unrecorded_commit``: the commit of the runs made before commits were recorded (shown as stated).
    """
    folder = Path(folder)
    identity = _identity_columns(spec, runs)
    tree = config_to_dict(runs[0].config)
    plot_keys = [spec.plot.x, *spec.plot.group_by, *([spec.plot.panels] if spec.plot.panels else [])]
    extra_keys = [k for k in dict.fromkeys(["model.family", "pseudo_video.num_frames", *plot_keys])
                  if k not in identity and k not in (*spec.metrics, *RESULT_COLUMNS) and _has_key(tree, k)]
    header = [*identity[:-1], *extra_keys, "seed", *spec.metrics, *RESULT_COLUMNS, *CODE_COLUMNS]
    actions = {run.name: plan_run(run.config)[0] for run in runs}  # one read of each run folder
    finished = [run for run in runs if actions[run.name] == "skip"]
    unfinished = [run.name for run in runs if actions[run.name] != "skip"]
    rows = [_result_row(run, header, spec.metrics, extra_keys, unrecorded_commit) for run in finished]
    code_lines, mixed = table_code_lines(rows, spec.name, allow_mixed=allow_mixed)
    optional = [c for c in OPTIONAL_COLUMNS if any(r.get(c) not in (None, "") for r in rows)]
    after_metrics = header.index(spec.metrics[-1]) + 1
    header[after_metrics:after_metrics] = optional
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = _write_csv(rows, header, folder / "results.csv")
    group_columns = [c for c in [*identity, *extra_keys] if c not in ("run", "seed")]
    values = [*spec.metrics, *[c for c in (*MEASURED_COLUMNS, *INFO_COLUMNS) if c in optional], *RESULT_COLUMNS]
    summary = summary_rows(aggregate_over_seeds(rows, group_columns, values), group_columns, values)
    summary_path = _write_csv(summary, [*group_columns, "metric", *INTERVAL_HEADER], folder / "results_summary.csv")
    resolved = resolve_differences(spec, scale, runs)
    diff_rows = difference_rows(resolved, rows, spec.metrics)
    differences_path = folder / "differences.csv"
    if resolved:
        _write_csv(diff_rows, DIFFERENCE_HEADER, differences_path)
    elif differences_path.is_file():
        differences_path.unlink()  # left by an earlier version of the experiment file
    markdown = _markdown(spec, scale, rows, group_columns, unfinished, sizes=describe_sizes(runs), optional=optional,
                         resolved=resolved, diff_rows=diff_rows, code_lines=code_lines, mixed=mixed)
    md_path = folder / "results.md"
    md_path.write_text(markdown)
    plots = [p for metric in spec.metrics if (p := _plot(spec, rows, metric, folder / f"plot_{metric}.png")) is not None]
    plots += [p for metric in spec.metrics
              if (p := _plot_rate_distortion(spec, rows, metric, folder / f"plot_rd_{metric}.png")) is not None]
    return ExperimentResult(out_dir=folder, csv_path=csv_path, markdown_path=md_path, plot_paths=plots, markdown=markdown,
                            rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                            actions={}, unfinished=unfinished, summary_path=summary_path,
                            differences_path=differences_path if resolved else None, differences=diff_rows)


def _has_key(tree: dict[str, Any], key: str) -> bool:
    try:
        _lookup(tree, key)
    except KeyError:
        return False
    return True

# --------------------------------------------------------------------------------------------
# The runner


def run_experiment(
    path: str | Path,
    *,
    scale: str = "cpu-small",
    out_dir: str | Path = "runs/experiments",
    only: str | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
    trust_code: bool = False,
    jobs: int | None = None,
    launcher: str = "local",
    allow_mixed: bool = False,
    unrecorded_commit: str | None = None,
) -> ExperimentResult:
    """Runs the experiment file ``path`` at ``scale`` into ``<out_dir>/<name>/<scale>/`` and tabulates it.

    ``only``: a glob over run names (``"cvivit-*"``, ``"*-s0"``); other runs are neither trained nor
    evaluated, but every finished run of the experiment is tabulated. ``overrides``: extra
    ``key=value`` overrides for every run (e.g. ``train.device=cuda``), applied last; ``slurm.KEY=VALUE`` ones
    set the Slurm settings instead. ``jobs``: runs at once (local: worker processes, default 1 = in this process;
    submitit: jobs in flight, default all that are ready). ``launcher``: ``local`` or ``submitit`` (Slurm).
    ``allow_mixed``: tabulate runs made by different code (marked); ``unrecorded_commit``: the commit of runs
    made before commits were recorded. A run whose model base is user code (``python:``) is trained only with
    ``trust_code=True`` (``--trust-code``), else UntrustedCodeError. Every config, run folder, dataset path,
    dependency and the code of the finished runs is checked before the first run trains; a problem raises
    ConfigError / FileNotFoundError naming the run and the key or path. Runs that fail in parallel raise RunsFailedError after the table is written.
    With ``jobs`` > 1 from a Python script, call it under ``if __name__ == "__main__":`` (the spawned worker
    processes import the script's main module, as with any ``multiprocessing`` spawn).
    """
    spec = load_experiment(path)
    slurm = [text for text in overrides if text.startswith("slurm.")]
    runs = expand_experiment(spec, scale, out_dir, [text for text in overrides if text not in slurm])
    selected = runs
    if only:
        selected = [run for run in runs if fnmatch.fnmatchcase(run.name, only)]
        if not selected:
            raise ConfigError(f"--only {only!r} matches no run of {spec.name}; runs: {', '.join(r.name for r in runs)}")
    for run in selected:  # code named by the experiment file (or a run: base) runs only when trusted
        check_trusted(run.config, trust_code=trust_code, source=f"experiment file {path} (run {run.name})")
    unrecorded = check_stated_commit(unrecorded_commit) if unrecorded_commit is not None else None
    folder = Path(out_dir) / spec.name / scale
    _check_inputs(selected)
    plans = plan_runs(selected)
    depends = run_dependencies(runs, folder, spec.name)
    check_bases_available(plans, depends, runs)
    order = dependency_order([plan.run.name for plan in plans], depends, spec.name)
    plans = sorted(plans, key=lambda plan: order.index(plan.run.name))
    table_code_lines(planned_code_rows(runs, plans, unrecorded), spec.name, allow_mixed=allow_mixed)
    choice = choose_launcher(launcher, jobs, spec.slurm.get(scale, {}), slurm, folder, execute_run, spec.name)
    log(f"experiment {spec.name} ({scale}): {len(runs)} runs, {len(selected)} selected, folder {folder}")
    log(f"sizes (after every override): {describe_sizes(runs)}")
    for plan in plans:
        log(f"  {plan.run.name}: {plan.action} ({plan.reason})")
    eval_config = runs[0].config.eval
    for plan in plans:
        if plan.action == "skip" and not (plan.run.config.run_dir / "flops.json").is_file():
            record_flops(plan.run.config.run_dir, resolve_device(plan.run.config.train.device), trust_code)
    work = [plan for plan in plans if plan.action != "skip"]
    tasks = [RunTask(plan.run.name, plan.run.config, plan.action, eval_config, threads=choice.threads, trust_code=trust_code,
                     log_path=folder / "logs" / f"{plan.run.name}.log" if choice.logs else None) for plan in work]
    with reuse_datasets():  # this process reads each dataset once (the runs too, when they run here)
        if work:
            prepare_feature_nets([plan.run.config for plan in work], eval_config, log)
        failed = run_tasks(tasks, depends, choice.launcher, max_running=choice.max_running, log=log)
    result = write_results(spec, scale, runs, folder, allow_mixed=allow_mixed, unrecorded_commit=unrecorded)
    result = dataclasses.replace(result, actions={plan.run.name: plan.action for plan in plans})
    tables = [result.csv_path, result.summary_path, *([result.differences_path] if result.differences_path else []),
              result.markdown_path]
    log(f"\n{result.markdown}\nresults: {', '.join(str(p) for p in tables)}"
        + "".join(f"\nplot: {p}" for p in result.plot_paths))
    if failed:
        raise RunsFailedError(failure_message(failed, tasks, result.markdown_path))
    return result
