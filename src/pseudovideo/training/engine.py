"""The one training engine shared by every model family (VQVAE, C-ViViT, DDPM UNet, video UNet).

Config in, run folder out: :func:`train` takes a :class:`TrainingTask` (the model family's loss),
a dataset of clean images and a :class:`~pseudovideo.config.TrainConfig`, and writes into ``run_dir``::

    checkpoints/step_0000500/   model / ema / discriminator .safetensors, state.pt, config.yaml, manifest.json
    log.csv, tb/                scalars every ``log_every`` steps (CSV and TensorBoard)
    pictures/                   ``task.preview`` pictures every ``image_every`` steps and at the end;
                                loss_curves.png (the loss and its clean-frame term) at the end
    train_summary.json          steps, wall time, images/s, frames/s, peak memory, device, parameters

The loop is flat (nanoGPT style) and exactly resumable: the data order is a pure function of the
step, dataset augmentation is seeded per item from (seed, step, position), and all other randomness
(the task's pseudo-video generator, torch/numpy/python global RNGs used by dropout) is saved in every
checkpoint, so N steps + resume + N steps gives bit-identical weights to 2N steps on CPU.
Multi-GPU / multi-node runs go through ``torchrun`` (see :mod:`pseudovideo.training.distributed`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import json
import math
import random
import resource
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from pseudovideo.checkpoint import (
    EMA,
    CheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    run_lock,
    save_checkpoint,
)
from pseudovideo.config import TrainConfig, validate_train_config
from pseudovideo.training.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_gradients,
    all_reduce_mean,
    all_reduce_min,
    barrier,
    broadcast_module,
    init_distributed,
    teardown,
    wrap_ddp,
)
from pseudovideo.training.loggers import ScalarLoggers
from pseudovideo.models.layers import count_parameters
from pseudovideo.training.provenance import code_identity, code_record

__all__ = [
    "TrainingTask",
    "TrainResult",
    "TrainingDivergedError",
    "ModelEMA",
    "train",
    "load_trained_model",
    "lr_at_step",
    "epoch_permutation",
    "batch_indices",
    "autocast",
    "resolve_precision",
    "resolve_compile",
]

PREVIEW_IMAGES = 8  # clean images given to task.preview
_RANK_SEED_OFFSET = 1_000_003  # seed of rank r = seed + r * offset
_PREVIEW_STEP = 2**31 - 1  # augmentation seed stream of the preview images (no training step has it)


class TrainingTask(Protocol):
    """What a model family gives the engine: a network, an optional discriminator and three hooks.

    Optional attributes the engine looks for: ``frames_per_image: int`` (frames of the pseudo video
    built from each clean image, for the frames/s figure), ``find_unused_parameters: bool`` (passed
    to DDP), a ``to(device)`` method (moves auxiliary modules such as a perceptual network),
    ``loss_terms: dict`` (the active loss terms and weights, copied into ``train_summary.json``) and
    ``corruption_learner`` (an :class:`~pseudovideo.pseudo_video.learned.adversarial.AdversarialLearner` or None: stepped after every
    model update, its state kept in every checkpoint).
    Call ``model(...)`` (its forward) inside :meth:`training_loss` so that DDP synchronises gradients;
    use :func:`pseudovideo.training.distributed.unwrap_model` for other attributes.
    """

    model: nn.Module
    discriminator: nn.Module | None

    def training_loss(
        self, model: nn.Module, images: Tensor, step: int, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss to backpropagate and named scalars to log for a clean batch ``images`` (B, C, H, W)."""
        ...

    def discriminator_loss(self, step: int) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Discriminator loss on outputs cached by the last :meth:`training_loss`; None when inactive."""
        ...

    def preview(self, model: nn.Module, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Named pictures in [-1, 1]: (N, C, H, W) image grids or (B, T, C, H, W) pseudo-video grids."""
        ...


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the loss terms at that step."""


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


# --------------------------------------------------------------------------------------------
# Learning-rate schedule


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


# --------------------------------------------------------------------------------------------
# Data order: a pure function of the step


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The order of dataset items in ``epoch``: a permutation of ``range(num_items)`` seeded by (seed, epoch)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(num_items)


def batch_indices(
    step: int, *, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Dataset indices that rank ``rank`` trains on at update ``step`` (0-based).

    The global batch of ``batch_size`` items is the ``b``-th slice of the epoch's permutation
    (incomplete last batches dropped); rank ``r`` takes items ``r * B/W .. (r + 1) * B/W`` of it.
    """
    sampler = _StepBatchSampler(num_items, batch_size, seed, rank, world_size, start=step, end=step + 1)
    [(_, items)] = list(sampler)  # the production sampler's one batch: (step, [(position, index), ...])
    return [index for _, index in items]


def _check_batch(num_items: int, batch_size: int, world_size: int) -> None:
    if batch_size % world_size != 0:
        raise ValueError(
            f"train.batch_size={batch_size} (the global batch) must be divisible by the number of processes "
            f"WORLD_SIZE={world_size}"
        )
    if num_items < batch_size:
        raise ValueError(f"the dataset has {num_items} images, fewer than train.batch_size={batch_size}")


