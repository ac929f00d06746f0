"""Pictures of 1-D signals: line plots where images get pixel grids.

The functions of :mod:`pseudovideo.pictures` hand signals to these (they tell them from images by the number of
dimensions of what they are given), so callers draw images and signals alike. Signals are tensors in [-1, 1]
(values beyond are drawn cut at +-1.5, so a noisy frame reads as noisy), one line per channel (matplotlib's
colour cycle), on a shared y axis.

- :func:`save_signal_frames`: pseudo sequences (R, K, C, L) with **frames as rows** (labelled with their index
  and levels; the clean frame, last, labelled and framed in green) and sequences as columns;
- :func:`save_signal_grid`: signals (N, C, L), a grid of small plots;
- :func:`save_signal_overlay`: several sets of signals (originals, reconstructions) overlaid plot by plot;
- :func:`save_signal_gif`: pseudo sequences animated frame by frame, the clean frame held last.

PNG files carry text chunks: ``frames`` (the row labels), ``groups``, ``marked_frames``, ``title`` (frame grids)
and ``kind`` = ``signals``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["save_signal_frames", "save_signal_gif", "save_signal_grid", "save_signal_overlay"]

Y_LIMIT = 1.5  # y axis of every plot: [-1.5, 1.5]
CELL = (1.7, 0.8)  # inches per plot (width, height)
MARK_COLOUR = "#009600"  # the clean frame, as in pictures.MARK_COLOUR


def _figure(rows: int, cols: int, title: str = "", label_width: float = 0.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = CELL[0] * cols + label_width + 0.3, CELL[1] * rows + (0.5 if title else 0.2)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # Agg without pyplot's global backend
    axes = np.array(fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True))
    if title:
        fig.suptitle(title, fontsize=8)
    return fig, axes


def _plot(ax, signal: Tensor, *, style: str = "-", alpha: float = 1.0, label: str | None = None) -> None:
    """One signal (C, L): a line per channel."""
    values = signal.detach().float().cpu().clamp(-Y_LIMIT, Y_LIMIT).numpy()
    for c, line in enumerate(values):
        ax.plot(line, style, linewidth=0.8, alpha=alpha, color=f"C{c % 10}", label=label if c == 0 else None)
    ax.set_ylim(-Y_LIMIT, Y_LIMIT)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: str | os.PathLike, metadata: dict[str, object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in {"kind": "signals", **metadata}.items()}
    fig.savefig(path, format="png", metadata=text)
    return path


def _check(signals: Tensor, ndim: int, shape: str) -> None:
    if signals.ndim != ndim or 0 in signals.shape:
        raise ValueError(f"signals must have shape {shape} with no empty axis, got {tuple(signals.shape)}")


def save_signal_frames(
    tiles: Tensor, path: str | os.PathLike, *, column_labels: Sequence[str], row_labels: Sequence[str] | None = None,
    groups: Sequence[tuple[str, int]] | None = None, marked_columns: Sequence[int] = (), title: str = "",
) -> Path:
    """Pseudo sequences tiles (R, K, C, L) in [-1, 1] as a PNG with the K frames as rows and the R sequences as
    columns (the transpose of an image grid: a signal reads best wide). ``column_labels``: the K frame labels
    (written left of the rows); ``row_labels``: R sequence names (above the columns); ``groups``: ``[(name, count),
    ...]`` summing to K, each name prefixed to its frames' labels (e.g. input | reconstruction); ``marked_columns``:
    frames labelled and framed in green (the clean one)."""
    _check(tiles, 4, "(R, K, C, L)")
    seqs, frames = tiles.shape[:2]
    groups = [(str(n), int(c)) for n, c in groups] if groups else [("", frames)]
    if len(column_labels) != frames or (row_labels is not None and len(row_labels) != seqs):
        raise ValueError(f"got {len(column_labels)} frame labels and {len(row_labels or [])} sequence labels for "
                         f"{seqs} sequences of {frames} frames")
    if sum(c for _, c in groups) != frames:
        raise ValueError(f"groups {groups} must have counts summing to the {frames} frames")
    prefixes = [name for name, count in groups for _ in range(count)]
    labels = [f"{p}\n{label}" if p else str(label) for p, label in zip(prefixes, column_labels)]
    marked = {int(k) % frames for k in marked_columns}
    fig, axes = _figure(frames, seqs, title, label_width=1.0)
    for k in range(frames):
        for r in range(seqs):
            ax = axes[k, r]
            _plot(ax, tiles[r, k])
            if k in marked:
                for side in ax.spines.values():
                    side.set_edgecolor(MARK_COLOUR)
                    side.set_linewidth(2)
            if k == 0 and row_labels:
                ax.set_title(str(row_labels[r]), fontsize=7)
        axes[k, 0].set_ylabel(labels[k], rotation=0, ha="right", va="center", fontsize=6,
                              color=MARK_COLOUR if k in marked else "black")
    fig.tight_layout()
    return _save(fig, path, {"frames": labels, "groups": groups, "marked_frames": sorted(marked), "title": title,
                             "sequences": list(row_labels or [])})


def save_signal_grid(signals: Tensor, path: str | os.PathLike, *, nrow: int = 8) -> Path:
    """Signals (N, C, L) in [-1, 1] as a grid of plots, ``nrow`` per row."""
    _check(signals, 3, "(N, C, L)")
    count = signals.shape[0]
    cols = max(1, min(nrow, count))
    rows = math.ceil(count / cols)
    fig, axes = _figure(rows, cols)
    for i, ax in enumerate(axes.flat):
        if i < count:
            _plot(ax, signals[i])
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path, {"count": count})


def save_signal_overlay(sets: Sequence[Tensor], labels: Sequence[str], path: str | os.PathLike, *, ncol: int = 8) -> Path:
    """Sets of signals, each (N, C, L) (e.g. originals and reconstructions), overlaid plot by plot: the first set
    solid, the others dashed, named in a legend."""
    if len(sets) != len(labels) or not sets:
        raise ValueError(f"got {len(sets)} sets of signals and {len(labels)} labels; expected one label per set, at least one")
    for s in sets:
        _check(s, 3, "(N, C, L)")
    count = min(s.shape[0] for s in sets)
    cols = max(1, min(ncol, count))
    fig, axes = _figure(math.ceil(count / cols), cols)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_axis_off()
            continue
        for k, (s, label) in enumerate(zip(sets, labels)):
            _plot(ax, s[i], style="-" if k == 0 else "--", alpha=1.0 if k == 0 else 0.8, label=str(label))
    axes.flat[0].legend(fontsize=5, loc="upper right")
    fig.tight_layout()
    return _save(fig, path, {"sets": list(labels)})


def save_signal_gif(videos: Tensor, path: str | os.PathLike, *, frame_ms: int = 250, hold_last_ms: int = 1000) -> Path:
    """Pseudo sequences (B, T, C, L) as a looping GIF: GIF frame t plots frame t of every sequence side by side."""
    from PIL import Image

    _check(videos, 4, "(B, T, C, L)")
    if frame_ms <= 0 or hold_last_ms <= 0:
        raise ValueError(f"frame_ms and hold_last_ms must be positive, got {frame_ms} and {hold_last_ms}")
    batch, steps = videos.shape[:2]
    pictures = []
    for t in range(steps):
        fig, axes = _figure(1, batch, f"frame {t}" + (" (clean)" if t == steps - 1 else ""))
        for b in range(batch):
            _plot(axes[0, b], videos[b, t])
        fig.tight_layout()
        fig.canvas.draw()
        pictures.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=[frame_ms] * (steps - 1) + [hold_last_ms] if steps > 1 else hold_last_ms)
    return path
