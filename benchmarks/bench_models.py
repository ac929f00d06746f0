"""Throughput, memory and MFU of pseudovideo's models, side by side with reference implementations from PyPI.

For each model at one fixed configuration it measures, in the same process and on the same batch:

- training: clean images/s and frames/s of a full optimisation step (loss forward + backward + AdamW step).
  Ours = ``task.training_loss`` (which builds the pseudo videos from clean images inside the step) + backward +
  step. Reference = the package's own loss on a ready-made video batch + backward + step.
- the share of our training step spent in the pseudo-video builder (CUDA events around the builder call, resolved
  after the step's synchronisation; ``perf_counter`` on CPU);
- sampling images/s: DDIM with S steps for the diffusion models, one reconstruction pass for the tokenizers;
- peak memory of one training step (CUDA: max_memory_allocated, less the other implementations' resident tensors;
  CPU: peak RSS above the RSS before the step);
- training FLOPs per step (``FlopCounterMode``, convolution backward = forward per gradient, see
  ``bench_common.conv_backward_flops``), achieved TFLOP/s, and MFU against ``--peak-flops`` on CUDA.

Pairs (ours -> reference):
  cvivit      -> phenaki-pytorch CViViT
  video_unet  -> video-diffusion-pytorch Unet3D inside its GaussianDiffusion
  unet        -> denoising-diffusion-pytorch Unet inside its GaussianDiffusion (T = 1: the plain image DDPM)
  The UNet references get two rows each: attention width (attn_heads x attn_dim_head) matching our parameter
  count (within 5 %) and their fastest width (a two-step probe over ATTENTION_CHOICES); ratios on their rows.
  vqvae       -> (no reference: ours only)
A missing reference package is skipped with a note. Output: a markdown table on stdout and a JSON file (--out).

Examples:
  python benchmarks/bench_models.py --quick
  python benchmarks/bench_models.py --device cpu --out runs/bench/cpu.json
  python benchmarks/bench_models.py --device cuda --dtype bf16 --compile --out $OUT/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference samplers draw progress bars

import torch
from torch import Tensor, nn

import bench_common as bc

bc.import_pseudovideo()

from pseudovideo.config import build_config  # noqa: E402
from pseudovideo.models.layers import count_parameters  # noqa: E402
from pseudovideo.training.tasks import build_task  # noqa: E402

MODELS = ("cvivit", "video_unet", "unet", "vqvae")


# -- configuration ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """One fixed benchmark configuration shared by ours and the reference of every model."""

    resolution: int
    channels: int
    batch: int
    frames: int
    cvivit: dict[str, Any]
    unet: dict[str, Any]
    vqvae: dict[str, Any]
    sample_steps: int
    warmup: int
    iters: int
    repeats: int


PRESETS: dict[str, Sizes] = {
    # smoke run: seconds on a laptop CPU
    "quick": Sizes(
        resolution=16, channels=3, batch=2, frames=3,
        cvivit=dict(dim=32, spatial_depth=1, temporal_depth=1, heads=2, dim_head=16, patch_size=4,
                    temporal_patch_size=1, codebook_size=64),
        unet=dict(base_channels=16, channel_mult=(1, 2), heads=2),
        vqvae=dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, codebook_size=64, codebook_dim=16),
        sample_steps=2, warmup=1, iters=1, repeats=2,
    ),
    # the README's CPU table: small enough for a 2-core machine in a few minutes
    "cpu": Sizes(
        resolution=16, channels=3, batch=8, frames=5,
        cvivit=dict(dim=128, spatial_depth=2, temporal_depth=2, heads=4, dim_head=32, patch_size=4,
                    temporal_patch_size=1, codebook_size=512),
        unet=dict(base_channels=32, channel_mult=(1, 2, 2), heads=4),
        vqvae=dict(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, codebook_size=512, codebook_dim=32),
        sample_steps=5, warmup=2, iters=3, repeats=5,
    ),
    # GPU: the widths of the shipped CIFAR-10 configs (configs/cifar10_*.yaml) at 32x32
    "gpu": Sizes(
        resolution=32, channels=3, batch=64, frames=5,
        cvivit=dict(dim=256, spatial_depth=4, temporal_depth=4, heads=8, dim_head=32, patch_size=4,
                    temporal_patch_size=1, codebook_size=512),
        unet=dict(base_channels=128, channel_mult=(1, 2, 2, 2), heads=4),
        vqvae=dict(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, codebook_size=512, codebook_dim=64),
        sample_steps=20, warmup=5, iters=10, repeats=5,
    ),
}
# the CPU sizes at 32x32 and T = 4: the 16x16 preset hides the cost of the video UNet's temporal layers
PRESETS["cpu32"] = replace(PRESETS["cpu"], resolution=32, frames=4, iters=2, repeats=3)


@dataclass
class Options:
    """Run-wide switches from the command line."""

    device: torch.device
    dtype: str
    compile: bool
    channels_last: bool
    peak_flops: float
    fused_adamw: bool = True
    our_overrides: tuple[str, ...] = ()  # extra config overrides of our models (e.g. the temporal setting)
    compile_mode: str = "default"  # torch.compile mode with --compile (reduce-overhead = CUDA graphs)


# -- one implementation under test -----------------------------------------------------------------------------
@dataclass
class Impl:
    """A model implementation ready to benchmark: closures for one training step and one sampling call."""

    model: str
    impl: str
    module: nn.Module  # the trained parameters (eager module)
    train_step: Callable[[], Any]  # one optimisation step (possibly through the compiled module)
    eager_train_step: Callable[[], Any]  # the same step on the eager module (for FLOP counting)
    sample: Callable[[], Any] | None
    sample_kind: str
    frames: int
    loss: str
    optimizer: torch.optim.Optimizer
    builder_timer: bc.SectionTimer | None = None
    notes: list[str] = field(default_factory=list)
    train_times: list[float] = field(default_factory=list)  # seconds per step, one per repeat
    builder_shares: list[float] = field(default_factory=list)
    sample_times: list[float] = field(default_factory=list)
    peak_mem_mib: float = math.nan
    mem_kind: str = ""
    flops: int | None = None  # training FLOPs per step (FlopCounterMode)


def _optimizer(module: nn.Module, opts: Options) -> torch.optim.Optimizer:
    """AdamW for both implementations: fused (as the training engine uses it) unless --no-fused-adamw."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, fused=True if opts.fused_adamw else None)


