"""examples/quickstart.py runs end to end (its --tiny mode), writes what it says, and never reuses models trained
with other settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart(cwd: Path, *args: str, tiny: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PSEUDOVIDEO_TINY": "1" if tiny else "0", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _table(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("vqvae", "cvivit"))]


def test_quickstart_runs_tiny_and_never_reuses_other_settings(tmp_path: Path) -> None:
    done = _quickstart(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in _table(done.stdout)]
    assert [row[0] for row in table] == ["vqvae", "cvivit"]
    assert all(0 < float(row[1]) < 100 for row in table)  # PSNR in dB
    out = tmp_path / "runs" / "quickstart-tiny"  # the tiny models have a folder of their own
    for name in ("pseudo_videos.png", "reconstructions.png", "vqvae/eval.json", "cvivit/eval.json"):
        assert (out / name).is_file(), name
    # The full quickstart into the tiny one's folder: refused before any training, the tiny models not reused.
    full = _quickstart(tmp_path, "--out", str(out), tiny=False)
    assert full.returncode != 0 and "holds a different run" in full.stderr and "train.batch_size" in full.stderr
    assert _table(full.stdout) == []
    # The same tiny settings again: the trained models and their evaluation are reused as they are.
    again = _quickstart(tmp_path)
    assert again.returncode == 0 and _table(again.stdout) == _table(done.stdout)
    assert not (out / "vqvae" / "eval-1.json").exists()  # not even re-evaluated
