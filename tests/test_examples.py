"""examples/quickstart.py runs end to end (its --tiny mode) and writes what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_tiny(tmp_path: Path) -> None:
    env = {**os.environ, "PSEUDOVIDEO_TINY": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "qs")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = [line.split() for line in lines if line.startswith(("vqvae", "cvivit"))]
    assert [row[0] for row in table] == ["vqvae", "cvivit"]
    assert all(0 < float(row[1]) < 100 for row in table)  # PSNR in dB
    for name in ("pseudo_videos.png", "reconstructions.png", "vqvae/eval.json", "cvivit/eval.json"):
        assert (tmp_path / "qs" / name).is_file(), name
