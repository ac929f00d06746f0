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

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import Dataset

from pseudovideo.checkpoint import (
    EMA,
    CheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    run_lock,
    save_checkpoint,
)
from pseudovideo.config import TrainConfig, validate_train_config
from pseudovideo.models.layers import count_parameters
from pseudovideo.training.batches import _batches, _check_batch
from pseudovideo.training.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_gradients,
    barrier,
    broadcast_module,
    init_distributed,
    teardown,
    wrap_ddp,
)
from pseudovideo.training.ema import ModelEMA
from pseudovideo.training.health import _confirm_checkpoint, _DivergenceWatch, _LossHealth, _skip_checkpoint
from pseudovideo.training.loggers import ScalarLoggers, _CsvLog, _ScalarMeter
from pseudovideo.training.memory import peak_memory_bytes, reset_peak_memory
from pseudovideo.training.optimisation import _build_optimisation
from pseudovideo.training.precision import autocast, resolve_compile, resolve_precision
from pseudovideo.training.previews import _preview_images, _save_previews
from pseudovideo.training.provenance import code_identity, code_record
from pseudovideo.training.randomness import _capture_rng, _restore_rng, _seed_everything
from pseudovideo.training.result import TrainingInterrupted, TrainResult, _interrupted_text

__all__ = ["TrainingTask", "train"]

_RANK_SEED_OFFSET = 1_000_003  # seed of rank r = seed + r * offset
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
            all_reduce_gradients(self.learner.learned, self.ctx)  # one corruption for every rank
            self.learner.step(step)
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