def _make_step(loss_fn: Callable[[], Tensor], optimizer: torch.optim.Optimizer, opts: Options) -> Callable[[], None]:
    """One step: zero_grad, loss (under autocast), backward, optimizer step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with bc.autocast(opts.dtype, opts.device):
            loss = loss_fn()
        loss.backward()
        optimizer.step()

    return step


_COMPILE_MODE = ["default"]  # set from --compile-mode in main()


def _compile(module: nn.Module) -> nn.Module:
    # dynamic=False: a shape change recompiles instead of switching to dynamic-shape kernels
    return torch.compile(module, dynamic=False, mode=_COMPILE_MODE[0])


def _maybe_compile(module: nn.Module, opts: Options) -> nn.Module:
    return _compile(module) if opts.compile else module


def _prepare(module: nn.Module, opts: Options) -> nn.Module:
    module = module.to(opts.device)
    if opts.channels_last:
        bc.to_channels_last(module)
    return module.train()


def _input(shape: Sequence[int], opts: Options, low: float = -1.0) -> Tensor:
    """A fixed random batch in [low, 1] on the device (channels-last when asked)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(tuple(shape), generator=gen) * (1.0 - low) + low).to(opts.device)
    if opts.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif opts.channels_last and x.ndim == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _descending_timesteps(steps: int, num_timesteps: int) -> list[int]:
    return torch.linspace(num_timesteps - 1, 0, steps).round().long().tolist()


