"""An experiment expanded at one scale: every run (variant x grid values x seed) with its config built and
checked, the paired differences resolved against those runs, and the sizes they were built with."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pseudovideo.config import ConfigError, RunConfig, build_config, config_to_dict, describe_diff, dict_diff
from pseudovideo.experiments.scheduler import run_dependencies
from pseudovideo.experiments.spec import RESULT_COLUMNS, Difference, ExperimentSpec, Variant


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


# Sizes that results.md and the log state as resolved (after every override), instead of the description.
SIZE_KEYS = ("data.resolution", "train.steps", "train.batch_size", "pseudo_video.num_frames", "eval.num_images")


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
        if variant.only_scales is None or scale in variant.only_scales:
            runs += _variant_runs(spec, variant, scale, folder, overrides)
    if not runs:
        raise ConfigError(f"experiment {spec.name}: no variant runs at scale {scale!r} (see the variants' only_scales)")
    names = [run.name for run in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"experiment {spec.name}: run names collide: {', '.join(repeated)} (give the variants distinct names)")
    run_dependencies(runs, folder, spec.name)  # every run: base names a run of this experiment, no cycle
    _check_one_protocol(spec, runs)
    resolve_differences(spec, scale, runs)  # selectors are checked before anything trains
    _check_plot_columns(spec, runs)
    return runs


def _variant_runs(spec: ExperimentSpec, variant: Variant, scale: str, folder: Path, overrides: Sequence[str]
                  ) -> list[ExperimentRun]:
    """The runs of one variant at ``scale``: every combination of its grid values, once per seed."""
    runs = []
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
    return runs


def _check_one_protocol(spec: ExperimentSpec, runs: Sequence[ExperimentRun]) -> None:
    """ConfigError when two runs would be evaluated differently (every run shares one eval section)."""
    reference = config_to_dict(runs[0].config)["eval"]
    for run in runs[1:]:
        diff = dict_diff(reference, config_to_dict(run.config)["eval"], "eval")
        if diff:
            raise ConfigError(
                f"experiment {spec.name}: run {run.name} is evaluated differently from {runs[0].name} "
                f"({describe_diff(diff)}); every run of an experiment shares one eval section (set it in base or scales)"
            )


def _check_plot_columns(spec: ExperimentSpec, runs: Sequence[ExperimentRun]) -> None:
    """ConfigError when a plot column is neither an identity column, a metric, a result column nor a config key."""
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


def _run_label(run_name: str, seed: Any) -> str:
    """The run name without its seed suffix (``cvivit-T8-s0`` -> ``cvivit-T8``): one label per variant."""
    suffix = f"-s{seed}"
    return run_name[: -len(suffix)] if run_name.endswith(suffix) else run_name


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


def _has_key(tree: dict[str, Any], key: str) -> bool:
    try:
        _lookup(tree, key)
    except KeyError:
        return False
    return True
