"""The optimisers (AdamW for the model and the discriminator), the learning-rate schedule and the grad scalers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pseudovideo.checkpoint import CheckpointError
from pseudovideo.config import TrainConfig

__all__ = ["lr_at_step"]


def lr_at_step(
    step: int, *, lr: float, warmup_steps: int, total_steps: int, schedule: str = "cosine", min_lr_ratio: float = 0.1
) -> float:
    """Learning rate of optimiser update ``step`` (0-based).

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` updates, then
    either constant ``lr`` or a cosine decay from ``lr`` (at ``warmup_steps``) towards
    ``min_lr_ratio * lr`` (reached at ``total_steps``).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"lr schedule: expected 'cosine' or 'constant', got {schedule!r}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    min_lr = min_lr_ratio * lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def _lr_factor(settings: TrainConfig):
    def factor(step: int) -> float:
        return lr_at_step(
            step,
            lr=1.0,
            warmup_steps=settings.warmup_steps,
            total_steps=settings.steps,
            schedule=settings.lr_schedule,
            min_lr_ratio=settings.min_lr_ratio,
        )

    return factor


def _make_optimizer(module: nn.Module, settings: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    return torch.optim.AdamW(
        params, lr=settings.lr, betas=(settings.betas[0], settings.betas[1]), weight_decay=settings.weight_decay,
        fused=True,  # one kernel per step on CUDA; on CPU it also beats the per-parameter loop
    )


@dataclass
class _Optimisation:
    """The optimisers, schedule and grad scalers of a run (the discriminator's are None without one)."""

    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    lr_factor: Any
    d_optimizer: torch.optim.AdamW | None = None
    d_scaler: torch.amp.GradScaler | None = None

    def state_dict(self) -> dict[str, Any]:
        """The checkpointed part (plain tensors and values)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer else None,
            "d_scaler": self.d_scaler.state_dict() if self.d_scaler else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        """Restores what :meth:`state_dict` saved (``source`` names the checkpoint in errors)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.d_optimizer is not None:
            if state.get("d_optimizer") is None:
                raise CheckpointError(f"checkpoint {source} has no discriminator optimiser state but the task has a discriminator")
            self.d_optimizer.load_state_dict(state["d_optimizer"])
            self.d_scaler.load_state_dict(state["d_scaler"])


def _build_optimisation(
    model: nn.Module, discriminator: nn.Module | None, settings: TrainConfig, device: torch.device, precision: str
) -> _Optimisation:
    optimizer = _make_optimizer(model, settings, device)
    lr_factor = _lr_factor(settings)
    optimisation = _Optimisation(
        optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor),
        torch.amp.GradScaler(device.type, enabled=precision == "fp16"), lr_factor,
    )
    if discriminator is not None:
        optimisation.d_optimizer = _make_optimizer(discriminator, settings, device)
        optimisation.d_scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return optimisation
