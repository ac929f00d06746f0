"""Markov-order diagnostic for pseudo videos (paper section 4.1).

L*_k is the best achievable error predicting the clean last frame from the last k corrupted
frames. For a first-order (Markov) pseudo video, frames before T-2 carry no extra information
given frame T-2, so L*_k = L*_1; for a higher-order one, L*_k < L*_1. We estimate L*_k with a
linear (ridge) predictor of the clean centre pixel from local patches of the last k corrupted
frames, trained on some images and scored on held-out ones.

The predictor sees only local patches, so for spatial operators (blur) the patches of earlier
first-order frames reveal pixels of frame T-2 just outside its patch and give a small gain (about
3 % for blur+noise on 16x16 digits with patch_size 3, under 2 % with patch_size 5); for pixelwise
noise the first-order rows are flat to well under 1 %.

Only sufficient statistics (X^T X, X^T Y, Y^T Y in float64) are accumulated, batch by batch, so
memory stays bounded by one batch of pseudo videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from pseudovideo.pseudo_video.builder import PseudoVideoBuilder
from pseudovideo.pseudo_video.corruptions import as_image_rows


def sample_patch_features(
    video: Tensor, centres_y: Tensor, centres_x: Tensor, patch_size: int, patch_height: int | None = None
) -> tuple[Tensor, Tensor]:
    """Features and targets at pixel centres of pseudo videos.

    video (B, T, C, H, W); centres_y, centres_x (B, P) integer pixel coordinates at least
    patch_size // 2 away from the borders. Returns features (B*P, (T-1)*C*patch_size**2), ordered
    frame T-2 first, then T-3, ..., 0 (so the first k*C*patch_size**2 columns are the last k
    corrupted frames), and targets (B*P, C), the clean centre pixel of frame T-1. ``patch_height``
    (odd, default ``patch_size``): patches of patch_height x patch_size pixels (1 for one-row images, signals).
    """
    b, t, _, _, _ = video.shape
    r = patch_size // 2
    offsets = torch.arange(-r, r + 1, device=video.device)
    r_rows = (patch_size if patch_height is None else patch_height) // 2
    offsets_rows = torch.arange(-r_rows, r_rows + 1, device=video.device)
    rows = centres_y[:, :, None, None] + offsets_rows[None, None, :, None]  # (B, P, ph, 1)
    cols = centres_x[:, :, None, None] + offsets[None, None, None, :]  # (B, P, 1, ps)
    batch = torch.arange(b, device=video.device)[:, None, None, None]  # (B, 1, 1, 1)
    corrupted = video[:, : t - 1].flip(1)  # (B, T-1, C, H, W): frames T-2, T-3, ..., 0
    patches = corrupted[batch, :, :, rows, cols]  # (B, P, ps, ps, T-1, C)
    features = rearrange(patches, "b p i j t c -> (b p) (t c i j)")
    targets = video[:, t - 1][torch.arange(b, device=video.device)[:, None], :, centres_y, centres_x]  # (B, P, C)
    return features, rearrange(targets, "b p c -> (b p) c")


class _RidgeStats:
    """Running float64 sufficient statistics of a regression with a bias column in front."""

    def __init__(self, num_features: int, num_targets: int) -> None:
        self.gram = torch.zeros(num_features + 1, num_features + 1, dtype=torch.float64)  # (1+D, 1+D)
        self.cross = torch.zeros(num_features + 1, num_targets, dtype=torch.float64)  # (1+D, C)
        self.target_sq = 0.0
        self.count = 0

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Add rows features (M, D) and targets (M, C)."""
        features = features.to(dtype=torch.float64, device="cpu")
        targets = targets.to(dtype=torch.float64, device="cpu")
        design = torch.cat([torch.ones(features.shape[0], 1, dtype=torch.float64), features], dim=1)  # (M, 1+D)
        self.gram += design.T @ design
        self.cross += design.T @ targets
        self.target_sq += float(targets.square().sum())
        self.count += features.shape[0]

    def mse(self, weights: Tensor, num_columns: int) -> float:
        """Mean squared error per target value of weights (num_columns, C) on the first num_columns columns."""
        gram = self.gram[:num_columns, :num_columns]
        cross = self.cross[:num_columns]
        sse = self.target_sq - 2.0 * float((weights * cross).sum()) + float((weights * (gram @ weights)).sum())
        return max(sse, 0.0) / (self.count * weights.shape[1])


