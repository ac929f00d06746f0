"""A run folder read back: its saved config, its trained weights, its summary, and free names beside it.

A run folder (``out_dir/name/``) holds ``config.yaml`` (the resolved config), ``checkpoints/`` (the format of
:mod:`pseudovideo.checkpoint`), ``log.csv``, ``tb/``, ``pictures/``, ``train_summary.json``, ``.lock`` (held by the
one process training into it) and, after evaluation, ``eval.json`` / ``eval.md``. Training writes it
(:mod:`pseudovideo.training.runs`); :func:`pseudovideo.factory.models.load_run` builds its model back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pseudovideo.checkpoint import EMA, load_checkpoint, resolve_checkpoint
from pseudovideo.config import RunConfig, load_config

__all__ = ["first_free_name", "keep_previous", "load_run_config", "load_trained_model", "read_train_summary", "run_folders"]


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run folder.

    FileNotFoundError when the folder does not exist, or has no config.yaml (listing the run folders inside it,
    e.g. for ``runs/``).
    """
    folder = Path(run_dir)
    path = folder / "config.yaml"
    if not folder.exists():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        inside = run_folders(folder) if folder.is_dir() else []
        if inside:
            shown = ", ".join(str(p) for p in inside[:20]) + (f", and {len(inside) - 20} more" if len(inside) > 20 else "")
            raise FileNotFoundError(f"{run_dir} is not a run folder but holds {len(inside)} run(s): {shown}; pass one of them")
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml (train a run there first)")
    return load_config(path)


def run_folders(folder: str | Path) -> list[Path]:
    """The run folders directly inside ``folder`` (those holding a config.yaml and checkpoints), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and (p / "config.yaml").is_file() and (p / "checkpoints").is_dir())


def read_train_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``train_summary.json`` of a run (empty when training has not finished)."""
    path = Path(run_dir) / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def first_free_name(out_dir: str | Path, base: str = "run") -> str:
    """``base``, ``base-2``, ``base-3``, ...: the first name whose folder under ``out_dir`` is absent or empty.

    What a command without ``name=`` trains or writes into, so that it never replaces an earlier result.
    """
    out_dir = Path(out_dir)
    for number in range(1, 100_000):
        name = base if number == 1 else f"{base}-{number}"
        folder = out_dir / name
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return name
    raise RuntimeError(f"no free run folder name {base}-N under {out_dir}")


def keep_previous(path: str | Path) -> Path | None:
    """Renames an existing result file ``stem.ext`` to the first free ``stem-N.ext``; returns the new path.

    Returns None when ``path`` does not exist. Used before a command rewrites a result (eval.json,
    diagnose.json, a pseudo-video grid), so that the earlier one is kept instead of silently replaced.
    """
    path = Path(path)
    if not path.exists():
        return None
    number = 1
    while (kept := path.with_name(f"{path.stem}-{number}{path.suffix}")).exists():
        number += 1
    path.rename(kept)
    return kept


def load_trained_model(
    run_dir: str | Path,
    model: nn.Module,
    *,
    use_ema: bool = True,
    checkpoint: str | Path | int | None = None,
) -> nn.Module:
    """Loads a run's trained weights into ``model`` (in place) for evaluation or sampling; returns it in eval mode.

    ``checkpoint``: None = newest intact checkpoint, an int = that step, or a folder path / name.
    With ``use_ema`` the EMA weights are used when the checkpoint has them (a warning otherwise).
    Raises FileNotFoundError when the run has no such checkpoint, CheckpointError when it is corrupt.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    device = next(iter(model.parameters()), torch.empty(0)).device
    if use_ema and not (path / EMA).is_file():
        warnings.warn(f"checkpoint {path} has no EMA weights (train.ema_decay was 0); loading the raw model", stacklevel=2)
        use_ema = False
    weights = {"ema": model} if use_ema else {"model": model}
    # The newest checkpoint was verified while resolving it; a named one is verified here.
    load_checkpoint(path, **weights, map_location=device, verify=checkpoint is not None, read_state=False)
    return model.eval()