class _StepBatchSampler(Sampler):
    """Yields ``(step, [(position in global batch, dataset index), ...])`` for steps ``start .. end - 1``."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int, world_size: int, start: int, end: int):
        _check_batch(num_items, batch_size, world_size)
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start, self.end = rank, world_size, start, end
        self._epoch: int | None = None
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        batches_per_epoch = self.num_items // self.batch_size
        local = self.batch_size // self.world_size
        for step in range(self.start, self.end):
            epoch, b = divmod(step, batches_per_epoch)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, epoch_permutation(self.num_items, self.seed, epoch)
            first = b * self.batch_size + self.rank * local
            positions = range(self.rank * local, (self.rank + 1) * local)
            yield step, list(zip(positions, self._order[first : first + local].tolist()))


def _item_seeds(seed: int, step: int, count: int) -> list[int]:
    """Augmentation seeds of global-batch positions ``0 .. count - 1`` at ``step`` (a prefix-stable stream)."""
    return np.random.SeedSequence([seed, step, 0xDA7A]).generate_state(count).tolist()


class _BatchFetcher(Dataset):
    """Loads one (local) batch with augmentation randomness that is a pure function of the step.

    Torch's global RNG (what this project's datasets draw flips from) is seeded per item from
    (seed, step, position in the global batch), so flips do not depend on DataLoader workers, on the
    number of ranks, or on a resume; numpy's and Python's RNGs (for third-party transforms) are seeded
    once per local batch. The training process's own RNG states are left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, list[tuple[int, int]]]) -> Tensor:
        step, items = key
        seeds = _item_seeds(self.seed, step, max(position for position, _ in items) + 1)
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seeds[items[0][0]])
        np.random.seed(seeds[items[0][0]])
        images = []
        try:
            with torch.random.fork_rng(devices=[]):
                for position, index in items:
                    torch.default_generator.manual_seed(seeds[position])
                    images.append(self.dataset[index])
        finally:  # also when the dataset raises (a corrupt image): the caller's RNGs stay as they were
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.stack(images)  # (B_local, C, H, W)


def _batches(dataset: Dataset, settings: TrainConfig, ctx: DistributedContext, start: int) -> Iterator[Tensor]:
    sampler = _StepBatchSampler(len(dataset), settings.batch_size, settings.seed, ctx.rank, ctx.world_size, start, settings.steps)
    loader = DataLoader(
        _BatchFetcher(dataset, settings.seed),
        sampler=sampler,
        batch_size=None,
        num_workers=settings.num_workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(settings.seed),  # keeps the loader off the global RNG
    )
    return iter(loader)


# --------------------------------------------------------------------------------------------
# EMA of weights and buffers


class ModelEMA:
    """Exponential moving average of a module's parameters AND floating buffers (VQ codebooks).

    ``module`` is a frozen copy in eval mode. Update ``n`` (1-based) uses the decay
    ``min(decay, (1 + n) / (10 + n))``, so that early in training (and in short runs) the average is
    not dominated by the random initialisation. Integer buffers (counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.num_updates = 0

    def current_decay(self) -> float:
        """Decay used by the next update."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average towards ``model`` (same architecture as the copy)."""
        decay = self.current_decay()
        self.num_updates += 1
        ema_float, new_float = [], []
        pairs = list(zip(self.module.parameters(), model.parameters()))
        pairs += list(zip(self.module.buffers(), model.buffers()))
        for ema_t, new_t in pairs:
            if ema_t.dtype.is_floating_point:
                ema_float.append(ema_t)
                new_float.append(new_t.detach().to(ema_t.dtype))
            else:
                ema_t.copy_(new_t)
        if ema_float:
            torch._foreach_lerp_(ema_float, new_float, 1.0 - decay)


# --------------------------------------------------------------------------------------------
# RNG states (all made of tensors and plain values, for torch.load(weights_only=True))