def _fit_ridge(stats: _RidgeStats, num_columns: int, ridge: float) -> Tensor:
    """Closed-form ridge weights (num_columns, C) on the first num_columns design columns; bias unpenalised."""
    gram = stats.gram[:num_columns, :num_columns] / stats.count
    cross = stats.cross[:num_columns] / stats.count
    penalty = torch.full((num_columns,), ridge, dtype=torch.float64)
    penalty[0] = 0.0
    return torch.linalg.solve(gram + torch.diag(penalty), cross)


def markov_order_diagnostic(
    images: Tensor,
    builder: PseudoVideoBuilder,
    *,
    patch_size: int = 3,
    ridge: float = 1e-6,
    pixels_per_image: int = 16,
    holdout_fraction: float = 0.25,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> list[dict]:
    """Estimate L*_k for k = 1..T-1 with ridge regression on images (N, C, H, W).

    Builds pseudo videos, samples pixels_per_image centres per image, and regresses the clean
    centre pixel (C values) on the patch_size x patch_size x C patches of frames T-2, ..., T-1-k.
    Signals (N, C, L) are one-row images: their patches are spans of patch_size samples.
    Images are split into train and held-out parts (holdout_fraction). The ridge penalty is
    ridge * |w|^2 on the per-row-averaged least squares (bias unpenalised); it only guards against
    collinear frames and must stay well below the corruption's noise variance between consecutive
    frames, otherwise it biases larger k (e.g. 1e-3 makes the first-order noise rows rise by ~10 %
    for noise std 0.2 over 8 frames). Returns one row per k:
    {"k", "mse" (held-out), "mse_train", "num_features", "n_train", "n_test"}.
    """
    images = as_image_rows(images)  # signals (N, C, L): one-row images, patches 1 x patch_size spans
    n_test = _check_diagnostic(images, builder, patch_size, ridge, pixels_per_image, holdout_fraction, batch_size)
    c, num_frames = images.shape[1], builder.num_frames
    stats = _accumulate(images, builder, n_test, patch_size, pixels_per_image, generator, batch_size)
    per_frame = c * _patch_height(images, patch_size) * patch_size
    rows = []
    for k in range(1, num_frames):
        num_columns = 1 + k * per_frame
        weights = _fit_ridge(stats["train"], num_columns, ridge)
        rows.append(
            {
                "k": k,
                "mse": stats["test"].mse(weights, num_columns),
                "mse_train": stats["train"].mse(weights, num_columns),
                "num_features": num_columns - 1,
                "n_train": stats["train"].count,
                "n_test": stats["test"].count,
            }
        )
    return rows


def format_diagnostic_table(rows: Sequence[dict], title: str) -> str:
    """Markdown table of diagnostic rows: k, held-out MSE, train MSE and held-out MSE relative to k = 1."""
    if not rows:
        raise ValueError("format_diagnostic_table needs at least one row, got none")
    base = rows[0]["mse"]
    lines = [
        f"### {title}",
        "",
        "| k | held-out MSE | train MSE | MSE / MSE(k=1) |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row["mse"] / base if base > 0 else float("nan")
        lines.append(f"| {row['k']} | {row['mse']:.6f} | {row['mse_train']:.6f} | {ratio:.4f} |")
    return "\n".join(lines) + "\n"


def format_informativeness(report: dict, title: str) -> str:
    """Markdown table of one informativeness report: per frame PSNR / SSIM to the clean frame and diversity."""
    def cell(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    gain = report.get("gain")
    lines = [f"#### informativeness: {title}", "",
             f"gain (L*_1 - L*_{{T-1}}) / L*_1 = {cell(gain, 4)}" + (f" ({report['note']})" if report.get("note") else ""),
             "", "| frame t | PSNR to clean (dB) | SSIM to clean | RMS(frame t+1 - frame t) |", "|---:|---:|---:|---:|"]
    for t, (p, s, d) in enumerate(zip(report.get("psnr", []), report.get("ssim", []), report.get("diversity", []))):
        lines.append(f"| {t} | {cell(p, 2)} | {cell(s, 3)} | {cell(d, 4)} |")
    return "\n".join(lines)


def _check_diagnostic(images: Tensor, builder: PseudoVideoBuilder, patch_size: int, ridge: float, pixels_per_image: int,
                      holdout_fraction: float, batch_size: int) -> int:
    """The number of held-out images; ValueError naming the first argument of the diagnostic that cannot be."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a 4-D tensor (N, C, H, W) or signals (N, C, L), got shape {shape}")
    n, c, h, w = images.shape
    num_frames = builder.num_frames
    if builder.construction == "copies":
        raise ValueError(
            "the Markov-order diagnostic needs corrupted frames (construction first_order or higher_order), got "
            "construction 'copies': every frame is the clean image, so L*_k = 0 for every k and there is nothing to measure"
        )
    if num_frames < 2:
        raise ValueError(f"the diagnostic needs pseudo videos with at least 2 frames, got num_frames={num_frames}")
    side = w if h == 1 else min(h, w)  # a one-row image (a signal): patches along its length
    if patch_size < 1 or patch_size % 2 == 0 or patch_size > side:
        raise ValueError(f"patch_size must be an odd integer in [1, min(H, W)={side}], got {patch_size}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if pixels_per_image < 1 or batch_size < 1:
        raise ValueError(f"pixels_per_image and batch_size must be >= 1, got {pixels_per_image}, {batch_size}")
    n_test = int(round(n * holdout_fraction))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(
            f"need at least one train and one held-out image, got N={n} with holdout_fraction={holdout_fraction}"
        )
    return n_test


def _patch_height(images: Tensor, patch_size: int) -> int:
    """Rows of a patch: ``patch_size``, or 1 for one-row images (signals: spans along the length)."""
    return 1 if images.shape[-2] == 1 else patch_size


def _accumulate(images: Tensor, builder: PseudoVideoBuilder, n_test: int, patch_size: int, pixels_per_image: int,
                generator: torch.Generator | None, batch_size: int) -> dict[str, _RidgeStats]:
    """The sufficient statistics of the train and held-out images' patch features, batch by batch (the held-out
    images first, drawn by one permutation of ``generator``)."""
    n, c, h, w = images.shape
    num_frames = builder.num_frames
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=gen_device).to(images.device)
    splits = {"test": order[:n_test], "train": order[n_test:]}
    patch_height = _patch_height(images, patch_size)
    per_frame = c * patch_height * patch_size
    r, r_rows = patch_size // 2, patch_height // 2
    stats = {}
    for split, indices in splits.items():
        stats[split] = _RidgeStats((num_frames - 1) * per_frame, c)
        for start in range(0, len(indices), batch_size):
            batch = images[indices[start : start + batch_size]]
            video = builder(batch, generator)  # (B, T, C, H, W)
            shape = (batch.shape[0], pixels_per_image)
            ys = torch.randint(r_rows, h - r_rows, shape, generator=generator, device=gen_device).to(images.device)
            xs = torch.randint(r, w - r, shape, generator=generator, device=gen_device).to(images.device)
            features, targets = sample_patch_features(video, ys, xs, patch_size, patch_height)
            stats[split].update(features, targets)
    return stats
