"""Tests of the torchrun plumbing: single-process fallback, and a real 2-process Gloo run on the CPU
whose update equals the single-process update on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pseudovideo.checkpoint import load_checkpoint
from pseudovideo.training.distributed import (
    all_gather_objects,
    all_reduce_mean,
    init_distributed,
    resolve_device,
    teardown,
    unwrap_model,
    wrap_ddp,
)
from pseudovideo.training.engine import train

from _train_script import FlipDataset, TinyTask, tiny_settings

TESTS_DIR = Path(__file__).resolve().parent


def test_single_process_when_world_size_is_unset(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    assert ctx.device == torch.device("cpu") and ctx.backend is None
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, ctx) is model
    x = torch.tensor([1.0, 3.0])
    assert all_reduce_mean(x, ctx) is x
    assert all_gather_objects({"a": 1}, ctx) == [{"a": 1}]
    teardown(ctx)  # no-op


def test_bad_environment_and_devices_are_clear_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        init_distributed("cpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected


def test_unwrap_model_removes_compile_wrappers():
    model = nn.Linear(2, 2)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.compile(model)) is model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_run_matches_one_process_on_the_same_global_batch(tmp_path, monkeypatch):
    steps, batch = 4, 4
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent / "src"), str(TESTS_DIR)]))  # this checkout's code
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(TESTS_DIR / "_train_script.py"), str(tmp_path / "ddp"),
        "--steps", str(steps), "--batch-size", str(batch), "--checkpoint-every", "2", "--deterministic",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(1)
    single = train(
        TinyTask(deterministic=True), FlipDataset(),
        tiny_settings(steps=steps, batch_size=batch, checkpoint_every=2, ema_decay=0.0, grad_clip=0.0),
        tmp_path / "single",
    )
    ddp_weights = load_file(str(tmp_path / "ddp" / "checkpoints" / "step_0000004" / "model.safetensors"))
    for key, value in single.model.state_dict().items():
        if value.dtype.is_floating_point and key != "running_mean":
            torch.testing.assert_close(ddp_weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    initial = TinyTask(deterministic=True).model.state_dict()
    assert not torch.allclose(ddp_weights["encode.weight"], initial["encode.weight"])  # it did train
    # each rank updates the forward buffer on its half batch; DDP keeps rank 0's copy
    assert ddp_weights["updates"].item() == steps

    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_0000004")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])  # per-rank streams
    summary = (tmp_path / "ddp" / "train_summary.json").read_text()
    assert '"world_size": 2' in summary


@pytest.mark.parametrize("frames", [["pseudo_video.num_frames=1"],
                                    ["pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true"]])
def test_cvivit_seeing_single_frames_trains_under_ddp(tmp_path, frames):
    # With one frame C-ViViT's tubelet layers get no gradient; DDP must be told, or its second step fails.
    from pseudovideo.config import build_config
    from pseudovideo.training.tasks import build_task

    config = build_config(None, [
        "model.family=cvivit", "data.resolution=8", "model.cvivit.dim=16", "model.cvivit.heads=2",
        "model.cvivit.dim_head=8", "model.cvivit.spatial_depth=1", "model.cvivit.temporal_depth=1",
        "model.cvivit.codebook_size=16", "model.cvivit.codebook_dim=4", *frames,
    ])
    task = build_task(config, channels=3)
    assert task.find_unused_parameters
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(task.model, find_unused_parameters=task.find_unused_parameters)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(2, 3, 8, 8, generator=generator) * 2 - 1
        for step in range(2):
            loss, _ = task.training_loss(model, images, step, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.distributed.destroy_process_group()
