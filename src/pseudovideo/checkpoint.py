"""Atomic, verifiable training checkpoints: ``run_dir/checkpoints/step_{step:07d}/``.

A checkpoint folder holds

- ``model.safetensors``, ``ema.safetensors`` and ``discriminator.safetensors`` (when present): the
  weights and persistent buffers (VQ codebooks live in buffers), written with
  ``safetensors.torch.save_model``, which also copes with tied weights;
- ``state.pt``: optimiser(s), scheduler(s), grad scaler(s), RNG states, step, world size, made only of
  tensors and plain Python values so it loads with ``torch.load(weights_only=True)``;
- ``config.yaml`` (optional): the run config;
- ``manifest.json``, written LAST: size and sha256 of every other file.

Everything is written into a hidden temporary folder beside the final one, fsynced, then renamed
into place, so a crash never leaves a half-written ``step_*`` folder, and the manifest catches files
truncated or corrupted later. Loading verifies the manifest first and raises :class:`CheckpointError`
naming the bad file.

One writer per run folder: :func:`run_lock` takes an exclusive ``flock`` on ``run_dir/.lock`` (the
operating system drops it when the holder exits, even on ``kill -9``, so a lock is never stale), and
pruning deletes only this process's own temporary folders and those of processes no longer alive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from pseudovideo.weights import safe_load_error

MANIFEST = "manifest.json"
STATE = "state.pt"
MODEL = "model.safetensors"
EMA = "ema.safetensors"
DISCRIMINATOR = "discriminator.safetensors"
CONFIG = "config.yaml"
LOCK = ".lock"
FORMAT_VERSION = 1

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
_TMP_PREFIX = ".tmp_"
_TRASH_PREFIX = ".trash_"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, truncated or corrupt; the message names the file."""


class RunLockedError(RuntimeError):
    """Another process is training into the same run folder; the message names the folder and its pid."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Holds an exclusive lock on ``run_dir`` (created if needed) for the block; yields the lock file.

    A second holder, in this or another process, gets RunLockedError at once (no waiting). The lock
    is an ``flock`` on ``run_dir/.lock``, released by the operating system when the holder exits,
    however it exits. Where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        yield Path(run_dir) / LOCK
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(
                f"run folder {run_dir} is being trained by another process (pid {holder}); wait for it to "
                f"finish or train into another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _is_leftover(name: str) -> bool:
    """Whether a temporary/trash folder name belongs to a writer that is not running (never this process)."""
    pid_text = name.rsplit("_", 1)[-1]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimiser steps: ``step_0000123``."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return f"step_{step:07d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems (and Windows) do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def list_checkpoints(checkpoints_dir: str | Path) -> list[tuple[int, Path]]:
    """Completed checkpoint folders as ``(step, path)``, oldest first (temporary folders ignored)."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save_checkpoint(
    checkpoints_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    state: dict[str, Any],
    ema: nn.Module | None = None,
    discriminator: nn.Module | None = None,
    config_dict: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Writes the checkpoint of ``step`` atomically and returns its folder.

    ``state`` must hold only tensors and plain Python containers/scalars (it is read back with
    ``weights_only=True``). When ``keep_last`` is given, older checkpoints beyond the newest
    ``keep_last`` are deleted, but only after the new one is complete.
    """
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(step)
    tmp = checkpoints_dir / f"{_TMP_PREFIX}{final.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: list[str] = []
    writing = None  # the file being written, named when the write fails
    try:
        for name, module in ((MODEL, model), (EMA, ema), (DISCRIMINATOR, discriminator)):
            if module is not None:
                writing = name
                save_model(module, str(tmp / name))
                files.append(name)
        writing = STATE
        buffer = io.BytesIO()
        torch.save({**state, "step": step, "format_version": FORMAT_VERSION}, buffer)
        _write_bytes(tmp / STATE, buffer.getvalue())
        files.append(STATE)
        if config_dict is not None:
            writing = CONFIG
            _write_bytes(tmp / CONFIG, yaml.safe_dump(config_dict, sort_keys=False).encode())
            files.append(CONFIG)
        for writing in files:
            _fsync_file(tmp / writing)
        writing = MANIFEST
        _write_bytes(tmp / MANIFEST, _manifest(tmp, step, files))
        writing = None  # from here on, the checkpoint folder is moved into place
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, (OSError, SafetensorError)):
            raise _write_failed(err, final, writing) from err
        raise
    if keep_last is not None:
        prune_checkpoints(checkpoints_dir, keep_last)
    return final


def _manifest(folder: Path, step: int, files: list[str]) -> bytes:
    """manifest.json of a checkpoint folder: the format, the step and every file's size and sha256."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)} for name in files},
    }
    return json.dumps(manifest, indent=1).encode()


def _move_into_place(tmp: Path, final: Path) -> None:
    """Renames the complete temporary folder to ``final`` (replacing an earlier one only once the new one is there)."""
    if final.exists():  # e.g. re-saving a step whose earlier checkpoint was corrupt
        trash = final.parent / f"{_TRASH_PREFIX}{final.name}_{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


# What safetensors (Rust) says for a full disk or quota: its SafetensorError is not an OSError and has no errno.
_FULL_DISK_TEXTS = (f"(os error {errno.ENOSPC})", f"(os error {errno.EDQUOT})", "No space left on device")


