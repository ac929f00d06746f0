"""Scalar loggers of a training run: ``log.csv``, TensorBoard and (optional) Weights & Biases, and the meter that
averages the step scalars between log steps.

``train.log_to`` chooses them. W&B is an optional extra (``pip install '.[wandb]'``); with
``WANDB_MODE=offline`` it writes into ``run_dir/wandb`` without any network (``wandb sync`` uploads later).
A run keeps one W&B id (saved in ``run_dir/wandb_id.txt``), so that a resumed run continues the same W&B run.
"""

from __future__ import annotations

import csv
import secrets
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from pseudovideo.training.distributed import DistributedContext, all_reduce_mean


def _tensorboard(log_dir: Path, purge_step: int) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as err:  # tensorboard missing or broken: CSV still works
        warnings.warn(f"TensorBoard logging disabled ({err}); scalars still go to log.csv", stacklevel=3)
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step if purge_step > 0 else None)


def _wandb_run(run_dir: Path, project: str, config: dict[str, Any] | None) -> Any:
    import wandb

    id_file = run_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
                      config=config or {}, reinit=True)


class ScalarLoggers:
    """The TensorBoard writer and W&B run a training run logs its scalars to (rank 0 only)."""

    def __init__(
        self, log_to: Sequence[str], run_dir: Path, *, start_step: int = 0, wandb_project: str = "pseudovideo",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.tensorboard = _tensorboard(run_dir / "tb", start_step) if "tensorboard" in log_to else None
        self.wandb = _wandb_run(run_dir, wandb_project, config) if "wandb" in log_to else None

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Logs ``scalars`` (name -> value) at ``step`` as ``train/<name>``."""
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{name}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{name}": value for name, value in scalars.items()}, step=step)

    def close(self) -> None:
        """Flushes and closes every logger."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


class _CsvLog:
    """``log.csv`` with columns step, loss, lr, images_per_s + task scalars (new columns rewrite the file)."""

    BASE = ["step", "loss", "lr", "images_per_s"]

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.header = list(self.BASE)
        self.rows: list[dict[str, Any]] = []
        if keep_until_step is not None and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.header = list(reader.fieldnames or self.BASE)
                self.rows = [row for row in reader if row.get("step") and int(row["step"]) <= keep_until_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.header, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new_keys = [key for key in row if key not in self.header]
        if new_keys:
            self.header += new_keys
            self._rewrite()
            return
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.header, restval="").writerow(row)


class _ScalarMeter:
    """Sums named scalars on the device between log steps (no host sync per step).

    Each name is averaged over the steps that reported it (GAN terms start mid-interval at gan_start_step).
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, scalars: dict[str, Tensor]) -> None:
        for name, value in scalars.items():
            value = value.detach().float().reshape(())
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, ctx: DistributedContext) -> dict[str, float]:
        """Means since the last call, averaged over ranks; resets the meter."""
        if not self.sums:
            return {}
        names = list(self.sums)
        vector = torch.stack([self.sums[n] / self.counts[n] for n in names])
        vector = all_reduce_mean(vector, ctx)
        self.sums, self.counts = {}, {}
        return dict(zip(names, vector.tolist()))
