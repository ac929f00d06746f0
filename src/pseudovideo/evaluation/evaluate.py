"""Evaluate a trained run on the clean (last) frame, with the full protocol written beside every number.

- Tokenizers (VQVAE, C-ViViT): build pseudo videos of held-out images, reconstruct them, and compare
  the reconstructed last frame with the clean image: PSNR, SSIM, LPIPS, and the distribution metrics
  SWD (weight-free), FID, KID between reconstructions and originals (reconstruction FID, as in the paper).
  Beside them the tokenizer's rate: the codes (and bits) per clean image that the last frame's decoder reads,
  so tokenizers are compared at a known rate.
- Diffusion models (UNet, video UNet): generate pseudo videos from noise; the last frame is the
  generated image; SWD / FID / KID against held-out real images, plus sampling speed.
Metrics that need downloaded weights (LPIPS, FID, KID) are skipped with the reason when the weights
are absent; SWD, PSNR and SSIM need none. CFD (classifier Fréchet distance, not FID) uses a small classifier
trained on the dataset's labelled training split (``pseudovideo.evaluation.feature_net``, cached, trained on first use);
it is skipped with the reason for unlabelled datasets. ``probe`` is the linear-probe accuracy of the model's frozen
features of the clean frame, beside the same architecture with random weights (``probe_random``; see
``pseudovideo.evaluation.probe``). Tokenizers also report their codebook usage and perplexity over the evaluation's codes,
with a warning under ``LOW_CODEBOOK_USAGE``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from pseudovideo import metrics as M
from pseudovideo.config.modality import sample_protocol, sample_shape, unsupported_metric_reason
from pseudovideo.metrics import signals as signal_metrics
from pseudovideo.checkpoint import EMA, MANIFEST, MODEL, list_checkpoints, resolve_checkpoint
from pseudovideo.config import EvalConfig, RunConfig
from pseudovideo.data.datasets import spread_images, spread_subset
from pseudovideo.diffusion.samplers import ddim_timesteps
from pseudovideo.training.distributed import resolve_device
from pseudovideo.evaluation.feature_net import UnlabelledDatasetError, classifier_features, prepare_feature_net
from pseudovideo.training.learned_runs import run_builder
from pseudovideo.training.losses import build_perceptual_loss
from pseudovideo.models.quantizer import CodeUsage
from pseudovideo.factory.datasets import ProbeSkipped
from pseudovideo.evaluation.probe import probe_metrics
from pseudovideo.pictures import frame_labels, picture_upscale, save_image_grid, save_labelled_grid, save_side_by_side
from pseudovideo.factory.run_folder import keep_previous, load_run_config, read_train_summary
from pseudovideo.factory.models import load_run
from pseudovideo.evaluation.sampling_progress import SamplingProgress
from pseudovideo.training.provenance import code_record
from pseudovideo.factory.models import is_tokenizer as tokenizer_run, build_diffusion, model_frames
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder, describe_pseudo_video
from pseudovideo.training.tasks import diffusion_sample_kwargs, sampling_model
from pseudovideo.training.precision import autocast, resolve_precision

LOW_CODEBOOK_USAGE = 0.25  # evaluation warns when a tokenizer uses a smaller share of its codebook

EXAMPLE_VIDEOS = 4  # pseudo videos drawn with their reconstructions in eval_pseudo_videos_then_reconstructions.png


class NonFiniteMetricError(RuntimeError):
    """An evaluation produced a NaN metric (unusable weights); nothing is written."""


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def held_out_images(config: RunConfig, num_images: int) -> Tensor:
    """``num_images`` images evenly spread over the evaluation split, (N, C, H, W) in [-1, 1] (no flips)."""
    return held_out_set(config, num_images)[0]


def held_out_set(config: RunConfig, num_images: int) -> tuple[Tensor, str]:
    """:func:`held_out_images` and the description of the split they come from (for the protocol)."""
    return _held_out(config, num_images)[:2]


def _held_out(config: RunConfig, num_images: int) -> tuple[Tensor, str, dict[str, Any] | None]:
    """:func:`held_out_set` and the dataset's normalisation record (signals; None for images)."""
    dataset = build_dataset_from_config(config, split=config.data.eval_split, spread=num_images)  # decodes those only
    return spread_images(dataset, num_images), dataset.split_description, getattr(dataset, "normalisation", None)