# -- ours ------------------------------------------------------------------------------------------------------
def _our_overrides(model: str, s: Sizes) -> list[str]:
    frames = 1 if model == "unet" else s.frames
    base = [
        f"model.family={model}", f"data.resolution={s.resolution}", f"pseudo_video.num_frames={frames}",
        "pseudo_video.construction=higher_order",
    ]
    if model == "cvivit":
        c = s.cvivit
        return base + [f"model.cvivit.{k}={v}" for k, v in c.items()] + ["model.cvivit.codebook_dim=32"]
    if model == "vqvae":
        v = s.vqvae
        return base + [
            f"model.vqvae.base_channels={v['base_channels']}", f"model.vqvae.channel_mult={list(v['channel_mult'])}",
            f"model.vqvae.num_res_blocks={v['num_res_blocks']}", f"model.vqvae.codebook_size={v['codebook_size']}",
            f"model.vqvae.codebook_dim={v['codebook_dim']}",
        ]
    u = s.unet
    lowest = s.resolution // 2 ** (len(u["channel_mult"]) - 1)
    return base + [
        f"model.unet.base_channels={u['base_channels']}", f"model.unet.channel_mult={list(u['channel_mult'])}",
        "model.unet.num_res_blocks=2", f"model.unet.attention_resolutions=[{lowest}]",
        f"model.unet.num_heads={u['heads']}", "model.unet.dropout=0.0", "model.unet.frame_position=relative",
        "diffusion.num_timesteps=1000", "diffusion.beta_schedule=cosine", "diffusion.prediction=eps",
        "loss.last_frame_weight=1.0",
    ]


def build_ours(model: str, s: Sizes, opts: Options) -> Impl:
    """Our task and model of family ``model`` at sizes ``s``."""
    config = build_config(overrides=[*_our_overrides(model, s), *opts.our_overrides])
    task = build_task(config, s.channels)
    module = _prepare(task.model, opts)
    task.model = module
    task.to(opts.device)
    timer = bc.SectionTimer(opts.device)
    task.builder = bc.TimedBuilder(task.builder, timer)
    frames = config.pseudo_video.num_frames
    images = _input((s.batch, s.channels, s.resolution, s.resolution), opts)
    generator = torch.Generator(device=opts.device).manual_seed(0)
    optimizer = _optimizer(module, opts)
    compiled = _maybe_compile(module, opts)

    def loss_of(net: nn.Module) -> Callable[[], Tensor]:
        return lambda: task.training_loss(net, images, 0, generator)[0]

    if model in ("cvivit", "vqvae"):
        video = task.builder._builder(images, generator=generator)  # (B, T, C, H, W), outside any timer
        loss = "TokenizerTask.training_loss: frame-weighted L1 + VQ (EMA codebook); pseudo videos built in the step"

        def sample() -> Tensor:
            return compiled(video).recon

        kind = "reconstruction"
    else:
        shape = (s.batch, frames, s.channels, s.resolution, s.resolution)
        loss = "DiffusionTask.training_loss: eps MSE, frames weighted equally; pseudo videos built in the step"

        def sample() -> Tensor:
            return task.diffusion.sample(
                compiled, shape, mode="joint", sampler="ddim", steps=s.sample_steps, eta=0.0, clip_x0="last",
                generator=generator,
            )[0]

        kind = f"ddim {s.sample_steps} steps"
    return Impl(
        model=model, impl="ours", module=module,
        train_step=_make_step(loss_of(compiled), optimizer, opts),
        eager_train_step=_make_step(loss_of(module), optimizer, opts),
        sample=sample, sample_kind=kind, frames=frames, loss=loss, optimizer=optimizer, builder_timer=timer,
    )


