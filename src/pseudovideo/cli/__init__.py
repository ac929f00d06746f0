"""Command-line interface: ``pseudovideo <command>``. It only parses arguments (:mod:`~pseudovideo.cli.parser`) and
wires modules (:mod:`~pseudovideo.cli.commands`); :func:`main` turns expected failures into one line.

Every command that takes a config accepts ``-c CONFIG.yaml`` and trailing ``key.sub=value``
overrides; the config is validated before any work starts.

Every expected failure (a bad config or argument, a missing, unreadable or corrupt file, a locked
run folder, a diverged training, a full disk, a NaN metric) prints one line on stderr and exits with
status 2; ``--debug`` (or ``PSEUDOVIDEO_DEBUG=1``) shows the full traceback instead. Anything else is
a bug and keeps its traceback. Ctrl-C prints one line (for ``train``: the step reached, the checkpoint
kept and the command that resumes) and exits with status 130.

A ``python:`` model base named by a config, a run folder or an experiment file is imported and run only
with ``--trust-code`` (see :mod:`pseudovideo.interop.trust`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import warnings
from typing import Iterator, Sequence

from pseudovideo.cli.commands import UsageError
from pseudovideo.cli.parser import build_parser
from pseudovideo.config import ConfigError
from pseudovideo.config.safe_yaml import QUOTE_LIMIT

__all__ = ["build_parser", "error_line", "expected_errors", "main"]


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean a problem the user can act on (one-line message, exit 2), not a bug."""
    from PIL import Image

    from pseudovideo.checkpoint import CheckpointError, RunLockedError
    from pseudovideo.evaluation.evaluate import NonFiniteMetricError
    from pseudovideo.experiments.scheduler import RunsFailedError
    from pseudovideo.training.health import TrainingDivergedError

    return (
        ConfigError, UsageError, ValueError, OSError, CheckpointError, RunLockedError, TrainingDivergedError,
        NonFiniteMetricError, Image.DecompressionBombError, RunsFailedError,
    )


MAX_ERROR_LINE = 10 * QUOTE_LIMIT  # characters of a one-line error (values in it are quoted shorter still)


def error_line(err: BaseException) -> str:
    """The one-line description of an expected failure (a full disk also says what it means for the run)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC and "checkpoint" not in text:
        text += "; the disk is full: free space and resume the run (its complete checkpoints are kept)"
    if len(text) > MAX_ERROR_LINE:
        text = f"{text[:MAX_ERROR_LINE]}... ({len(text) - MAX_ERROR_LINE:,} more characters cut)"
    return text


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
    return f"pseudovideo: {category.__name__}: {message}\n"


@contextlib.contextmanager
def _short_warnings() -> Iterator[None]:
    """Warnings print as one line, without the source line of the module that raised them."""
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("PSEUDOVIDEO_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; expected failures print one clear line and exit with status 2 (see the module doc)."""
    parser = build_parser()
    # Overrides may come after options (`experiment CFG --scale paper train.device=cuda`); argparse
    # leaves those as unknown arguments, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    unknown = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    with _short_warnings():
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt as err:  # Ctrl-C: what was kept and how to go on, in one line
            if _debug_requested(args):
                raise
            print(f"pseudovideo {args.command}: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:
            if _debug_requested(args) or not isinstance(err, expected_errors()):
                raise
            print(f"pseudovideo {args.command}: error: {error_line(err)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
