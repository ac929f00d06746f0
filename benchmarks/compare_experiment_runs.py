"""Are two runs of one experiment identical? results.csv (timing and code columns left out) and every run's weights.

    python benchmarks/compare_experiment_runs.py FOLDER_A FOLDER_B     # experiment folders (.../NAME/SCALE)

Prints what differs and exits 1 when anything does (0 when identical). Weights: model and EMA tensors of each run's
newest checkpoint, compared bit for bit.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

# Columns that measure time or memory, or name the code: not what was computed.
SKIPPED = {"train_images_per_s", "train_frames_per_s", "peak_memory_mb", "train_seconds", "sampling_images_per_s",
           "commit", "dirty", "evaluated_at"}


def rows(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "results.csv").open(newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def newest_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    if not checkpoints:
        return {}
    return {f"{name}/{key}": value for name in ("model", "ema") if (checkpoints[-1] / f"{name}.safetensors").is_file()
            for key, value in load_file(checkpoints[-1] / f"{name}.safetensors").items()}


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the experiment folders ``a`` and ``b`` (empty: identical)."""
    problems = []
    rows_a, rows_b = rows(a), rows(b)
    if rows_a.keys() != rows_b.keys():
        problems.append(f"runs differ: {sorted(rows_a.keys() ^ rows_b.keys())}")
    for run in sorted(rows_a.keys() & rows_b.keys()):
        columns = (rows_a[run].keys() & rows_b[run].keys()) - SKIPPED
        for column in sorted(columns):
            if rows_a[run][column] != rows_b[run][column]:
                problems.append(f"{run}.{column}: {rows_a[run][column]} vs {rows_b[run][column]}")
        weights_a, weights_b = newest_weights(a / run), newest_weights(b / run)
        if weights_a.keys() != weights_b.keys():
            problems.append(f"{run}: different weight tensors")
        unequal = [k for k in weights_a.keys() & weights_b.keys() if not torch.equal(weights_a[k], weights_b[k])]
        if unequal:
            problems.append(f"{run}: {len(unequal)} of {len(weights_a)} weight tensors differ (e.g. {unequal[0]})")
    return problems


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    problems = compare(a, b)
    for line in problems:
        print(f"  DIFFERS {line}")
    print(f"  {'identical' if not problems else f'{len(problems)} differences'}: results.csv (without timing and code "
          f"columns) and the weights of {len(rows(a))} runs, {a} vs {b}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
