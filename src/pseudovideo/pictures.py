"""Picture utilities: image grids, pseudo-video grids and GIFs, labelled comparisons, curve plots.

All image inputs are tensors in [-1, 1] (clamped), on any device; they are quantised to uint8 as
``round((x + 1) * 127.5)`` and written as RGB (grey images are repeated over three channels).
Every function creates missing parent folders and returns the written path. Video grids are labelled: a
header names every frame column (index and corruption levels; the clean frame is marked in green), and the PNG
carries the labels and the tile layout as text chunks (``columns``, ``rows``, ``groups``, ``marked_columns``,
``title``, ``layout``), so that tools and tests can read what each column shows.

1-D signals ((N, C, L) where images are (N, C, H, W), one dimension fewer) are drawn as line plots by
:mod:`pseudovideo.signal_pictures`: each function below hands them over, so callers draw both modalities alike.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torch import Tensor
from torchvision.utils import make_grid

__all__ = [
    "picture_upscale",
    "to_uint8",
    "save_images",
    "save_image_grid",
    "save_video_grid",
    "save_labelled_grid",
    "frame_labels",
    "save_video_gif",
    "save_side_by_side",
    "plot_curves",
    "plot_csv_curves",
    "read_csv_series",
    "save_loss_curves",
]

GRID_PADDING = 2  # pixels between tiles (and around the border) in every grid


def picture_upscale(side: int) -> int:
    """Integer upscale that makes small images (16x16 digits, 32x32 CIFAR) about 64 px in a viewer."""
    return max(1, 64 // max(1, side))


def to_uint8(images: Tensor) -> Tensor:
    """Images (..., C, H, W) in [-1, 1] -> uint8 (..., C, H, W) on the CPU, clamped and rounded."""
    return ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def _upscale(images: Tensor, upscale: int) -> Tensor:
    """Nearest-neighbour upscale of (..., H, W) by an integer factor -> (..., H*u, W*u)."""
    if not isinstance(upscale, int) or isinstance(upscale, bool) or upscale < 1:
        raise ValueError(f"upscale must be a positive int, got {upscale!r}")
    if upscale == 1:
        return images
    return images.repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)


def _grid(images: Tensor, nrow: int, upscale: int) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 RGB grid (3, H', W') with ``nrow`` tiles per row."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (N = 0): nothing to draw")
    tiles = _upscale(to_uint8(images), upscale)  # (N, C, H*u, W*u)
    if tiles.shape[0] == 1:  # make_grid skips the border for a single image; keep one layout for all N
        tile = tiles[0].expand(3, *tiles.shape[-2:])  # (3, H, W)
        return torch.nn.functional.pad(tile, (GRID_PADDING,) * 4, value=0)
    return make_grid(tiles, nrow=nrow, padding=GRID_PADDING, pad_value=0)  # (3, H', W')


def _to_pil(grid: Tensor) -> Image.Image:
    """uint8 (3, H, W) -> RGB PIL image."""
    return Image.fromarray(rearrange(grid, "c h w -> h w c").contiguous().numpy())  # mode RGB


def _prepare(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_image_grid(images: Tensor, path: str | os.PathLike, *, nrow: int = 8, upscale: int = 1) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid with ``nrow`` images per row.

    Tiles are upscaled ``upscale`` times (nearest) and separated by 2 black pixels.
    """
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if images.ndim == 3:  # signals (N, C, L): line plots
        from pseudovideo.signal_pictures import save_signal_grid

        return save_signal_grid(images, path, nrow=nrow)
    path = _prepare(path)
    _to_pil(_grid(images, nrow, upscale)).save(path, format="PNG")
    return path


def save_images(images: Tensor, directory: str | os.PathLike) -> list[Path]:
    """Save each image (N, C, H, W) in [-1, 1], C in (1, 3), as its own PNG ``00000.png``, ... at its own size
    (no border, no upscaling), as outside metric tools expect; returns the paths. Signals (N, C, L) are saved as
    float32 ``00000.npy`` files of shape (C, L) (what a ``series:PATH`` folder reads)."""
    if images.ndim == 3:
        import numpy as np

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{i:05d}.npy" for i in range(images.shape[0])]
        for path, signal in zip(paths, images.detach().float().cpu().numpy()):
            np.save(path, signal)
        return paths
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(to_uint8(images)):
        array = rearrange(pixels, "c h w -> h w c").numpy()  # (H, W, C)
        path = directory / f"{i:05d}.png"
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path, format="PNG")
        paths.append(path)
    return paths


