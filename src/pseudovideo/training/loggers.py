"""Scalar loggers of a training run besides log.csv: TensorBoard and (optional) Weights & Biases.

``train.log_to`` chooses them. W&B is an optional extra (``pip install '.[wandb]'``); with
``WANDB_MODE=offline`` it writes into ``run_dir/wandb`` without any network (``wandb sync`` uploads later).
A run keeps one W&B id (saved in ``run_dir/wandb_id.txt``), so that a resumed run continues the same W&B run.
"""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path
from typing import Any, Sequence


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
