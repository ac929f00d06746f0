"""Running an experiment: every config, input and run folder checked first, the runs trained and evaluated in
dependency order (in this process, worker processes or Slurm jobs), then the tables and plots written."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pseudovideo.config import ConfigError, EvalConfig, config_to_dict
from pseudovideo.data.cache import reuse_datasets
from pseudovideo.experiments.grid import (
    ExperimentRun,
    _has_key,
    _identity_columns,
    describe_sizes,
    expand_experiment,
    resolve_differences,
)
from pseudovideo.experiments.launchers import LauncherChoice, choose_launcher
from pseudovideo.experiments.plots import _plot, _plot_rate_distortion
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
from pseudovideo.experiments.spec import RESULT_COLUMNS, ExperimentSpec, load_experiment
from pseudovideo.experiments.tables import (
    DIFFERENCE_HEADER,
    INTERVAL_HEADER,
    MEASURED_COLUMNS,
    OPTIONAL_COLUMNS,
    _markdown,
    _result_row,
    _write_csv,
    aggregate_over_seeds,
    difference_rows,
    summary_rows,
)
from pseudovideo.interop.trust import check_trusted
from pseudovideo.pseudo_video.informativeness import INFO_COLUMNS
from pseudovideo.training.distributed import resolve_device
from pseudovideo.training.provenance import CODE_COLUMNS, check_stated_commit, table_code_lines
from pseudovideo.training.runs import check_run_inputs, plan_run


_TAR_HINT = "mkdir -p {parent} && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C {parent}"


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
    plans, depends = _plan(spec, runs, selected, folder, unrecorded, allow_mixed)
    choice = choose_launcher(launcher, jobs, spec.slurm.get(scale, {}), slurm, folder, execute_run, spec.name)
    log(f"experiment {spec.name} ({scale}): {len(runs)} runs, {len(selected)} selected, folder {folder}")
    log(f"sizes (after every override): {describe_sizes(runs)}")
    for plan in plans:
        log(f"  {plan.run.name}: {plan.action} ({plan.reason})")
    failed, tasks = _run_plans(plans, runs[0].config.eval, depends, choice, folder, trust_code, log)
    result = write_results(spec, scale, runs, folder, allow_mixed=allow_mixed, unrecorded_commit=unrecorded)
    result = dataclasses.replace(result, actions={plan.run.name: plan.action for plan in plans})
    tables = [result.csv_path, result.summary_path, *([result.differences_path] if result.differences_path else []),
              result.markdown_path]
    log(f"\n{result.markdown}\nresults: {', '.join(str(p) for p in tables)}"
        + "".join(f"\nplot: {p}" for p in result.plot_paths))
    if failed:
        raise RunsFailedError(failure_message(failed, tasks, result.markdown_path))
    return result


def _plan(spec: ExperimentSpec, runs: Sequence[ExperimentRun], selected: Sequence[ExperimentRun], folder: Path,
          unrecorded: str | None, allow_mixed: bool) -> tuple[list[RunPlan], dict[str, list[str]]]:
    """Checks every input, run folder, dependency and the code of the finished runs before anything trains; returns
    the plans of the selected runs in dependency order and the dependencies of every run."""
    _check_inputs(selected)
    plans = plan_runs(selected)
    depends = run_dependencies(runs, folder, spec.name)
    check_bases_available(plans, depends, runs)
    order = dependency_order([plan.run.name for plan in plans], depends, spec.name)
    plans = sorted(plans, key=lambda plan: order.index(plan.run.name))
    table_code_lines(planned_code_rows(runs, plans, unrecorded), spec.name, allow_mixed=allow_mixed)
    return plans, depends


def _run_plans(plans: Sequence[RunPlan], eval_config: EvalConfig, depends: dict[str, list[str]], choice: LauncherChoice,
               folder: Path, trust_code: bool, log: Callable[[str], None]) -> tuple[dict[str, str], list[RunTask]]:
    """Measures the FLOPs of finished runs that lack them, then trains and evaluates the others with the chosen
    launcher; returns (the failed runs, the tasks)."""
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
    return failed, tasks
