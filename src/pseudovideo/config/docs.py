"""The config reference: every key of :class:`pseudovideo.config.RunConfig` with its type, default and meaning.

Shown by ``pseudovideo config --list`` and rendered into ``docs/config.md`` (``pseudovideo config --markdown``).
A key's meaning is, in order: its entry in :data:`MEANINGS`, its field's ``metadata["help"]``, or the trailing
``# comment`` of its line in ``config.py``. The choices of a field (``metadata["choices"]``) are listed too.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any

from pseudovideo.config import CorruptionConfig, RunConfig

CORRUPTIONS = "pseudo_video.corruptions"

MEANINGS: dict[str, str] = {
    "name": "run name: the run folder is out_dir/name, so one folder name of letters, digits and _ . + = - "
            "(not . or ..; unnamed CLI runs get a free run, run-2, ...)",
    "out_dir": "folder holding the run folders",
    f"{CORRUPTIONS}.N.name": "operator of corruption N: blur (sigma, px), noise (std), downsample (2**level), mask (probability)",
    f"{CORRUPTIONS}.N.schedule": "how its level falls from max_level at frame 0 to 0 at the clean last frame",
    f"{CORRUPTIONS}.N.max_level": "level of frame 0 (the most corrupted); the last frame has level 0",
    f"{CORRUPTIONS}.N.min_level": "smallest non-zero level (schedule geometric)",
    f"{CORRUPTIONS}.N.levels": "explicit levels of frames 0..T-2 (schedule explicit)",
    f"{CORRUPTIONS}.N.patch_size": "mask only: side of a masked square patch",
    f"{CORRUPTIONS}.N.fill_value": "mask only: value written into masked patches",
    "pseudo_video.num_frames": "frames T of a pseudo video, the last one clean (1: plain images)",
    "pseudo_video.corruptions": "operators applied in order, each with its level schedule (a list of the keys above)",
    "pseudo_video.construction": "first_order: frame t-1 made from frame t; higher_order: every frame from the clean image; "
                                 "copies: T clean frames; shuffled: higher-order frames in random order, clean last; "
                                 "noise_frames: T-1 frames of N(0, 0.5^2) noise, clean last",
    "pseudo_video.mixture": "fixed operator probabilities of frames 0..T-2 ((T-1) rows of K): each frame applies ONE "
                            "corruption drawn per image (higher_order); null: the corruptions compose",
    "pseudo_video.learned.objective": "how the corruption is learned: none (as configured), informativeness (searched "
                                      "before training for the section 4.1 gain), adversarial (ascends the model's loss "
                                      "during training), random_search (operator set x magnitude scored by proxy runs)",
    "pseudo_video.learned.mixture": "also learn a per-frame operator mixture (each frame applies one corruption; no downsample)",
    "pseudo_video.learned.per_image": "a small CNN maps each clean image to its levels (and mixture), trained by the objective",
    "pseudo_video.learned.seed": "seed of the search and of the per-image policy's initial weights (the runs of an experiment share a search)",
    "pseudo_video.learned.search_steps": "informativeness: Adam steps of the search",
    "pseudo_video.learned.search_images": "informativeness: training images the gain is measured on",
    "pseudo_video.learned.search_batch": "informativeness: images per search step (3/4 fit the ridge predictor, 1/4 score it)",
    "pseudo_video.learned.search_lr": "informativeness: Adam learning rate",
    "pseudo_video.learned.budget": "adversarial: largest move of a frame's normalised level from the configured schedule, in (0, 1] "
                                   "(a learned mixture keeps (1 - budget) / K of each operator)",
    "pseudo_video.learned.lr": "adversarial: Adam learning rate of the corruption's ascent",
    "pseudo_video.learned.every": "adversarial: the corruption ascends every N model steps",
    "pseudo_video.learned.operator_sets": "random_search: operator sets (lists of corruption names); null: every non-empty subset",
    "pseudo_video.learned.magnitudes": "random_search: maximum levels as multiples of the configured ones (mask capped at 1)",
    "pseudo_video.learned.trials": "random_search: grid points drawn at random with learned.seed (0: the whole grid)",
    "pseudo_video.learned.proxy_steps": "random_search: training steps of each proxy run (the run's model, batch and lr)",
    "pseudo_video.learned.proxy_images": "random_search: held-out images each proxy run is scored on",
    "pseudo_video.learned.from_file": "a learned corruption (.safetensors) written by search-corruptions or a run: trained on as it is",
    "pseudo_video.learned.searched_by": "recorded, not read: what produced the explicit levels (written by search-corruptions)",
    "pseudo_video.frames_as_images": "image model trained on every pseudo-video frame as a separate image (data control; loss.last_frame_weight weighs them as in the video model)",
    "data.dataset": "digits (embedded) | cifar10 | mnist | celeba | folder:PATH (images); sktime:NAME (a dataset bundled "
                    "with sktime, pip install '.[timeseries]') | series:PATH (a folder of .npy / .csv series) (1-D signals)",
    "data.root": "local root of a torchvision dataset (its own layout)",
    "data.resolution": "side H = W the images are resized and centre-cropped to",
    "data.channels": "1 or 3 to convert the images; null keeps the dataset's own (signals: their channel count, checked, never converted)",
    "data.random_flip": "random horizontal flips of training images",
    "data.download": "let torchvision download cifar10 / mnist / celeba into data.root",
    "data.skip_bad_files": "skip unreadable image files (and sub-folders) of a folder dataset instead of failing: "
                           "counted in a warning; a training run lists the skipped files in RUN_DIR/skipped_files.txt",
    "data.max_images": "deterministic evenly spread subset of the training split (null: all)",
    "data.train_split": "split trained on (train, test, or a folder's sub-folder name)",
    "data.eval_split": "held-out split evaluated on (test by default)",
    "data.length": "signals only, required: samples L per series (or window); each is resampled to it (antialiased linear) "
                   "when its length differs",
    "data.window": "signals only: cut every series into windows of this many samples (a series stays in its split); null: whole series",
    "data.stride": "signals only: samples between window starts (null: the window, no overlap)",
    "model.unet.level_conditioning": "image UNet on every frame (frames_as_images): learn a frame-level embedding and sample at the clean level",
    "train.divergence_factor": "a loss above the median of recent healthy losses by this many times its magnitude counts as diverged (0: only NaN/inf)",
    "model.lifted.base": "the image network to lift: unet | vqvae (ours) | run:RUN_DIR | diffusers:PATH | "
                         "python:package.module:factory (imports and runs that code: only with --trust-code / trust_code=True)",
    "model.lifted.causal": "temporal layers attend only to earlier frames (a causal video tokenizer)",
    "model.lifted.temporal": "temporal layers inserted after each matched block: attention, conv, both, or none (the base frame by frame)",
    "model.lifted.kind": "diffusion or tokenizer; auto reads it from the base (python: factories need it)",
    "model.unet.temporal_layers": "video UNet: which blocks get a temporal layer (every_block, per_level like Unet3D, low_res)",
    "model.unet.temporal_mixer": "video UNet: the temporal layer (attention, conv: 3-tap over time, hybrid: conv at full resolution)",
    "train.compile_mode": "torch.compile mode; auto: CUDA graphs (reduce-overhead) for diffusion on one GPU, default otherwise",
    "data.held_out_fraction": "share of the images held out (by a hash of path/index) when the data has no split of its own",
    "model.family": "vqvae, cvivit (tokenizers), unet (DDPM) or video_unet; only that family's section is used",
    "model.vqvae.base_channels": "width of the first resolution level",
    "model.vqvae.channel_mult": "width multiplier per level; the image is downsampled 2x between levels",
    "model.vqvae.num_res_blocks": "residual blocks per level",
    "model.vqvae.codebook_size": "number of codes K",
    "model.vqvae.codebook_dim": "size of each code (channels of the latent map)",
    "model.vqvae.commitment_weight": "beta of the VQ commitment loss",
    "model.vqvae.ema_codebook": "EMA codebook updates (false: codebook learned by its loss)",
    "model.vqvae.ema_decay": "decay of the EMA codebook statistics",
    "model.vqvae.dead_code_threshold": "EMA count of tokens per batch (decay ema_decay, starting at 1) under which an unused code is restarted from a batch token (0: never); >= 1 fires at the first batch a code is unused, t < 1 only after ln t / ln ema_decay unused batches (0.01 at decay 0.99: 458)",
    "model.vqvae.kmeans_init": "k-means initialisation of the codebook on the first training batch (codes start where the tokens are)",
    "model.vqvae.cosine_codes": "l2-normalised codes and tokens (cosine-similarity lookup; with a small lookup_dim, ViT-VQGAN's codes)",
    "model.vqvae.quantizer": "vq: a codebook of codebook_size codes (nearest-code lookup); fsq: finite scalar quantization (Mentzer et al. 2023), no codebook to collapse, the codebook options unused",
    "model.vqvae.fsq_levels": "quantizer fsq: levels of each code dimension (>= 3 each); their product must equal codebook_size, e.g. [4, 4, 4, 4] or [8, 8, 4] for 256, [8, 6, 5] for 240",
    "model.vqvae.lookup_dim": "VQ only: the latent is projected to this many dimensions for the code lookup and back (ViT-VQGAN's low-dimensional factorised codes, e.g. 8); null: codebook_dim, no projection",
    "model.vqvae.num_quantizers": "residual vector quantization stages per code position (1: plain VQ)",
    "model.cvivit.patch_size": "spatial patch side p (the image is coded as (H/p) x (W/p) tokens)",
    "model.cvivit.temporal_patch_size": "frames per tubelet after the first frame; T-1 must be divisible by it",
    "model.cvivit.dim": "token width",
    "model.cvivit.spatial_depth": "blocks of each spatial transformer (encoder and decoder)",
    "model.cvivit.temporal_depth": "blocks of each causal temporal transformer",
    "model.cvivit.heads": "attention heads",
    "model.cvivit.dim_head": "width of each attention head",
    "model.cvivit.mlp_ratio": "MLP hidden width / dim",
    "model.cvivit.codebook_size": "number of codes K",
    "model.cvivit.codebook_dim": "code size (tokens are projected to it for the lookup; with quantizer fsq: len(fsq_levels), this key unused)",
    "model.cvivit.commitment_weight": "beta of the VQ commitment loss",
    "model.cvivit.ema_codebook": "EMA codebook updates (false: codebook learned by its loss)",
    "model.cvivit.ema_decay": "decay of the EMA codebook statistics",
    "model.cvivit.dead_code_threshold": "EMA count of tokens per batch (decay ema_decay, starting at 1) under which an unused code is restarted from a batch token (0: never); >= 1 fires at the first batch a code is unused, t < 1 only after ln t / ln ema_decay unused batches (0.01 at decay 0.99: 458)",
    "model.cvivit.kmeans_init": "k-means initialisation of the codebook on the first training batch (codes start where the tokens are)",
    "model.cvivit.cosine_codes": "l2-normalised codes and tokens (cosine-similarity lookup; with a small codebook_dim, ViT-VQGAN's codes)",
    "model.cvivit.quantizer": "vq: a codebook of codebook_size codes (nearest-code lookup); fsq: finite scalar quantization (Mentzer et al. 2023), no codebook to collapse, the codebook options unused",
    "model.cvivit.fsq_levels": "quantizer fsq: levels of each code dimension (>= 3 each); their product must equal codebook_size, e.g. [4, 4, 4, 4] or [8, 8, 4] for 256, [8, 6, 5] for 240",
    "model.cvivit.max_frames": "longest video accepted (number of learned time-step embeddings)",
    "model.cvivit.clean_frame_context": "all: the decoder's last (clean) step attends to every step; own: to itself only (a rate of h x w x Q codes)",
    "model.unet.base_channels": "channels of the first level (even)",
    "model.unet.channel_mult": "channel multiplier per level; the resolution halves between levels",
    "model.unet.num_res_blocks": "residual blocks per level on the way down (one more on the way up)",
    "model.unet.attention_resolutions": "feature-map sides that get spatial self-attention",
    "model.unet.dropout": "dropout in the residual blocks",
    "model.unet.num_heads": "heads of the spatial and temporal attention",
    "model.unet.causal_temporal": "video_unet: frame i attends only to frames <= i",
    "model.unet.max_frames": "video_unet: largest T the temporal layers accept",
    "model.unet.frame_position": "video_unet: learned absolute frame embedding or relative position bias",
    "loss.reconstruction": "tokenizer reconstruction error per frame",
    "loss.last_frame_weight": "weight of the clean frame relative to each corrupted frame (with frames_as_images: of the clean frame-images, as in the video model)",
    "loss.perceptual_weight": "weight of LPIPS on the clean frame (0: off; off with a warning without weights)",
    "loss.perceptual_net": "LPIPS backbone",
    "loss.perceptual_weights": "local path of the LPIPS backbone's ImageNet weights (else the torch hub cache)",
    "loss.gan_weight": "weight of the patch-GAN hinge loss (VQGAN's adaptive weight; 0: off)",
    "loss.gan_start_step": "step at which the adversarial loss starts",
    "loss.discriminator_channels": "width of the patch-GAN discriminator",
    "loss.discriminator_layers": "strided layers of the discriminator",
    "diffusion.num_timesteps": "diffusion steps N of training",
    "diffusion.beta_schedule": "noise schedule of the betas",
    "diffusion.prediction": "what the UNet predicts: the noise eps or v",
    "diffusion.sampler": "ddpm (ancestral, all N steps) or ddim (sample_steps steps)",
    "diffusion.sample_steps": "DDIM steps when sampling (1..num_timesteps)",
    "diffusion.eta": "DDIM eta (0: deterministic, 1: DDPM-like variance)",
    "diffusion.clip_x0": "clip the predicted x_0 to [-1, 1] on all frames, the clean last frame only, or never",
    "diffusion.sampling_mode": "generate all frames jointly, or frame-autoregressively",
    "diffusion.autoregressive_first_frames": "autoregressive: frames generated jointly at first",
    "diffusion.autoregressive_frames_per_step": "autoregressive: new frames per later stage",
    "diffusion.autoregressive_first_stage": "autoregressive: the first stage sees the full video length or only its prefix",
    "diffusion.guidance": "autoregressive: how generated frames condition the next ones",
    "diffusion.guidance_weight": "autoregressive: weight of reconstruction guidance",
    "train.steps": "optimisation steps",
    "train.batch_size": "global batch of clean images (split over DDP ranks)",
    "train.lr": "peak learning rate of AdamW",
    "train.betas": "AdamW betas",
    "train.weight_decay": "AdamW weight decay",
    "train.warmup_steps": "linear warm-up steps",
    "train.lr_schedule": "after the warm-up: cosine decay to min_lr_ratio * lr, or constant",
    "train.min_lr_ratio": "final learning rate / lr (cosine schedule)",
    "train.grad_clip": "gradient-norm clipping (0: off)",
    "train.ema_decay": "decay of the EMA copy of the weights (0: no EMA)",
    "train.mixed_precision": "autocast: auto (bf16 on GPU, off on CPU), bf16, fp16 or off",
    "train.compile": "torch.compile the training step: auto (on CUDA only), true or false",
    "train.gradient_checkpointing": "recompute activations in the backward pass (less memory)",
    "train.checkpoint_every": "steps between checkpoints",
    "train.keep_last": "checkpoints kept",
    "train.log_every": "steps between log lines (log.csv, TensorBoard, ...)",
    "train.log_to": "where scalars go: csv (log.csv, read by the plots), tensorboard (tb/), wandb (optional extra)",
    "train.wandb_project": "W&B project (log_to with wandb; WANDB_MODE=offline logs without network)",
    "train.image_every": "steps between preview pictures",
    "train.seed": "seed of the weights, the data order and the pseudo videos",
    "train.device": "auto | cpu | cuda | cuda:N",
    "train.num_workers": "data-loader worker processes",
    "train.progress": "tqdm progress bars (training, and the sampling of its evaluation)",
    "eval.num_images": "held-out images reconstructed, or images generated",
    "eval.batch_size": "batch of evaluation",
    "eval.use_ema": "evaluate the EMA weights (false: the raw ones)",
    "eval.metrics": "metrics to compute (psnr, ssim, swd, lpips, fid, kid, cfd, ckd, probe, mse, snr); cfd/ckd are "
    "skipped, with the reason, for a dataset without class labels (decided before training); probe: linear-probe "
    "accuracy of frozen features beside the same model with random weights, see pseudovideo.evaluation.probe; mse, "
    "snr: a tokenizer's reconstruction error and signal-to-noise ratio in dB; on signals the image metrics are "
    "skipped with the reason: use mse, snr, cfd, ckd, probe",
    "eval.inception_weights": "local path of torch-fidelity's Inception weights (FID/KID)",
    "eval.lpips_weights": "local path of the LPIPS backbone's ImageNet weights",
    "eval.cache_dir": "cache of reference statistics for FID/KID and of the cfd/ckd feature nets (shared by runs)",
    "eval.feature_net": "cfd/ckd: explicit feature-net safetensors file (else cached in eval.cache_dir, or trained "
    "on first use)",
    "eval.feature_net_seed": "cfd/ckd: seed of the feature net's training (part of its cache key)",
    "eval.feature_net_steps": "cfd/ckd: training steps of the feature net (part of its cache key); null: 5 epochs "
    "of its training images, at least 400 steps",
    "eval.feature_net_resolution": "cfd/ckd: image side the feature net trains at, evaluated images are resized to "
    "it (part of its cache key); null: data.resolution, at most 32 (larger images are resized down to 32)",
    "eval.feature_net_flips": "cfd/ckd: random horizontal flips in the feature net's training (part of its cache "
    "key); null: on, except for digits and mnist",
    "eval.ckd_subsets": "ckd: random subsets the kernel distance is averaged over (subset size min(1000, images))",
    "eval.seed": "seed of the evaluation's pseudo videos and samples",
}


@dataclass(frozen=True)
class ConfigKey:
    """One documented config key."""

    key: str  # dotted, e.g. "train.steps"; corruption fields as pseudo_video.corruptions.N.field
    type: str
    default: Any
    meaning: str
    choices: tuple[str, ...] = ()


def _type_text(tp: Any) -> str:
    text = str(tp) if typing.get_origin(tp) else getattr(tp, "__name__", str(tp))
    return re.sub(r"\b(typing|pseudovideo\.config(\.\w+)?)\.", "", text).replace("NoneType", "None")


def _comments(cls: type) -> dict[str, str]:
    """Trailing ``# comment`` of each field line of a dataclass's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, re.M)}