# -- references ------------------------------------------------------------------------------------------------
def build_phenaki(s: Sizes, opts: Options) -> Impl | str:
    """phenaki-pytorch's CViViT with our C-ViViT's sizes (no VGG / GAN: the loss is its reconstruction MSE)."""
    ref = bc.load_reference("phenaki_pytorch", "cvivit")
    if ref.module is None:
        return ref.note
    c = s.cvivit
    module = ref.module.CViViT(
        dim=c["dim"], codebook_size=c["codebook_size"], image_size=s.resolution, patch_size=c["patch_size"],
        temporal_patch_size=c["temporal_patch_size"], spatial_depth=c["spatial_depth"],
        temporal_depth=c["temporal_depth"], dim_head=c["dim_head"], heads=c["heads"], channels=s.channels,
        use_vgg_and_gan=False, lookup_free_quantization=False,
    )
    module = _prepare(module, opts)
    video = _input((s.batch, s.channels, s.frames, s.resolution, s.resolution), opts)  # (B, C, T, H, W)
    optimizer = _optimizer(module, opts)
    compiled = _maybe_compile(module, opts)

    def sample() -> Tensor:
        return compiled(video, return_recons_only=True)

    notes = [ref.note] if ref.note else []
    notes.append("VectorQuantize(use_cosine_sim) on dim-wide codes; GEGLU MLP; PEG + ALiBi in temporal layers")
    return Impl(
        model="cvivit", impl="phenaki-pytorch", module=module,
        train_step=_make_step(lambda: compiled(video), optimizer, opts),
        eager_train_step=_make_step(lambda: module(video), optimizer, opts),
        sample=sample, sample_kind="reconstruction", frames=s.frames,
        loss="CViViT.forward(video): reconstruction MSE (use_vgg_and_gan=False, VQ aux loss not returned)",
        optimizer=optimizer, notes=notes,
    )


def build_unet3d(s: Sizes, opts: Options, heads: int | None = None, dim_head: int | None = None) -> Impl | str:
    """video-diffusion-pytorch's Unet3D in its GaussianDiffusion (l2 loss, cosine schedule) at our video UNet's sizes;
    ``heads`` x ``dim_head`` of its attention layers (default: our heads, base_channels / heads each)."""
    ref = bc.load_reference("video_diffusion_pytorch", "video_diffusion_pytorch")
    if ref.module is None:
        return ref.note
    u = s.unet
    heads, dim_head = heads or u["heads"], dim_head or u["base_channels"] // u["heads"]
    net = ref.module.Unet3D(
        dim=u["base_channels"], dim_mults=tuple(u["channel_mult"]), channels=s.channels, attn_heads=heads,
        attn_dim_head=dim_head,
    )
    diffusion = ref.module.GaussianDiffusion(
        net, image_size=s.resolution, num_frames=s.frames, channels=s.channels, timesteps=1000, loss_type="l2",
    )
    diffusion = _prepare(diffusion, opts)
    video = _input((s.batch, s.channels, s.frames, s.resolution, s.resolution), opts, low=0.0)  # (B, C, T, H, W)
    optimizer = _optimizer(net, opts)
    if opts.compile:
        diffusion.denoise_fn = _compile(net)
    timesteps = _descending_timesteps(s.sample_steps, diffusion.num_timesteps)
    shape = (s.batch, s.channels, s.frames, s.resolution, s.resolution)

    def sample() -> Tensor:
        # its sampler visits all 1000 steps; we call its own p_sample at S evenly spaced steps (same cost per step)
        x = torch.randn(shape, device=opts.device)
        for t in timesteps:
            x = diffusion.p_sample(x, torch.full((s.batch,), t, device=opts.device, dtype=torch.long))
        return x

    def eager_loss() -> Tensor:
        compiled_fn, diffusion.denoise_fn = diffusion.denoise_fn, net
        try:
            return diffusion(video)
        finally:
            diffusion.denoise_fn = compiled_fn

    notes = [ref.note] if ref.note else []
    notes.append("Unet3D: linear spatial attention at every level, full spatial attention in the middle only, "
                 "temporal attention at every level (rotary + relative bias); sampler = its p_sample at S steps")
    return Impl(
        model="video_unet", impl="video-diffusion-pytorch", module=net,
        train_step=_make_step(lambda: diffusion(video), optimizer, opts),
        eager_train_step=_make_step(eager_loss, optimizer, opts),
        sample=sample, sample_kind=f"p_sample x {s.sample_steps}", frames=s.frames,
        loss="GaussianDiffusion.forward(video): p_losses, eps target, loss_type=l2, cosine schedule",
        optimizer=optimizer, notes=notes,
    )


