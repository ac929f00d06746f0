"""Tests of the training engine: LR schedule, data order, exact resume (in-process and after kill -9),
divergence handling, pruning, logs, previews and the summary. Everything runs on the CPU in seconds."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pseudovideo.checkpoint import list_checkpoints, verify_checkpoint
from pseudovideo.factory.run_folder import load_trained_model
from pseudovideo.training.batches import batch_indices, epoch_permutation
from pseudovideo.training.distributed import DistributedContext
from pseudovideo.training.ema import ModelEMA
from pseudovideo.training.engine import train
from pseudovideo.training.health import TrainingDivergedError
from pseudovideo.training.loggers import _ScalarMeter
from pseudovideo.training.optimisation import lr_at_step
from pseudovideo.training.precision import resolve_precision

from _train_script import (
    FlipDataset,
    Interrupted,
    TinyAutoencoder,
    TinyTask,
    tiny_settings,
)

TESTS_DIR = Path(__file__).resolve().parent
SCRIPT = TESTS_DIR / "_train_script.py"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs: max |diff| {(a[key].float() - b[key].float()).abs().max()}"


# ------------------------------------------------------------------------------------------ LR schedule


def test_lr_schedule_warmup_then_cosine_to_min_ratio():
    kwargs = dict(lr=1.0, warmup_steps=4, total_steps=14, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_at_step(s, **kwargs) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at_step(4, **kwargs) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at_step(9, **kwargs) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)  # = 0.55
    assert lr_at_step(9, **kwargs) == pytest.approx(0.55)
    assert lr_at_step(14, **kwargs) == pytest.approx(0.1)
    assert lr_at_step(100, **kwargs) == pytest.approx(0.1)  # stays at the floor past the end


def test_lr_schedule_constant_and_no_warmup():
    assert lr_at_step(0, lr=2e-4, warmup_steps=0, total_steps=10, schedule="constant") == 2e-4
    assert lr_at_step(7, lr=2e-4, warmup_steps=0, total_steps=10, schedule="constant") == 2e-4
    assert lr_at_step(1, lr=2e-4, warmup_steps=4, total_steps=10, schedule="constant") == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="linear"):
        lr_at_step(0, lr=1.0, warmup_steps=0, total_steps=10, schedule="linear")


# ------------------------------------------------------------------------------------------ data order


def test_epoch_permutation_is_deterministic_and_differs_between_epochs():
    a = epoch_permutation(50, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert (a == epoch_permutation(50, seed=3, epoch=0)).all()
    assert not (a == epoch_permutation(50, seed=3, epoch=1)).all()
    assert not (a == epoch_permutation(50, seed=4, epoch=0)).all()


def test_batch_indices_drop_last_and_rank_shards_make_the_global_batch():
    n, bs = 10, 4  # 2 batches per epoch, 2 items dropped
    perm0 = epoch_permutation(n, seed=1, epoch=0).tolist()
    assert batch_indices(0, num_items=n, batch_size=bs, seed=1) == perm0[0:4]
    assert batch_indices(1, num_items=n, batch_size=bs, seed=1) == perm0[4:8]
    assert batch_indices(2, num_items=n, batch_size=bs, seed=1) == epoch_permutation(n, seed=1, epoch=1).tolist()[0:4]
    for step in range(5):
        whole = batch_indices(step, num_items=n, batch_size=bs, seed=1)
        shards = [batch_indices(step, num_items=n, batch_size=bs, seed=1, rank=r, world_size=2) for r in range(2)]
        assert shards[0] + shards[1] == whole and len(shards[0]) == 2
    with pytest.raises(ValueError, match="divisible"):
        batch_indices(0, num_items=n, batch_size=3, seed=1, world_size=2)
    with pytest.raises(ValueError, match="fewer than train.batch_size=16"):
        batch_indices(0, num_items=n, batch_size=16, seed=1)


def test_dataloader_workers_give_the_same_training_as_in_process_loading(tmp_path):
    settings = tiny_settings(steps=3, checkpoint_every=100)
    a = train(TinyTask(), FlipDataset(), settings, tmp_path / "w0")
    b = train(TinyTask(), FlipDataset(), tiny_settings(steps=3, checkpoint_every=100, num_workers=1), tmp_path / "w1")
    _assert_same(a.model.state_dict(), b.model.state_dict())


# ------------------------------------------------------------------------------------------ EMA and precision


def test_model_ema_averages_parameters_and_buffers_with_warmup_decay():
    model = TinyAutoencoder()
    ema = ModelEMA(model, decay=0.99)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.running_mean.fill_(2.0)
        model.updates.fill_(5)
    assert ema.current_decay() == pytest.approx(2 / 11)  # (1 + n) / (10 + n) for n = 1
    ema.update(model)
    d = 2 / 11
    after = ema.module.state_dict()
    assert torch.allclose(after["encode.weight"], d * before["encode.weight"] + (1 - d) * model.encode.weight)
    assert torch.allclose(after["running_mean"], torch.full((4,), (1 - d) * 2.0))  # buffers are averaged too
    assert after["updates"].item() == 5  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "off"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", cpu)


def test_bf16_autocast_on_cpu_trains(tmp_path):
    result = train(TinyTask(), FlipDataset(), tiny_settings(steps=2, mixed_precision="bf16"), tmp_path / "run")
    assert result.mixed_precision == "bf16"
    assert result.final_loss is not None and math.isfinite(result.final_loss)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # weights stay fp32


# ------------------------------------------------------------------------------------------ exact resume


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """8 steps straight vs. 4 steps, a stop, and a resume for 4 more (with a GAN discriminator from step 2)."""
    settings = tiny_settings(steps=8, checkpoint_every=4)
    full = train(TinyTask(discriminator=True), FlipDataset(), settings, tmp_path / "full")

    with pytest.raises(Interrupted):
        train(TinyTask(discriminator=True, stop_at=5), FlipDataset(), settings, tmp_path / "split")
    assert [s for s, _ in list_checkpoints(tmp_path / "split" / "checkpoints")] == [4]
    resumed = train(TinyTask(discriminator=True, seed=99), FlipDataset(), settings, tmp_path / "split", resume=True)

    assert resumed.start_step == 4
    for name in ("model.safetensors", "ema.safetensors", "discriminator.safetensors"):
        _assert_same(
            _weights(tmp_path / "full" / "checkpoints" / "step_0000008" / name),
            _weights(tmp_path / "split" / "checkpoints" / "step_0000008" / name),
        )
    _assert_same(full.model.state_dict(), resumed.model.state_dict())

    # log.csv: one row per step, no duplicates past the resumed step, same losses as the straight run
    with open(tmp_path / "split" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "full" / "log.csv", newline="") as handle:
        full_rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert list(rows[0].keys())[:5] == ["step", "loss", "lr", "images_per_s", "mse"]
    assert {"g_loss", "d_loss", "d_real"} <= set(rows[0].keys())
    assert rows[0]["g_loss"] == "" and rows[4]["g_loss"] != ""  # the GAN term starts at step index 2
    for row, ref in zip(rows, full_rows):
        assert float(row["loss"]) == float(ref["loss"])
        expected_lr = lr_at_step(int(row["step"]) - 1, lr=1e-2, warmup_steps=2, total_steps=8, min_lr_ratio=0.1)
        assert float(row["lr"]) == pytest.approx(expected_lr, rel=1e-12)


def test_auto_resume_skips_a_corrupt_newest_checkpoint(tmp_path):
    settings = tiny_settings(steps=6, checkpoint_every=2)
    full = train(TinyTask(), FlipDataset(), settings, tmp_path / "full")
    with pytest.raises(Interrupted):
        train(TinyTask(stop_at=5), FlipDataset(), settings, tmp_path / "split")
    newest = tmp_path / "split" / "checkpoints" / "step_0000004" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step_0000004.*model.safetensors"):
        resumed = train(TinyTask(), FlipDataset(), settings, tmp_path / "split", resume=True)
    assert resumed.start_step == 2
    _assert_same(full.model.state_dict(), resumed.model.state_dict())
    verify_checkpoint(tmp_path / "split" / "checkpoints" / "step_0000004")  # re-written intact


def test_fresh_run_refuses_a_folder_with_checkpoints_and_resume_without_any_starts_fresh(tmp_path):
    settings = tiny_settings(steps=2, checkpoint_every=2)
    with pytest.warns(UserWarning, match="no checkpoint"):
        first = train(TinyTask(), FlipDataset(), settings, tmp_path / "run", resume=True)
    assert first.start_step == 0
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(TinyTask(), FlipDataset(), settings, tmp_path / "run")


def _script(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), str(run_dir), "--steps", "12", "--checkpoint-every", "3", *args]


def _script_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent / "src"), str(TESTS_DIR)]))  # this checkout's code
    env.pop("WORLD_SIZE", None)
    return env


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = _script_env()
    victim = subprocess.Popen(_script(tmp_path / "killed", "--sleep", "0.1"), env=env, stderr=subprocess.PIPE)
    first = tmp_path / "killed" / "checkpoints" / "step_0000003"
    deadline = time.monotonic() + 40
    while not first.is_dir():
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared within 40 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stderr.close()
    assert victim.returncode == -signal.SIGKILL
    done = [s for s, _ in list_checkpoints(tmp_path / "killed" / "checkpoints")]
    assert 12 not in done  # it really was interrupted

    reference = subprocess.run(_script(tmp_path / "reference"), env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    resumed = subprocess.run(_script(tmp_path / "killed", "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        _assert_same(
            _weights(tmp_path / "reference" / "checkpoints" / "step_0000012" / name),
            _weights(tmp_path / "killed" / "checkpoints" / "step_0000012" / name),
        )


# ------------------------------------------------------------------------------------------ divergence


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    settings = tiny_settings(steps=10, checkpoint_every=2, log_every=3)
    with pytest.raises(TrainingDivergedError, match=r"at step 6 .*loss=nan.*mse="):
        train(TinyTask(nan_at=5), FlipDataset(), settings, tmp_path / "run")
    checkpoints = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [s for s, _ in checkpoints] == [2, 4]  # nothing written from step 6 on
    newest = checkpoints[-1][1]
    verify_checkpoint(newest)
    assert all(torch.isfinite(t).all() for t in _weights(newest / "model.safetensors").values())
    assert not (tmp_path / "run" / "train_summary.json").exists()


# ------------------------------------------------------------------------------------------ bookkeeping


def test_logged_means_count_only_the_steps_that_reported_a_value():
    # A GAN term that starts mid-interval is averaged over its own steps, not the whole interval.
    meter = _ScalarMeter()
    meter.add({"loss": torch.tensor(1.0)})
    meter.add({"loss": torch.tensor(3.0)})
    meter.add({"loss": torch.tensor(5.0), "g_loss": torch.tensor(4.0)})
    assert meter.mean(DistributedContext()) == {"loss": 3.0, "g_loss": 4.0}
    assert meter.mean(DistributedContext()) == {}  # reset


def test_keep_last_prunes_old_checkpoints(tmp_path):
    train(TinyTask(), FlipDataset(), tiny_settings(steps=5, checkpoint_every=1, keep_last=2), tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [4, 5]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000004", "step_0000005"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the RSS peak")
def test_cpu_peak_memory_is_this_runs_not_the_process_lifetime(tmp_path):
    # Runs of an experiment share one process: an earlier 600 MB spike must not show up as this run's peak.
    spike = torch.ones(600 * 2**20 // 4)
    spike.add_(1.0)
    del spike
    peak_with_spike = _status_kib("VmHWM") * 1024
    summary = train(TinyTask(), FlipDataset(), tiny_settings(steps=2), tmp_path / "run").summary()
    assert 0 < summary["peak_memory_bytes"] < peak_with_spike - 400 * 2**20


def _status_kib(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])


def test_summary_previews_config_and_load_trained_model(tmp_path):
    run = tmp_path / "run"
    settings = tiny_settings(steps=4, checkpoint_every=2, image_every=2, log_every=2)
    result = train(TinyTask(previews=True), FlipDataset(), settings, run, config_dict={"name": "tiny", "train": {"steps": 4}})

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["world_size"] == 1 and summary["device"] == "cpu"
    assert summary["mixed_precision"] == "off"
    assert summary["parameters"] == {"model": sum(p.numel() for p in TinyAutoencoder().parameters()), "discriminator": 0}
    assert summary["images_per_s"] > 0 and summary["frames_per_s"] == pytest.approx(2 * summary["images_per_s"])
    assert summary["peak_memory_bytes"] > 0
    assert result.last_checkpoint == run / "checkpoints" / "step_0000004"

    pictures = sorted(p.name for p in (run / "pictures").iterdir())
    assert pictures == ["loss_curves.png", "recon_step0000002.png", "recon_step0000004.png", "video_step0000002.png",
                        "video_step0000004.png"]
    assert (run / "config.yaml").read_text().startswith("name: tiny")
    assert (run / "checkpoints" / "step_0000004" / "config.yaml").is_file()
    assert any((run / "tb").iterdir())

    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["images_per_s"]) > 0 and math.isfinite(float(r["mse"])) for r in rows)

    fresh = TinyAutoencoder()
    loaded = load_trained_model(run, fresh)
    assert not loaded.training
    _assert_same(loaded.state_dict(), result.ema_model.state_dict())
    raw = load_trained_model(run, TinyAutoencoder(), use_ema=False, checkpoint=2)
    _assert_same(raw.state_dict(), _weights(run / "checkpoints" / "step_0000002" / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="step_0000003"):
        load_trained_model(run, TinyAutoencoder(), checkpoint=3)


def test_settings_errors_are_raised_before_training(tmp_path):
    with pytest.raises(ValueError, match="fewer than train.batch_size=64"):
        train(TinyTask(), FlipDataset(), tiny_settings(batch_size=64), tmp_path / "a")
    with pytest.raises(ValueError, match="grad_clip"):
        train(TinyTask(), FlipDataset(), tiny_settings(grad_clip=-1.0), tmp_path / "b")
    assert not (tmp_path / "a").exists()
