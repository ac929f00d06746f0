"""Shared helpers of the benchmark scripts: device sync, timing, memory, FLOP counting, reference loading, output.

Scripts, not tests: nothing here is imported by the library. Run the scripts from the repository root, e.g.
``python benchmarks/bench_models.py --quick``; ``pseudovideo`` is imported from ``src/`` when it is not installed.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parent.parent
H100_SXM_BF16_DENSE_FLOPS = 989e12  # NVIDIA H100 SXM datasheet, dense (no sparsity)


def import_pseudovideo() -> None:
    """Makes ``import pseudovideo`` work from a plain checkout (adds ``src/`` to sys.path when needed)."""
    try:
        import pseudovideo  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))
        import pseudovideo  # noqa: F401


# -- devices, precision, memory format ----------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """torch.device of ``cpu`` / ``cuda`` / ``cuda:N``; ValueError when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return device


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels on ``device`` (no-op on CPU, where ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``dtype == "bf16"`` (CUDA, or CPU autocast), a null context for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"--dtype must be fp32 or bf16, got {dtype!r}")


def to_channels_last(module: nn.Module) -> nn.Module:
    """Stores every 4-D parameter/buffer channels-last and every 5-D one channels-last-3d (Conv2d / Conv3d)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.ndim == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        elif tensor.ndim == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return module


# -- timing ---------------------------------------------------------------------------------------------------
class SectionTimer:
    """Accumulates the time spent in one section of a step (e.g. the pseudo-video builder).

    On CUDA each call records a pair of CUDA events in the current stream (no host sync inside the step); the
    pairs are resolved by :meth:`total_seconds` after the caller has synchronised. On CPU ops are synchronous,
    so ``time.perf_counter`` around the call is exact.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Forgets the recorded sections."""
        self._events: list[tuple[Any, Any]] = []
        self._seconds = 0.0
        self.calls = 0

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Times the enclosed block."""
        self.calls += 1
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._seconds += time.perf_counter() - t0

    def total_seconds(self) -> float:
        """Total seconds in the sections so far; call after :func:`synchronize` on CUDA."""
        return self._seconds + sum(start.elapsed_time(end) for start, end in self._events) / 1000.0


class TimedBuilder:
    """Wraps a pseudo-video builder so that every call is timed by a :class:`SectionTimer`; other attributes
    (``num_frames``, ``levels``...) are forwarded to the builder."""

    def __init__(self, builder: Any, timer: SectionTimer) -> None:
        self._builder = builder
        self.timer = timer

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """images (B, C, H, W) -> pseudo videos (B, T, C, H, W), timed."""
        with self.timer.section():
            return self._builder(images, generator=generator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._builder, name)


def time_calls(fn: Callable[[], Any], device: torch.device, iters: int) -> float:
    """Seconds per call of ``fn`` over ``iters`` back-to-back calls, synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / iters


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (nan when empty)."""
    return statistics.median(values) if values else math.nan


# -- memory ---------------------------------------------------------------------------------------------------
def measure_peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """Peak memory (MiB) of one call of ``fn`` and what it means.

    CUDA: ``torch.cuda.max_memory_allocated`` over the call (absolute: includes parameters, gradients and
    optimizer state). CPU: the process RSS high-water mark over the call less the RSS before it (what the
    call allocates on top); exact on Linux, where the training engine's reset makes the mark start at the
    current RSS.
    """
    from pseudovideo.training.memory import peak_memory_bytes, reset_peak_memory

    gc.collect()
    synchronize(device)
    reset_peak_memory(device)
    if device.type == "cuda":
        fn()
        synchronize(device)
        return peak_memory_bytes(device) / 2**20, "cuda_max_allocated"
    rss_before = peak_memory_bytes(device)  # right after the reset, the high-water mark is the current RSS
    fn()
    return (peak_memory_bytes(device) - rss_before) / 2**20, "cpu_peak_rss_delta"