def build_ddpm_unet(s: Sizes, opts: Options, heads: int | None = None, dim_head: int | None = None) -> Impl | str:
    """denoising-diffusion-pytorch's Unet in its GaussianDiffusion (pred_noise, cosine, DDIM) at our UNet's sizes;
    ``heads`` x ``dim_head`` of its attention layers (default: our heads, base_channels / heads each)."""
    ref = bc.load_reference("denoising_diffusion_pytorch", "denoising_diffusion_pytorch")
    if ref.module is None:
        return ref.note
    u = s.unet
    heads, dim_head = heads or u["heads"], dim_head or u["base_channels"] // u["heads"]
    net = ref.module.Unet(
        dim=u["base_channels"], dim_mults=tuple(u["channel_mult"]), channels=s.channels, attn_heads=heads,
        attn_dim_head=dim_head,
        # its flash setting forces the FLASH backend alone on sm > 8.0, which has no fp32 kernel
        flash_attn=opts.device.type == "cuda" and opts.dtype == "bf16",
    )
    diffusion = ref.module.GaussianDiffusion(
        net, image_size=s.resolution, timesteps=1000, sampling_timesteps=s.sample_steps, objective="pred_noise",
        beta_schedule="cosine",
    )
    diffusion = _prepare(diffusion, opts)
    images = _input((s.batch, s.channels, s.resolution, s.resolution), opts, low=0.0)
    optimizer = _optimizer(net, opts)
    if opts.compile:
        diffusion.model = _compile(net)

    def eager_loss() -> Tensor:
        compiled_fn, diffusion.model = diffusion.model, net
        try:
            return diffusion(images)
        finally:
            diffusion.model = compiled_fn

    notes = [ref.note] if ref.note else []
    notes.append("Unet: linear attention at every level except the lowest (full attention), 2 res blocks up "
                 "and down per level (ours: 2 down, 3 up)")
    return Impl(
        model="unet", impl="denoising-diffusion-pytorch", module=net,
        train_step=_make_step(lambda: diffusion(images), optimizer, opts),
        eager_train_step=_make_step(eager_loss, optimizer, opts),
        sample=lambda: diffusion.sample(batch_size=s.batch), sample_kind=f"ddim {s.sample_steps} steps", frames=1,
        loss="GaussianDiffusion.forward(images): p_losses, pred_noise MSE, cosine schedule",
        optimizer=optimizer, notes=notes,
    )


REFERENCES: dict[str, Callable[..., Impl | str]] = {
    "cvivit": build_phenaki,
    "video_unet": build_unet3d,
    "unet": build_ddpm_unet,
}
# The UNet references' constructors choose their attention width (attn_heads x attn_dim_head); each gets two rows.
ATTENTION_CHOICES = tuple((h, d) for h in (2, 4, 8) for d in (8, 16, 32, 64))
MATCH_TOLERANCE = 0.05  # the "matched" row's parameters within 5 % of ours


def build_references(model: str, s: Sizes, opts: Options, our_params: int) -> list[Impl | str]:
    """The reference rows of ``model``: one for phenaki; for the UNets the setting whose parameter count is closest
    to ours (``matched``, noted when not within 5 %) and the fastest setting of :data:`ATTENTION_CHOICES` by a
    two-step timing probe (``fastest``)."""
    builder = REFERENCES[model]
    if model == "cvivit":
        return [builder(s, opts)]
    candidates: list[tuple[float, int, int, int]] = []  # (probe seconds, params, heads, dim_head)
    for heads, dim_head in ATTENTION_CHOICES:
        impl = builder(s, opts, heads, dim_head)
        if isinstance(impl, str):
            return [impl]
        impl.train_step()  # warm-up
        seconds = bc.time_calls(impl.train_step, opts.device, 2)
        candidates.append((seconds, count_parameters(impl.module, trainable_only=True), heads, dim_head))
        del impl
    matched = min(candidates, key=lambda c: abs(c[1] - our_params))
    fastest = min(candidates)
    rows: list[Impl | str] = []
    for label, (_, params, heads, dim_head) in (("matched", matched), ("fastest", fastest)):
        impl = builder(s, opts, heads, dim_head)
        impl.impl = f"{impl.impl} ({label}: {heads} x {dim_head})"
        gap = params / our_params - 1
        impl.notes.append(f"{label}: attn_heads={heads}, attn_dim_head={dim_head}, params {100 * gap:+.1f} % vs ours"
                          + (" (no choice within 5 %)" if label == "matched" and abs(gap) > MATCH_TOLERANCE else ""))
        rows.append(impl)
    return rows