def save_video_grid(
    videos: Tensor,
    path: str | os.PathLike,
    *,
    upscale: int = 1,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save pseudo videos (B, T, C, H, W) in [-1, 1] as a labelled PNG: one row per video, one column per frame.

    The last column is frame T-1, the clean image of each pseudo video, marked in green. ``column_labels``
    (T strings, default :func:`frame_labels` without levels) head the columns; see :func:`save_labelled_grid`.
    """
    if videos.ndim not in (4, 5):
        raise ValueError(f"videos must have shape (B, T, C, H, W) or (B, T, C, L), got {tuple(videos.shape)}")
    steps = videos.shape[1]
    labels = list(column_labels) if column_labels is not None else frame_labels(steps)
    return save_labelled_grid(videos, path, column_labels=labels, row_labels=row_labels, marked_columns=[steps - 1],
                              title=title, upscale=upscale)


def frame_labels(num_frames: int, levels: Tensor | None = None, names: Sequence[str] = (), *, copies: bool = False,
                 note: str | None = None) -> list[str]:
    """Column labels of a pseudo video's T frames: ``"t=0"`` plus one ``"blur 2"`` line per operator, the last
    ``"t=T-1" / "clean"`` (T = 1: ``"clean image"``). ``levels`` (T, K) are the builder's levels of the K operators
    ``names``; ``copies`` labels the frames of the clean-copies control; ``note`` is written under every corrupted
    frame instead of its levels (e.g. ``"noise"`` for the noise-frames control)."""
    if levels is not None and tuple(levels.shape) != (num_frames, len(names)):
        raise ValueError(f"levels must have shape (T={num_frames}, K={len(names)}), got {tuple(levels.shape)}")
    if num_frames == 1:  # an image model's one frame
        return ["clean image"]
    labels = []
    for t in range(num_frames):
        lines = [f"t={t}"]
        if t == num_frames - 1:
            lines.append("clean")
        elif copies:
            lines.append("copy")
        elif note is not None:
            lines.append(note)
        elif levels is not None:
            lines += [f"{name} {float(level):.3g}" for name, level in zip(names, levels[t])]
        labels.append("\n".join(lines))
    return labels


LABEL_MARGIN = 4  # pixels around text
GROUP_GAP = 10  # pixels between column groups (e.g. inputs | reconstructions)
MARK_COLOUR = (0, 150, 0)  # the clean frame's outline and label


def _text_size(text: str) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` (may hold newlines) in the default font."""
    if not text:
        return 0, 0
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=ImageFont.load_default(), spacing=2)
    return box[2], box[3]


