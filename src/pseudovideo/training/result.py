"""What a training run ends with: :class:`TrainResult` (the summary written to ``train_summary.json`` and the trained
modules), or :class:`TrainingInterrupted` saying where an interrupted run stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from pseudovideo.checkpoint import list_checkpoints

__all__ = ["TrainResult", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training; the message names the step reached, the checkpoint kept and how to resume."""


def _interrupted_text(run_dir: Path, steps_done: int | None, steps: int) -> str:
    kept = list_checkpoints(run_dir / "checkpoints")
    where = f"stopped at step {steps_done} of {steps}" if steps_done is not None else "stopped before its first step"
    if not kept:
        return f"training {where}; no checkpoint of {run_dir} was written yet: run the same command again"
    step, folder = kept[-1]
    return (f"training {where}; checkpoint {folder} (step {step}) is kept: resume with "
            f"`pseudovideo train --resume {run_dir}`")


@dataclass
class TrainResult:
    """What :func:`train` returns: the summary written to ``train_summary.json`` plus the trained modules."""

    run_dir: Path
    steps: int
    start_step: int
    wall_time_s: float
    images_per_s: float
    frames_per_s: float | None
    peak_memory_bytes: int
    device: str
    world_size: int
    mixed_precision: str
    parameters: dict[str, int]
    final_loss: float | None
    last_checkpoint: Path | None
    model: nn.Module = field(repr=False)
    ema_model: nn.Module | None = field(default=None, repr=False)
    loss_terms: dict[str, Any] = field(default_factory=dict)
    code: list[dict[str, Any]] = field(default_factory=list)  # provenance.code_record() of each training segment

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable part (what ``train_summary.json`` holds)."""
        return {
            "steps": self.steps,
            "start_step": self.start_step,
            "wall_time_s": self.wall_time_s,
            "images_per_s": self.images_per_s,
            "frames_per_s": self.frames_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "device": self.device,
            "world_size": self.world_size,
            "mixed_precision": self.mixed_precision,
            "parameters": self.parameters,
            "final_loss": self.final_loss,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "loss_terms": self.loss_terms,
            "code": self.code[-1] if self.code else None,  # the code of this process (pseudovideo.training.provenance)
            **({"code_history": self.code} if len(self.code) > 1 else {}),  # resumed at other code
        }
