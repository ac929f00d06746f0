"""How informative is a pseudo video? The numbers `diagnose` and every run's summary report, and the
differentiable gain the informativeness search maximises.

Per pseudo video construction, on N clean images x:

- ``gain``: (L*_1 - L*_{T-1}) / L*_1, the paper's section 4.1 test: how much better the best linear (ridge)
  predictor of the clean centre pixel does from the patches of all T-1 corrupted frames than from the last
  one alone (:func:`pseudovideo.pseudo_video.diagnose.markov_order_diagnostic`; 0 for a first-order pseudo video, > 0 when
  earlier frames add information about x). ``mse_k``: the held-out L*_k, k = 1..T-1.
- ``psnr`` / ``ssim``: of each corrupted frame t = 0..T-2 to the clean frame (metrics.psnr / metrics.ssim,
  frames clamped to [-1, 1] as those metrics do): the information kept about x frame by frame.
- ``diversity``: RMS difference between consecutive frames t and t+1 (t = 0..T-2), pixel units of [-1, 1]:
  how much the video changes from frame to frame (0 for copies).

:func:`ridge_gain` computes the same gain from one batch of pseudo videos, differentiably in the videos (the
closed-form ridge fit in float64 with torch.linalg.solve), so that corruption parameters can ascend it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pseudovideo import metrics as M
from pseudovideo.pseudo_video.corruptions import as_image_rows
from pseudovideo.pseudo_video.diagnose import markov_order_diagnostic, sample_patch_features

__all__ = ["frame_quality", "measure_informativeness", "plot_informativeness", "ridge_gain", "summary_numbers"]

DIAGNOSTIC_SETTINGS = {"patch_size": 3, "ridge": 1e-6, "pixels_per_image": 16, "holdout_fraction": 0.25}
#: result-table columns of :func:`summary_numbers` and their titles (experiment tables)
INFO_COLUMNS = ("info_gain", "info_psnr", "info_ssim", "info_diversity")
INFO_TITLES = {"info_gain": "info gain", "info_psnr": "frames PSNR", "info_ssim": "frames SSIM",
               "info_diversity": "frame diversity"}
INFO_NOTE = ("Informativeness of each run's pseudo videos (train_summary.json, 256 training images): info gain = "
             "(L*_1 - L*_{T-1}) / L*_1 of the best linear predictor of the clean frame (section 4.1; blank for copies "
             "and T = 1); frames PSNR / SSIM = mean over the corrupted frames of their PSNR (dB) / SSIM to the clean "
             "frame (blank PSNR: identical frames); frame diversity = mean RMS difference of consecutive frames.")


def _fit_heldout_mse(design: Tensor, targets: Tensor, n_train: int, ridge: float) -> Tensor:
    """Held-out MSE per target value of a ridge fit on the first n_train rows of design (M, 1+D) (bias unpenalised)."""
    train_x, train_y = design[:n_train], targets[:n_train]
    gram = train_x.T @ train_x / n_train
    penalty = torch.full((design.shape[1],), ridge, dtype=design.dtype, device=design.device)
    penalty[0] = 0.0
    weights = torch.linalg.solve(gram + torch.diag(penalty), train_x.T @ train_y / n_train)  # (1+D, C)
    return (design[n_train:] @ weights - targets[n_train:]).square().mean()


def ridge_gain(
    video: Tensor, generator: torch.Generator | None = None, *, patch_size: int = 3, ridge: float = 1e-6,
    pixels_per_image: int = 16, holdout_fraction: float = 0.25,
) -> dict[str, Tensor]:
    """Differentiable section 4.1 gain of one batch of pseudo videos (B, T, C, H, W), B >= 2, T >= 3.

    The ridge predictors of the clean centre pixel from the last corrupted frame (L*_1) and from all T-1
    (L*_{T-1}) are fitted on the first images of the batch and scored on the last ``holdout_fraction`` of them,
    at ``pixels_per_image`` random centres per image. Returns scalars {"gain", "mse_1", "mse_all"}.
    """
    b, t, c, h, w = video.shape
    if t < 3 or b < 2:
        raise ValueError(f"the gain needs T >= 3 frames and B >= 2 images, got T={t}, B={b}")
    r = patch_size // 2
    device = generator.device if generator is not None else video.device
    ys = torch.randint(r, h - r, (b, pixels_per_image), generator=generator, device=device).to(video.device)
    xs = torch.randint(r, w - r, (b, pixels_per_image), generator=generator, device=device).to(video.device)
    features, targets = sample_patch_features(video, ys, xs, patch_size)  # (B*P, (T-1)*C*ps^2), (B*P, C)
    features, targets = features.double(), targets.double()
    n_test = min(b - 1, max(1, round(b * holdout_fraction)))
    n_train = (b - n_test) * pixels_per_image  # rows are ordered image by image
    design = torch.cat([torch.ones_like(features[:, :1]), features], dim=1)
    per_frame = c * patch_size * patch_size
    mse_1 = _fit_heldout_mse(design[:, : 1 + per_frame], targets, n_train, ridge)
    mse_all = _fit_heldout_mse(design, targets, n_train, ridge)
    return {"gain": (mse_1 - mse_all) / mse_1, "mse_1": mse_1, "mse_all": mse_all}


@torch.no_grad()
def frame_quality(video: Tensor) -> dict[str, list[float | None]]:
    """PSNR and SSIM of each frame of video (N, T, C, H, W) to its last (clean) frame, and consecutive-frame RMS.

    Returns {"psnr": (T-1 values), "ssim": (T-1,), "diversity": (T-1,)} averaged over images; a PSNR of a frame
    identical to the clean one (infinite) is None.
    """
    clean = video[:, -1].float()
    psnr, ssim, diversity = [], [], []
    for t in range(video.shape[1] - 1):
        frame = video[:, t].float()
        value = float(M.psnr(frame, clean).mean())
        psnr.append(value if math.isfinite(value) else None)
        ssim.append(float(M.ssim(frame, clean).mean()) if min(frame.shape[-2:]) >= 6 else None)
        diversity.append(float((video[:, t + 1].float() - frame).square().mean().sqrt()))
    return {"psnr": psnr, "ssim": ssim, "diversity": diversity}


def measure_informativeness(images: Tensor, builder: Any, *, seed: int = 0, batch_size: int = 256,
                    rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The informativeness numbers (module docstring) of ``builder``'s pseudo videos of images (N, C, H, W)
    (or signals (N, C, L), measured as one-row images: PSNR per frame, no SSIM, 1 x 3 patches for the gain).

    ``builder``: a PseudoVideoBuilder or LearnedPseudoVideos (anything called as builder(x, generator=g) with
    ``num_frames`` and ``construction``). The gain needs T >= 2 and corrupted frames (None for copies and T = 1).
    The L*_k rows are those of ``markov_order_diagnostic(images, builder, generator seeded seed)`` (the same
    numbers as `diagnose` prints); pass them as ``rows`` when already computed.
    """
    images = as_image_rows(images)  # signals (N, C, L) are measured as one-row images (N, C, 1, L)
    construction, frames = builder.construction, builder.num_frames
    out: dict[str, Any] = {"construction": construction, "num_frames": frames, "num_images": int(images.shape[0]),
                           "gain": None, "mse_k": []}
    if frames < 2:
        return {**out, "psnr": [], "ssim": [], "diversity": [], "note": "T = 1: the clean images, nothing to measure"}
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        videos = torch.cat([builder(images[i : i + batch_size], generator=generator) for i in range(0, len(images), batch_size)])
    out.update(frame_quality(videos))
    if construction == "copies":
        return {**out, "note": "copies: every frame is the clean image"}
    if rows is None:
        with torch.no_grad():
            rows = markov_order_diagnostic(images, builder, generator=torch.Generator().manual_seed(seed), **DIAGNOSTIC_SETTINGS)
    out["mse_k"] = [row["mse"] for row in rows]
    base = rows[0]["mse"]
    out["gain"] = (base - rows[-1]["mse"]) / base if base > 0 else None
    return out


