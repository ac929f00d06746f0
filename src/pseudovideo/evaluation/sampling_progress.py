"""Progress of sampling many images in batches: a bar with an ETA from the first model calls, and a warning as
soon as the projected time exceeds a budget (for evaluation: the time the run took to train).

The bar counts model calls (one per sampling step and batch), so its rate and ETA are right within the first
batch, where a bar over images would wait for a whole batch; the images done are shown beside it.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable

from torch import Tensor, nn

__all__ = ["SamplingProgress", "format_seconds"]

# Calls before the projection is trusted: the first call also pays for warm-up (allocations, kernels).
CALLS_BEFORE_PROJECTION = 3


def format_seconds(seconds: float) -> str:
    """``42 s``, ``4.3 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _CountedModel:
    """A denoiser ``model(x_t, t)`` that reports every call (the diffusion process reads ``parameters()``)."""

    def __init__(self, model: nn.Module | Any, on_call: Callable[[], None]) -> None:
        self.model, self.on_call = model, on_call

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, T, C, H, W), t (B,) -> the model's prediction (B, T, C, H, W)."""
        out = self.model(x, t)
        self.on_call()
        return out

    def parameters(self):
        """The wrapped model's parameters."""
        return self.model.parameters()


class SamplingProgress:
    """Sampling ``num_images`` in batches of ``batch_size``: wrap the denoiser with :meth:`counted`, call
    :meth:`batch_done` after each batch and :meth:`close` at the end.

    ``calls_per_batch``: model calls per batch when known in advance (joint sampling: the sampler's steps);
    None learns it from the first batch (autoregressive sampling). ``budget_s``: warn once when the projected
    total exceeds it, naming ``budget_name`` and the config keys that shorten it. ``enabled``: show the bar.
    """

    def __init__(
        self, num_images: int, batch_size: int, calls_per_batch: int | None, *, enabled: bool,
        budget_s: float | None = None, budget_name: str = "training took", desc: str = "evaluation sampling",
        shorten_with: str = "eval.num_images or diffusion.sample_steps",
    ) -> None:
        from tqdm.auto import tqdm

        self.num_images, self.num_batches = num_images, max(1, math.ceil(num_images / batch_size))
        self.calls = 0
        self.images = 0
        self.budget_s, self.budget_name, self.shorten_with = budget_s, budget_name, shorten_with
        self.warned = False
        self.first_call_end: float | None = None
        self.total = calls_per_batch * self.num_batches if calls_per_batch else None  # model calls
        self.bar = tqdm(total=self.total, desc=desc, unit="call", disable=not enabled, leave=False)
        self.bar.set_postfix_str(f"0/{num_images} images")

    def counted(self, model: nn.Module | Any) -> _CountedModel:
        """``model`` with every call counted by this progress."""
        return _CountedModel(model, self._tick)

    def _tick(self) -> None:
        self.calls += 1
        now = time.perf_counter()
        if self.first_call_end is None:
            self.first_call_end = now
        self.bar.update(1)
        if not self.warned and self.budget_s is not None and self.total and self.calls >= CALLS_BEFORE_PROJECTION:
            projected = self.projected_seconds(now)
            if projected > self.budget_s:
                self.warned = True
                warnings.warn(
                    f"sampling {self.num_images} images will take about {format_seconds(projected)} "
                    f"({self.total} model calls), longer than {self.budget_name} ({format_seconds(self.budget_s)}); "
                    f"lower {self.shorten_with} to shorten it", stacklevel=2,
                )

    def projected_seconds(self, now: float | None = None) -> float:
        """Projected total sampling time from the calls so far (the first one, a warm-up, counted at the later rate)."""
        now = time.perf_counter() if now is None else now
        if not self.total or self.first_call_end is None or self.calls < 2:
            return 0.0
        per_call = (now - self.first_call_end) / (self.calls - 1)
        return per_call * self.total

    def batch_done(self, images: int) -> None:
        """A batch of ``images`` is done (the first one also fixes the total when it was not known)."""
        self.images += images
        if self.total is None:
            self.total = self.bar.total = self.calls * self.num_batches
            self.bar.refresh()
        self.bar.set_postfix_str(f"{self.images}/{self.num_images} images")

    def close(self) -> None:
        """Removes the bar."""
        self.bar.close()