def _capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generator": generator.get_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and state.get("torch_cuda") is not None:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    generator.set_state(state["generator"])
    np_state = state["numpy"]
    np.random.set_state(
        (np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs the block with torch's, numpy's and Python's global RNGs seeded from ``seed``, restoring them after.

    Wrap whatever creates parameters (model and loss construction) so that the same seed gives the
    same initial weights, whatever ran before in the process.
    """
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        _seed_everything(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


# --------------------------------------------------------------------------------------------
# Precision


def resolve_precision(mixed_precision: str, device: torch.device) -> str:
    """The precision actually used: ``bf16``, ``fp16`` or ``off``.

    ``auto`` is bf16 autocast on CUDA (fp16 with a grad scaler on GPUs without bf16) and off on CPU;
    ``fp16`` needs CUDA (raises ValueError otherwise).
    """
    if mixed_precision == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.mixed_precision='fp16' needs a CUDA device, got {device}; use 'bf16' or 'off'")
    if mixed_precision not in ("bf16", "fp16", "off"):
        raise ValueError(f"train.mixed_precision: expected auto, bf16, fp16 or off, got {mixed_precision!r}")
    return mixed_precision


def resolve_compile(
    compile_setting: bool | str, mode: str, device: torch.device, *, world_size: int = 1,
    cuda_graphs_ok: bool = False, gradient_checkpointing: bool = False,
) -> str | None:
    """The ``torch.compile`` mode to use, or None for eager.

    ``compile_setting`` ``auto`` compiles on CUDA and stays eager on CPU (where compiling costs more than it
    saves at these sizes); true / false force it. ``mode`` ``auto`` picks ``reduce-overhead`` (CUDA graphs)
    on one CUDA device when the task says its step has static shapes and no state mutated outside the graph
    (``cuda_graphs_ok``) and no gradient checkpointing, and ``default`` otherwise (CPU, DDP, tokenizers).
    """
    if compile_setting not in (True, False, "auto"):
        raise ValueError(f"train.compile: expected auto, true or false, got {compile_setting!r}")
    enabled = device.type == "cuda" if compile_setting == "auto" else bool(compile_setting)
    if not enabled:
        return None
    if mode != "auto":
        return mode
    graphs = device.type == "cuda" and world_size == 1 and cuda_graphs_ok and not gradient_checkpointing
    return "reduce-overhead" if graphs else "default"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision ("off", "bf16", "fp16"; see :func:`resolve_precision`)."""
    if precision == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Logging


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


class _DivergenceWatch:
    """Remembers, on the device, the first step whose loss is not finite and the loss terms then.

    Checking is deferred to log/checkpoint/preview steps so the loop needs no host sync per step.
    """

    NONE = 2**62

    def __init__(self, device: torch.device):
        self.device = device
        self.bad_step = torch.full((), self.NONE, dtype=torch.long, device=device)
        self.names: tuple[str, ...] | None = None
        self.values: Tensor | None = None
        self.last_good: Path | None = None  # the checkpoint named in the error (kept up to date by the loop)

    def observe(self, step: int, losses: dict[str, Tensor], scalars: dict[str, Tensor], ctx: DistributedContext) -> None:
        terms = {**losses, **{k: v for k, v in scalars.items() if k not in losses}}
        names = tuple(terms)
        vector = torch.stack([t.detach().float().reshape(()) for t in terms.values()])  # (num_terms,)
        if names != self.names:
            if self.names is not None:
                self.check(ctx)
            self.names, self.values = names, torch.zeros_like(vector)
        finite = torch.stack([torch.isfinite(t.detach()).all() for t in losses.values()]).all()
        newly_bad = ~finite & (self.bad_step == self.NONE)
        self.bad_step = torch.where(newly_bad, torch.full_like(self.bad_step, step), self.bad_step)
        self.values = torch.where(newly_bad, vector, self.values)

    def check(self, ctx: DistributedContext) -> None:
        """Raises TrainingDivergedError on every rank when any rank saw a non-finite loss (naming ``last_good``)."""
        first = int(all_reduce_min(self.bad_step, ctx).item())
        if first == self.NONE:
            return
        if int(self.bad_step.item()) == first and self.names is not None and self.values is not None:
            terms = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.names, self.values.tolist()))
        else:
            terms = "seen on another rank"
        raise TrainingDivergedError(
            f"training diverged at step {first + 1} (update {first}, 0-based): the loss is NaN or infinite "
            f"[{terms}]; {_kept_text(self.last_good)}. Lower train.lr, enable train.grad_clip, or use "
            f"train.mixed_precision=off to investigate"
        )


class _LossHealth:
    """The NaN guard rule: whether the weights after the latest step are good enough to checkpoint.

    A step is healthy when its loss (averaged over ranks) is finite and at most
    ``median + factor * |median|``, the median taken over the last ``WINDOW`` healthy steps (with no
    healthy step yet, finite is enough; ``factor=0`` turns the median test off). Diverged steps never
    enter the window, so a loss that explodes and then stays high is not taken as the new normal. A
    checkpoint is good when its last step is healthy, every weight is finite and the step after it
    is healthy too (that step's loss is the first one computed with the checkpointed weights; the
    final checkpoint has no such step). Step losses stay on the device until :meth:`flush`, called
    where the loop syncs anyway.
    """

    WINDOW = 50

    def __init__(self, factor: float, history: list[float] | None = None):
        self.factor = factor
        self.history: collections.deque[float] = collections.deque(history or [], maxlen=self.WINDOW)
        self.pending: list[Tensor] = []
        self.last_loss: float | None = None
        self.last_healthy = True
        self.reason = ""

    def observe(self, loss: Tensor) -> None:
        """Records the loss of one step (a 0-dim tensor, kept on the device)."""
        self.pending.append(loss.detach().float().reshape(()))

    def flush(self, ctx: DistributedContext) -> list[tuple[bool, str]]:
        """Judges the steps observed since the last call (one host sync); returns (healthy, why not) per step."""
        if not self.pending:
            return []
        values = all_reduce_mean(torch.stack(self.pending), ctx).tolist()
        self.pending = []
        verdicts = []
        for value in values:
            self.last_loss, self.last_healthy, self.reason = value, *self._judge(value)
            verdicts.append((self.last_healthy, self.reason))
            if self.last_healthy:
                self.history.append(value)
        return verdicts

    def _judge(self, value: float) -> tuple[bool, str]:
        if not math.isfinite(value):
            return False, f"its loss is {value}"
        if self.factor > 0 and self.history:
            median = float(np.median(self.history))
            if value - median > self.factor * abs(median):
                return False, (
                    f"its loss {value:.4g} exceeds the median {median:.4g} of the last {len(self.history)} healthy "
                    f"steps by more than train.divergence_factor={self.factor:g} times its magnitude"
                )
        return True, ""

    def checkpoint_problem(self, model: nn.Module) -> str | None:
        """None when the weights after the last flushed step are good, else why not."""
        if not self.last_healthy:
            return self.reason
        params = [p.detach() for p in model.parameters()]
        if params and not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
            return "some weights are NaN or infinite"
        return None


