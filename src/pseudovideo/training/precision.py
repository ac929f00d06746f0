"""Numerics of a training step: the mixed precision actually used, autocast, and the ``torch.compile`` mode."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "resolve_compile", "resolve_precision"]


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