# -- measurement -----------------------------------------------------------------------------------------------
def _guard(impl: Impl, what: str, fn: Callable[[], Any]) -> bool:
    """Runs ``fn``; on an exception records it in the implementation's notes and returns False."""
    try:
        fn()
        return True
    except Exception as err:  # one failing implementation must not end the whole run
        impl.notes.append(f"{what} failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        traceback.print_exc(file=sys.stderr)
        return False


def _time_training(impl: Impl, s: Sizes, opts: Options) -> None:
    timer = impl.builder_timer
    if timer is not None:
        timer.reset()
    seconds = bc.time_calls(impl.train_step, opts.device, s.iters)
    impl.train_times.append(seconds)
    if timer is not None:
        impl.builder_shares.append(timer.total_seconds() / (seconds * s.iters))


def _time_sampling(impl: Impl, s: Sizes, opts: Options) -> None:
    assert impl.sample is not None
    impl.module.eval()
    try:
        with torch.inference_mode(), bc.autocast(opts.dtype, opts.device):
            impl.sample_times.append(bc.time_calls(impl.sample, opts.device, 1))
    finally:
        impl.module.train()


def _warm_sampling(impl: Impl, opts: Options) -> None:
    assert impl.sample is not None
    impl.module.eval()
    try:
        with torch.inference_mode(), bc.autocast(opts.dtype, opts.device):
            impl.sample()
        bc.synchronize(opts.device)
    finally:
        impl.module.train()


def benchmark_group(impls: list[Impl], s: Sizes, opts: Options) -> None:
    """Warm-up, then ``repeats`` timing rounds of every implementation, then memory and FLOPs.

    Eager: the rounds interleave the implementations, so drifts in the machine's load hit all of them alike.
    Compiled: one implementation at a time on a fresh dynamo cache (ours and phenaki share compiled code objects
    of vector-quantize-pytorch, whose guards would otherwise flip between the two configurations).
    """
    if opts.compile:
        for impl in impls:
            torch._dynamo.reset()
            _benchmark([impl], s, opts)
    else:
        _benchmark(impls, s, opts)


def _benchmark(impls: list[Impl], s: Sizes, opts: Options) -> None:
    alive = [i for i in impls if _guard(i, "training warm-up", lambda i=i: [i.train_step() for _ in range(s.warmup)])]
    for _ in range(s.repeats):
        for impl in list(alive):
            if not _guard(impl, "training", lambda i=impl: _time_training(i, s, opts)):
                alive.remove(impl)
    samplers = [i for i in impls if i.sample is not None and _guard(i, "sampling warm-up", lambda i=i: _warm_sampling(i, opts))]
    for _ in range(s.repeats):
        for impl in list(samplers):
            if not _guard(impl, "sampling", lambda i=impl: _time_sampling(i, s, opts)):
                samplers.remove(impl)
    for impl in alive:
        mem: list[Any] = []
        if _guard(impl, "memory", lambda i=impl: mem.extend(measure_memory(i, opts))):
            impl.peak_mem_mib, impl.mem_kind = mem
        impl.flops = bc.count_flops(impl.eager_train_step)
        if opts.device.type == "cuda":
            _guard(impl, "sync probe", lambda i=impl: _probe_syncs(i, opts))


def _probe_syncs(impl: Impl, opts: Options) -> None:
    """Counts the host-device synchronisations of one eager training step (torch.cuda sync debug mode)."""
    import warnings

    bc.synchronize(opts.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            impl.eager_train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0][:160] for w in caught if "synchroniz" in str(w.message)]
    impl.notes.append(f"host syncs in one eager training step: {len(syncs)}"
                      + (f" (first: {syncs[0]})" if syncs else ""))


