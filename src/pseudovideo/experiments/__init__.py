"""Experiments: a grid of runs described in one YAML file, trained, evaluated and tabulated together.

:mod:`~pseudovideo.experiments.spec` documents and parses the experiment file, :mod:`~pseudovideo.experiments.grid`
expands it at a scale (runs, paired differences), :mod:`~pseudovideo.experiments.runner` runs it (with
:mod:`~pseudovideo.experiments.scheduler` and :mod:`~pseudovideo.experiments.launchers`) and writes
:mod:`~pseudovideo.experiments.tables` and :mod:`~pseudovideo.experiments.plots`; :mod:`~pseudovideo.experiments.flops`
counts training FLOPs. The names below are the package's API::

    from pseudovideo.experiments import load_experiment, expand_experiment, run_experiment
"""

from __future__ import annotations

from pseudovideo.experiments.flops import count_flops, training_flops_per_image
from pseudovideo.experiments.grid import DifferencePairs, ExperimentRun, describe_sizes, expand_experiment, resolve_differences
from pseudovideo.experiments.runner import ExperimentResult, RunPlan, plan_runs, run_experiment, write_results
from pseudovideo.experiments.spec import Difference, ExperimentSpec, PlotSpec, Variant, load_experiment, parse_experiment
from pseudovideo.experiments.tables import aggregate_over_seeds, describe_loss_terms, difference_rows, summary_rows

__all__ = [
    "Difference",
    "DifferencePairs",
    "ExperimentResult",
    "ExperimentRun",
    "ExperimentSpec",
    "PlotSpec",
    "RunPlan",
    "Variant",
    "aggregate_over_seeds",
    "count_flops",
    "describe_loss_terms",
    "describe_sizes",
    "difference_rows",
    "expand_experiment",
    "load_experiment",
    "parse_experiment",
    "plan_runs",
    "resolve_differences",
    "run_experiment",
    "summary_rows",
    "training_flops_per_image",
    "write_results",
]
