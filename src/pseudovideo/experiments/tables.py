"""Experiment tables: one row per run (metrics, rate, codebook, informativeness, loss terms, notes), means over
seeds with their intervals, paired differences, and the CSV and markdown files they are written to."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

from pseudovideo.config import RunConfig, config_to_dict
from pseudovideo.data.datasets import spread_images
from pseudovideo.evaluation.stats import Interval, format_interval, mean_interval, paired_difference
from pseudovideo.experiments.grid import DifferencePairs, ExperimentRun, _has_key, _lookup, _run_label
from pseudovideo.experiments.spec import RESULT_COLUMNS, ExperimentSpec
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder as builder_of
from pseudovideo.factory.run_folder import read_train_summary
from pseudovideo.pseudo_video.informativeness import INFO_COLUMNS, INFO_NOTE, INFO_TITLES, summary_numbers
from pseudovideo.pseudo_video.marginals import builders_mismatch
from pseudovideo.training.learned_runs import corruption_note
from pseudovideo.training.provenance import run_code


NOTE_IMAGES = 64  # images of the run's evaluation split that a table note is measured on


_NOTES: dict[str, str] = {}  # measured notes by (data, pseudo_video) config: the seeds of a variant share one


def first_order_marginals_note(config: RunConfig) -> str:
    """For a first-order run of composed corruptions: whether its frames have the higher-order marginals; else ''.

    Exact compositions say so; for the others the gap is measured on images spread over the run's evaluation
    split, and the note says that a first - higher difference of such a run is not a test of the order alone.
    """
    pv = config.pseudo_video
    if pv.construction != "first_order" or pv.num_frames < 2 or len(pv.corruptions) < 2:
        return ""
    first = builder_of(pv)
    if first.first_order_exact:
        return "equal to higher order's at every frame (exact construction)"
    key = json.dumps({"data": config_to_dict(config.data), "pv": config_to_dict(pv)}, sort_keys=True)
    if key not in _NOTES:
        images = spread_images(build_dataset_from_config(config, split=config.data.eval_split), NOTE_IMAGES)
        higher = builder_of(dataclasses.replace(pv, construction="higher_order"))
        _NOTES[key] = (f"NOT equal to higher order's: {builders_mismatch(first, higher, images).describe()}; its "
                       "first − higher differences compare different amounts of corruption, not the order alone")
    return _NOTES[key]


# Optional result columns, present when the runs' eval.json / train summary report them.
RATE_COLUMNS = ("codes_per_image", "bits_per_image")


RATE_TITLES = {"codes_per_image": "codes/image", "bits_per_image": "bits/image"}


# Tokenizers' codebook usage and perplexity over their evaluation's codes (eval.json's "codebook").
CODEBOOK_COLUMNS = ("codebook_usage", "codebook_perplexity")


MEASURED_COLUMNS = (*RATE_COLUMNS, *CODEBOOK_COLUMNS)


MEASURED_TITLES = {**RATE_TITLES, "codebook_usage": "codebook usage", "codebook_perplexity": "perplexity"}


OPTIONAL_COLUMNS = (*MEASURED_COLUMNS, *INFO_COLUMNS, "loss_terms")


def aggregate_over_seeds(
    rows: Sequence[dict[str, Any]], group_columns: Sequence[str], value_columns: Sequence[str], confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Groups result rows by ``group_columns`` (seed excluded) and summarises ``value_columns`` over seeds.

    Returns one dict per group (in order of first appearance) holding the group columns, ``seeds``
    (how many rows) and, for each value column with at least one number, a
    :class:`pseudovideo.evaluation.stats.Interval` (mean, Student-t half-width at ``confidence``, n, sample std;
    no half-width for one seed). Empty and non-finite cells are ignored.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(c) for c in group_columns), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(group_columns, key))
        entry["seeds"] = len(members)
        for column in value_columns:
            values = [v for m in members if (v := _as_number(m.get(column))) is not None]
            if values:
                entry[column] = mean_interval(values, confidence)
        out.append(entry)
    return out


def _format_loss_terms(terms: Any) -> str:
    """A train summary's ``loss_terms`` as a compact column: the active terms with their weights,
    e.g. ``"reconstruction:1 vq:1 adversarial:0.1@100"`` (``@`` the start step; empty when there are none)."""
    if not isinstance(terms, dict) or not terms:
        return ""
    return " ".join(
        f"{name}:{term.get('weight', 1):g}" + (f"@{term['start_step']}" if term.get("start_step") else "")
        for name, term in terms.items() if term.get("active")
    )


def _result_row(run: ExperimentRun, columns: Sequence[str], metrics: Sequence[str], extra_keys: Sequence[str],
                unrecorded: str | None = None) -> dict[str, Any]:
    """One results.csv row of a finished run (eval.json, train_summary.json, flops.json); ``unrecorded``: the
    stated commit of runs made before commits were recorded."""
    run_dir = run.config.run_dir
    result = json.loads((run_dir / "eval.json").read_text())
    summary = result.get("train") or read_train_summary(run_dir)
    flops = json.loads((run_dir / "flops.json").read_text())["flops_per_image"] if (run_dir / "flops.json").is_file() else None
    row: dict[str, Any] = {c: "" for c in columns}
    row.update({"run": run.name, "variant": run.variant, **run.labels, **run.axes, "seed": run.seed})
    tree = config_to_dict(run.config)
    # Config-key columns (grid axes of other variants included) hold every run's own value.
    for key in [c for c in columns if row.get(c, "") == "" and c not in (*metrics, *RESULT_COLUMNS, *OPTIONAL_COLUMNS)]:
        if _has_key(tree, key):
            extra_keys = [*extra_keys, key]
    for key in extra_keys:
        value = _lookup(tree, key)
        row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    for metric in metrics:
        row[metric] = result["metrics"].get(metric, "")
    rate = result.get("rate") or {}  # tokenizers: what the decoder of the clean frame can read
    frames_per_s = summary.get("frames_per_s")
    row.update({
        "codes_per_image": rate.get("codes_per_image", ""),
        "bits_per_image": rate.get("bits_per_image", ""),
        **{c: (result.get("codebook") or {}).get(c, "") for c in CODEBOOK_COLUMNS},
        "loss_terms": _format_loss_terms(summary.get("loss_terms")),
        "flops_per_image": flops if flops is not None else "",
        "parameters": summary.get("parameters", {}).get("model", ""),
        "train_images_per_s": summary.get("images_per_s", ""),
        "train_frames_per_s": frames_per_s if frames_per_s is not None else "",
        "peak_memory_mb": summary["peak_memory_bytes"] / 2**20 if "peak_memory_bytes" in summary else "",
        "train_seconds": summary.get("wall_time_s", ""),
    })
    row.update({k: "" if v is None else v for k, v in summary_numbers(summary.get("informativeness") or {}).items()})
    row.update(run_code(summary, result, unrecorded))  # commit, dirty, evaluated_at, _code
    row["_label"] = _run_label(run.name, run.seed)
    row["_rate"] = rate.get("description", "")
    row["_skipped"] = result.get("skipped", {})
    row["_protocol"] = result.get("protocol", {})
    row["_loss_terms"] = describe_loss_terms(summary.get("loss_terms") or {})
    row["_marginals"] = first_order_marginals_note(run.config)  # composed corruptions, first order only
    row["_corruption"] = corruption_note(summary.get("corruption") or {})  # a learned corruption: what produced it
    return row


def describe_loss_terms(terms: dict[str, dict[str, Any]]) -> str:
    """One line from a train summary's ``loss_terms``, e.g. "reconstruction 1 + vq 1 + adversarial 0.1 from step 100"."""
    parts = []
    for name, term in terms.items():
        if term.get("active"):
            start = f" from step {term['start_step']}" if term.get("start_step") else ""
            parts.append(f"{name} {term.get('weight', 1):g}{start}")
        elif term.get("reason"):
            parts.append(f"{name} off ({term['reason']})")
    return " + ".join(parts) if parts else "not recorded"