def _resident_bytes(impl: Impl) -> int:
    """Bytes of the implementation's parameters, gradients and optimizer state."""
    total = 0
    for p in impl.module.parameters():
        total += p.numel() * p.element_size()
        if p.grad is not None:
            total += p.grad.numel() * p.grad.element_size()
    for state in impl.optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))
    return total


@contextlib.contextmanager
def _malloc_returns_large_blocks() -> Any:
    """glibc: serve blocks >= 64 KiB by mmap for the duration, so freed tensors leave the RSS and the RSS
    follows the live tensors (otherwise memory freed by an earlier model hides this one's allocations)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        yield
        return
    m_mmap_threshold, m_trim_threshold = -3, -1
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024)
    libc.malloc_trim(0)
    try:
        yield
    finally:  # back to large thresholds so later timings are not slowed by mmap/munmap per tensor
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 64 * 2**20)


def measure_memory(impl: Impl, opts: Options) -> tuple[float, str]:
    """Peak memory (MiB) of one training step of ``impl`` and its kind."""
    if opts.device.type == "cuda":
        bc.synchronize(opts.device)
        before = torch.cuda.memory_allocated(opts.device)
        peak, kind = bc.measure_peak_memory(impl.train_step, opts.device)
        transient = peak - before / 2**20
        return transient + _resident_bytes(impl) / 2**20, "cuda_max_allocated (own params+grads+optimizer state + step peak)"
    with _malloc_returns_large_blocks():
        return bc.measure_peak_memory(impl.train_step, opts.device)


def to_row(impl: Impl, s: Sizes, opts: Options) -> bc.Row:
    """Summarises an implementation's measurements (medians over repeats)."""
    step = bc.median(impl.train_times)
    sample = bc.median(impl.sample_times)
    return bc.Row(
        model=impl.model, impl=impl.impl, params=count_parameters(impl.module, trainable_only=True), batch=s.batch, frames=impl.frames,
        train_step_ms=1000 * step,
        train_step_ms_range=[1000 * min(impl.train_times), 1000 * max(impl.train_times)] if impl.train_times else [],
        train_images_per_s=s.batch / step, train_frames_per_s=s.batch * impl.frames / step,
        sample_kind=impl.sample_kind, sample_images_per_s=s.batch / sample,
        sample_frames_per_s=s.batch * impl.frames / sample,
        builder_share=bc.median(impl.builder_shares), loss=impl.loss, notes=list(impl.notes),
    )


def summarise(impls: list[Impl], s: Sizes, opts: Options) -> list[bc.Row]:
    """Rows of one group (ours first), with the ours / reference ratios."""
    rows = []
    for impl in impls:
        row = to_row(impl, s, opts)
        row.peak_mem_mib, row.mem_kind = impl.peak_mem_mib, impl.mem_kind
        if impl.flops and impl.train_times:
            row.train_flops_per_step = float(impl.flops)
            row.achieved_tflops = impl.flops / (row.train_step_ms / 1000) / 1e12
            if opts.device.type == "cuda":
                row.mfu = impl.flops / (row.train_step_ms / 1000) / opts.peak_flops
        row.notes = list(impl.notes)
        rows.append(row)
    ours, refs = rows[0], rows[1:]
    for ref in refs:  # on each reference row: ours / that reference
        ref.train_ratio = ours.train_images_per_s / ref.train_images_per_s
        ref.sample_ratio = ours.sample_images_per_s / ref.sample_images_per_s
    return rows


def run(models: Sequence[str], s: Sizes, opts: Options) -> list[bc.Row]:
    """Benchmarks every model of ``models`` against its reference; returns one row per implementation."""
    rows: list[bc.Row] = []
    for model in models:
        if opts.compile:
            # Classes share compiled code objects (VideoTokenizer.forward serves VQVAE and C-ViViT, UNet.forward
            # both UNets): a fresh cache per group keeps one group's shapes from forcing recompiles in the next.
            torch._dynamo.reset()
        print(f"[bench] {model}: building", file=sys.stderr)
        impls = [build_ours(model, s, opts)]
        if model in REFERENCES:
            try:
                refs = build_references(model, s, opts, count_parameters(impls[0].module, trainable_only=True))
            except Exception as err:
                traceback.print_exc(file=sys.stderr)
                refs = [f"reference failed to build: {type(err).__name__}: {str(err).splitlines()[0][:300]}"]
            for ref in refs:
                if isinstance(ref, str):
                    impls[0].notes.append(f"reference skipped: {ref}")
                    print(f"[bench] {model}: reference skipped: {ref}", file=sys.stderr)
                else:
                    impls.append(ref)
        print(f"[bench] {model}: timing {[i.impl for i in impls]}", file=sys.stderr)
        benchmark_group(impls, s, opts)
        rows.extend(summarise(impls, s, opts))
    return rows