def _check_normalisation(run_dir: Path, normalisation: dict[str, Any] | None) -> None:
    """ValueError when the data's normalisation differs from the one the run was trained with (train_summary.json)."""
    trained = read_train_summary(run_dir).get("normalisation")
    if normalisation is not None and trained is not None and json.loads(json.dumps(normalisation)) != trained:
        raise ValueError(f"the data of {run_dir} normalise differently now ({normalisation}) than when the run was "
                         f"trained ({trained}): the dataset changed; evaluate on the data it was trained on")


@torch.no_grad()
def reconstruct_clean_frames(
    model: nn.Module, config: RunConfig, images: Tensor, *, batch_size: int, seed: int, device: torch.device,
    usage: CodeUsage | None = None,
    builder: Any = None,
) -> tuple[Tensor, Tensor]:
    """Reconstructs pseudo videos of ``images`` (N, C, H, W); returns (recon last frames (N, C, H, W), examples
    (2, E, T, C, H, W): the input and reconstructed videos of E = 4 images spread over ``images``).

    With ``pseudo_video.frames_as_images`` (an image model), the model sees the clean image alone (T = 1).
    ``usage``, when given, counts every code the tokenizer emits (all positions and time steps).
    Runs in float32: one pass is cheap, and PSNR/SSIM should not carry bf16 rounding (sampling, hundreds of
    passes, uses the training precision instead). ``builder``: the run's pseudo-video builder (default: the
    configured one; a run with a learned corruption passes its own, see pseudovideo.training.learned_runs.run_builder).
    """
    builder = builder if builder is not None else build_pseudo_video_builder(config.pseudo_video)
    if isinstance(builder, nn.Module):
        builder = builder.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    picks = spread_subset(images.shape[0], EXAMPLE_VIDEOS).tolist()  # not the first ones: a sorted split is one class
    recon_frames, inputs, recons = [], [], []
    for start in range(0, images.shape[0], batch_size):
        video = builder(images[start : start + batch_size].to(device), generator=generator)  # (B, T, C, H, W)
        if model_frames(config) == 1:
            video = video[:, -1:]  # (B, 1, C, H, W): an image model reconstructs the clean image
        out = model(video)
        recon = out.recon  # (B, T, C, H, W)
        if usage is not None:
            usage.add(out.indices)
        recon_frames.append(recon[:, -1].float().clamp(-1, 1).cpu())
        chosen = [i - start for i in picks if start <= i < start + video.shape[0]]
        inputs.append(video[chosen].float().cpu())
        recons.append(recon[chosen].float().clamp(-1, 1).cpu())
    return torch.cat(recon_frames), torch.stack([torch.cat(inputs), torch.cat(recons)])


