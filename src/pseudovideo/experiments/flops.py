"""Training FLOPs per clean image of a run config (forward + backward of one training step), counted by torch."""

from __future__ import annotations

from typing import Any, Callable

import torch

from pseudovideo.config import RunConfig
from pseudovideo.config.modality import sample_shape


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of calling ``fn()`` (which may run a backward pass), counted by
    ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of matmuls, convolutions and
    attention, on any device; elementwise operations are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def training_flops_per_image(
    config: RunConfig, *, channels: int | None = None, batch_size: int = 2, device: str | torch.device = "cpu", seed: int = 0,
    trust_code: bool = False,
) -> float:
    """Floating-point operations of one training step per clean image (forward + backward of the loss).

    Builds the run's task (fresh weights), runs ``task.training_loss`` on ``batch_size`` random images
    (B, C, H, W) in [-1, 1] at the step ``train.steps - 1`` (every loss term active, the discriminator's
    loss included when the task has one), back-propagates it, and counts the operations with
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention: 2 FLOPs per
    multiply-add; elementwise operations are not counted). A video model pays for all T frames of the
    pseudo video of each image; with ``frames_as_images`` the image model pays for T one-frame samples.
    ``channels`` defaults to ``data.channels``, else the dataset's own (read from the eval split).
    ``trust_code``: see :func:`~pseudovideo.training.tasks.build_model`.
    """
    from pseudovideo.factory.datasets import build_dataset_from_config
    from pseudovideo.training.tasks import build_task

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if channels is None:
        channels = config.data.channels or build_dataset_from_config(config, split=config.data.eval_split).channels
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        task = build_task(config, channels, trust_code=trust_code)
        task.model.to(device).train()
        if task.discriminator is not None:
            task.discriminator.to(device).train()
        task.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        shape = sample_shape(config.data)  # (R, R) images or (L,) signals
        images = torch.rand(batch_size, channels, *shape, generator=generator, device=device) * 2 - 1  # (B, C, H, W)
        step = max(config.train.steps - 1, 0)

        def one_step() -> None:
            loss, _ = task.training_loss(task.model, images, step, generator)
            loss.backward()
            d_out = task.discriminator_loss(step)
            if d_out is not None:
                d_out[0].backward()

        flops = count_flops(one_step)
    return flops / batch_size
