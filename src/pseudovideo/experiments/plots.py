"""The experiment plots: each metric against the plot's x column (one line or bar set per group, one panel per
panel value), and metric against rate for tokenizers; mean over seeds with 95 % interval error bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pseudovideo.evaluation.stats import Interval
from pseudovideo.experiments.spec import ExperimentSpec
from pseudovideo.experiments.tables import _as_number, aggregate_over_seeds


def _error(interval: Interval) -> float:
    return interval.half_width or 0.0


def _new_figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _plot(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path | None:
    """Metric against ``plot.x``: mean over seeds with 95 % interval error bars, one line/bar set per group, per panel."""
    plot = spec.plot
    rows = [r for r in rows if _as_number(r.get(metric)) is not None]
    if not rows:
        return None
    panel_values = list(dict.fromkeys(r[plot.panels] for r in rows)) if plot.panels else [None]
    fig = _new_figure(5.2 * len(panel_values))
    for p, panel in enumerate(panel_values):
        ax = fig.add_subplot(1, len(panel_values), p + 1)
        members = [r for r in rows if plot.panels is None or r[plot.panels] == panel]
        groups = aggregate_over_seeds(members, [*plot.group_by, plot.x], [metric])
        series: dict[tuple, list[tuple[Any, Interval]]] = {}
        for g in groups:
            series.setdefault(tuple(g[c] for c in plot.group_by), []).append((g[plot.x], g[metric]))
        categories = list(dict.fromkeys(g[plot.x] for g in groups))
        numeric = plot.kind == "line" and all(_as_number(c) is not None for c in categories)
        width = 0.8 / max(len(series), 1)
        for s, (key, points) in enumerate(series.items()):
            label = ", ".join(str(k) for k in key) or metric
            if numeric:
                points = sorted(points, key=lambda item: _as_number(item[0]))
            ys = [iv.mean for _, iv in points]
            errs = [_error(iv) for _, iv in points]
            if plot.kind == "line":
                xs = [_as_number(x) if numeric else categories.index(x) for x, _ in points]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
            else:
                xs = [categories.index(x) - 0.4 + width * (s + 0.5) for x, _ in points]
                ax.bar(xs, ys, width=width, yerr=errs, capsize=3, label=label)
        if not numeric:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=20)
        ax.set_xlabel(plot.x)
        ax.set_ylabel(f"{metric} (mean, 95 % interval)")
        ax.set_title(f"{spec.name}: {metric}" + (f" ({plot.panels}={panel})" if plot.panels else ""))
        ax.grid(True, alpha=0.3)
        if len(series) > 1 or plot.group_by:
            ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _plot_rate_distortion(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path | None:
    """Metric against bits per clean image: one point per variant (mean over seeds, 95 % interval error bars)."""
    rows = [r for r in rows if _as_number(r.get("bits_per_image")) is not None and _as_number(r.get(metric)) is not None]
    if not rows:
        return None
    fig = _new_figure(6.0)
    ax = fig.add_subplot(1, 1, 1)
    for group in aggregate_over_seeds(rows, ["_label"], ["bits_per_image", metric]):
        x, y = group["bits_per_image"], group[metric]
        ax.errorbar([x.mean], [y.mean], yerr=[_error(y)], xerr=[_error(x)], marker="o", capsize=3, linestyle="none")
        ax.annotate(group["_label"], (x.mean, y.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    bits = [_as_number(r["bits_per_image"]) for r in rows]
    if min(bits) > 0 and max(bits) / min(bits) > 4:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per clean image (codes × log2 codebook size)")
    ax.set_ylabel(f"{metric} (mean, 95 % interval)")
    ax.set_title(f"{spec.name}: {metric} vs rate")
    ax.grid(True, alpha=0.3)
    return _save_figure(fig, path)
