"""Where an experiment's runs execute: in this process, in local worker processes, or as Slurm jobs (submitit).

Every launcher takes :class:`~pseudovideo.experiments.scheduler.RunTask` objects and runs
:func:`pseudovideo.experiments.scheduler.execute_run` on them; the scheduler decides when (dependencies, how many at once):

- :class:`InlineLauncher` (``--jobs 1``, the default): one run after the other in this process, output on the console;
- :class:`ProcessLauncher` (``--jobs N``): N spawned worker processes, each with ``max(1, cores // N)`` torch
  threads, reused from run to run; each run's output goes to ``logs/RUN.log`` in the experiment folder;
- :class:`SubmititLauncher` (``--launcher submitit``): each run one Slurm job (``pip install 'pseudovideo[submitit]'``),
  sized by the experiment's ``slurm:`` section (:class:`SlurmSettings`); ``slurm.cluster: local`` runs the jobs as
  local processes through submitit's LocalExecutor instead (to try the path on one machine).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import difflib
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from pseudovideo.config import ConfigError

__all__ = [
    "SLURM_MEANINGS",
    "SlurmSettings",
    "parse_slurm_section",
    "slurm_settings",
    "InlineLauncher",
    "ProcessLauncher",
    "SubmititLauncher",
    "available_cores",
    "Launcher",
    "LauncherChoice",
    "choose_launcher",
]


@dataclass
class SlurmSettings:
    """How ``--launcher submitit`` sizes each run's Slurm job (one job per run); see ``SLURM_MEANINGS``."""

    cluster: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 4
    mem_gb: float | None = None
    time_minutes: int = 240
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None


SLURM_MEANINGS = {
    "cluster": "slurm (sbatch, the default) or local (each job a local process through submitit's LocalExecutor: "
               "the cluster path on one machine)",
    "partition": "Slurm partition (--partition); default: the cluster's default partition",
    "account": "Slurm account to charge (--account)",
    "qos": "Slurm quality of service (--qos)",
    "constraint": "Slurm node constraint (--constraint), e.g. a100",
    "gpus_per_run": "GPUs of each run's job (--gpus-per-node); 0 for CPU runs (give train.device=cuda with GPUs)",
    "cpus_per_run": "CPU cores of each run's job (--cpus-per-task); also the run's torch threads",
    "mem_gb": "memory of each run's job in GB (--mem); default: the partition's default",
    "time_minutes": "time limit of each run's job in minutes (--time); a run cut by it resumes from its newest "
                    "checkpoint when the experiment command is run again",
    "setup": "shell lines run before each job starts, e.g. [module load cuda, source .venv/bin/activate]",
    "additional": "further sbatch options as a mapping, e.g. {gres: 'gpu:a100:1', exclude: node12}",
    "folder": "where submitit keeps its job files and Slurm logs; default: the experiment folder's slurm/",
}
_CLUSTERS = ("slurm", "local")


