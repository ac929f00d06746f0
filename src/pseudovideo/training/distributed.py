"""Multi-GPU / multi-node plumbing for ``torchrun``: process group set-up, DDP wrapping, teardown.

A run started by ``torchrun --nproc_per_node N`` (or on several nodes) gets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in its environment; :func:`init_distributed` reads them, joins the process group
(NCCL on CUDA, Gloo on CPU) and picks the device of the local rank. Without ``WORLD_SIZE`` the run is
a single process and every helper here becomes a no-op, so the training loop never branches on it.
Only rank 0 logs, writes checkpoints and shows a progress bar (``ctx.is_main``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    ``owns_group`` says whether :func:`init_distributed` created the process group (and so
    :func:`teardown` destroys it); a group set up by the caller is left alone.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part (gradients are all-reduced)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs, saves and shows progress."""
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for a ``train.device`` string: ``auto`` means the local rank's GPU if any, else CPU.

    ``cuda`` picks ``cuda:LOCAL_RANK``; ``cuda:N`` is taken as given. Asking for CUDA on a machine
    without it raises ValueError before any work starts.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
        device = torch.device(name)
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device={name!r} resolves to {device} but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    raise ValueError(f"train.device: expected auto, cpu, cuda or cuda:N, got {name!r}")


def init_distributed(device: str = "auto") -> DistributedContext:
    """Joins the ``torchrun`` process group when ``WORLD_SIZE`` > 1, else describes a single process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and torchrun's ``MASTER_ADDR``/``MASTER_PORT``)
    from the environment; uses NCCL when the device is CUDA and Gloo otherwise. A process group the
    caller already initialised is reused as it is.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK") or 0
        torch_device = resolve_device(device, local_rank)
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        return DistributedContext(rank, world_size, local_rank, torch_device, dist.get_backend(), owns_group=False)
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    if world_size > 1 and not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1={world_size - 1}")
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size == 1:
        return DistributedContext(0, 1, local_rank, torch_device, None, owns_group=False)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed support")
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world_size}
    if backend == "nccl":
        kwargs["device_id"] = torch_device  # binds the communicator to this rank's GPU up front
    dist.init_process_group(**kwargs)
    return DistributedContext(rank, world_size, local_rank, torch_device, backend, owns_group=True)


def wrap_ddp(model: nn.Module, ctx: DistributedContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes run, else unchanged.

    Wrapping broadcasts rank 0's parameters and buffers, so every rank starts from the same weights.
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (for attribute access and saving)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def broadcast_module(module: nn.Module, ctx: DistributedContext) -> None:
    """Copies rank 0's parameters and buffers of ``module`` to every rank (in place)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(module: nn.Module, ctx: DistributedContext) -> None:
    """Averages the gradients of ``module`` over ranks (for modules trained outside a DDP wrapper).

    A parameter without a gradient on this rank takes part with zeros, so every rank issues the same
    collectives in the same order.
    """
    if not ctx.enabled:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_mean(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input itself when single-process)."""
    if not ctx.enabled:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / ctx.world_size


def all_reduce_min(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """Element-wise minimum of ``tensor`` over ranks (a new tensor)."""
    if not ctx.enabled:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` when single-process)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistributedContext) -> None:
    """Waits until every rank reaches this point (no-op when single-process)."""
    if ctx.enabled:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def teardown(ctx: DistributedContext) -> None:
    """Leaves the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