def _write_failed(err: OSError | SafetensorError, final: Path, name: str | None) -> OSError:
    """The OSError of a failed checkpoint write (full disk, I/O error), in one line naming the file being
    written and the checkpoint the run folder still holds."""
    kept = [path for _, path in list_checkpoints(final.parent) if path != final]
    holds = f"the newest complete checkpoint {kept[-1]} is kept" if kept else "no complete checkpoint exists yet"
    file = final / name if name else final
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(t in str(err) for t in _FULL_DISK_TEXTS)
    if full:
        return OSError(errno.ENOSPC, f"no space left on device while writing checkpoint file {file}; the partial "
                                     f"checkpoint was removed and {holds}: free space, then resume the run")
    reason = getattr(err, "strerror", None) or " ".join(str(err).split())
    return OSError(getattr(err, "errno", None) or errno.EIO, f"cannot write checkpoint file {file} ({reason}); the "
                                                             f"partial checkpoint was removed and {holds}")


def prune_checkpoints(checkpoints_dir: str | Path, keep_last: int) -> list[Path]:
    """Deletes all but the newest ``keep_last`` checkpoints and stale temporary folders; returns the deleted ones.

    A temporary folder is stale when the process named by its pid suffix is no longer running: the
    in-flight folders of this process and of any other live writer are left alone.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    checkpoints_dir = Path(checkpoints_dir)
    deleted = []
    for _, path in list_checkpoints(checkpoints_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    for child in checkpoints_dir.iterdir() if checkpoints_dir.is_dir() else []:
        if child.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)) and _is_leftover(child.name):
            shutil.rmtree(child, ignore_errors=True)
            deleted.append(child)
    return deleted


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Checks a checkpoint folder against its manifest; returns the manifest.

    Raises CheckpointError naming the folder or file when the manifest is missing or unreadable, or a
    file is missing, has the wrong size (truncated) or the wrong sha256 (corrupt).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {manifest_path} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
        if not isinstance(entries, dict):
            raise TypeError("'files' is not a mapping")
        for name, entry in entries.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)):
                raise TypeError(f"entry {name!r} is not {{'bytes': int, 'sha256': str}}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint manifest {manifest_path} is corrupt: {err}") from None
    for name, entry in entries.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"checkpoint file {file} is truncated or altered: {size} bytes, expected {entry['bytes']}")
        if _sha256(file) != entry["sha256"]:
            raise CheckpointError(f"checkpoint file {file} is corrupt: its sha256 does not match {MANIFEST}")
    return manifest


def _load_weights(module: nn.Module, file: Path, device: torch.device | str) -> None:
    try:
        missing, unexpected = load_model(module, str(file), strict=False, device=str(device))
    except Exception as err:  # safetensors raises its own error types on malformed headers
        text = " ".join(str(err).split())
        if isinstance(err, RuntimeError) and "loading state_dict" in text:  # shapes differ from the model's
            raise CheckpointError(
                f"checkpoint file {file} does not fit the {type(module).__name__} built from the run's config "
                f"(was model.family or a model size changed?): {text[:240]}"
            ) from None
        raise CheckpointError(f"checkpoint file {file} could not be read: {text[:300]}") from None
    # load_model already drops the second name of each tied pair from ``missing``
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint file {file} does not fit the {type(module).__name__} built from the run's config (was "
            f"model.family changed?): missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    ema: nn.Module | None = None,
    discriminator: nn.Module | None = None,
    map_location: torch.device | str = "cpu",
    verify: bool = True,
    read_state: bool = True,
) -> dict[str, Any]:
    """Loads weights into the given modules (in place) and returns the ``state.pt`` dict ({} with
    ``read_state=False``: weights only, no optimizer moments moved to ``map_location``).

    The folder is verified against its manifest first (unless ``verify=False``); any problem raises
    CheckpointError naming the file. A module asked for whose file is absent raises too.
    """
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    for module, name in ((model, MODEL), (ema, EMA), (discriminator, DISCRIMINATOR)):
        if module is None:
            continue
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        _load_weights(module, file, map_location)
    if not read_state:
        return {}
    state_file = path / STATE
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {state_file} is missing") from None
    except Exception as err:
        raise CheckpointError(f"checkpoint file {state_file} could not be read: {safe_load_error(err)}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint file {state_file} does not hold a training state")
    return state


def find_latest_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The newest intact checkpoint folder, or None when there is none at all.

    A corrupt or incomplete newer checkpoint is skipped with a warning naming it; when checkpoints
    exist but none is intact, CheckpointError is raised listing the problems.
    """
    problems = []
    for _, path in reversed(list_checkpoints(checkpoints_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping corrupt checkpoint {path}: {err}; falling back to the previous one", stacklevel=2)
            problems.append(str(err))
            continue
        return path
    if problems:
        raise CheckpointError(f"no intact checkpoint in {checkpoints_dir}: " + "; ".join(problems))
    return None


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | Path | int | None = None) -> Path:
    """The checkpoint folder of a run: newest intact when None, ``step_{n:07d}`` for an int, else a path.

    A relative path or folder name is looked up under ``run_dir/checkpoints`` first.
    """
    checkpoints_dir = Path(run_dir) / "checkpoints"
    if checkpoint is None:
        found = find_latest_checkpoint(checkpoints_dir)
        if found is None:
            raise FileNotFoundError(f"run folder {run_dir} has no checkpoint under {checkpoints_dir}")
        return found
    if isinstance(checkpoint, int):
        path = checkpoints_dir / checkpoint_name(checkpoint)
    else:
        path = Path(checkpoint)
        if not path.is_dir() and (checkpoints_dir / path).is_dir():
            path = checkpoints_dir / path
    if not path.is_dir():
        available = ", ".join(p.name for _, p in list_checkpoints(checkpoints_dir)) or "none"
        raise FileNotFoundError(f"checkpoint {path} does not exist (available in {checkpoints_dir}: {available})")
    return path