def _check_setting(key: str, value: Any, where: str) -> Any:
    """The value of one ``slurm`` key after type checks (ConfigError naming ``where.key`` otherwise)."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")

    if key == "cluster":
        if value not in _CLUSTERS:
            raise fail(" or ".join(_CLUSTERS))
    elif key in ("partition", "account", "qos", "constraint", "folder"):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail("a non-empty string")
    elif key in ("gpus_per_run", "cpus_per_run", "time_minutes"):
        low = 0 if key == "gpus_per_run" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise fail(f"an integer >= {low}")
    elif key == "mem_gb":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise fail("a positive number of GB")
    elif key == "setup":
        if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
            raise fail("a list of shell lines")
    elif key == "additional":
        if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
            raise fail("a mapping of sbatch option -> value")
    return value


def _check_mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of Slurm settings ({', '.join(SLURM_MEANINGS)}), got {data!r}")
    valid = list(SLURM_MEANINGS)
    for key, value in data.items():
        if key not in SLURM_MEANINGS:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; valid keys: {', '.join(valid)}")
        _check_setting(key, value, where)
    return dict(data)


def parse_slurm_section(data: Any, scales: list[str], source: str) -> dict[str, dict[str, Any]]:
    """The experiment file's ``slurm:`` section, checked, as scale -> settings mapping.

    Either one mapping of settings for every scale, or a mapping scale -> settings (like ``seeds``).
    """
    if data is None:
        return {scale: {} for scale in scales}
    if isinstance(data, dict) and data and set(data) <= set(scales):
        return {scale: _check_mapping(data.get(scale) or {}, f"{source}: slurm.{scale}") for scale in scales}
    settings = _check_mapping(data, f"{source}: slurm")
    return {scale: dict(settings) for scale in scales}


def slurm_settings(section: dict[str, Any], overrides: list[str]) -> SlurmSettings:
    """:class:`SlurmSettings` from a scale's checked section and command-line ``slurm.KEY=VALUE`` overrides
    (values read as YAML, the later winning)."""
    values = dict(section)
    for text in overrides:
        key, _, raw = text.partition("=")
        key, value = key.removeprefix("slurm."), yaml.safe_load(raw) if raw else None
        values.update(_check_mapping({key: value}, "slurm"))
    return SlurmSettings(**values)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Launchers


class Launcher(Protocol):
    """What the scheduler needs from a launcher (``parallel``: whether tasks run beside this process)."""

    parallel: bool

    def submit(self, task: Any) -> Any:
        """Starts ``task`` (a RunTask); returns a handle to wait on."""
        ...

    def wait(self, handles: dict[str, Any]) -> list[str]:
        """Blocks until at least one of the named handles has finished; returns the names of the finished ones."""
        ...

    def result(self, handle: Any) -> dict[str, Any]:
        """The finished task's result; raises (one line) when the task failed."""
        ...

    def cancel(self, handles: dict[str, Any]) -> None:
        """Stops the tasks in flight where the launcher can (on an interrupt of the scheduler)."""
        ...

    def close(self) -> None:
        """Releases the launcher's processes."""
        ...


class InlineLauncher:
    """Runs each task in this process when it is submitted (one after the other; an error propagates at once).

    Implements :class:`Launcher`, as do the two below.
    """

    parallel = False

    def __init__(self, execute: Callable[[Any], dict[str, Any]]) -> None:
        self.execute = execute

    def submit(self, task: Any) -> dict[str, Any]:
        return self.execute(task)

    def wait(self, handles: dict[str, Any]) -> list[str]:
        return list(handles)

    def result(self, handle: dict[str, Any]) -> dict[str, Any]:
        return handle

    def cancel(self, handles: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    """A worker process: ``threads`` torch threads, and each dataset built once for all the runs it takes."""
    import torch

    from pseudovideo.data.cache import reuse_datasets_for_process

    torch.set_num_threads(threads)
    reuse_datasets_for_process()


class ProcessLauncher:
    """``jobs`` spawned worker processes with ``threads`` torch threads each, reused from task to task.

    Spawned, not forked: a forked child inherits the parent's OpenMP thread pool, which misbehaves in torch. A
    worker that dies (killed, out of memory) fails the tasks it held; later tasks get a fresh pool.
    """

    parallel = True

    def __init__(self, execute: Callable[[Any], dict[str, Any]], jobs: int, threads: int) -> None:
        self.execute, self.jobs, self.threads = execute, jobs, threads
        self._pool: futures.ProcessPoolExecutor | None = None

    def submit(self, task: Any) -> futures.Future:
        if self._pool is None:
            self._pool = futures.ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_init_worker, initargs=(self.threads,))
        return self._pool.submit(self.execute, task)

    def wait(self, handles: dict[str, futures.Future]) -> list[str]:
        futures.wait(list(handles.values()), return_when=futures.FIRST_COMPLETED)
        return [name for name, future in handles.items() if future.done()]

    def result(self, handle: futures.Future) -> dict[str, Any]:
        try:
            return handle.result()
        except futures.process.BrokenProcessPool:
            if self._pool is not None:  # unusable now: the next submit starts a fresh one
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise RuntimeError("its worker process died (killed, or out of memory?)") from None

    def cancel(self, handles: dict[str, futures.Future]) -> None:
        """Drops the tasks not started yet (a running task finishes, or dies with its worker on Ctrl-C)."""
        for future in handles.values():
            future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class SubmititLauncher:
    """Each task one submitit job: a Slurm job (``cluster: slurm``) or a local process (``cluster: local``).

    The scheduler submits a run when the runs it depends on have finished, so this process must keep running
    until the grid is done (e.g. inside tmux or a small Slurm job of its own); stopping it cancels the jobs in
    flight, which resume from their checkpoints when the command is run again.
    """

    parallel = True

    def __init__(self, execute: Callable[[Any], dict[str, Any]], settings: SlurmSettings, folder: Path,
                 name: str = "pseudovideo") -> None:
        try:
            import submitit
        except ImportError:
            raise ConfigError("--launcher submitit needs the submitit package: pip install 'pseudovideo[submitit]'") from None
        self.execute, self.settings = execute, settings
        self.poll_s = 1.0 if settings.cluster == "local" else 15.0
        self.executor = submitit.AutoExecutor(folder=str(Path(settings.folder or folder)), cluster=settings.cluster)
        params: dict[str, Any] = {
            "name": name, "timeout_min": settings.time_minutes, "cpus_per_task": settings.cpus_per_run,
            "gpus_per_node": settings.gpus_per_run, "nodes": 1, "tasks_per_node": 1,
        }
        if settings.mem_gb is not None:
            params["mem_gb"] = settings.mem_gb
        if settings.cluster == "slurm":
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(settings, key):
                    params[f"slurm_{key}"] = getattr(settings, key)
            if settings.setup:
                params["slurm_setup"] = list(settings.setup)
            if settings.additional:
                params["slurm_additional_parameters"] = dict(settings.additional)
        elif settings.setup:
            params["local_setup"] = list(settings.setup)
        self.executor.update_parameters(**params)

    def submit(self, task: Any) -> Any:
        task = dataclasses.replace(task, threads=self.settings.cpus_per_run)
        return self.executor.submit(self.execute, task)

    def wait(self, handles: dict[str, Any]) -> list[str]:
        while True:
            finished = [name for name, job in handles.items() if job.done()]
            if finished:
                return finished
            time.sleep(self.poll_s)

    def result(self, handle: Any) -> dict[str, Any]:
        from submitit.core.utils import UncompletedJobError

        try:
            return handle.result()
        except UncompletedJobError as err:  # FailedJobError included: the job's traceback is in its log
            last = [line for line in str(err).splitlines() if line.strip()]
            raise RuntimeError(f"Slurm job {handle.job_id} failed: {last[-1] if last else type(err).__name__}") from None

    def cancel(self, handles: dict[str, Any]) -> None:
        """Cancels the jobs in flight (scancel); their runs resume from their checkpoints next time."""
        for job in handles.values():
            job.cancel(check=False)

    def close(self) -> None:
        pass