# -- command line ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="bf16 = autocast (default fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours and the references")
    parser.add_argument("--compile-mode", default="default",
                        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs, as train.compile_mode "
                             "auto picks for the diffusion models on one GPU)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs")
    parser.add_argument("--no-fused-adamw", dest="fused_adamw", action="store_false",
                        help="AdamW's per-parameter loop instead of the fused kernel the training engine uses")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (preset 'quick')")
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="sizes: quick | cpu | cpu32 | gpu (default: gpu on CUDA, cpu otherwise)")
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--frames", type=int, default=None, help="override the preset's pseudo-video length T")
    parser.add_argument("--resolution", type=int, default=None, help="override the preset's image size")
    parser.add_argument("--sample-steps", type=int, default=None, help="override the preset's DDIM steps")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: the preset's)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per repeat (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats; the median is reported")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--peak-flops", type=float, default=bc.H100_SXM_BF16_DENSE_FLOPS,
                        help="peak dense FLOP/s of the GPU for MFU (default: H100 SXM bf16, 989e12)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--our-override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of our models, e.g. model.unet.temporal_mixer=conv (repeatable)")
    parser.add_argument("--out", default=None, help="JSON output path")
    return parser.parse_args(argv)


def sizes_from_args(args: argparse.Namespace, device: torch.device) -> Sizes:
    """The preset chosen by --quick / --preset / the device, with the command-line overrides applied."""
    name = "quick" if args.quick else args.preset or ("gpu" if device.type == "cuda" else "cpu")
    s = PRESETS[name]
    overrides = {
        "batch": args.batch, "frames": args.frames, "resolution": args.resolution, "sample_steps": args.sample_steps,
        "warmup": args.warmup, "iters": args.iters, "repeats": args.repeats,
    }
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    for key in ("batch", "frames", "resolution", "sample_steps", "iters", "repeats"):
        if getattr(s, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(s, key)}")
    if args.compile and s.warmup < 3:  # compilation and the recompiles of the first steps stay out of the timing
        s = replace(s, warmup=3)
    if s.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {s.warmup}")
    tp = s.cvivit["temporal_patch_size"]
    if (s.frames - 1) % tp:
        raise ValueError(f"--frames {s.frames}: C-ViViT needs T-1 divisible by temporal_patch_size={tp}")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = bc.resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected a subset of {list(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        s = sizes_from_args(args, device)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    opts = Options(device=device, dtype=args.dtype, compile=args.compile, channels_last=args.channels_last,
                   peak_flops=args.peak_flops, fused_adamw=args.fused_adamw, our_overrides=tuple(args.our_override),
                   compile_mode=args.compile_mode)
    _COMPILE_MODE[0] = args.compile_mode
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    rows = run(models, s, opts)
    meta = {
        "command": " ".join(["python", "benchmarks/bench_models.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": bc.environment(device),
        "dtype": args.dtype, "compile": args.compile, "compile_mode": args.compile_mode,
        "channels_last": args.channels_last,
        "fused_adamw": args.fused_adamw,
        "peak_flops": args.peak_flops if device.type == "cuda" else None,
        "sizes": {k: v for k, v in s.__dict__.items()},
        "ratio": "ours / reference throughput (images per second), on each reference row",
    }
    print(f"\n{bc.markdown_table(rows)}\n")
    for row in rows:
        print(f"- {row.model} / {row.impl}: loss = {row.loss}" + "".join(f"\n  - {n}" for n in row.notes))
    if args.out:
        path = bc.write_json(args.out, meta, rows)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
