"""What an evaluation writes besides eval.json: eval.md (metrics with their protocol) and the labelled pictures
of pseudo videos with their reconstructions or of generated pseudo videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pseudovideo.config import RunConfig
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
from pseudovideo.pictures import frame_labels, save_labelled_grid


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
    outside = (videos.abs() > 1).float().mean(dim=(0, *range(2, videos.ndim)))  # (T,): every frame of images or signals
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