def _place_columns(
    column_labels: Sequence[str], groups: Sequence[tuple[str, int]], tile_w: int, left: int
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """x and width of every column (as wide as its tile and its label), and the (x, width) of every group: a group
    label wider than its columns widens them evenly; groups are GROUP_GAP apart."""
    widths = [max(tile_w, _text_size(label)[0] + LABEL_MARGIN) for label in column_labels]
    xs, spans, x, first = [], [], left + GRID_PADDING, 0
    for name, count in groups:
        extra = _text_size(name)[0] + LABEL_MARGIN - (sum(widths[first : first + count]) + GRID_PADDING * (count - 1))
        for k in range(first, first + count):
            widths[k] += max(0, -(-extra // count))
            xs.append(x)
            x += widths[k] + GRID_PADDING
        spans.append((xs[first], x - GRID_PADDING - xs[first]))
        first += count
        x += GROUP_GAP
    return xs, widths, spans


def _signal_frames(tiles: Tensor, path: str | os.PathLike, column_labels: Sequence[str], row_labels: Sequence[str] | None,
                   groups: Sequence[tuple[str, int]] | None, marked_columns: Sequence[int], title: str) -> Path:
    """:func:`pseudovideo.signal_pictures.save_signal_frames` of pseudo sequences tiles (R, K, C, L)."""
    from pseudovideo.signal_pictures import save_signal_frames

    return save_signal_frames(tiles, path, column_labels=column_labels, row_labels=row_labels, groups=groups,
                              marked_columns=marked_columns, title=title)


def save_labelled_grid(
    tiles: Tensor,
    path: str | os.PathLike,
    *,
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    groups: Sequence[tuple[str, int]] | None = None,
    marked_columns: Sequence[int] = (),
    title: str = "",
    upscale: int = 1,
) -> Path:
    """Save tiles (R, K, C, H, W) in [-1, 1] as a PNG of R rows and K labelled columns on a white canvas.

    ``column_labels``: K strings (may hold newlines) above the columns; ``row_labels``: R strings left of the
    rows; ``groups``: ``[(name, count), ...]`` summing to K, each named above its columns and separated from the
    next by a gap (e.g. inputs | reconstructions); ``marked_columns``: columns outlined and labelled in green (the
    clean frame); ``title``: text above everything. A column is as wide as its widest label. The labels and the
    tile positions are written as PNG text chunks (see the module docstring). Signals (R, K, C, L) are drawn as
    line plots with the K frames as rows (:func:`pseudovideo.signal_pictures.save_signal_frames`).
    """
    if tiles.ndim == 4:  # signals: line plots with the frames as rows
        return _signal_frames(tiles, path, column_labels, row_labels, groups, marked_columns, title)
    groups = _checked_groups(tiles, column_labels, row_labels, groups)
    rows, cols = tiles.shape[:2]
    pixels = _upscale(to_uint8(tiles), upscale).expand(-1, -1, 3, -1, -1)  # (R, K, 3, h, w) uint8
    tile_h, tile_w = pixels.shape[-2:]
    left = max(_text_size(label)[0] for label in row_labels) + 2 * LABEL_MARGIN if row_labels else 0
    col_x, col_w, spans = _place_columns(column_labels, groups, tile_w, left)
    tile_x = [x + (w - tile_w) // 2 for x, w in zip(col_x, col_w)]
    title_h = _text_size(title)[1] + 2 * LABEL_MARGIN if title else 0
    group_h = max(_text_size(name)[1] for name, _ in groups) + LABEL_MARGIN if any(name for name, _ in groups) else 0
    label_y = title_h + group_h + LABEL_MARGIN
    top = label_y + max(_text_size(label)[1] for label in column_labels) + LABEL_MARGIN
    row_y = [top + GRID_PADDING + r * (tile_h + GRID_PADDING) for r in range(rows)]
    width = max(col_x[-1] + col_w[-1] + GRID_PADDING, _text_size(title)[0] + 2 * LABEL_MARGIN)
    canvas = Image.new("RGB", (width, row_y[-1] + tile_h + GRID_PADDING), color=(255, 255, 255))
    draw, font, black = ImageDraw.Draw(canvas), ImageFont.load_default(), (0, 0, 0)
    draw.multiline_text((LABEL_MARGIN, LABEL_MARGIN), title, fill=black, font=font, spacing=2)
    for (name, _), (x, span) in zip(groups, spans):
        draw.text((x + (span - _text_size(name)[0]) // 2, title_h), name, fill=black, font=font)
    marked = {int(k) % cols for k in marked_columns}
    for k, label in enumerate(column_labels):
        draw.multiline_text((col_x[k] + (col_w[k] - _text_size(label)[0]) // 2, label_y), label, font=font, spacing=2,
                            fill=MARK_COLOUR if k in marked else black, align="center")
    for r, y in enumerate(row_y):
        if row_labels:
            draw.text((LABEL_MARGIN, y + (tile_h - _text_size(row_labels[r])[1]) // 2), row_labels[r], fill=black, font=font)
        for k, x in enumerate(tile_x):
            canvas.paste(_to_pil(pixels[r, k]), (x, y))
            if k in marked:  # a green outline in the padding around the clean frame
                draw.rectangle((x - 2, y - 2, x + tile_w + 1, y + tile_h + 1), outline=MARK_COLOUR, width=2)
    texts = {"columns": list(column_labels), "rows": list(row_labels or []), "groups": groups,
             "marked_columns": sorted(marked), "title": title,
             "layout": {"tile": [tile_h, tile_w], "column_x": tile_x, "row_y": row_y}}
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    path = _prepare(path)
    canvas.save(path, format="PNG", pnginfo=info)
    return path


def _checked_groups(tiles: Tensor, column_labels: Sequence[str], row_labels: Sequence[str] | None,
                    groups: Sequence[tuple[str, int]] | None) -> list[tuple[str, int]]:
    """The column groups of :func:`save_labelled_grid` (one unnamed group by default); ValueError when the tiles
    (R, K, C, H, W), the labels and the groups do not fit together."""
    if tiles.ndim != 5 or tiles.shape[2] not in (1, 3) or 0 in tiles.shape[:2]:
        raise ValueError(f"tiles must have shape (R, K, C, H, W) with R, K >= 1 and C in (1, 3), got {tuple(tiles.shape)}")
    rows, cols = tiles.shape[:2]
    groups = [(str(name), int(count)) for name, count in groups] if groups else [("", cols)]
    if len(column_labels) != cols or (row_labels is not None and len(row_labels) != rows):
        raise ValueError(f"got {len(column_labels)} column labels and {len(row_labels or [])} row labels for {rows} x {cols} tiles")
    if sum(count for _, count in groups) != cols or any(count < 1 for _, count in groups):
        raise ValueError(f"groups {groups} must have positive counts summing to the {cols} columns")
    return groups


def save_video_gif(
    videos: Tensor,
    path: str | os.PathLike,
    *,
    frame_ms: int = 250,
    hold_last_ms: int = 1000,
    upscale: int = 1,
) -> Path:
    """Save pseudo videos (B, T, C, H, W) in [-1, 1] as a looping animated GIF.

    GIF frame t shows frame t of all B videos side by side; each frame lasts ``frame_ms`` and the
    last (clean) one ``hold_last_ms``. Pillow merges consecutive identical frames into one longer
    frame, so a GIF of identical frames has fewer than T frames.
    """
    if videos.ndim == 4:  # pseudo sequences of signals (B, T, C, L)
        from pseudovideo.signal_pictures import save_signal_gif

        return save_signal_gif(videos, path, frame_ms=frame_ms, hold_last_ms=hold_last_ms)
    if videos.ndim != 5:
        raise ValueError(f"videos must have shape (B, T, C, H, W), got {tuple(videos.shape)}")
    if frame_ms <= 0 or hold_last_ms <= 0:
        raise ValueError(f"frame_ms and hold_last_ms must be positive, got {frame_ms} and {hold_last_ms}")
    batch, steps = videos.shape[:2]
    frames = [_to_pil(_grid(videos[:, t], batch, upscale)) for t in range(steps)]  # each (H', B*W')
    durations = [frame_ms] * (steps - 1) + [hold_last_ms]
    path = _prepare(path)
    frames[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=durations if steps > 1 else hold_last_ms,
        loop=0,
    )
    return path


def save_side_by_side(
    rows: Sequence[Tensor], labels: Sequence[str], path: str | os.PathLike, *, upscale: int = 1
) -> Path:
    """Save rows of images, each (N_i, C, H_i, W_i) in [-1, 1], stacked vertically with a text label left of each.

    Typical use: originals vs reconstructions of several models, compared tile by tile.
    """
    if len(rows) != len(labels):
        raise ValueError(f"got {len(rows)} rows but {len(labels)} labels; expected one label per row")
    if len(rows) == 0:
        raise ValueError("rows is empty: nothing to draw")
    if rows[0].ndim == 3:  # signals (N, C, L): overlaid line plots
        from pseudovideo.signal_pictures import save_signal_overlay

        return save_signal_overlay(rows, labels, path)
    strips = [_to_pil(_grid(row, row.shape[0] if row.ndim == 4 else 1, upscale)) for row in rows]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), str(label), font=font) for label in labels]
    margin = 6
    label_width = max(b[2] - b[0] for b in boxes) + 2 * margin
    width = label_width + max(s.width for s in strips)
    heights = [max(s.height, b[3] - b[1] + 2 * margin) for s, b in zip(strips, boxes)]
    canvas = Image.new("RGB", (width, sum(heights)), color=(255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    top = 0
    for strip, label, box, height in zip(strips, labels, boxes, heights):
        text_y = top + (height - (box[3] - box[1])) // 2 - box[1]
        draw.text((margin - box[0], text_y), str(label), fill=(0, 0, 0), font=font)
        canvas.paste(strip, (label_width, top + (height - strip.height) // 2))
        top += height
    path = _prepare(path)
    canvas.save(path, format="PNG")
    return path


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save a PNG line plot of named ``(x, y)`` series (e.g. losses against steps for several runs).

    ``metadata``: extra PNG text chunks; ``curves`` (the series names, JSON) is always written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("series is empty: nothing to plot")
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)  # Agg canvas without touching pyplot's global backend
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r} has {len(xs)} x values but {len(ys)} y values")
        ax.plot(list(xs), list(ys), label=str(name), marker="." if len(xs) < 30 else None)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = _prepare(path)
    fig.savefig(path, format="png", metadata={**(metadata or {}), "curves": json.dumps(list(series))})
    return path


def read_csv_series(csv_path: str | os.PathLike, keys: Sequence[str]) -> dict[str, tuple[list[float], list[float]]]:
    """Columns ``keys`` of a CSV log as ``{key: (steps, values)}`` against its ``step`` column.

    Empty or non-finite cells are skipped, so columns logged at different intervals read fine.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV log {str(csv_path)!r} does not exist")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "step" not in columns:
            raise ValueError(f"CSV log {str(csv_path)!r} has no 'step' column (columns: {columns})")
        missing = [k for k in keys if k not in columns]
        if missing:
            raise ValueError(f"CSV log {str(csv_path)!r} has no column(s) {missing}; available: {columns}")
        series: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
        for row in reader:
            try:
                step = float(row["step"])
            except (TypeError, ValueError):
                continue
            for k in keys:
                try:
                    value = float(row[k])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    series[k][0].append(step)
                    series[k][1].append(value)
    return series


def plot_csv_curves(
    csv_path: str | os.PathLike,
    keys: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool = False,
) -> Path:
    """Plot columns ``keys`` of a CSV log against its ``step`` column as a PNG (see :func:`read_csv_series`)."""
    return plot_curves(read_csv_series(csv_path, keys), path, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy)


# The clean frame's term of each family's logged loss: what an image model (T = 1) and a video model share.
CLEAN_FRAME_TERMS = {"recon_clean": "clean-frame reconstruction", "mse_last_frame": "clean-frame denoising MSE"}


def save_loss_curves(
    csv_path: str | os.PathLike, path: str | os.PathLike, *, title: str = "", clean_terms: Sequence[str] | None = None
) -> Path | None:
    """Plot a run's ``log.csv``: the training loss and its clean-frame term against steps, on a log scale when
    every value is positive. ``clean_terms``: the columns holding the clean-frame term (default: those of
    :data:`CLEAN_FRAME_TERMS` that were logged). Returns None when the log has no rows yet."""
    with Path(csv_path).open(newline="") as f:
        columns = csv.DictReader(f).fieldnames or []
    terms = CLEAN_FRAME_TERMS if clean_terms is None else clean_terms
    keys = ["loss", *(key for key in terms if key in columns)]
    series = read_csv_series(csv_path, keys)
    if not series["loss"][0]:
        return None
    named = {("loss (total)" if key == "loss" else f"{key} ({CLEAN_FRAME_TERMS.get(key, 'clean frame')})"): series[key]
             for key in keys}
    positive = all(value > 0 for _, values in named.values() for value in values)  # a GAN term can make it negative
    return plot_curves(named, path, title=title, ylabel="training loss", logy=positive)
