"""Which code produced a run: the git commit of the package's own source tree and whether it was dirty.

Experiments run from a git worktree pinned at a commit (``PYTHONPATH=<worktree>/src``) while the code keeps
moving elsewhere, so the record is taken from the folder the imported ``pseudovideo`` package lives in, not from
the current directory: ``git -C <package dir> rev-parse HEAD``, and ``git status --porcelain`` limited to that
folder for the dirty flag. A dirty tree is identified by the sha256 of its changes (``git diff HEAD`` of the
folder plus the untracked files in it), so two runs from the same edited tree compare equal and two runs from
differently edited trees do not. An installed wheel (no git tree) records the package version instead.

Training writes the record into ``train_summary.json`` (``code``), evaluation into ``eval.json`` (``code``);
experiment tables read them back (:mod:`pseudovideo.experiments.tables`) and refuse to mix commits silently.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

from pseudovideo.config import ConfigError

__all__ = ["CODE_COLUMNS", "code_record", "code_identity", "code_label", "stated_record", "check_stated_commit",
           "run_code", "table_code_lines"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the pseudovideo package, this module being in training/


def _git(*args: str) -> str | None:
    """Output of ``git -C PACKAGE_DIR ARGS`` (None when git is missing or this is not a git tree)."""
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def _changes_sha256(status: str) -> str:
    """sha256 of the folder's uncommitted changes: ``git diff HEAD`` plus each untracked file's path and bytes."""
    digest = hashlib.sha256((_git("diff", "HEAD", "--binary", "--", ".") or "").encode())
    top = Path((_git("rev-parse", "--show-toplevel") or str(PACKAGE_DIR)).strip())
    for line in sorted(status.splitlines()):
        if line.startswith("?? "):
            path = top / line[3:].strip().strip('"')
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                digest.update(str(file.relative_to(top)).encode() + b"\0")
                digest.update(file.read_bytes() if file.is_file() else b"")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_record() -> dict[str, Any]:
    """The record of the code this process runs (computed once per process, at its first call).

    ``{"commit": 40-hex or None, "dirty": bool or None, "changes_sha256": hex or None, "version": str,
    "source": package folder}``; ``commit`` is None outside a git tree (an installed wheel).
    """
    from pseudovideo._version import __version__

    record: dict[str, Any] = {"commit": None, "dirty": None, "changes_sha256": None, "version": __version__,
                              "source": str(PACKAGE_DIR)}
    head = _git("rev-parse", "HEAD")
    if head is None:
        return record
    status = _git("status", "--porcelain", "--untracked-files=all", "--", ".") or ""
    record.update(commit=head.strip(), dirty=bool(status.strip()))
    if record["dirty"]:
        record["changes_sha256"] = _changes_sha256(status)
    return record


def stated_record(commit: str) -> dict[str, Any]:
    """The record of a run made before commits were recorded, as stated by the user (``--unrecorded-commit``)."""
    return {"commit": commit, "dirty": None, "changes_sha256": None, "version": None, "stated": True}


def code_identity(record: dict[str, Any] | None) -> str:
    """What must be equal for two runs to come from the same code: the commit (a 7+ hex prefix matches the
    full hash by its first 7 digits), plus the changes' hash when dirty; the version outside git; else ``unknown``."""
    if not record:
        return "unknown"
    commit = record.get("commit")
    if commit:
        dirty = record.get("changes_sha256")
        return str(commit)[:7] + (f"+dirty.{dirty[:8]}" if dirty else "")
    return f"version {record['version']}" if record.get("version") else "unknown"


def code_label(record: dict[str, Any] | None) -> str:
    """:func:`code_identity` and whether it was stated rather than recorded, e.g. ``077d9ce (stated)``."""
    return code_identity(record) + (" (stated)" if record and record.get("stated") else "")


# --------------------------------------------------------------------------------------------
# Tables: the code of each finished run, and one code per table unless mixing is allowed

CODE_COLUMNS = ("commit", "dirty", "evaluated_at")
_COMMIT_PATTERN = re.compile(r"^[0-9a-f]{7,40}$")


def check_stated_commit(commit: str) -> str:
    """A commit given by ``--unrecorded-commit``: 7 to 40 lowercase hex digits (ConfigError otherwise)."""
    if not _COMMIT_PATTERN.match(commit or ""):
        raise ConfigError(f"--unrecorded-commit: expected a git commit hash (7 to 40 hex digits), got {commit!r}")
    return commit


def run_code(summary: dict[str, Any], evaluation: dict[str, Any], unrecorded: str | None = None) -> dict[str, Any]:
    """The code columns of a finished run from its train summary and eval.json: ``commit`` (the training code, or
    ``A then B`` when resumed at other code; ``unknown`` without a record, or ``X (stated)`` with ``unrecorded``),
    ``dirty`` (yes / no / blank), ``evaluated_at`` (blank when evaluated by the training code), and ``_code``, the
    identity two runs of one table must share."""
    stated = stated_record(unrecorded) if unrecorded else None
    history = summary.get("code_history") or [summary.get("code") or stated]
    train_id = " then ".join(code_identity(record) for record in history)
    train_label = " then ".join(code_label(record) for record in history)
    evaluated = evaluation.get("code") or stated
    eval_id = code_identity(evaluated)
    dirty = [record.get("dirty") for record in history if record]
    return {
        "commit": train_label,
        "dirty": "yes" if any(dirty) else "no" if dirty and all(d is False for d in dirty) else "",
        "evaluated_at": "" if eval_id == train_id else code_label(evaluated),
        "_code": train_id if eval_id == train_id else f"{train_id}, evaluated at {eval_id}",
    }


def table_code_lines(rows: list[dict[str, Any]], experiment: str, *, allow_mixed: bool) -> tuple[list[str], bool]:
    """results.md lines saying which code produced the rows, and whether it is mixed.

    Raises ConfigError (one line) when the rows come from different code and ``allow_mixed`` is false.
    """
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["_code"], []).append(row["run"])
    if len(groups) <= 1:
        if not groups:
            return [], False
        row = rows[0]
        text = row["commit"] + (f", evaluated at {row['evaluated_at']}" if row["evaluated_at"] else "")
        tree = {"yes": " with uncommitted changes (their sha256 after '+dirty.')", "no": " (clean tree)"}.get(row["dirty"], "")
        note = " (runs made before commits were recorded)" if "unknown" in text else ""
        return [f"Code: every run at {text}{tree}{note}."], False
    parts = "; ".join(f"{code} ({len(names)} run{'s' * (len(names) > 1)}: {', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''})" for code, names in groups.items())
    if not allow_mixed:
        raise ConfigError(
            f"experiment {experiment}: its finished runs come from different code: {parts}; a table never mixes commits "
            f"silently: retrain the odd runs, pass --allow-mixed (the table then says so), or --unrecorded-commit "
            f"COMMIT if the runs without a record (unknown) were made at COMMIT")
    return [f"**Mixed code** (allowed by --allow-mixed): {parts}. The code column of the table and results.csv's "
            f"commit column say which run is which."], True