def summary_numbers(report: Mapping[str, Any]) -> dict[str, float | None]:
    """Scalars of a report for result tables: gain, mean PSNR / SSIM of the corrupted frames, mean diversity."""

    def mean(values: Sequence[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    return {"info_gain": report.get("gain"), "info_psnr": mean(report.get("psnr", [])),
            "info_ssim": mean(report.get("ssim", [])), "info_diversity": mean(report.get("diversity", []))}


def plot_informativeness(reports: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """One PNG: PSNR, SSIM and diversity against the frame index, and L*_k / L*_1 against k, one line per report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    panels = [("psnr", "PSNR to the clean frame (dB)", "frame t"), ("ssim", "SSIM to the clean frame", "frame t"),
              ("diversity", "RMS(frame t+1 - frame t)", "frame t"), ("mse_k", "L*_k / L*_1", "k (last k frames)")]
    for i, (key, label, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        for colour, (name, report) in enumerate(reports.items()):
            values = list(report.get(key) or [])
            if key == "mse_k" and values:
                values = [v / values[0] for v in values] if values[0] > 0 else []
            xs = [j + (1 if key == "mse_k" else 0) for j, v in enumerate(values) if v is not None]
            ys = [v for v in values if v is not None]
            if ys:
                ax.plot(xs, ys, marker="o", label=name, color=f"C{colour}")  # one colour per report in every panel
        ax.set_xlabel(xlabel)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in fig.axes:  # every construction once (copies has no PSNR: it is identical to the clean frame)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.axes[1].legend(list(handles.values()), list(handles), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