# --------------------------------------------------------------------------------------------
# Previews


def _preview_images(dataset: Dataset, settings: TrainConfig, device: torch.device) -> Tensor:
    from pseudovideo.data.images import spread_subset

    count = min(PREVIEW_IMAGES, len(dataset), settings.batch_size)
    fetcher = _BatchFetcher(dataset, settings.seed)
    # the same items at every preview, spread over the data (a class-sorted folder's first items are one class)
    items = list(enumerate(spread_subset(len(dataset), count).tolist()))
    return fetcher[(_PREVIEW_STEP, items)].to(device)  # (N, C, H, W)


def _save_previews(
    task: TrainingTask, model: nn.Module, images: Tensor, seed: int, pictures_dir: Path, step: int, precision: str
) -> list[Path]:
    was_training = model.training
    model.eval()
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)  # same noise at every preview
    py_state, np_state = random.getstate(), np.random.get_state()
    # previews must not move the training RNGs, or a resumed run would differ from an uninterrupted one
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            with torch.no_grad(), autocast(precision, device):
                pictures = task.preview(model, images, generator)
        finally:
            model.train(was_training)
            random.setstate(py_state)
            np.random.set_state(np_state)
    if not pictures:
        return []
    from pseudovideo.pictures import picture_upscale, save_image_grid, save_video_grid

    builder = getattr(task, "builder", None)  # the task's pseudo videos name the frame columns (levels)
    sample_ndim = images.ndim - 1  # (C, H, W) images, or (C, L) signals: the data says
    saved = []
    for name, picture in pictures.items():
        picture = picture.detach().float().cpu()
        path = pictures_dir / f"{name}_step{step:07d}.png"
        if picture.ndim == sample_ndim + 1:  # (N, C, H, W)
            saved.append(save_image_grid(picture, path, nrow=min(8, picture.shape[0]), upscale=picture_upscale(picture.shape[-1])))
        elif picture.ndim == sample_ndim + 2:  # (B, T, C, H, W)
            labels = builder.frame_labels() if builder is not None and builder.num_frames == picture.shape[1] else None
            saved.append(save_video_grid(picture, path, upscale=picture_upscale(picture.shape[-1]), column_labels=labels))
        else:
            raise ValueError(
                f"task.preview returned {name!r} of shape {tuple(picture.shape)}; expected (N, C, H, W) or (B, T, C, H, W)"
            )
    return saved


# --------------------------------------------------------------------------------------------
# The engine


