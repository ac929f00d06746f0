"""Evaluate a trained run on the clean (last) frame, with the full protocol written beside every number.

- Tokenizers (VQVAE, C-ViViT): build pseudo videos of held-out images, reconstruct them, and compare
  the reconstructed last frame with the clean image: PSNR, SSIM, LPIPS, and the distribution metrics
  SWD (weight-free), FID, KID between reconstructions and originals (reconstruction FID, as in the paper).
  Beside them the tokenizer's rate: the codes (and bits) per clean image that the last frame's decoder reads,
  so tokenizers are compared at a known rate.
- Diffusion models (UNet, video UNet): generate pseudo videos from noise; the last frame is the
  generated image; SWD / FID / KID against held-out real images, plus sampling speed.
Metrics that need downloaded weights (LPIPS, FID, KID) are skipped with the reason when the weights
are absent; SWD, PSNR and SSIM need none. CFD and CKD (classifier Fréchet and kernel distances, not FID/KID)
use a small residual classifier trained on the dataset's labelled training split (``pseudovideo.metrics.feature_net``,
cached, trained on first use: ``pseudovideo.factory.feature_net``); they are skipped with the reason for unlabelled
datasets. ``probe`` is the linear-probe accuracy of the model's frozen features of the clean frame, beside the same
architecture with random weights (``probe_random``; see
``pseudovideo.evaluation.probe``). Tokenizers also report their codebook usage and perplexity over the evaluation's codes,
with a warning under ``LOW_CODEBOOK_USAGE``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from pseudovideo import metrics as M
from pseudovideo.checkpoint import EMA, MANIFEST, MODEL, list_checkpoints, resolve_checkpoint
from pseudovideo.config import EvalConfig, RunConfig
from pseudovideo.config.modality import sample_protocol, unsupported_metric_reason
from pseudovideo.data.datasets import spread_subset
from pseudovideo.evaluation.inference import _batches, generate_videos, held_out_data, reconstruct_clean_frames
from pseudovideo.evaluation.probe import probe_metrics
from pseudovideo.evaluation.report import _task_description, format_eval_markdown, save_generated_grid, save_reconstruction_grid
from pseudovideo.factory.datasets import ProbeSkipped
from pseudovideo.factory.feature_net import UnlabelledDatasetError, prepare_feature_net
from pseudovideo.factory.models import is_tokenizer as tokenizer_run
from pseudovideo.factory.models import load_run, model_frames
from pseudovideo.factory.pseudo_videos import describe_pseudo_video
from pseudovideo.factory.run_folder import keep_previous, load_run_config, read_train_summary
from pseudovideo.metrics import signals as signal_metrics
from pseudovideo.models.quantizer import CodeUsage
from pseudovideo.pictures import picture_upscale, save_image_grid, save_side_by_side
from pseudovideo.training.distributed import resolve_device
from pseudovideo.training.learned_runs import run_builder
from pseudovideo.training.losses import build_perceptual_loss
from pseudovideo.training.provenance import code_record

LOW_CODEBOOK_USAGE = 0.25  # evaluation warns when a tokenizer uses a smaller share of its codebook

class NonFiniteMetricError(RuntimeError):
    """An evaluation produced a NaN metric (unusable weights); nothing is written."""


def _with_warning_text(build: Callable[[], Any]) -> tuple[Any, str]:
    """``build()`` and the text of the warnings it raised (the reason a metric is skipped, kept in eval.json)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build()
    return result, "; ".join(str(w.message) for w in caught)


def _check_normalisation(run_dir: Path, normalisation: dict[str, Any] | None) -> None:
    """ValueError when the data's normalisation differs from the one the run was trained with (train_summary.json)."""
    trained = read_train_summary(run_dir).get("normalisation")
    if normalisation is not None and trained is not None and json.loads(json.dumps(normalisation)) != trained:
        raise ValueError(f"the data of {run_dir} normalise differently now ({normalisation}) than when the run was "
                         f"trained ({trained}): the dataset changed; evaluate on the data it was trained on")


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


