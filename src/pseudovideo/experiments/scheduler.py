"""Running an experiment's runs: their dependencies, one run's job, and the dispatch loop over a launcher.

A run depends on another run of the same experiment when a string of its config names that run's folder
(``model.lifted.base: run:{experiment_dir}/vqvae-pre-s0``): it starts only after that run has finished. The
order comes from the configs, not from the file: any order without a cycle works.

:func:`execute_run` is one run's whole job (train or resume, evaluate, count FLOPs), the same whether it runs in
this process, in a worker process or as a Slurm job (see :mod:`pseudovideo.experiments.launchers`); :func:`run_tasks` hands
the runs to a launcher as their dependencies finish, at most ``max_running`` at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pseudovideo.config import ConfigError, EvalConfig, RunConfig, config_to_dict, load_config, save_config
from pseudovideo.data.cache import reuse_datasets
from pseudovideo.factory.run_folder import read_train_summary
from pseudovideo.interop.trust import check_trusted
from pseudovideo.training.provenance import code_record, run_code
from pseudovideo.training.runs import plan_run, train_run

__all__ = [
    "RunTask",
    "RunsFailedError",
    "run_dependencies",
    "dependency_order",
    "execute_run",
    "finish_run",
    "record_flops",
    "prepare_feature_nets",
    "run_tasks",
    "check_bases_available",
    "planned_code_rows",
    "failure_message",
]


@dataclass
class RunTask:
    """One run to train and/or evaluate: what :func:`execute_run` receives (picklable, for worker processes)."""

    name: str
    config: RunConfig
    action: str  # train | resume | evaluate
    eval_config: EvalConfig
    threads: int | None = None  # torch threads of the process that runs it (None: leave as it is)
    log_path: Path | None = None  # the run's output goes there (None: this process's console)
    trust_code: bool = False  # the user's --trust-code: a python: model base may be imported and run


class RunsFailedError(RuntimeError):
    """Some runs of an experiment failed (the others finished and were tabulated); the message names them."""


# --------------------------------------------------------------------------------------------
# Dependencies


def _run_references(tree: Any) -> Iterator[str]:
    """Every ``run:PATH`` string in a config tree (nested dicts and lists)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _run_references(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _run_references(value)
    elif isinstance(tree, str) and tree.startswith("run:"):
        yield tree[len("run:"):]


def run_dependencies(runs: Sequence[Any], folder: Path, experiment: str = "experiment") -> dict[str, list[str]]:
    """Run name -> names of the runs of ``folder`` it starts from (``run:`` values of its config naming them).

    ``runs`` are :class:`~pseudovideo.experiments.grid.ExperimentRun` objects. Raises ConfigError when a config names a
    run folder of this experiment that no run has, or when runs depend on each other in a cycle.
    """
    names = [run.name for run in runs]
    depends: dict[str, list[str]] = {}
    for run in runs:
        found = []
        for path in _run_references(config_to_dict(run.config)):
            base = Path(path)
            if base.parent != folder:
                continue  # a run outside this experiment: it must exist already
            if base.name not in names:
                raise ConfigError(f"experiment {experiment}, run {run.name}: run:{path} names no run of this experiment; "
                                  f"its runs: {', '.join(names)}")
            if base.name == run.name:
                raise ConfigError(f"experiment {experiment}, run {run.name}: run:{path} names the run itself")
            found.append(base.name)
        depends[run.name] = list(dict.fromkeys(found))
    dependency_order(names, depends, experiment)  # refuses a cycle
    return depends


def dependency_order(names: Sequence[str], depends: dict[str, list[str]], experiment: str = "experiment") -> list[str]:
    """``names`` reordered so that each run comes after the runs it depends on, otherwise in the given order."""
    order: list[str] = []
    left = list(names)
    while left:
        ready = next((n for n in left if all(d in order or d not in names for d in depends.get(n, []))), None)
        if ready is None:
            raise ConfigError(f"experiment {experiment}: runs {', '.join(left)} start from each other in a cycle "
                              f"(model.lifted.base: run:...); one of them must start from something else")
        order.append(ready)
        left.remove(ready)
    return order


# --------------------------------------------------------------------------------------------
# One run's job


def record_flops(run_dir: Path, device: Any, trust_code: bool = False) -> None:
    """Writes ``flops.json`` (training FLOPs per image) of a trained run from its saved config."""
    from pseudovideo.experiments.flops import training_flops_per_image

    saved = load_config(run_dir / "config.yaml")
    check_trusted(saved, trust_code=trust_code, source=str(run_dir / "config.yaml"))
    flops = training_flops_per_image(saved, channels=saved.data.channels, device=device, trust_code=trust_code)
    (run_dir / "flops.json").write_text(json.dumps({"flops_per_image": flops, "counted_on_batch": 2}, indent=1))


def finish_run(config: RunConfig, eval_config: EvalConfig, trust_code: bool = False) -> None:
    """Evaluates a trained run with the experiment's eval section and records its FLOPs per image."""
    from pseudovideo.training.distributed import resolve_device
    from pseudovideo.evaluation.evaluate import evaluate_run

    run_dir = config.run_dir
    saved = load_config(run_dir / "config.yaml")
    evaluate_run(run_dir, eval_config, device=config.train.device, trust_code=trust_code)
    if config_to_dict(saved.eval) != config_to_dict(eval_config):
        save_config(dataclasses.replace(saved, eval=eval_config), run_dir / "config.yaml")
    record_flops(run_dir, resolve_device(config.train.device), trust_code)


@contextlib.contextmanager
def _output_to(path: Path | None) -> Iterator[None]:
    """Sends this process's stdout and stderr (Python's and the C libraries') to ``path``, appending."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def execute_run(task: RunTask) -> dict[str, Any]:
    """Trains (or resumes) and evaluates one run; returns ``{name, action, seconds}``.

    The run's inputs were checked by the caller before the first run (so they are not checked again here);
    inside, datasets are built once per process (:func:`pseudovideo.data.cache.reuse_datasets`).
    """
    start = time.perf_counter()
    with _output_to(task.log_path), reuse_datasets():
        if task.threads is not None:
            import torch

            torch.set_num_threads(task.threads)
        if task.log_path is not None:
            print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {task.name}: {task.action} -> {task.config.run_dir} "
                  f"(pid {os.getpid()})", flush=True)
        try:
            if task.action in ("train", "resume"):
                train_run(task.config, resume=task.action == "resume", check_inputs=False, trust_code=task.trust_code)
            finish_run(task.config, task.eval_config, task.trust_code)
        except BaseException:
            if task.log_path is not None:
                traceback.print_exc()
            raise
    return {"name": task.name, "action": task.action, "seconds": time.perf_counter() - start}


def prepare_feature_nets(configs: Sequence[RunConfig], eval_config: EvalConfig, log: Callable[[str], None]) -> None:
    """Trains (or finds) the feature net behind ``cfd`` / ``ckd`` once per distinct data section, before any run
    starts, so that no run (and no parallel worker) trains its own."""
    if not {"cfd", "ckd"} & set(eval_config.metrics):
        return
    from pseudovideo.factory.feature_net import UnlabelledDatasetError, prepare_feature_net
    from pseudovideo.factory.datasets import build_dataset_from_config

    seen = set()
    for config in configs:
        data = config.data
        key = (data.dataset, data.root, data.resolution, data.channels, data.train_split, data.max_images, data.length,
               data.window, data.stride)
        if key in seen:
            continue
        seen.add(key)
        channels = data.channels or build_dataset_from_config(config, split=data.train_split).channels
        try:
            prepare_feature_net(dataclasses.replace(config, eval=eval_config), channels, log=log)
        except UnlabelledDatasetError:
            pass  # evaluation records cfd as skipped, with this reason


# --------------------------------------------------------------------------------------------
# Checks before the first run


def planned_code_rows(runs: Sequence[Any], plans: Sequence[Any], unrecorded: str | None) -> list[dict]:
    """The code columns the table will show, as far as known before training: finished runs from their folders,
    the runs to train or evaluate from this process's code; unfinished runs left out by ``only`` have none."""
    current = {"code": code_record()}
    planned = {plan.run.name: plan.action for plan in plans}
    rows = []
    for run in runs:
        action = planned.get(run.name) or plan_run(run.config)[0]
        if run.name not in planned and action != "skip":
            continue
        run_dir = run.config.run_dir
        summary = current if action in ("train", "resume") else read_train_summary(run_dir)
        evaluation = json.loads((run_dir / "eval.json").read_text()) if action == "skip" else current
        rows.append({"run": run.name, **run_code(summary, evaluation, unrecorded)})
    return rows


def failure_message(failed: dict[str, str], tasks: Sequence[RunTask], markdown: Path) -> str:
    """One line naming the runs that did not finish, why, and where their logs are."""
    logs = {task.name: task.log_path for task in tasks}
    parts = "; ".join(f"{name} ({error}" + (f"; log: {logs[name]})" if logs.get(name) else ")") for name, error in failed.items())
    return (f"{len(failed)} of {len(tasks)} runs did not finish: {parts}. The finished runs are tabulated in {markdown}; "
            f"run the same command again to retry the others (finished runs are skipped)")


def check_bases_available(plans: Sequence[Any], depends: dict[str, list[str]], runs: Sequence[Any]) -> None:
    """A selected run that starts from another run of the experiment needs it finished or selected (ConfigError)."""
    selected = {plan.run.name for plan in plans}
    by_name = {run.name: run for run in runs}
    for plan in plans:
        for base in depends.get(plan.run.name, []):
            if base not in selected and plan_run(by_name[base].config)[0] not in ("skip", "evaluate"):
                raise ConfigError(f"run {plan.run.name} starts from run {base}, which is neither trained nor selected "
                                  f"by --only; select it too (e.g. --only '*-s0')")


# --------------------------------------------------------------------------------------------
# The dispatch loop


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _start_line(task: RunTask, number: int, total: int, parallel: bool) -> str:
    config = task.config
    if parallel:
        return f"[{number}/{total}] {task.name}: {task.action}" + (f" (log: {task.log_path})" if task.log_path else "")
    return (f"\n== [{number}/{total}] {task.name}: {task.action}, {config.model.family}, "
            f"T={config.pseudo_video.num_frames}, {config.train.steps} steps -> {config.run_dir}")


def run_tasks(
    tasks: Sequence[RunTask], depends: dict[str, list[str]], launcher: Any, *, max_running: int | None,
    log: Callable[[str], None],
) -> dict[str, str]:
    """Runs ``tasks`` on ``launcher``, each once the tasks it depends on have finished; returns name -> error of the
    failed ones (and of the ones left out because a run they depend on failed).

    Dependencies that are not among ``tasks`` count as finished. ``max_running``: tasks in flight at once (None:
    as many as are ready). With a launcher that is not parallel (in this process) an error propagates at once.
    """
    pending = list(tasks)
    names = {task.name for task in tasks}
    done: set[str] = set()
    failed: dict[str, str] = {}
    running: dict[str, Any] = {}
    started = {}
    try:
        while pending or running:
            for task in list(pending):
                if max_running is not None and len(running) >= max_running:
                    break
                waits = [d for d in depends.get(task.name, []) if d in names]
                broken = [d for d in waits if d in failed]
                if broken:
                    pending.remove(task)
                    failed[task.name] = f"not started: the run it starts from, {broken[0]}, failed"
                    continue
                if all(d in done for d in waits):
                    pending.remove(task)
                    started[task.name] = time.perf_counter()
                    log(_start_line(task, len(started), len(tasks), launcher.parallel))
                    running[task.name] = launcher.submit(task)
            if not running:
                if pending:  # cannot happen with dependencies checked by run_dependencies
                    raise RuntimeError(f"runs {', '.join(t.name for t in pending)} wait for runs that never start")
                continue
            for name in launcher.wait(running):
                handle = running.pop(name)
                try:
                    launcher.result(handle)
                except Exception as err:  # noqa: BLE001 - a run's failure is reported, the others go on
                    if not launcher.parallel:
                        raise
                    failed[name] = _one_line(err)
                    log(f"  {name} failed after {time.perf_counter() - started[name]:.0f} s: {failed[name]}")
                    continue
                done.add(name)
                if launcher.parallel:
                    log(f"  {name} finished in {time.perf_counter() - started[name]:.0f} s")
    except BaseException:
        launcher.cancel(running)
        raise
    finally:
        launcher.close()
    return failed