def _write_csv(rows: Sequence[dict[str, Any]], header: Sequence[str], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in header})
    return path


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def _interval_columns(interval: Interval) -> dict[str, Any]:
    """The CSV columns of an interval: n, mean, std, ci95_low, ci95_high, ci95_half_width (blank for n = 1)."""
    return {"n": interval.n, "mean": interval.mean, "std": _blank(interval.std), "ci95_low": _blank(interval.low),
            "ci95_high": _blank(interval.high), "ci95_half_width": _blank(interval.half_width)}


INTERVAL_HEADER = ("n", "mean", "std", "ci95_low", "ci95_high", "ci95_half_width")


def summary_rows(
    groups: Sequence[dict[str, Any]], group_columns: Sequence[str], value_columns: Sequence[str]
) -> list[dict[str, Any]]:
    """results_summary.csv rows (one per group and quantity) from :func:`aggregate_over_seeds` groups."""
    return [{**{c: group[c] for c in group_columns}, "metric": column, **_interval_columns(group[column])}
            for group in groups for column in value_columns if column in group]


def _group_text(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def difference_rows(resolved: Sequence[DifferencePairs], rows: Sequence[dict[str, Any]], metrics: Sequence[str],
                    confidence: float = 0.95) -> list[dict[str, Any]]:
    """differences.csv rows: per difference, group and metric, the paired difference (of minus minus) over the
    seeds where both runs are finished, with its Student-t interval (:func:`pseudovideo.evaluation.stats.paired_difference`)."""
    by_run = {row["run"]: row for row in rows}
    out = []
    for pairs in resolved:
        for group, pair_list in pairs.groups:
            done = [(a, b) for a, b in pair_list if a in by_run and b in by_run]
            for metric in metrics:
                values = [(x, y) for a, b in done
                          if (x := _as_number(by_run[a].get(metric))) is not None
                          and (y := _as_number(by_run[b].get(metric))) is not None]
                if not values:
                    continue
                interval = paired_difference([x for x, _ in values], [y for _, y in values], confidence)
                out.append({"difference": pairs.difference.name, "group": _group_text(group), "metric": metric,
                            **_interval_columns(interval), "pairs": len(done),
                            "of_runs": " ".join(a for a, _ in done), "minus_runs": " ".join(b for _, b in done)})
    return out


DIFFERENCE_HEADER = ("difference", "group", "metric", *INTERVAL_HEADER, "of_runs", "minus_runs")


def _interval_of(row: dict[str, Any]) -> Interval:
    return Interval(mean=row["mean"], half_width=row["ci95_half_width"] or None, n=row["n"], std=row["std"] or None)


def _differences_markdown(
    spec: ExperimentSpec, resolved: Sequence[DifferencePairs], diff_rows: Sequence[dict[str, Any]]
) -> list[str]:
    """The paired-differences table of results.md (one line per difference and group)."""
    if not resolved:
        return []
    lines = ["", "## Paired differences", "",
             "Each line: the runs selected by *of* minus those selected by *minus*, paired by seed (and by the "
             "group's columns); mean ± half-width of the Student-t 95 % interval of the per-pair differences, over "
             "the pairs whose two runs are finished (no interval with one pair; an interval that excludes 0 is a "
             "difference at that level).", "",
             "| difference | of − minus | group | pairs | " + " | ".join(spec.metrics) + " |",
             "|---|---|---|---:|" + "---:|" * len(spec.metrics)]
    for pairs in resolved:
        diff = pairs.difference
        selectors = f"{_group_text(diff.of)} − {_group_text(diff.minus)}"
        for group, pair_list in pairs.groups:
            text = _group_text(group)
            found = {r["metric"]: r for r in diff_rows if r["difference"] == diff.name and r["group"] == text}
            done = max((r["pairs"] for r in found.values()), default=0)
            cells = [format_interval(_interval_of(found[m]), show_n=found[m]["n"] != done) if m in found else "-"
                     for m in spec.metrics]
            lines.append(f"| {diff.name} | {selectors} | {text or '-'} | {done}/{len(pair_list)} | " + " | ".join(cells) + " |")
    return lines


def _results_table(spec: ExperimentSpec, rows: Sequence[dict[str, Any]], group_columns: Sequence[str],
                   optional: Sequence[str], mixed: bool = False) -> list[str]:
    """The main results.md table: one line per variant (mean ± 95 % half-width over seeds); with ``mixed``, a
    last column names the code of each variant's runs."""
    rate = [c for c in (*MEASURED_COLUMNS, *INFO_COLUMNS) if c in optional]
    values = [*spec.metrics, *rate, "flops_per_image", "parameters", "train_images_per_s"]
    groups = aggregate_over_seeds(rows, [*group_columns, "_label"], values)
    header = [*group_columns, "seeds", *spec.metrics, *[{**MEASURED_TITLES, **INFO_TITLES}[c] for c in rate],
              *(["loss terms"] if "loss_terms" in optional else []), "GFLOPs/image", "params (M)", "train img/s",
              *(["code"] if mixed else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(group_columns) + "---:|" * (len(header) - len(group_columns))]
    for group in groups:
        flops = group.get("flops_per_image")
        params = group.get("parameters")
        cells = [str(group[c]) for c in group_columns] + [str(group["seeds"])]
        cells += [format_interval(group.get(m), show_n=False) for m in spec.metrics]
        cells += [f"{group[c].mean:.4g}" if c in group else "-" for c in rate]
        if "loss_terms" in optional:
            terms = dict.fromkeys(r["loss_terms"] for r in rows if r["_label"] == group["_label"] and r["loss_terms"])
            cells.append(" / ".join(terms) or "-")
        cells += [f"{flops.mean / 1e9:.4g}" if flops else "-", f"{params.mean / 1e6:.3g}" if params else "-",
                  format_interval(group.get("train_images_per_s"), show_n=False)]
        if mixed:
            cells.append(" / ".join(dict.fromkeys(r["_code"] for r in rows if r["_label"] == group["_label"])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown(spec: ExperimentSpec, scale: str, rows: Sequence[dict[str, Any]], group_columns: Sequence[str],
              unfinished: Sequence[str], *, sizes: str = "", optional: Sequence[str] = (),
              resolved: Sequence[DifferencePairs] = (), diff_rows: Sequence[dict[str, Any]] = (),
              code_lines: Sequence[str] = (), mixed: bool = False) -> str:
    lines = [f"# Experiment {spec.name} ({scale})", ""]
    if spec.description:
        lines += [spec.description, ""]
    if code_lines:
        lines += [*code_lines, ""]
    if sizes:
        lines += [f"Sizes as run (after every override): {sizes}.", ""]
    lines += [f"Mean ± half-width of the Student-t 95 % interval over seeds {spec.seeds[scale]} (no interval with one "
              "seed); GFLOPs/image: forward + backward of one training step per clean image (matmuls, convolutions, "
              "attention).", ""]
    lines += _results_table(spec, rows, group_columns, optional, mixed)
    skipped = {name: reason for row in rows for name, reason in row["_skipped"].items() if name in spec.metrics}
    lines += [f"\n{name}: skipped ({reason})" for name, reason in skipped.items()]
    rates = dict.fromkeys(f"{row['_label']}: {row['_rate']}" for row in rows if row["_rate"])
    if rates:
        lines += ["", "Rate (codes and bits per clean image that its decoder reads): " + "; ".join(rates)]
    if any(c in optional for c in INFO_COLUMNS):
        lines += ["", INFO_NOTE]
    learned = dict.fromkeys(f"{row['_label']}: {row['_corruption']}" for row in rows if row.get("_corruption"))
    if learned:
        lines += ["", "Learned corruptions (each operator's levels at frames 0..T-1): " + "; ".join(learned)]
    marginals = dict.fromkeys(f"{row['_label']}: {row['_marginals']}" for row in rows if row.get("_marginals"))
    if marginals:
        lines += ["", "First-order frames against higher-order frames at the same levels: " + "; ".join(marginals)]
    low = [row["run"] for row in rows if (u := _as_number(row.get("codebook_usage"))) is not None and u < 0.25]
    if low:
        lines += ["", f"Warning: codebook usage under 25 % in {len(low)} run(s): {', '.join(low)}."]
    if rows:
        by_variant = {str(row.get("variant") or row["run"]): row.get("_loss_terms", "not recorded") for row in rows}
        lines += ["", "Loss terms: " + "; ".join(f"{variant}: {terms}" for variant, terms in by_variant.items())]
        lines += ["", _evaluation_line(rows)]
    lines += _differences_markdown(spec, resolved, diff_rows)
    if unfinished:
        lines += ["", f"Not finished yet ({len(unfinished)}): {', '.join(unfinished)}"]
    return "\n".join(lines) + "\n"


def _evaluation_line(rows: list[dict[str, Any]]) -> str:
    """The evaluation protocol in one line; with several datasets or splits in a grid, each with its variants."""
    keep = ("num_images", "eval_split", "split", "resolution", "model_weights", "seed")
    runs_of: dict[str, dict[str, None]] = {}
    for row in rows:
        protocol = row["_protocol"]
        text = ", ".join(f"{k}={protocol[k]}" for k in keep if k in protocol)
        runs_of.setdefault(text, {})[str(row.get("_label") or row["run"])] = None
    tail = "; tokenizers: reconstruction of the clean last frame; diffusion: generated images (last frames)."
    if len(runs_of) == 1:
        return "Evaluation: " + next(iter(runs_of)) + tail
    return "Evaluation, by variant: " + " | ".join(f"{text} ({', '.join(runs)})" for text, runs in runs_of.items()) + tail


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