def _make_optimizer(module: nn.Module, settings: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    return torch.optim.AdamW(
        params, lr=settings.lr, betas=(settings.betas[0], settings.betas[1]), weight_decay=settings.weight_decay,
        fused=True,  # one kernel per step on CUDA; on CPU it also beats the per-parameter loop
    )


def reset_peak_memory(device: torch.device) -> None:
    """Starts a fresh peak-memory window, so that runs sharing one process each get their own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing "5" to clear_refs resets the process's RSS high-water mark (VmHWM).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory in bytes since :func:`reset_peak_memory`: the CUDA allocator's peak, or the process RSS peak on
    CPU (Linux VmHWM; elsewhere the process lifetime peak)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    # Elsewhere, the lifetime peak of the process (an upper bound when runs share a process).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _kept_text(last_good: Path | None) -> str:
    return f"the last good checkpoint {last_good.name} is kept" if last_good else "no checkpoint is kept"


def _skip_checkpoint(done: int, problem: str, last_good: Path | None, last: bool, ctx: DistributedContext, warn: bool = True) -> None:
    """A checkpoint boundary whose weights are not good: warn if ``warn`` (raise TrainingDivergedError at the end)."""
    if last:
        raise TrainingDivergedError(
            f"training ended diverging: the weights after step {done} are not checkpointed ({problem}); "
            f"{_kept_text(last_good)}. Lower train.lr or enable train.grad_clip"
        )
    if ctx.is_main and warn:
        warnings.warn(
            f"step {done}: checkpoint not written, {problem}; {_kept_text(last_good)} (no further warning until a "
            f"checkpoint is written again)", stacklevel=3,
        )


def _confirm_checkpoint(
    newest: Path | None, previous: Path | None, verdict: tuple[bool, str], keep_last: int, ctx: DistributedContext
) -> Path | None:
    """Keeps ``newest`` (pruning older ones) when the first step after it was healthy, else deletes it;
    returns the last good checkpoint (None on ranks other than 0, which write nothing)."""
    healthy, reason = verdict
    if not ctx.is_main or newest is None:
        return newest
    if healthy:
        prune_checkpoints(newest.parent, keep_last)
        return newest
    shutil.rmtree(newest, ignore_errors=True)
    warnings.warn(f"removed checkpoint {newest.name}: the step after it diverged ({reason}); {_kept_text(previous)}", stacklevel=3)
    return previous


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


def _prepare_modules(task: TrainingTask, settings: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module | None]:
    """The task's model and discriminator on ``device``, in training mode (gradient checkpointing if asked)."""
    model = task.model.to(device)
    discriminator = task.discriminator.to(device) if task.discriminator is not None else None
    if hasattr(task, "to") and callable(task.to):
        task.to(device)
    if settings.gradient_checkpointing:
        if hasattr(model, "set_gradient_checkpointing"):
            model.set_gradient_checkpointing(True)
        else:
            warnings.warn(f"{type(model).__name__} has no set_gradient_checkpointing(); training without it", stacklevel=3)
    model.train()
    if discriminator is not None:
        discriminator.train()
    return model, discriminator


def _refuse_existing_run(run_dir: Path, resume: bool) -> None:
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not resume and checkpoints:
        raise ValueError(
            f"run folder {run_dir} already holds checkpoints (newest {checkpoints[-1][1].name}); continue it with "
            f"`pseudovideo train --resume {run_dir}` (train_run(config, resume=True) in Python) or train into "
            f"another run folder (name=NAME)"
        )


def _find_resume_checkpoint(checkpoints_dir: Path, ctx: DistributedContext) -> Path | None:
    """Rank 0 picks the newest intact checkpoint (skipping corrupt ones); every rank gets its path."""
    found = find_latest_checkpoint(checkpoints_dir) if ctx.is_main else None
    path = all_gather_objects(str(found) if found else None, ctx)[0]
    if path is None and ctx.is_main:
        warnings.warn(f"resume requested but {checkpoints_dir} has no checkpoint; starting from step 0", stacklevel=4)
    return Path(path) if path is not None else None


class _Engine:
    """One training run's state and phases; :func:`train` calls them in order.

    Attributes set by :meth:`start`: the modules, their DDP/compiled wrapper, the EMA, the
    optimisation, the generator, the start step and the rank-0 bookkeeping (log, TensorBoard, previews).
    """

    def __init__(self, task: TrainingTask, dataset: Dataset, settings: TrainConfig, run_dir: Path, config_dict: dict[str, Any] | None):
        self.task, self.dataset, self.settings, self.run_dir, self.config_dict = task, dataset, settings, run_dir, config_dict
        self.checkpoints_dir = run_dir / "checkpoints"
        self.wall_start = time.perf_counter()
        self.code = [code_record()]  # which code trains: git commit of the package's tree, dirty or not
        self.ctx = init_distributed(settings.device)
        self.device = self.ctx.device
        self.writer: Any | None = None
        self.lock = contextlib.ExitStack()

    def close(self) -> None:
        """Releases the scalar loggers, the run folder's lock and the process group."""
        if self.writer is not None:
            self.writer.close()
        self.lock.close()
        teardown(self.ctx)

    # ------------------------------------------------------------------ set-up

    def start(self, resume: bool) -> None:
        """Checks, locks, builds and (with ``resume``) restores everything the loop needs."""
        settings, ctx, device = self.settings, self.ctx, self.device
        _check_batch(len(self.dataset), settings.batch_size, ctx.world_size)  # type: ignore[arg-type]
        self.precision = resolve_precision(settings.mixed_precision, device)
        if ctx.is_main:  # one writer per run folder (RunLockedError for a second one)
            self.lock.enter_context(run_lock(self.run_dir))
        _refuse_existing_run(self.run_dir, resume)
        # Seeds: one stream per rank (noise and dropout must differ between ranks).
        self.rank_seed = settings.seed + _RANK_SEED_OFFSET * ctx.rank
        _seed_everything(self.rank_seed)
        self.generator = torch.Generator(device=device).manual_seed(self.rank_seed)
        self.model, self.discriminator = _prepare_modules(self.task, settings, device)
        self.learner = getattr(self.task, "corruption_learner", None)  # an adversarial corruption (or None)
        if self.learner is not None:
            self.learner.to(device)
        self.resume_path = _find_resume_checkpoint(self.checkpoints_dir, ctx) if resume else None
        state = self._load_weights()
        self._wrap()
        self.ema = self._build_ema(state)
        self.optimisation = _build_optimisation(self.model, self.discriminator, settings, device, self.precision)
        if state is not None:
            self.optimisation.load_state_dict(state, self.resume_path)
            self._restore_random_streams(state["rng"])
            earlier = [c for c in state.get("code_history", []) if code_identity(c) != code_identity(self.code[0])]
            self.code = [*earlier, *self.code]
            self._restore_learner(state)
        self._start_bookkeeping(resumed=state is not None)
        self.health = _LossHealth(settings.divergence_factor, state.get("loss_history") if state is not None else None)

    def _restore_learner(self, state: dict[str, Any]) -> None:
        """The adversarial corruption of the resumed checkpoint (its parameters and optimiser state)."""
        if self.learner is None:
            return
        if "learned_corruption" not in state:
            raise CheckpointError(f"checkpoint {self.resume_path} holds no learned corruption but the run learns one adversarially")
        self.learner.load_state_dict(state["learned_corruption"])

    def _load_weights(self) -> dict[str, Any] | None:
        self.start_step = 0
        if self.resume_path is None:
            return None
        state = load_checkpoint(self.resume_path, model=self.model, discriminator=self.discriminator, map_location="cpu", verify=False)
        self.start_step = int(state["step"])
        if self.start_step > self.settings.steps:
            raise ValueError(f"checkpoint {self.resume_path} is at step {self.start_step}, beyond train.steps={self.settings.steps}")
        return state

    def _wrap(self) -> None:
        """DDP (broadcasts rank 0's weights) and optional torch.compile."""
        find_unused = bool(getattr(self.task, "find_unused_parameters", False))
        self.train_model = wrap_ddp(self.model, self.ctx, find_unused_parameters=find_unused)
        if self.discriminator is not None:
            broadcast_module(self.discriminator, self.ctx)
        settings = self.settings
        compile_mode = resolve_compile(
            settings.compile, settings.compile_mode, self.device, world_size=self.ctx.world_size,
            cuda_graphs_ok=bool(getattr(self.task, "cuda_graphs_ok", False)),
            gradient_checkpointing=settings.gradient_checkpointing,
        )
        if compile_mode is not None:
            # dynamic=False: every training batch has the same shape; a new shape recompiles, no dynamic kernels
            self.train_model = torch.compile(self.train_model, mode=compile_mode, dynamic=False)

    def _build_ema(self, state: dict[str, Any] | None) -> ModelEMA | None:
        if self.settings.ema_decay <= 0:
            return None
        ema = ModelEMA(self.model, self.settings.ema_decay)
        if state is not None:
            if (self.resume_path / EMA).is_file():
                load_checkpoint(self.resume_path, ema=ema.module, map_location="cpu", verify=False, read_state=False)
                ema.num_updates = int(state.get("ema_updates", self.start_step))
            else:
                warnings.warn(f"checkpoint {self.resume_path} has no EMA weights; the EMA restarts from the model", stacklevel=4)
        return ema

    def _restore_random_streams(self, rng_states: list[dict[str, Any]]) -> None:
        ctx = self.ctx
        if len(rng_states) == ctx.world_size:
            _restore_rng(rng_states[ctx.rank], self.generator, self.device)
            return
        step_seed = self.rank_seed + self.start_step
        _seed_everything(step_seed)
        self.generator.manual_seed(step_seed)
        if ctx.is_main:
            warnings.warn(
                f"checkpoint {self.resume_path} was written by {len(rng_states)} process(es), this run has "
                f"{ctx.world_size}: random streams are reseeded (data order is unchanged)",
                stacklevel=4,
            )

    def _start_bookkeeping(self, resumed: bool) -> None:
        """Rank 0: config.yaml, the scalar loggers of ``train.log_to`` (log.csv kept up to the resumed step), preview images."""
        self.csv_log = self.preview_images = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.config_dict is not None:
                (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config_dict, sort_keys=False))
            skipped = list(getattr(self.dataset, "bad_files", None) or [])  # data.skip_bad_files: which, by name
            if skipped:
                (self.run_dir / "skipped_files.txt").write_text("".join(f"{name}\n" for name in skipped))
            if "csv" in self.settings.log_to:
                self.csv_log = _CsvLog(self.run_dir / "log.csv", keep_until_step=self.start_step if resumed else None)
            self.writer = ScalarLoggers(self.settings.log_to, self.run_dir, start_step=self.start_step,
                                        wandb_project=self.settings.wandb_project, config=self.config_dict)
            self.preview_images = _preview_images(self.dataset, self.settings, self.device)
        reset_peak_memory(self.device)
        from tqdm.auto import tqdm

        self.progress = tqdm(
            total=self.settings.steps, initial=self.start_step, desc="train", dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,  # log files get a line every 30 s, not every step
            disable=not (self.settings.progress and self.ctx.is_main),
        )
        self.meter = _ScalarMeter()
        self.watch = _DivergenceWatch(self.device)
        self.unconfirmed: tuple[Path | None, Path | None] | None = None  # (newest checkpoint, the good one before it)
        self.last_checkpoint = self.resume_path
        self.skipping = False  # the last checkpoint boundary was skipped (not good)
        self.final_loss: float | None = None
        self.batches = _batches(self.dataset, self.settings, self.ctx, self.start_step)
        self.loop_start = time.perf_counter()
        self.interval_start, self.interval_steps = self.loop_start, 0

    # ------------------------------------------------------------------ one step

    def step(self, step: int) -> None:
        """Update ``step`` (0-based): generator (and discriminator) update, EMA, then the boundary work."""
        images = next(self.batches).to(self.device, non_blocking=True)  # (B_local, C, H, W)
        loss, losses, logged, lr_used = self._generator_update(step, images)
        self._discriminator_update(step, losses, logged)
        if self.ema is not None:
            self.ema.update(self.model)
        logged = {k: torch.as_tensor(v, device=self.device) for k, v in logged.items()}
        self.watch.observe(step, losses, logged, self.ctx)
        self.health.observe(loss)
        self.meter.add(logged)
        self.interval_steps += 1
        self.progress.update(1)
        self._boundary(step + 1, lr_used)

    def _generator_update(self, step: int, images: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, Any], float]:
        settings, opt = self.settings, self.optimisation
        with autocast(self.precision, self.device):
            loss, scalars = self.task.training_loss(self.train_model, images, step, self.generator)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        if settings.grad_clip > 0:
            opt.scaler.unscale_(opt.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        lr_used = opt.optimizer.param_groups[0]["lr"]
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        if self.learner is not None:  # the corruption ascends on the gradient the same backward left in it
            self.learner.step(step, self.ctx)
        return loss, {"loss": loss}, {"loss": loss, **scalars}, lr_used

    def _discriminator_update(self, step: int, losses: dict[str, Tensor], logged: dict[str, Any]) -> None:
        if self.discriminator is None:
            return
        with autocast(self.precision, self.device):
            d_out = self.task.discriminator_loss(step)
        if d_out is None:
            return
        d_loss, d_scalars = d_out
        opt, settings = self.optimisation, self.settings
        for group in opt.d_optimizer.param_groups:  # same schedule as the model's, by step
            group["lr"] = settings.lr * opt.lr_factor(step)
        opt.d_optimizer.zero_grad(set_to_none=True)  # drops grads left by the generator's pass
        opt.d_scaler.scale(d_loss).backward()
        all_reduce_gradients(self.discriminator, self.ctx)
        if settings.grad_clip > 0:
            opt.d_scaler.unscale_(opt.d_optimizer)
            torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), settings.grad_clip)
        opt.d_scaler.step(opt.d_optimizer)
        opt.d_scaler.update()
        losses["d_loss"] = d_loss
        logged.update({"d_loss": d_loss, **d_scalars})

    # ------------------------------------------------------------------ boundaries: log, checkpoint, preview

    def _boundary(self, done: int, lr_used: float) -> None:
        settings = self.settings
        last = done == settings.steps
        log_now = done % settings.log_every == 0 or last
        checkpoint_now = done % settings.checkpoint_every == 0 or last
        preview_now = (settings.image_every > 0 and done % settings.image_every == 0) or last
        if not (log_now or checkpoint_now or preview_now):
            return
        verdicts = self.health.flush(self.ctx)  # host syncs only at these boundaries
        if self.unconfirmed is not None and verdicts:  # the first loss computed with the newest checkpoint
            self.last_checkpoint = _confirm_checkpoint(*self.unconfirmed, verdicts[0], settings.keep_last, self.ctx)
            self.unconfirmed = None
        self.watch.last_good = self.last_checkpoint
        self.watch.check(self.ctx)
        if log_now:
            self._log(done, lr_used)
        if checkpoint_now:
            problem = self.health.checkpoint_problem(self.model)
            if problem is None:
                self.unconfirmed = (self._write_checkpoint(done), self.last_checkpoint)
                self.last_checkpoint = self.unconfirmed[0] or self.last_checkpoint
            else:  # one warning per stretch of skipped checkpoints
                _skip_checkpoint(done, problem, self.last_checkpoint, last, self.ctx, warn=not self.skipping)
            self.skipping = problem is not None
        if preview_now and self.ctx.is_main:
            eval_model = self.ema.module if self.ema else self.model
            _save_previews(self.task, eval_model, self.preview_images, settings.seed, self.run_dir / "pictures", done, self.precision)

    def _log(self, done: int, lr_used: float) -> None:
        means = self.meter.mean(self.ctx)
        now = time.perf_counter()
        images_per_s = self.interval_steps * self.settings.batch_size / max(now - self.interval_start, 1e-9)
        self.interval_start, self.interval_steps = now, 0
        self.final_loss = means.get("loss")
        if not self.ctx.is_main:
            return
        row = {"step": done, "loss": means.pop("loss"), "lr": lr_used, "images_per_s": images_per_s, **means}
        if self.csv_log is not None:
            self.csv_log.append(row)
        self.writer.log({name: value for name, value in row.items() if name != "step"}, done)
        self.progress.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}", img_s=f"{images_per_s:.1f}", refresh=False)

    def _write_checkpoint(self, done: int) -> Path | None:
        rng = all_gather_objects(_capture_rng(self.generator, self.device), self.ctx)
        path = None
        if self.ctx.is_main:
            train_state = {
                **self.optimisation.state_dict(),
                "ema_updates": self.ema.num_updates if self.ema else 0,
                "rng": rng,
                "world_size": self.ctx.world_size,
                "loss_history": list(self.health.history),
                "code_history": self.code,
            }
            if self.learner is not None:
                train_state["learned_corruption"] = self.learner.state_dict()
            path = save_checkpoint(
                self.checkpoints_dir, done, model=self.model, state=train_state, ema=self.ema.module if self.ema else None,
                discriminator=self.discriminator, config_dict=self.config_dict,  # pruned once confirmed good
            )
        barrier(self.ctx)
        return path

    # ------------------------------------------------------------------ the end

    def finish(self) -> TrainResult:
        """Confirms the final checkpoint, writes ``train_summary.json`` (rank 0) and returns the result."""
        settings, ctx = self.settings, self.ctx
        if self.unconfirmed is not None:  # the final checkpoint: no step after it to judge it by
            _confirm_checkpoint(*self.unconfirmed, (True, ""), settings.keep_last, ctx)
        loop_time = time.perf_counter() - self.loop_start
        self.progress.close()
        trained = settings.steps - self.start_step
        images_per_s = trained * settings.batch_size / loop_time if trained and loop_time > 0 else 0.0
        frames_per_image = getattr(self.task, "frames_per_image", None)
        discriminator = self.discriminator
        result = TrainResult(
            run_dir=self.run_dir,
            steps=settings.steps,
            start_step=self.start_step,
            wall_time_s=time.perf_counter() - self.wall_start,
            images_per_s=images_per_s,
            frames_per_s=images_per_s * frames_per_image if frames_per_image else None,
            peak_memory_bytes=peak_memory_bytes(self.device),
            device=str(self.device),
            world_size=ctx.world_size,
            mixed_precision=self.precision,
            parameters={"model": count_parameters(self.model), "discriminator": count_parameters(discriminator) if discriminator else 0},
            final_loss=self.final_loss,
            last_checkpoint=self.last_checkpoint,
            model=self.model,
            ema_model=self.ema.module if self.ema else None,
            loss_terms=dict(getattr(self.task, "loss_terms", None) or {}),
            code=self.code,
        )
        summary_path = self.run_dir / "train_summary.json"
        if ctx.is_main and self.csv_log is not None:
            from pseudovideo.pictures import save_loss_curves

            save_loss_curves(self.csv_log.path, self.run_dir / "pictures" / "loss_curves.png", title=f"{self.run_dir.name}: training loss",
                             clean_terms=getattr(self.task, "clean_frame_terms", None))
        if ctx.is_main and (trained > 0 or not summary_path.is_file()):
            # A resume of a finished run trains nothing: keep the figures of the run that did the work.
            summary_path.write_text(json.dumps(result.summary(), indent=1))
        barrier(ctx)
        return result


