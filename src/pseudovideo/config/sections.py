"""The typed run configuration: one dataclass per config section, each field's trailing comment its meaning.

Every run (train, eval, show, diagnose, demo, experiment) is described by one :class:`RunConfig`. The comments
feed ``pseudovideo config --list`` and docs/config.md (:mod:`pseudovideo.config.docs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path




class ConfigError(ValueError):
    """A configuration problem the user can fix; the message names the key and the expectation."""


def _choices(*values: str) -> dict[str, tuple[str, ...]]:
    return {"choices": values}


@dataclass
class CorruptionConfig:
    """One corruption operator of a pseudo video and its level schedule over frames."""

    name: str = field(default="blur", metadata=_choices("blur", "noise", "downsample", "mask"))
    schedule: str = field(default="linear", metadata=_choices("linear", "cosine", "geometric", "explicit"))
    max_level: float = 2.0  # level of frame 0 (the most corrupted); the last frame has level 0
    min_level: float | None = None  # smallest non-zero level, for the geometric schedule
    levels: list[float] | None = None  # explicit levels of frames 0..T-2 (schedule: explicit)
    patch_size: int = 4  # mask only: side of a masked square patch
    fill_value: float = 0.0  # mask only: value written into masked patches


@dataclass
class LearnedCorruptionConfig:
    """How the corruption is learned (see pseudovideo.pseudo_video.learned.corruption); objective none: used as configured."""

    objective: str = field(default="none", metadata=_choices("none", "informativeness", "adversarial", "random_search"))
    mixture: bool = False  # also learn a per-frame operator mixture (each frame applies one operator)
    per_image: bool = False  # a small CNN maps each clean image to its levels (and mixture)
    seed: int = 0  # seed of the search (informativeness, random_search) and of the policy's initial weights
    search_steps: int = 150  # informativeness: Adam steps
    search_images: int = 512  # informativeness: training images the gain is measured on
    search_batch: int = 128  # informativeness: images per step
    search_lr: float = 0.05  # informativeness: Adam learning rate
    budget: float = 0.25  # adversarial: largest move of a frame's normalised level from the configured schedule
    lr: float = 0.01  # adversarial: Adam learning rate of the corruption's ascent
    every: int = 1  # adversarial: the corruption ascends every N model steps
    operator_sets: list[list[str]] | None = None  # random_search: null = every non-empty subset of the corruptions
    magnitudes: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])  # random_search: x configured max_level
    trials: int = 0  # random_search: grid points drawn at random (0: the whole grid)
    proxy_steps: int = 60  # random_search: training steps of each proxy run
    proxy_images: int = 256  # random_search: held-out images each proxy run is scored on
    from_file: str | None = None  # a learned corruption (.safetensors) written by search-corruptions, used as it is
    searched_by: str | None = None  # written by search-corruptions: what produced the explicit levels (recorded)


@dataclass
class PseudoVideoConfig:
    """How clean images become pseudo videos of ``num_frames`` frames (last frame clean)."""

    num_frames: int = 8
    # copies: T identical clean frames (the capacity control; corruptions are ignored); shuffled: higher-order
    # frames in random order; noise_frames: T-1 frames of pure noise (std 0.5) then the clean frame
    construction: str = field(default="higher_order", metadata=_choices(
        "first_order", "higher_order", "copies", "shuffled", "noise_frames"))
    corruptions: list[CorruptionConfig] = field(
        default_factory=lambda: [
            CorruptionConfig(name="blur", schedule="linear", max_level=2.0),
            CorruptionConfig(name="noise", schedule="linear", max_level=0.2),
        ]
    )
    # Image-model training on pseudo-video frames as extra samples (the "data-control" experiment):
    # every frame of the pseudo video becomes an independent training image.
    frames_as_images: bool = False
    # Fixed operator probabilities of frames 0..T-2 ((T-1) rows of K): each frame applies ONE operator, drawn
    # per image; null: the operators compose. Written by search-corruptions for a learned mixture.
    mixture: list[list[float]] | None = None
    learned: LearnedCorruptionConfig = field(default_factory=LearnedCorruptionConfig)


@dataclass
class DataConfig:
    """Which images to train and evaluate on."""

    dataset: str = "digits"  # digits | cifar10 | mnist | celeba | folder:PATH | sktime:NAME | series:PATH
    root: str | None = None  # local root for torchvision datasets (their own layout)
    resolution: int = 16
    channels: int | None = None  # 1 or 3 to convert; None keeps the dataset's own
    random_flip: bool = False
    download: bool = False
    skip_bad_files: bool = False
    max_images: int | None = None  # deterministic subset of the training split
    train_split: str = "train"
    eval_split: str = "test"
    # Share of the images held out for evaluation where the data has no split of its own (a folder
    # without train/ + test/ sub-folders, MNIST with one split file): chosen by a hash of the relative
    # path (MNIST: index), the rest is the train split.
    held_out_fraction: float = 0.1
    # 1-D signals (sktime:NAME, series:PATH; pseudovideo.data.signals): samples (C, L).
    length: int | None = None  # L: every series (or window) resampled to it; required for signals
    window: int | None = None  # cut each series into windows of this many samples (a series stays in its split)
    stride: int | None = None  # samples between window starts; null: the window (no overlap)


@dataclass
class VQVAEConfig:
    """Convolutional VQVAE (the image tokenizer); frames are encoded independently."""

    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    codebook_size: int = 512
    codebook_dim: int = 64
    commitment_weight: float = 0.25
    ema_codebook: bool = True
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.0
    kmeans_init: bool = False
    cosine_codes: bool = False
    # Residual vector quantization stages (SoundStream / RQ-VAE): Q codes per latent position, so
    # Q x (H/f) x (W/f) codes per image; raises the rate at a fixed grid (the rate-matched image baseline).
    num_quantizers: int = 1
    quantizer: str = field(default="vq", metadata=_choices("vq", "fsq"))  # codebook VQ or finite scalar quantization
    fsq_levels: list[int] | None = None  # quantizer fsq: levels per code dimension; their product is codebook_size
    lookup_dim: int | None = None  # VQ codes compared in this many dimensions (projected); null: codebook_dim


@dataclass
class CViViTConfig:
    """C-ViViT (Phenaki's causal video tokenizer)."""

    patch_size: int = 4
    temporal_patch_size: int = 1
    dim: int = 128
    spatial_depth: int = 2
    temporal_depth: int = 2
    heads: int = 4
    dim_head: int = 32
    mlp_ratio: float = 4.0
    codebook_size: int = 512
    codebook_dim: int = 32
    commitment_weight: float = 0.25
    ema_codebook: bool = True
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.0
    kmeans_init: bool = False
    cosine_codes: bool = False
    max_frames: int = 32
    num_quantizers: int = 1  # residual vector quantization stages per token
    quantizer: str = field(default="vq", metadata=_choices("vq", "fsq"))  # codebook VQ or finite scalar quantization
    fsq_levels: list[int] | None = None  # quantizer fsq: levels per code dimension; their product is codebook_size
    # Which time steps the decoder's last step (it decodes the clean frame) attends to: all (causal decoder,
    # rate t x h x w codes) or its own (rate h x w codes, that of an image tokenizer on the same grid).
    clean_frame_context: str = field(default="all", metadata=_choices("all", "own"))


@dataclass
class UNetConfig:
    """DDPM UNet; with ``model.family: video_unet`` it gets temporal attention layers."""

    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.0
    num_heads: int = 4
    causal_temporal: bool = False
    max_frames: int = 32
    frame_position: str = field(default="learned", metadata=_choices("learned", "relative"))
    # video_unet only: which blocks get a temporal layer, and which layer (see pseudovideo.models.unet)
    temporal_layers: str = field(default="every_block", metadata=_choices("every_block", "per_level", "low_res"))
    temporal_mixer: str = field(default="attention", metadata=_choices("attention", "conv", "hybrid"))
    # Image UNet with pseudo_video.frames_as_images only: condition on each frame's level (T-1-index,
    # 0 = the clean last frame) through a learned embedding, and sample at level 0 (the clean image).
    level_conditioning: bool = True


@dataclass
class LiftedConfig:
    """``model.family: lifted``: an image network lifted to video with :func:`pseudovideo.lift`."""

    # unet | vqvae (ours, built from model.unet / model.vqvae) | run:RUN_DIR (a trained run, its EMA weights)
    # | diffusers:PATH (a save_pretrained UNet2DModel folder) | python:package.module:factory (user code: imported and
    # called only with --trust-code / trust_code=True, never because a config says so; see pseudovideo.interop.trust)
    base: str = "unet"
    where: list[str] | None = None  # block class names, module names or globs; null: pseudovideo.models.lift.DEFAULT_BLOCKS
    causal: bool = False
    # none: no temporal layer (the base as an image model, frame by frame: T = 1 training of an imported base)
    temporal: str = field(default="attention", metadata=_choices("attention", "conv", "both", "none"))
    num_heads: int | None = None  # heads of the temporal attention; null: most of 8/4/2/1 with >= 8 channels per head
    # diffusion or tokenizer; auto reads it from the base (python: factories and run: folders not yet trained need it)
    kind: str = field(default="auto", metadata=_choices("auto", "diffusion", "tokenizer"))


@dataclass
class ModelConfig:
    """Which model to train; only the section of the chosen family is used."""

    family: str = field(default="vqvae", metadata=_choices("vqvae", "cvivit", "unet", "video_unet", "lifted"))
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    cvivit: CViViTConfig = field(default_factory=CViViTConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    lifted: LiftedConfig = field(default_factory=LiftedConfig)


@dataclass
class LossConfig:
    """Tokenizer losses: reconstruction, VQ (inside the model), perceptual, adversarial."""

    reconstruction: str = field(default="l1", metadata=_choices("l1", "l2", "l1+l2"))
    last_frame_weight: float = 4.0  # weight of the clean frame relative to each corrupted frame
    perceptual_weight: float = 0.0
    perceptual_net: str = field(default="vgg", metadata=_choices("vgg", "alex"))
    perceptual_weights: str | None = None  # local path of the backbone's ImageNet weights
    gan_weight: float = 0.0
    gan_start_step: int = 0
    discriminator_channels: int = 64
    discriminator_layers: int = 2


@dataclass
class DiffusionConfig:
    """Gaussian diffusion process and sampler for the unet / video_unet families."""

    num_timesteps: int = 1000
    beta_schedule: str = field(default="cosine", metadata=_choices("linear", "cosine"))
    prediction: str = field(default="eps", metadata=_choices("eps", "v"))
    sampler: str = field(default="ddim", metadata=_choices("ddpm", "ddim"))
    sample_steps: int = 50
    eta: float = 0.0
    # Clip the predicted x_0 to [-1, 1]: on every frame, on the clean last frame only (the corrupted
    # frames carry noise outside [-1, 1]), or never.
    clip_x0: str = field(default="last", metadata=_choices("all", "last", "none"))
    sampling_mode: str = field(default="joint", metadata=_choices("joint", "autoregressive"))
    autoregressive_first_frames: int = 1
    autoregressive_frames_per_step: int = 1
    autoregressive_first_stage: str = field(default="full", metadata=_choices("full", "prefix"))
    guidance: str = field(default="replacement", metadata=_choices("replacement", "reconstruction"))
    guidance_weight: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of the training loop."""

    steps: int = 1000
    batch_size: int = 32  # global batch (split over DDP ranks)
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = field(default="cosine", metadata=_choices("cosine", "constant"))
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999  # 0 disables the EMA copy
    mixed_precision: str = field(default="auto", metadata=_choices("auto", "bf16", "fp16", "off"))
    # torch.compile of the model: auto = on for CUDA, off on CPU; true / false force it
    compile: bool | str = "auto"
    # auto: "reduce-overhead" (CUDA graphs) where the task's step allows it on one CUDA device, else "default"
    compile_mode: str = field(default="auto", metadata=_choices("auto", "default", "reduce-overhead", "max-autotune",
                                                                "max-autotune-no-cudagraphs"))
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_last: int = 2
    # NaN guard: a checkpoint is written only when the last step's loss is finite and exceeds the median of
    # the last 50 healthy step losses by at most divergence_factor x |median| (0: finite is enough).
    divergence_factor: float = 100.0
    log_every: int = 10
    # Where the logged scalars go: log.csv (read by demo/experiment plots), TensorBoard (tb/), Weights & Biases
    # (needs `pip install '.[wandb]'`; WANDB_MODE=offline logs into run_dir/wandb without network).
    log_to: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    wandb_project: str = "pseudovideo"  # W&B project of the runs (with log_to containing wandb)
    image_every: int = 500
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    progress: bool = True


# cfd / ckd: Fréchet / kernel distance in the features of a classifier trained on the dataset (feature_net.py);
# probe: linear-probe accuracy of frozen features (pseudovideo.evaluation.probe); mse / snr: reconstruction error and
# signal-to-noise ratio (pseudovideo.metrics.signals)
EVAL_METRICS = ("psnr", "ssim", "swd", "lpips", "fid", "kid", "cfd", "ckd", "probe", "mse", "snr")


@dataclass
class EvalConfig:
    """How a run is evaluated; the protocol is written beside every number."""

    num_images: int = 1000  # held-out images reconstructed, or images generated
    batch_size: int = 100
    use_ema: bool = True
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "swd", "lpips", "fid", "kid", "cfd", "ckd"])
    inception_weights: str | None = None  # local path of torch-fidelity's Inception weights
    lpips_weights: str | None = None  # local path of the LPIPS backbone's ImageNet weights
    cache_dir: str = "~/.cache/pseudovideo"  # FID/KID reference statistics and cfd feature nets (shared by runs)
    feature_net: str | None = None  # cfd/ckd: explicit feature-net safetensors file (else cached in cache_dir / trained)
    feature_net_seed: int = 0  # cfd/ckd: seed of the feature net's training (part of its cache key)
    feature_net_steps: int | None = None  # cfd/ckd: the net's training steps; null: 5 epochs, at least 400 steps
    feature_net_resolution: int | None = None  # cfd/ckd: side the net trains at; null: data.resolution, at most 32
    feature_net_flips: bool | None = None  # cfd/ckd: random flips in the net's training; null: off for digits/mnist
    ckd_subsets: int = 100  # ckd: random subsets averaged (subset size min(1000, images))
    seed: int = 1234


@dataclass
class RunConfig:
    """Everything that describes one run; saved as ``config.yaml`` in its run folder."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    pseudo_video: PseudoVideoConfig = field(default_factory=PseudoVideoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        """Folder holding this run's checkpoints, logs, pictures and results."""
        return Path(self.out_dir) / self.name
