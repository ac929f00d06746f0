"""The hostile-input table, continued: what a command writes. No write outside ``out_dir``, an export never
deletes a file, a full disk reported by safetensors and a Ctrl-C both end in one line naming what was kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

import pseudovideo
import pseudovideo.checkpoint as checkpoint_module
from pseudovideo.checkpoint import list_checkpoints, verify_checkpoint
from pseudovideo.cli import main

from test_hostile_inputs import _assert_one_line_error
from test_train_cli import TINY, TOKENIZERS

SRC = Path(pseudovideo.__file__).resolve().parents[1]  # the package this process tests, for the subprocesses
VQVAE = [*TINY, *TOKENIZERS["vqvae"], "eval.metrics=[psnr]"]
EXPORTABLE_UNET = ["model.family=unet", "pseudo_video.num_frames=1", "model.unet.base_channels=32",
                   "model.unet.channel_mult=[1,1]", "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=[4]",
                   "model.unet.num_heads=2", "diffusion.num_timesteps=20", "diffusion.sample_steps=2"]


# ------------------------------------------------------------------------------------------ run names


@pytest.mark.parametrize("name", ["../../escape", "ABSOLUTE", "..", "a/b", "."])
def test_a_run_name_cannot_leave_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    out_dir = tmp_path / "deep" / "runs"
    name = str(tmp_path / "abs" / "path") if name == "ABSOLUTE" else name
    _assert_one_line_error(capsys, ["train", *VQVAE, f"out_dir={out_dir}", f"name={name}", "--no-eval"], "name", name)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


# ------------------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def exportable_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("exportable")
    argv = ["train", *TINY, *EXPORTABLE_UNET, "train.steps=1", "train.checkpoint_every=1", f"out_dir={tmp}", "name=u", "--no-eval"]
    assert main(argv) == 0
    return tmp / "u"


def test_export_into_a_folder_with_files_is_refused_and_never_deletes(
    exportable_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import diffusers

    out = tmp_path / "mine"
    out.mkdir()
    theirs = {  # sharded weights named as diffusers' save_pretrained cleans them up, and a note
        "diffusion_pytorch_model-00001-of-00002.safetensors": b"shard 1", "diffusion_pytorch_model-00002-of-00002.safetensors": b"shard 2",
        "notes.txt": b"keep me", "config.json": b'{"mine": true}',
    }
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    _assert_one_line_error(capsys, ["export", str(exportable_run), str(out)], str(out), "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == theirs
    assert main(["export", str(exportable_run), str(out), "--overwrite"]) == 0
    for name in ("diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors", "notes.txt"):
        assert (out / name).read_bytes() == theirs[name], f"export deleted or changed {name}"
    assert json.loads((out / "config.json").read_text())["_class_name"] == "UNet2DModel"  # ours, with --overwrite
    assert sorted(p.name for p in out.iterdir()) == sorted([*theirs, "diffusion_pytorch_model.safetensors", "scheduler"])
    assert list(diffusers.UNet2DModel.from_pretrained(str(out)).config.block_out_channels) == [32, 32]


# ------------------------------------------------------------------------------------------ full disk


def test_a_full_disk_reported_by_safetensors_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    real_save = checkpoint_module.save_model
    calls = []

    def filling_save(module, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(filename)
        if len(calls) > 2:  # the first checkpoint (model + ema) fits, the second does not
            # what safetensors 0.8 raised writing into a full 64 KB tmpfs (measured): not an OSError, no errno
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(module, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_model", filling_save)
    line = _assert_one_line_error(capsys, ["train", *VQVAE, "name=r", f"out_dir={tmp_path}", "--no-eval"],
                                  "no space left on device", "step_0000004/model.safetensors", "step_0000002 is kept", "resume")
    assert "os error 28" not in line
    assert [step for step, _ in list_checkpoints(tmp_path / "r" / "checkpoints")] == [2]
    assert not any(p.name.startswith(".tmp_") for p in (tmp_path / "r" / "checkpoints").iterdir())


# ------------------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_prints_the_step_the_checkpoint_and_the_resume_command(tmp_path: Path) -> None:
    run = tmp_path / "r"
    argv = [sys.executable, "-m", "pseudovideo", "train", *VQVAE, "train.steps=100000", "train.checkpoint_every=2",
            "train.image_every=100000", f"out_dir={tmp_path}", "name=r", "--no-eval"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit that: restore it.
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=restore_sigint)
    try:
        deadline = time.monotonic() + 240
        while not list_checkpoints(run / "checkpoints") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130, err
    assert len(lines) == 1 and "Traceback" not in err, err
    kept = list_checkpoints(run / "checkpoints")
    assert kept, "the checkpoint written before Ctrl-C was lost"
    step, folder = kept[-1]
    assert "interrupted" in lines[0] and "at step " in lines[0], lines[0]
    assert str(folder) in lines[0] and f"pseudovideo train --resume {run}" in lines[0], lines[0]
    verify_checkpoint(folder)  # intact