@dataclass
class LauncherChoice:
    """The launcher of an experiment and how the scheduler uses it."""

    launcher: Any
    max_running: int | None  # runs in flight at once (None: every run that is ready)
    threads: int | None  # torch threads of each run (None: as the process has them)
    logs: bool  # each run's output goes to logs/RUN.log in the experiment folder


def choose_launcher(kind: str, jobs: int | None, slurm_section: dict[str, Any], slurm_overrides: list[str],
                    folder: Path, execute: Callable[[Any], dict[str, Any]], name: str = "pseudovideo") -> LauncherChoice:
    """The launcher for ``--launcher KIND --jobs N``: ``local`` with N = 1 (default) runs in this process, with
    N > 1 in N worker processes of ``max(1, cores // N)`` torch threads; ``submitit`` submits Slurm jobs sized by
    the scale's ``slurm`` section and ``slurm.KEY=VALUE`` overrides, at most N in flight (default: all ready ones).
    Raises ConfigError for an unknown kind, N < 1, or Slurm overrides without the submitit launcher."""
    if kind not in ("local", "submitit"):
        raise ConfigError(f"--launcher: expected local or submitit, got {kind!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"--jobs: expected a positive number of runs at once, got {jobs!r}")
    if kind == "submitit":
        settings = slurm_settings(slurm_section, slurm_overrides)
        launcher = SubmititLauncher(execute, settings, folder / "slurm", name=f"pv-{name}")
        return LauncherChoice(launcher, jobs, settings.cpus_per_run, logs=True)
    if slurm_overrides:
        raise ConfigError(f"{slurm_overrides[0]}: Slurm settings need --launcher submitit")
    if jobs is None or jobs == 1:
        return LauncherChoice(InlineLauncher(execute), 1, None, logs=False)
    threads = max(1, available_cores() // jobs)
    return LauncherChoice(ProcessLauncher(execute, jobs, threads), jobs, threads, logs=True)