def _classifier_distances(
    real: Tensor, fake: Tensor, config: RunConfig, eval_config: EvalConfig, device: torch.device,
    results: dict[str, float], skipped: dict[str, str], protocol: dict[str, Any],
) -> None:
    """``cfd`` / ``ckd``: Fréchet and unbiased kernel distance of real vs fake (N, C, H, W) in the features of the
    dataset-trained classifier (resized to its side first); skipped with the reason for an unlabelled dataset."""
    wanted = {"cfd", "ckd"} & set(eval_config.metrics)
    if not wanted:
        return
    try:
        net = prepare_feature_net(dataclasses.replace(config, eval=eval_config), real.shape[1])
    except UnlabelledDatasetError as err:
        skipped.update({name: str(err) for name in sorted(wanted)})
        return
    net.model.to(device)
    real_features = net.features(real, eval_config.batch_size)  # (N, 256)
    fake_features = net.features(fake, eval_config.batch_size)
    protocol["feature_net"] = net.describe(evaluated_side=real.shape[-1])
    if "cfd" in wanted:
        results["cfd"] = M.feature_frechet_distance(real_features, fake_features)
        protocol["cfd"] = (f"Fréchet distance of Gaussian fits (unbiased covariance) of the feature_net features of "
                           f"{real.shape[0]} real and {fake.shape[0]} evaluated images")
    if "ckd" in wanted:
        generator = torch.Generator().manual_seed(eval_config.seed)
        mean, std, size = M.feature_kernel_distance(real_features, fake_features, subsets=eval_config.ckd_subsets,
                                                    generator=generator)
        results["ckd"], results["ckd_std"] = mean, std
        rounds = "one subset: the whole sets, std 0" if size == real.shape[0] == fake.shape[0] else (
            f"{eval_config.ckd_subsets} random subsets of {size} per set, mean and std over subsets")
        protocol["ckd"] = (f"unbiased MMD^2 (KID's estimator) with the kernel (x.y/{real_features.shape[1]} + 1)^3 "
                           f"in the feature_net features; {rounds}")


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


