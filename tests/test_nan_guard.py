"""The NaN guard rule (which checkpoints are good), eval failing on a NaN metric, and eval recording the
checkpoint it actually evaluated (step and sha256), also when it falls back to an older one."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pseudovideo.checkpoint import MANIFEST, list_checkpoints
from pseudovideo.cli import main
from pseudovideo.training.distributed import DistributedContext
from pseudovideo.training.engine import train
from pseudovideo.training.health import TrainingDivergedError, _LossHealth

from _train_script import FlipDataset, TinyTask, tiny_settings
from test_train_cli import TINY, TOKENIZERS

CTX = DistributedContext()  # one CPU process
VQVAE = [*TINY, *TOKENIZERS["vqvae"], "eval.metrics=[psnr,ssim]"]


def _judge(health: _LossHealth, *losses: float) -> list[bool]:
    for loss in losses:
        health.observe(torch.tensor(loss))
    return [healthy for healthy, _ in health.flush(CTX)]


def test_the_rule_compares_with_the_median_of_recent_healthy_losses() -> None:
    health = _LossHealth(factor=100.0)
    assert _judge(health, 1.0, 1.0, 1.0) == [True, True, True]  # median 1.0: healthy up to 101
    assert _judge(health, 100.0, 102.0, float("nan"), float("inf")) == [True, False, False, False]
    # an explosion that then stays high never becomes the new normal (diverged losses leave the window alone)
    assert _judge(health, *[1e9] * 60) == [False] * 60
    assert health.history[-1] == 100.0 and len(health.history) == 4
    assert _judge(_LossHealth(factor=0.0), 1.0, 1e30, float("nan")) == [True, True, False]  # 0: finite is enough
    # a negative median (GAN losses): healthy up to -0.5 + 100 * 0.5 = 49.5
    assert _judge(_LossHealth(factor=100.0, history=[-0.5]), 49.0) == [True]
    assert _judge(_LossHealth(factor=100.0, history=[-0.5]), 50.0) == [False]


def test_huge_lr_keeps_no_checkpoint_with_exploded_weights(tmp_path: Path) -> None:
    settings = tiny_settings(steps=12, lr=100.0, grad_clip=0.0, checkpoint_every=1, warmup_steps=0, ema_decay=0.0)
    with pytest.warns(UserWarning) as caught:
        with pytest.raises(TrainingDivergedError, match="no checkpoint is kept"):
            train(TinyTask(deterministic=True), FlipDataset(), settings, tmp_path / "run")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("removed checkpoint step_0000001: the step after it diverged") for m in messages)
    assert sum("checkpoint not written" in m for m in messages) == 1  # one warning for the whole diverged stretch
    for _, path in list_checkpoints(tmp_path / "run" / "checkpoints"):  # with this lr: none at all
        weights = load_file(str(path / "model.safetensors"))
        assert max(t.abs().max().item() for t in weights.values()) < 10
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


def test_a_healthy_run_keeps_every_checkpoint_and_prunes_as_before(tmp_path: Path) -> None:
    train(TinyTask(), FlipDataset(), tiny_settings(steps=8, checkpoint_every=2, keep_last=2), tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [6, 8]


def test_cli_train_with_a_huge_lr_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", *VQVAE, "train.lr=1000", "train.grad_clip=0", "train.checkpoint_every=1", "train.steps=4",
                 "name=r", f"out_dir={tmp_path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # warnings aside
    assert code == 2
    assert len(err) == 1 and "diverg" in err[0] and "Traceback" not in err[0]
    assert list_checkpoints(tmp_path / "r" / "checkpoints") == []


def _train_tiny(tmp_path: Path) -> Path:
    assert main(["train", *VQVAE, "train.keep_last=5", "name=r", f"out_dir={tmp_path}", "--no-eval"]) == 0
    return tmp_path / "r"


def _poison_weights(checkpoint: Path) -> None:
    """Replaces every weight of the checkpoint by NaN and updates its manifest (an intact, unusable checkpoint)."""
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    for name in ("model.safetensors", "ema.safetensors"):
        file = checkpoint / name
        tensors = {k: v.float().fill_(math.nan) if v.is_floating_point() else v for k, v in load_file(str(file)).items()}
        save_file(tensors, str(file))
        manifest["files"][name] = {"bytes": file.stat().st_size, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


def test_eval_with_a_nan_metric_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _train_tiny(tmp_path)
    _poison_weights(run / "checkpoints" / "step_0000004")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # warnings aside
    assert len(err) == 1 and "psnr=nan" in err[0] and "step 4" in err[0]
    assert not (run / "eval.json").exists()


def test_eval_records_the_checkpoint_it_evaluated_also_after_a_fallback(tmp_path: Path) -> None:
    run = _train_tiny(tmp_path)
    newest, older = run / "checkpoints" / "step_0000004", run / "checkpoints" / "step_0000002"
    assert main(["eval", str(run)]) == 0
    record = json.loads((run / "eval.json").read_text())["protocol"]["checkpoint"]
    assert record["step"] == 4 and record["weights_file"] == "ema.safetensors"
    assert record["sha256"] == hashlib.sha256((newest / "ema.safetensors").read_bytes()).hexdigest()
    assert "skipped_newer" not in record

    with open(newest / "ema.safetensors", "r+b") as handle:
        handle.truncate(100)
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        assert main(["eval", str(run)]) == 0
    record = json.loads((run / "eval.json").read_text())["protocol"]["checkpoint"]
    assert record["step"] == 2 and record["folder"] == str(older)
    assert record["sha256"] == hashlib.sha256((older / "ema.safetensors").read_bytes()).hexdigest()
    assert "step_0000004" in record["skipped_newer"]
    markdown = (run / "eval.md").read_text()
    assert f"checkpoint: step 2 ({older})" in markdown and record["sha256"] in markdown