def train(
    task: TrainingTask,
    dataset: Dataset,
    settings: TrainConfig,
    run_dir: str | Path,
    *,
    config_dict: dict[str, Any] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Trains ``task.model`` (and ``task.discriminator``) on ``dataset`` and fills ``run_dir``.

    ``dataset[i]`` is a clean image (C, H, W) in [-1, 1]. ``resume=True`` continues exactly from the
    newest intact checkpoint in ``run_dir/checkpoints`` (a corrupt newest one is skipped with a
    warning); without it, a run folder that already holds checkpoints is refused. Under ``torchrun``
    every rank calls this function; only rank 0 writes, holding the run folder's lock (RunLockedError
    when another process trains into it). Raises TrainingDivergedError on a NaN/inf loss or a run
    that ends diverging (see :class:`_LossHealth`), TrainingInterrupted (a KeyboardInterrupt) on Ctrl-C. Seeds torch's, numpy's and Python's global RNGs
    from ``settings.seed`` (offset per rank); the task's ``model`` should be built before the call.
    """
    validate_train_config(settings)
    engine = _Engine(task, dataset, settings, Path(run_dir), config_dict)
    step = None
    try:
        engine.start(resume)
        for step in range(engine.start_step, settings.steps):
            engine.step(step)
        return engine.finish()
    except KeyboardInterrupt:  # the state on disk is intact (checkpoints are atomic): say where it stands
        raise TrainingInterrupted(_interrupted_text(Path(run_dir), step, settings.steps)) from None
    finally:
        engine.close()


def load_trained_model(
    run_dir: str | Path,
    model: nn.Module,
    *,
    use_ema: bool = True,
    checkpoint: str | Path | int | None = None,
) -> nn.Module:
    """Loads a run's trained weights into ``model`` (in place) for evaluation or sampling; returns it in eval mode.

    ``checkpoint``: None = newest intact checkpoint, an int = that step, or a folder path / name.
    With ``use_ema`` the EMA weights are used when the checkpoint has them (a warning otherwise).
    Raises FileNotFoundError when the run has no such checkpoint, CheckpointError when it is corrupt.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    device = next(iter(model.parameters()), torch.empty(0)).device
    if use_ema and not (path / EMA).is_file():
        warnings.warn(f"checkpoint {path} has no EMA weights (train.ema_decay was 0); loading the raw model", stacklevel=2)
        use_ema = False
    weights = {"ema": model} if use_ema else {"model": model}
    # The newest checkpoint was verified while resolving it; a named one is verified here.
    load_checkpoint(path, **weights, map_location=device, verify=checkpoint is not None, read_state=False)
    return model.eval()