# -- FLOPs ----------------------------------------------------------------------------------------------------
def conv_backward_flops(
    grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int], _bias: Any, _stride: Any,
    _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any, _groups: int, output_mask: Sequence[bool],
    out_shape: Any = None, **kwargs: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward``: the forward's count for each gradient computed (input, weight).

    Each of grad_input and grad_weight multiplies the same pairs of numbers as the forward convolution, so each
    costs exactly the forward's FLOPs. torch's own formula re-derives them as convolutions with swapped channel
    axes, which over-counts grouped convolutions by a factor of about the number of groups (a depthwise Conv3d's
    backward came out ~129x its forward); this formula is exact for any ``groups``.
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter(**kwargs: Any) -> Any:
    """A ``FlopCounterMode`` whose convolution backward is counted by :func:`conv_backward_flops`."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}, **kwargs)


def count_flops(fn: Callable[[], Any]) -> int | None:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; elementwise ops are not counted), by
    ``torch.utils.flop_counter.FlopCounterMode`` with the convolution backward counted as 1x forward per
    gradient (see :func:`conv_backward_flops`); None when counting fails."""
    try:
        counter = flop_counter(display=False)
    except ImportError:
        return None
    try:
        with counter:
            fn()
        return int(counter.get_total_flops())
    except Exception as err:  # a reference's op the counter cannot trace: report n/a, do not abort the run
        print(f"  [flops] counting failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None


# -- reference packages ---------------------------------------------------------------------------------------
class _MissingDependency:
    """Placeholder for a trainer-only class of a reference package whose dependency is not installed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{type(self).__name__}: the dependency providing this class is not installed")


# Modules that the reference packages import at top level for their Trainer classes only (never used here).
TRAINER_ONLY = {"accelerate": ("Accelerator",), "ema_pytorch": ("EMA",)}


@dataclass
class LoadedReference:
    """A reference module, or why it could not be loaded."""

    module: types.ModuleType | None
    note: str = ""


def load_reference(package: str, submodule: str) -> LoadedReference:
    """Imports ``package.submodule`` of a reference implementation from PyPI.

    Tries the normal import first. When the package's ``__init__`` pulls trainer dependencies that are not
    installed (transformers, accelerate, opencv...), imports the submodule alone (a bare package object with
    the right ``__path__``, so ``__init__`` is skipped) and, if still needed, stands in placeholders for the
    trainer-only modules of :data:`TRAINER_ONLY`. Returns ``module=None`` with a note when the package is
    absent or the submodule still cannot be imported.
    """
    name = f"{package}.{submodule}"
    if importlib.util.find_spec(package) is None:
        return LoadedReference(None, f"{package} is not installed (pip install {package.replace('_', '-')})")
    try:
        return LoadedReference(importlib.import_module(name))
    except ImportError as err:
        first_error = f"{type(err).__name__}: {err}"
    for mod in [m for m in list(sys.modules) if m == package or m.startswith(package + ".")]:
        del sys.modules[mod]
    spec = importlib.util.find_spec(package)
    bare = types.ModuleType(package)
    bare.__path__ = list(spec.submodule_search_locations or [])  # type: ignore[union-attr]
    bare.__spec__ = spec  # find_spec(package) on a module without a spec raises ValueError
    sys.modules[package] = bare
    notes = [f"imported {name} without {package}/__init__ ({first_error})"]
    for _ in range(len(TRAINER_ONLY) + 1):
        try:
            module = importlib.import_module(name)
            return LoadedReference(module, "; ".join(notes))
        except ImportError as err:
            missing = getattr(err, "name", None)
            if missing not in TRAINER_ONLY or missing in sys.modules:
                return LoadedReference(None, f"cannot import {name}: {type(err).__name__}: {err}")
            stub = types.ModuleType(missing)
            for attr in TRAINER_ONLY[missing]:
                setattr(stub, attr, type(attr, (_MissingDependency,), {}))
            sys.modules[missing] = stub
            notes.append(f"placeholder for trainer-only module {missing}")
            for mod in [m for m in list(sys.modules) if m.startswith(package + ".")]:
                del sys.modules[mod]
    return LoadedReference(None, f"cannot import {name}")


# -- results --------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One (model, implementation) result; throughputs are per second, memory in MiB, nan when not measured."""

    model: str
    impl: str
    params: int = 0
    batch: int = 0
    frames: int = 0
    train_step_ms: float = math.nan
    train_step_ms_range: list[float] = field(default_factory=list)  # [min, max] over the repeats
    train_images_per_s: float = math.nan  # clean images (one per pseudo video) per second
    train_frames_per_s: float = math.nan  # frames (B T) per second
    train_ratio: float = math.nan  # ours / this reference, training images per second (on reference rows)
    sample_kind: str = ""  # "ddim S steps" / "reconstruction"
    sample_images_per_s: float = math.nan
    sample_frames_per_s: float = math.nan
    sample_ratio: float = math.nan
    peak_mem_mib: float = math.nan
    mem_kind: str = ""
    builder_share: float = math.nan  # fraction of the training step spent building pseudo videos
    train_flops_per_step: float = math.nan
    achieved_tflops: float = math.nan
    mfu: float = math.nan
    loss: str = ""  # what the training step optimises
    notes: list[str] = field(default_factory=list)


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n else "n/a"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table (ratios are ours / that reference, on each reference row)."""
    header = [
        "model", "impl", "params", "B x T", "train ms/step", "train img/s", "train frames/s", "train ratio",
        "sample", "sample img/s", "sample frames/s", "sample ratio", "peak MiB", "builder %", "GFLOP/step", "TFLOP/s",
        "MFU %",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r.model, r.impl, _fmt_params(r.params), f"{r.batch} x {r.frames}", _fmt(r.train_step_ms),
            _fmt(r.train_images_per_s), _fmt(r.train_frames_per_s), _fmt(r.train_ratio, 2), r.sample_kind or "n/a",
            _fmt(r.sample_images_per_s), _fmt(r.sample_frames_per_s), _fmt(r.sample_ratio, 2),
            _fmt(r.peak_mem_mib), _fmt(100 * r.builder_share, 2), _fmt(r.train_flops_per_step / 1e9, 1),
            _fmt(r.achieved_tflops, 3), _fmt(100 * r.mfu, 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, meta: dict[str, Any], rows: Sequence[Row]) -> Path:
    """Writes ``{"meta": ..., "rows": [...]}`` (nan as null) and returns the path."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean({"meta": meta, "rows": [asdict(r) for r in rows]}), indent=2) + "\n")
    return path


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware the figures were taken on."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    for package in ("phenaki_pytorch", "video_diffusion_pytorch", "denoising_diffusion_pytorch"):
        try:
            from importlib.metadata import version

            info[package] = version(package.replace("_", "-"))
        except Exception:
            info[package] = None
    return info