@torch.no_grad()
def generate_videos(
    model: nn.Module, config: RunConfig, num_videos: int, channels: int, *, batch_size: int, seed: int,
    device: torch.device, progress: bool = False, budget_s: float | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Generates ``num_videos`` pseudo videos (N, T, C, H, W) with the configured sampler; returns them and info.

    ``progress``: a bar over the sampler's model calls with an ETA; ``budget_s``: warn as soon as sampling is
    projected to take longer (evaluation passes the run's training time).
    """
    diffusion = build_diffusion(config).to(device)
    kwargs = diffusion_sample_kwargs(config)
    shape = sample_shape(config.data)  # (R, R) images or (L,) signals
    generator = torch.Generator(device=device).manual_seed(seed)
    precision = resolve_precision(config.train.mixed_precision, device)  # sample as the model was trained
    calls = None  # model calls per batch; autoregressive sampling: learned from the first batch
    if kwargs["mode"] == "joint":
        calls = diffusion.num_timesteps if kwargs["sampler"] == "ddpm" else len(ddim_timesteps(kwargs["steps"], diffusion.num_timesteps))
    bar = SamplingProgress(num_videos, batch_size, calls, enabled=progress, budget_s=budget_s)
    denoiser = bar.counted(sampling_model(model))
    videos, info = [], {}
    start = time.perf_counter()
    try:
        for first in range(0, num_videos, batch_size):
            count = min(batch_size, num_videos - first)
            with autocast(precision, device):
                video, info = diffusion.sample(denoiser, (count, model_frames(config), channels, *shape), generator=generator, **kwargs)
            videos.append(video.float().cpu())
            bar.batch_done(count)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    info = {**info, "seconds": elapsed, "images_per_s": num_videos / max(elapsed, 1e-9)}
    return torch.cat(videos), info


def _with_warning_text(build: Callable[[], Any]) -> tuple[Any, str]:
    """``build()`` and the text of the warnings it raised (the reason a metric is skipped, kept in eval.json)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build()
    return result, "; ".join(str(w.message) for w in caught)


def _distribution_metrics(
    real: Tensor, fake: Tensor, config: RunConfig, eval_config: EvalConfig, device: torch.device,
    results: dict[str, float], skipped: dict[str, str], split_description: str = "",
) -> None:
    """SWD (weight-free) and, when the Inception weights are present, FID and KID of fake vs real images."""
    wanted = set(eval_config.metrics)
    if "swd" in wanted:
        generator = torch.Generator().manual_seed(eval_config.seed)
        results.update(M.sliced_wasserstein_distance(real, fake, generator=generator))
    if wanted & {"fid", "kid"}:
        weights, reason = _with_warning_text(lambda: M.resolve_inception_weights(eval_config.inception_weights))
        if weights is None:
            skipped.update({name: reason for name in ("fid", "kid") if name in wanted})
            return
        extractor = M.build_inception(weights).to(device)
        split = config.data.eval_split
        if "by hash" in split_description:  # a hash-held-out part: its statistics depend on the fraction
            split = f"{split}-heldout{config.data.held_out_fraction:g}"
        key = M.ReferenceStatsKey(config.data.dataset, split, config.data.resolution, real.shape[0], channels=real.shape[1])
        cache_dir = Path(eval_config.cache_dir).expanduser()
        real_stats = M.cached_reference_stats(cache_dir, key, lambda: real.to(device), extractor, eval_config.batch_size)
        fake_stats = M.InceptionFeatureStats.from_features(M.inception_features(fake.to(device), extractor, eval_config.batch_size))
        scores = M.fid_kid(real_stats, fake_stats, generator=torch.Generator().manual_seed(eval_config.seed))
        if "fid" in wanted:
            results["fid"] = scores["fid"]
        if "kid" in wanted and "kid_mean" in scores:
            results["kid"], results["kid_std"] = scores["kid_mean"], scores["kid_std"]


def _classifier_frechet_distance(
    real: Tensor, fake: Tensor, config: RunConfig, eval_config: EvalConfig, device: torch.device,
    results: dict[str, float], skipped: dict[str, str], protocol: dict[str, Any],
) -> None:
    """``cfd``: Fréchet distance of real vs fake (N, C, H, W) in the dataset-trained classifier's features."""
    if "cfd" not in eval_config.metrics:
        return
    try:
        net = prepare_feature_net(dataclasses.replace(config, eval=eval_config), real.shape[1])
    except UnlabelledDatasetError as err:
        skipped["cfd"] = str(err)
        return
    model = net.model.to(device)
    real_features = classifier_features(real, model, eval_config.batch_size)  # (N, 128)
    fake_features = classifier_features(fake, model, eval_config.batch_size)
    results["cfd"] = M.feature_frechet_distance(real_features, fake_features)
    protocol["cfd"] = net.describe()


def _codebook_entry(usage: CodeUsage, num_inputs: int) -> dict[str, Any]:
    """eval.json's ``codebook`` entry (usage, perplexity, what was counted); warns when the usage is low."""
    entry: dict[str, Any] = {**usage.stats(), "codebook_size": usage.codebook_size, "num_quantizers": usage.num_quantizers,
                             "codes_counted": usage.codes_counted,
                             "counted": f"every code emitted for the {num_inputs} evaluation inputs (all positions and "
                                        "time steps; usage = share of the K codes used at least once, perplexity = "
                                        "exp(entropy) of the code histogram; means over quantizer stages)"}
    if entry["codebook_usage"] < LOW_CODEBOOK_USAGE:
        entry["warning"] = (f"codebook usage {entry['codebook_usage']:.1%} < {LOW_CODEBOOK_USAGE:.0%} of K={usage.codebook_size}: "
                            "see model.<family>.kmeans_init, dead_code_threshold, cosine_codes or quantizer=fsq")
        warnings.warn(entry["warning"], stacklevel=3)
    return entry


def _linear_probe(
    model: nn.Module, config: RunConfig, eval_config: EvalConfig, channels: int, device: torch.device,
    results: dict[str, float], skipped: dict[str, str], protocol: dict[str, Any],
) -> None:
    """``probe`` and ``probe_random``: linear-probe accuracy of frozen features (pseudovideo.evaluation.probe)."""
    if "probe" not in eval_config.metrics:
        return
    try:
        scores, protocol["probe"] = probe_metrics(model, config, eval_config, channels, device, skipped)
    except ProbeSkipped as err:
        skipped["probe"] = str(err)
        return
    results.update(scores)


def evaluated_checkpoint(run_dir: str | Path, *, use_ema: bool) -> dict[str, Any]:
    """The checkpoint an evaluation of ``run_dir`` uses: the newest intact one (a corrupt newer one is
    skipped with a warning). Returns its step, folder, weights file and that file's sha256, plus
    ``skipped_newer`` naming the newer folders passed over, when any."""
    folder = resolve_checkpoint(run_dir)
    manifest = json.loads((folder / MANIFEST).read_text())  # verified by resolve_checkpoint
    weights = EMA if use_ema and EMA in manifest["files"] else MODEL
    record: dict[str, Any] = {
        "step": int(manifest["step"]), "folder": str(folder), "weights_file": weights,
        "sha256": manifest["files"][weights]["sha256"],
    }
    newer = [path.name for step, path in list_checkpoints(Path(run_dir) / "checkpoints") if step > record["step"]]
    if newer:
        record["skipped_newer"] = f"{', '.join(newer)} (corrupt or incomplete)"
    return record


def _check_finite(results: dict[str, float], run_dir: Path, checkpoint: dict[str, Any]) -> None:
    bad = {name: value for name, value in results.items() if math.isnan(value)}
    if bad:
        values = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise NonFiniteMetricError(
            f"evaluation of {run_dir} at checkpoint step {checkpoint['step']} gave {values}: the weights are "
            f"unusable (a diverged training?); eval.json was not written"
        )


def evaluate_run(
    run_dir: str | Path, eval_config: EvalConfig | None = None, *, device: str = "auto", trust_code: bool = False
) -> dict[str, Any]:
    """Evaluates a trained run; writes ``eval.json`` and ``eval.md`` into it (an earlier evaluation is kept as
    ``eval-1.json`` / ``eval-1.md``, ...) and returns the result dict.

    ``eval_config`` defaults to the run's own ``eval`` section. The result holds ``metrics`` (name -> value),
    ``skipped`` (name -> reason), ``protocol`` (how every number was made) and ``train`` (the training summary);
    for tokenizers also ``rate``: {codes_per_image, bits_per_image, codebook_size, num_quantizers, description}
    (see :class:`~pseudovideo.models.tokenizer.TokenizerRate`) and ``codebook``: {codebook_usage,
    codebook_perplexity, codebook_size, num_quantizers, codes_counted, counted[, warning]} over every code emitted.
    ``trust_code``: see :func:`~pseudovideo.training.runs.load_run`.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    eval_config = eval_config or load_run_config(run_dir).eval
    checkpoint = evaluated_checkpoint(run_dir, use_ema=eval_config.use_ema)
    config, model, channels = load_run(run_dir, use_ema=eval_config.use_ema, device=dev, checkpoint=checkpoint["folder"],
                                       trust_code=trust_code)
    results: dict[str, float] = {}
    skipped: dict[str, str] = {}
    # metrics the data's modality does not define (image metrics on signals) are skipped with the reason
    skipped.update({m: r for m in eval_config.metrics if (r := unsupported_metric_reason(config.data, m)) is not None})
    eval_config = dataclasses.replace(eval_config, metrics=[m for m in eval_config.metrics if m not in skipped])
    wanted = set(eval_config.metrics)
    real, split_description, normalisation = _held_out(config, eval_config.num_images)  # (N, C, H, W) or (N, C, L)
    _check_normalisation(run_dir, normalisation)
    is_tokenizer = tokenizer_run(config)
    pictures = run_dir / "pictures"
    protocol: dict[str, Any] = {
        "task": _task_description(is_tokenizer, model_frames(config)),
        "model_weights": "ema" if eval_config.use_ema else "raw",
        "eval_split": f"{config.data.eval_split} (images evenly spaced over the split)",
        "split": split_description,
        "num_images": int(real.shape[0]),
        **sample_protocol(config.data),  # resolution, or a signal's length
        **({"normalisation": normalisation} if normalisation is not None else {}),
        "pseudo_video": describe_pseudo_video(config.pseudo_video),
        "frames_seen_by_model": model_frames(config),
        "seed": eval_config.seed,
        "checkpoint": checkpoint,
    }
    codebook = None
    if is_tokenizer:
        builder = run_builder(config, run_dir, checkpoint["folder"])  # a learned corruption: the one trained on
        rate = model.rate(model_frames(config))
        usage = CodeUsage(rate.codebook_size, rate.num_quantizers)
        fake, example = reconstruct_clean_frames(model, config, real, batch_size=eval_config.batch_size, seed=eval_config.seed,
                                                 device=dev, usage=usage, builder=builder)
        codebook = _codebook_entry(usage, real.shape[0])
        if "psnr" in wanted:
            results["psnr"] = float(M.psnr(fake, real).mean())
        if "ssim" in wanted:
            results["ssim"] = float(M.ssim(fake, real).mean())
        if "mse" in wanted:
            results["mse"] = float(signal_metrics.mse(fake, real).mean())
        if "snr" in wanted:
            results["snr"] = float(signal_metrics.snr(fake, real).mean())
            protocol["snr"] = "10 log10(sum original^2 / sum error^2) per item in dB, in the data's [-1, 1] units, mean"
        if "lpips" in wanted:
            net = "alex" if config.data.resolution >= 31 else "vgg"
            lpips, reason = _with_warning_text(lambda: build_perceptual_loss(net, eval_config.lpips_weights))
            if lpips is None:
                skipped["lpips"] = reason
            else:
                lpips = lpips.to(dev)
                values = [lpips(f.to(dev), r.to(dev)) for f, r in zip(_batches(fake, eval_config.batch_size), _batches(real, eval_config.batch_size))]
                results["lpips"] = float(torch.cat(values).mean())
                protocol["lpips"] = f"lpips package v0.1, {net} backbone"
        protocol["reference"] = "the same held-out images (reconstruction FID/SWD)"
        upscale = picture_upscale(config.data.resolution)
        shown = spread_subset(real.shape[0], 16)  # images spread over the evaluated ones
        save_side_by_side([real[shown], fake[shown]], ["original", "reconstruction"], pictures / "eval_reconstructions.png", upscale=upscale)
        save_reconstruction_grid(example, config, pictures / "eval_pseudo_videos_then_reconstructions.png", upscale=upscale)
    else:
        # As many generated images as real ones (SWD compares equal-sized sets; a small split caps both).
        videos, info = generate_videos(model, config, real.shape[0], channels, batch_size=eval_config.batch_size, seed=eval_config.seed,
                                       device=dev, progress=config.train.progress, budget_s=read_train_summary(run_dir).get("wall_time_s"))
        fake = videos[:, -1].clamp(-1, 1)
        skipped.update({m: "compares reconstructions with their originals; a diffusion run generates" for m in ("mse", "snr")
                        if m in wanted})
        results["sampling_images_per_s"] = info.pop("images_per_s")
        protocol["sampler"] = {k: v for k, v in info.items() if k != "seconds"}
        if getattr(model, "num_levels", 0) > 0:
            protocol["level_conditioning"] = (
                f"image UNet conditioned on the frame level (T-1-frame index, {model.num_levels} levels); "
                "sampled at level 0, the clean last frame"
            )
        protocol["reference"] = f"{real.shape[0]} real images of the {config.data.eval_split} split"
        upscale = picture_upscale(config.data.resolution)
        save_image_grid(fake[:64], pictures / "eval_samples.png", nrow=8, upscale=upscale)
        if videos.shape[1] > 1:
            save_generated_grid(videos[:8], config, pictures / "eval_generated_pseudo_videos.png", upscale=upscale)
    _distribution_metrics(real, fake, config, eval_config, dev, results, skipped, split_description)
    _classifier_frechet_distance(real, fake, config, eval_config, dev, results, skipped, protocol)
    _linear_probe(model, config, eval_config, channels, dev, results, skipped, protocol)
    if "fid" in results or "kid" in results:
        protocol["fid_kid"] = M.evaluation_protocol(
            num_real=real.shape[0], num_generated=fake.shape[0], reference_split=config.data.eval_split,
            resolution=config.data.resolution, weights=protocol["model_weights"],
        )
    if "swd_avg" in results:
        protocol["swd"] = "Laplacian-pyramid sliced Wasserstein distance (Karras et al. 2018), x1e3, no downloaded weights"
    _check_finite(results, run_dir, checkpoint)
    result = {"run": str(run_dir), "family": config.model.family, "metrics": results, "skipped": skipped,
              "protocol": protocol, "train": read_train_summary(run_dir), "code": code_record()}
    if is_tokenizer:
        result["rate"] = rate.as_dict()
        result["codebook"] = codebook
    _write_result(run_dir, result)
    return result


def _write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Writes eval.json and eval.md; an earlier evaluation is kept as eval-1.json, ..., never replaced (and said)."""
    for name in ("eval.json", "eval.md"):
        kept = keep_previous(run_dir / name)
        if kept is not None:
            print(f"earlier {name} kept as {kept}")
    (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
    (run_dir / "eval.md").write_text(format_eval_markdown(result))


def _task_description(is_tokenizer: bool, frames: int) -> str:
    """The protocol's ``task`` line: what the evaluated image is."""
    if is_tokenizer:
        return "reconstruction of the clean last frame" if frames > 1 else "reconstruction of the image"
    return "generation (last frame of a generated pseudo video)" if frames > 1 else "generation (a generated image)"


def _column_labels(config: RunConfig, frames: int) -> list[str]:
    """Labels of a picture's ``frames`` columns: the run's frames with their levels, or plain indices."""
    builder = build_pseudo_video_builder(config.pseudo_video)
    return builder.frame_labels() if builder.num_frames == frames else frame_labels(frames)


def save_reconstruction_grid(example: Tensor, config: RunConfig, path: Path, *, upscale: int = 1) -> Path:
    """Inputs and reconstructions side by side: ``example`` (2, B, T, C, H, W) -> B rows, the T input frames then
    the T reconstructed frames, under the headers "input" and "reconstruction" (an image model: T = 1)."""
    inputs, recons = example
    frames = inputs.shape[1]
    labels = _column_labels(config, frames)
    return save_labelled_grid(
        torch.cat([inputs, recons], dim=1), path, column_labels=labels * 2, upscale=upscale,
        groups=[("input", frames), ("reconstruction", frames)], marked_columns=[frames - 1, 2 * frames - 1],
    )


_CLIP_NOTE = {"last": "the sampler clips x0 on the clean frame only", "all": "the sampler clips x0 on every frame",
              "none": "the sampler clips no frame"}


def save_generated_grid(videos: Tensor, config: RunConfig, path: Path, *, upscale: int = 1) -> Path:
    """Generated pseudo videos (B, T, C, H, W), every frame drawn clamped to [-1, 1] alike; each column says
    which share of its pixels lie beyond [-1, 1] (frames the sampler does not clip may), so that a saturated
    corrupted frame reads as what it is."""
    outside = (videos.abs() > 1).float().mean(dim=(0, *range(2, videos.ndim)))  # (T,)
    labels = [f"{label}\nout {share:.0%}" for label, share in zip(_column_labels(config, videos.shape[1]), outside.tolist())]
    clip = config.diffusion.clip_x0
    title = (f"sampled with diffusion.clip_x0={clip}: {_CLIP_NOTE.get(clip, clip)}\n"
             "out = share of pixels beyond [-1, 1], drawn clamped")
    return save_labelled_grid(videos, path, column_labels=labels,
                              marked_columns=[videos.shape[1] - 1], title=title, upscale=upscale)


def group_skipped(skipped: dict[str, str]) -> dict[str, str]:
    """Skipped metrics with one reason said once: ``{"fid": r, "kid": r}`` -> ``{"fid, kid": r}``."""
    names_by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        names_by_reason.setdefault(reason, []).append(name)
    return {", ".join(names): reason for reason, names in names_by_reason.items()}


def _protocol_text(value: Any) -> str:
    """A protocol entry as text: a mapping as "key: value; ..." (not a Python repr)."""
    return "; ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def format_eval_markdown(result: dict[str, Any]) -> str:
    """A run's evaluation as a markdown table with its protocol underneath."""
    lines = [f"## Evaluation of {result['run']} ({result['family']})", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in result["metrics"].items()]
    lines += [f"| {names} | skipped: {reason} |" for names, reason in group_skipped(result["skipped"]).items()]
    rate = result.get("rate")
    if rate:
        lines += ["", f"Rate: {rate['codes_per_image']} codes = {rate['bits_per_image']:.0f} bits per clean image "
                      f"(codebook K={rate['codebook_size']}, {rate['num_quantizers']} quantizer stage(s)); {rate['description']}"]
    codebook = result.get("codebook")
    if codebook:
        lines += ["", f"Codebook: usage {codebook['codebook_usage']:.1%} of K={codebook['codebook_size']}, perplexity "
                      f"{codebook['codebook_perplexity']:.1f} ({codebook['codes_counted']} codes: {codebook['counted']})"]
        if "warning" in codebook:
            lines.append(f"Warning: {codebook['warning']}")
    lines += ["", "Protocol:"]
    lines += [f"- {key}: {_protocol_text(value)}" for key, value in result["protocol"].items() if key != "checkpoint"]
    checkpoint = result["protocol"].get("checkpoint")
    if checkpoint:
        lines.append(
            f"- checkpoint: step {checkpoint['step']} ({checkpoint['folder']}), {checkpoint['weights_file']} "
            f"sha256 {checkpoint['sha256']}" + (f"; skipped newer {checkpoint['skipped_newer']}" if "skipped_newer" in checkpoint else "")
        )
    return "\n".join(lines) + "\n"
