"""One writer per run folder: a second training is refused, a killed holder leaves no stale lock, and
pruning never deletes the temporary folder of another live writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pseudovideo.checkpoint import LOCK, RunLockedError, list_checkpoints, prune_checkpoints, run_lock
from pseudovideo.cli import main
from pseudovideo.training.engine import train

from _train_script import FlipDataset, TinyTask, tiny_settings
from test_train_cli import TINY, TOKENIZERS

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

_HOLD = """
import sys, time
from pseudovideo.checkpoint import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """A child process that holds the run folder's lock until killed."""
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=_env())
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_a_second_holder_is_refused_naming_the_folder_and_the_pid(tmp_path: Path) -> None:
    child = _hold_lock(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError) as info:
            with run_lock(tmp_path / "run"):
                pass
        message = str(info.value)
        assert str(tmp_path / "run") in message and f"pid {child.pid}" in message
    finally:
        child.kill()
        child.wait()


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    child = _hold_lock(tmp_path / "run")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (tmp_path / "run" / LOCK).is_file()  # the file stays, the lock does not
    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK).read_text().strip() == str(os.getpid())


def test_two_trainings_into_one_folder_the_second_is_refused_and_the_first_completes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = str(TESTS / "_train_script.py")
    first = subprocess.Popen(
        [sys.executable, script, str(run_dir), "--steps", "16", "--checkpoint-every", "1", "--sleep", "0.15"],
        stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        deadline = time.time() + 60
        while not list_checkpoints(run_dir / "checkpoints"):  # the first one is writing checkpoints
            assert time.time() < deadline and first.poll() is None, "the first training did not start"
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=f"pid {first.pid}"):  # this process is the second writer
            train(TinyTask(), FlipDataset(), tiny_settings(steps=16), run_dir, resume=True, config_dict={"steps": 16})
        assert first.poll() is None, "the first training ended before the second one started: make it slower"
        assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")][-1] == 16


def test_cli_refuses_a_second_training_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "r"
    child = _hold_lock(run_dir)
    try:
        code = main(["train", *TINY, *TOKENIZERS["vqvae"], "name=r", f"out_dir={tmp_path}", "--no-eval"])
    finally:
        child.kill()
        child.wait()
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if "error:" in line)  # warnings aside
    assert code == 2
    assert len(err.splitlines()) == 1 and str(run_dir) in err and f"pid {child.pid}" in err
    assert not (run_dir / "config.yaml").exists()  # the refused run wrote nothing


def test_pruning_keeps_the_temporary_folder_of_a_live_writer(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".tmp_step_0000005_{child.pid}"
        dead = tmp_path / ".tmp_step_0000004_999999999"  # no such process
        mine = tmp_path / f".tmp_step_0000006_{os.getpid()}"
        for folder in (live, dead, mine):
            folder.mkdir()
        deleted = prune_checkpoints(tmp_path, keep_last=1)
        assert deleted == [dead]
        assert live.is_dir() and mine.is_dir()
    finally:
        child.kill()
        child.wait()
