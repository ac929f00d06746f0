"""The NaN guard: which steps are healthy, which checkpoints are kept, and the error when training diverges.

A step is *healthy* when its loss (averaged over ranks) is finite and not far above the median of the last healthy
losses (``train.divergence_factor``); a checkpoint is kept only if its step and the step after it are healthy and
its weights are finite. Checks are deferred to log / checkpoint / preview boundaries, so the loop never syncs per step.
"""

from __future__ import annotations

import collections
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pseudovideo.checkpoint import prune_checkpoints
from pseudovideo.training.distributed import DistributedContext, all_reduce_mean, all_reduce_min

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the loss terms at that step."""


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
