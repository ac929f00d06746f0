"""benchmarks/gpu_evidence.sh end to end on the CPU at tiny size (TINY=1): both pairs' tables, then a resumed call."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *parts: str) -> str:
    env = {**os.environ, "TINY": "1", "OUT": str(out), "PYTHON": sys.executable, "PART_S": "1800",
           "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_evidence.sh"), *parts], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_gpu_evidence_runs_end_to_end_at_tiny_size_and_resumes(tmp_path: Path) -> None:
    printed = _run(tmp_path, "tokenizers", "diffusion", "check")
    folder = tmp_path / "gpu_evidence"
    tables = {}
    for experiment in ("tokenizer-pair", "diffusion-pair"):
        with (folder / experiment / "gpu-10min" / "results.csv").open() as f:
            tables[experiment] = {row["run"] for row in csv.DictReader(f)}
        assert (folder / experiment / "gpu-10min" / "differences.csv").is_file()
    # one seed of each pair with its controls: equal-rate VQVAE / rate-limited C-ViViT, and clean copies
    assert tables["tokenizer-pair"] == {"vqvae-s0", "vqvae_rvq-s0", "cvivit-s0", "cvivit_copies-s0", "cvivit_own-s0"}
    assert tables["diffusion-pair"] == {"ddpm-s0", "video_unet-first_order-s0", "video_unet-higher_order-s0",
                                        "video_unet-copies-s0"}
    assert printed.count("exit 0 after") == 2 and "| cvivit_minus_vqvae_rvq |" in printed
    assert "| video_higher_order_minus_copies |" in printed and "check: skipped" in printed
    # a second call finds every run finished: nothing is trained again
    again = _run(tmp_path, "tokenizers")
    log = (folder / "tokenizers.log").read_text()
    assert "exit 0 after" in again and log.count(": skip (finished and evaluated)") == 5 and "train (new run)" not in log


def test_the_gpu_scale_is_the_cpu_small_models_with_a_larger_batch() -> None:
    from pseudovideo import experiments as E
    from pseudovideo.config import config_to_dict

    for name, steps in (("tokenizer-pair", 1000), ("diffusion-pair", 1500)):
        spec = E.load_experiment(REPO_ROOT / "configs" / "experiments" / f"{name}.yaml")
        small = {r.name: r.config for r in E.expand_experiment(spec, "cpu-small", "runs")}
        gpu = {r.name: r.config for r in E.expand_experiment(spec, "gpu-10min", "runs")}
        assert gpu.keys() <= small.keys()  # cpu-small may add controls (the codebook-restart pair) that the GPU skips
        assert {k for k in small if "restart" not in k} == gpu.keys()
        for run, config in gpu.items():
            assert config.train.batch_size == 128 and config.train.steps == steps and config.data.max_images is None
            assert config_to_dict(config)["model"] == config_to_dict(small[run])["model"], run  # the same models
            assert config.pseudo_video == small[run].pseudo_video and config.data.resolution == small[run].data.resolution