def _default(f: dataclasses.Field) -> Any:
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _walk(cls: type, prefix: str) -> list[ConfigKey]:
    hints, comments, out = typing.get_type_hints(cls), _comments(cls), []
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _walk(tp, f"{key}.")
            continue
        default = _default(f)
        if key == CORRUPTIONS:
            default = [{k: v for k, v in c.items() if v is not None} for c in (dataclasses.asdict(x) for x in f.default_factory())]  # type: ignore[misc]
        meaning = MEANINGS.get(key) or f.metadata.get("help") or comments.get(f.name, "")
        out.append(ConfigKey(key, _type_text(tp), default, meaning, tuple(f.metadata.get("choices", ()))))
        if key == CORRUPTIONS:
            out += _walk(CorruptionConfig, f"{key}.N.")
    return out


def config_reference() -> list[ConfigKey]:
    """Every key of RunConfig in dataclass order (a corruption's fields after ``pseudo_video.corruptions``)."""
    return _walk(RunConfig, "")


def _value_text(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip().removesuffix("...").strip()


def format_config_list() -> str:
    """Plain-text table of every key: key, type, default, meaning (choices in braces)."""
    rows = config_reference()
    width = max(len(r.key) for r in rows)
    type_width = max(len(r.type) for r in rows)
    lines = []
    for r in rows:
        choices = f" {{{', '.join(r.choices)}}}" if r.choices else ""
        lines.append(f"{r.key:<{width}}  {r.type:<{type_width}}  {_value_text(r.default)}{choices}  - {r.meaning}")
    return "\n".join(lines) + "\n"


def config_markdown() -> str:
    """docs/config.md: every key as a markdown table per section."""
    lines = [
        "# Config reference",
        "",
        "Every key of a run config, with its type, default and meaning. Set keys in a YAML file (`-c FILE`) or",
        "on the command line (`key.sub=value`, e.g. `train.steps=100`); unknown keys and ill-typed values are",
        "rejected before any work starts. Generated by `pseudovideo config --markdown > docs/config.md`",
        "(a test checks that this file is up to date); `pseudovideo config --list` prints the same in a terminal.",
    ]
    section = None
    for r in config_reference():
        top = r.key.split(".")[0] if "." in r.key else "run"
        if top != section:
            section = top
            lines += ["", f"## {section}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        choices = f" One of: {', '.join(f'`{c}`' for c in r.choices)}." if r.choices else ""
        default = _value_text(r.default).replace("|", "\\|")
        meaning = r.meaning.rstrip(".").replace("|", "\\|")
        lines.append(f"| `{r.key}` | {r.type.replace('|', 'or')} | `{default}` | {meaning}.{choices} |")
    return "\n".join(lines) + "\n"