@dataclass
class _Evaluation:
    """One evaluation in progress: the run, its trained model, the held-out images and what has been found."""

    run_dir: Path
    config: RunConfig
    eval_config: EvalConfig
    model: nn.Module
    channels: int
    device: torch.device
    real: Tensor  # (N, C, H, W) held-out images in [-1, 1]
    results: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)


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
    ``trust_code``: see :func:`~pseudovideo.factory.models.load_run`.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    eval_config = eval_config or load_run_config(run_dir).eval
    checkpoint = evaluated_checkpoint(run_dir, use_ema=eval_config.use_ema)
    config, model, channels = load_run(run_dir, use_ema=eval_config.use_ema, device=dev, checkpoint=checkpoint["folder"],
                                       trust_code=trust_code)
    # metrics the data's modality does not define (image metrics on signals) are skipped with the reason
    unsupported = {m: r for m in eval_config.metrics if (r := unsupported_metric_reason(config.data, m)) is not None}
    eval_config = dataclasses.replace(eval_config, metrics=[m for m in eval_config.metrics if m not in unsupported])
    real, split_description, normalisation = held_out_data(config, eval_config.num_images)  # (N, C, H, W) or (N, C, L)
    _check_normalisation(run_dir, normalisation)
    ev = _Evaluation(run_dir, config, eval_config, model, channels, dev, real)
    ev.skipped.update(unsupported)
    is_tokenizer = tokenizer_run(config)
    ev.protocol = {
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
    fake, extra = _evaluate_tokenizer(ev, checkpoint) if is_tokenizer else (_evaluate_diffusion(ev), {})
    _distribution_metrics(real, fake, config, eval_config, dev, ev.results, ev.skipped, split_description)
    _classifier_distances(real, fake, config, eval_config, dev, ev.results, ev.skipped, ev.protocol)
    _linear_probe(model, config, eval_config, channels, dev, ev.results, ev.skipped, ev.protocol)
    _describe_distribution_metrics(ev, fake)
    _check_finite(ev.results, run_dir, checkpoint)
    result = {"run": str(run_dir), "family": config.model.family, "metrics": ev.results, "skipped": ev.skipped,
              "protocol": ev.protocol, "train": read_train_summary(run_dir), "code": code_record(), **extra}
    _write_result(run_dir, result)
    return result


def _evaluate_tokenizer(ev: _Evaluation, checkpoint: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Reconstructs the pseudo videos of the held-out images: PSNR, SSIM, LPIPS of the clean frame, the pictures;
    returns the reconstructed clean frames (N, C, H, W) and eval.json's ``rate`` and ``codebook`` entries."""
    config, eval_config, dev, real = ev.config, ev.eval_config, ev.device, ev.real
    wanted = set(eval_config.metrics)
    builder = run_builder(config, ev.run_dir, checkpoint["folder"])  # a learned corruption: the one trained on
    rate = ev.model.rate(model_frames(config))
    usage = CodeUsage(rate.codebook_size, rate.num_quantizers)
    fake, example = reconstruct_clean_frames(ev.model, config, real, batch_size=eval_config.batch_size, seed=eval_config.seed,
                                             device=dev, usage=usage, builder=builder)
    codebook = _codebook_entry(usage, real.shape[0])
    if "psnr" in wanted:
        ev.results["psnr"] = float(M.psnr(fake, real).mean())
    if "ssim" in wanted:
        ev.results["ssim"] = float(M.ssim(fake, real).mean())
    if "mse" in wanted:
        ev.results["mse"] = float(signal_metrics.mse(fake, real).mean())
    if "snr" in wanted:
        ev.results["snr"] = float(signal_metrics.snr(fake, real).mean())
        ev.protocol["snr"] = "10 log10(sum original^2 / sum error^2) per item in dB, in the data's [-1, 1] units, mean"
    if "lpips" in wanted:
        net = "alex" if config.data.resolution >= 31 else "vgg"
        lpips, reason = _with_warning_text(lambda: build_perceptual_loss(net, eval_config.lpips_weights))
        if lpips is None:
            ev.skipped["lpips"] = reason
        else:
            lpips = lpips.to(dev)
            values = [lpips(f.to(dev), r.to(dev)) for f, r in zip(_batches(fake, eval_config.batch_size), _batches(real, eval_config.batch_size))]
            ev.results["lpips"] = float(torch.cat(values).mean())
            ev.protocol["lpips"] = f"lpips package v0.1, {net} backbone"
    ev.protocol["reference"] = "the same held-out images (reconstruction FID/SWD)"
    upscale = picture_upscale(config.data.resolution)
    shown = spread_subset(real.shape[0], 16)  # images spread over the evaluated ones
    pictures = ev.run_dir / "pictures"
    save_side_by_side([real[shown], fake[shown]], ["original", "reconstruction"], pictures / "eval_reconstructions.png", upscale=upscale)
    save_reconstruction_grid(example, config, pictures / "eval_pseudo_videos_then_reconstructions.png", upscale=upscale)
    return fake, {"rate": rate.as_dict(), "codebook": codebook}


def _evaluate_diffusion(ev: _Evaluation) -> Tensor:
    """Generates as many images as there are held-out ones (SWD compares equal-sized sets) and draws them; returns
    the generated clean frames (N, C, H, W)."""
    config, eval_config, real = ev.config, ev.eval_config, ev.real
    videos, info = generate_videos(ev.model, config, real.shape[0], ev.channels, batch_size=eval_config.batch_size,
                                   seed=eval_config.seed, device=ev.device, progress=config.train.progress,
                                   budget_s=read_train_summary(ev.run_dir).get("wall_time_s"))
    fake = videos[:, -1].clamp(-1, 1)
    ev.skipped.update({m: "compares reconstructions with their originals; a diffusion run generates" for m in ("mse", "snr")
                       if m in eval_config.metrics})
    ev.results["sampling_images_per_s"] = info.pop("images_per_s")
    ev.protocol["sampler"] = {k: v for k, v in info.items() if k != "seconds"}
    if getattr(ev.model, "num_levels", 0) > 0:
        ev.protocol["level_conditioning"] = (
            f"image UNet conditioned on the frame level (T-1-frame index, {ev.model.num_levels} levels); "
            "sampled at level 0, the clean last frame"
        )
    ev.protocol["reference"] = f"{real.shape[0]} real images of the {config.data.eval_split} split"
    upscale = picture_upscale(config.data.resolution)
    pictures = ev.run_dir / "pictures"
    save_image_grid(fake[:64], pictures / "eval_samples.png", nrow=8, upscale=upscale)
    if videos.shape[1] > 1:
        save_generated_grid(videos[:8], config, pictures / "eval_generated_pseudo_videos.png", upscale=upscale)
    return fake


def _describe_distribution_metrics(ev: _Evaluation, fake: Tensor) -> None:
    """The protocol of the FID / KID and SWD that were computed."""
    if "fid" in ev.results or "kid" in ev.results:
        ev.protocol["fid_kid"] = M.evaluation_protocol(
            num_real=ev.real.shape[0], num_generated=fake.shape[0], reference_split=ev.config.data.eval_split,
            resolution=ev.config.data.resolution, weights=ev.protocol["model_weights"],
        )
    if "swd_avg" in ev.results:
        ev.protocol["swd"] = "Laplacian-pyramid sliced Wasserstein distance (Karras et al. 2018), x1e3, no downloaded weights"


def _write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Writes eval.json and eval.md; an earlier evaluation is kept as eval-1.json, ..., never replaced (and said)."""
    for name in ("eval.json", "eval.md"):
        kept = keep_previous(run_dir / name)
        if kept is not None:
            print(f"earlier {name} kept as {kept}")
    (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
    (run_dir / "eval.md").write_text(format_eval_markdown(result))
