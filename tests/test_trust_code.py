"""Hostile inputs that name code: a ``python:`` model base runs only with ``--trust-code`` / ``trust_code=True``.

Every path by which a config can name code (a config file, an override, a shared run folder read by eval,
sample, export or a ``run:`` base, an experiment file, a module beside the config under ``python -m`` or
PYTHONPATH) is tried with a module that writes a marker file when it is imported and another when its factory
is called: without the flag there must be one line naming the code and the file, and no marker; with it,
both markers. The last tests check that what else a config names (datasets, weights) is read as data.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import pseudovideo
from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.factory.models import build_model
from pseudovideo.factory.models import load_run
from pseudovideo.interop.trust import UntrustedCodeError
from pseudovideo.training.runs import train_run

from test_hostile_inputs import _assert_one_line_error, _run

SRC = Path(pseudovideo.__file__).resolve().parents[1]  # the package this process tests, for the subprocesses
UNET = ["model.unet.base_channels=8", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2", "diffusion.num_timesteps=20",
        "diffusion.sample_steps=2"]
TINY = ["data.dataset=digits", "data.resolution=8", "data.max_images=16", "data.channels=1", "train.steps=1",
        "train.batch_size=4", "train.checkpoint_every=1", "train.warmup_steps=1", "train.progress=false",
        "train.device=cpu", "train.log_to=[csv]", "eval.num_images=8", "eval.batch_size=8", "eval.metrics=[swd]"]
FACTORY = """\
from pathlib import Path
Path({imported!r}).write_text("imported")


def make(in_channels, resolution):
    Path({called!r}).write_text("called")
    from pseudovideo.models.unet import image_unet
    return image_unet(in_channels=in_channels, resolution=resolution, base_channels=32, channel_mult=(1, 1),
                      num_res_blocks=1, attention_resolutions=(4,), num_heads=2)  # exportable to diffusers
"""


@dataclass
class MarkerCode:
    """A module ``name`` in ``folder`` whose import writes ``imported`` and whose ``make()`` writes ``called``."""

    folder: Path
    name: str

    @property
    def spec(self) -> str:
        return f"{self.name}:make"

    @property
    def imported(self) -> Path:
        return self.folder / f"{self.name}.imported"

    @property
    def called(self) -> Path:
        return self.folder / f"{self.name}.called"

    def ran(self) -> bool:
        """Whether the module was imported or its factory called (either marker exists)."""
        return self.imported.exists() or self.called.exists()

    def reset(self) -> None:
        """Deletes the markers and forgets the import, so that the next import writes its marker again."""
        self.imported.unlink(missing_ok=True)
        self.called.unlink(missing_ok=True)
        sys.modules.pop(self.name, None)

    def lifted(self) -> list[str]:
        """Overrides of a one-frame run whose model is this module's network (lifted without temporal layers)."""
        return ["model.family=lifted", f"model.lifted.base=python:{self.spec}", "model.lifted.kind=diffusion",
                "model.lifted.temporal=none", "pseudo_video.num_frames=1", *UNET, *TINY]


def _marker_code(folder: Path, name: str | None = None) -> MarkerCode:
    folder.mkdir(parents=True, exist_ok=True)
    code = MarkerCode(folder, name or f"pv_marker_{uuid.uuid4().hex[:10]}")
    (folder / f"{code.name}.py").write_text(FACTORY.format(imported=str(code.imported), called=str(code.called)))
    return code


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A marker module importable from this process (its folder on sys.path)."""
    marker = _marker_code(tmp_path / "usercode")
    monkeypatch.syspath_prepend(str(marker.folder))
    yield marker
    sys.modules.pop(marker.name, None)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory):
    """A run folder (trained with the flag) whose config.yaml names a marker module: what someone might share."""
    tmp = tmp_path_factory.mktemp("shared")
    marker = _marker_code(tmp / "usercode")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(marker.folder))
        config = build_config(overrides=[*marker.lifted(), f"out_dir={tmp / 'runs'}", "name=shared"])
        train_run(config, trust_code=True)
        evaluate_run(config.run_dir, device="cpu", trust_code=True)  # an eval.json that a refused eval must not move
        assert marker.imported.exists() and marker.called.exists()
        marker.reset()
        yield marker, config.run_dir
    marker.reset()


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str], marker: MarkerCode, *names: str) -> str:
    line = _assert_one_line_error(capsys, argv, f"python:{marker.spec}", "--trust-code", *names)
    assert not marker.ran(), "code named by a config ran without --trust-code"
    return line


# ------------------------------------------------------------------------------------------ Python API


def test_build_model_train_run_and_load_run_need_trust_code(code: MarkerCode, tmp_path: Path) -> None:
    config = build_config(overrides=[*code.lifted(), f"out_dir={tmp_path / 'runs'}", "name=api"])
    for refused in (lambda: build_model(config, 1), lambda: train_run(config)):
        with pytest.raises(UntrustedCodeError, match=f"python:{code.spec}.*trust_code=True"):
            refused()
        assert not code.ran()
    assert not config.run_dir.exists()  # refused before any work
    train_run(config, trust_code=True)
    assert code.imported.exists() and code.called.exists()
    code.reset()
    for refused in (lambda: load_run(config.run_dir), lambda: evaluate_run(config.run_dir, device="cpu")):
        with pytest.raises(UntrustedCodeError, match=str(config.run_dir / "config.yaml")):
            refused()
        assert not code.ran()
    assert not (config.run_dir / "eval.json").exists()
    load_run(config.run_dir, trust_code=True)
    assert code.called.exists()


# ------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize("named_by", ["config file", "override"])
def test_train_runs_code_named_by_a_config_only_with_trust_code(
    code: MarkerCode, tmp_path: Path, capsys: pytest.CaptureFixture[str], named_by: str
) -> None:
    overrides = [*code.lifted(), f"out_dir={tmp_path / 'runs'}", "name=r", "--no-eval"]
    if named_by == "config file":
        config_file = tmp_path / "user.yaml"
        config_file.write_text(f"model:\n  family: lifted\n  lifted:\n    base: python:{code.spec}\n")
        argv, source = ["train", "-c", str(config_file), *overrides[2:]], str(config_file)
    else:
        argv, source = ["train", *overrides], "override"
    _refusal(capsys, argv, code, source)
    assert not (tmp_path / "runs").exists()
    assert main([*argv, "--trust-code"]) == 0
    assert code.imported.exists() and code.called.exists()


@pytest.mark.parametrize("command", ["eval", "sample", "export", "run: base"])
def test_a_shared_run_folder_runs_no_code_without_trust_code(
    shared_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    marker, run = shared_run
    out = tmp_path / "out"
    argv = {
        "eval": ["eval", str(run), "--device", "cpu"],
        "sample": ["sample", str(run), "--n", "2", "--device", "cpu", "--out", str(out)],
        "export": ["export", str(run), str(out)],
        "run: base": ["train", "model.family=lifted", f"model.lifted.base=run:{run}", "model.lifted.temporal=conv",
                      "pseudo_video.num_frames=2", *UNET, *TINY, f"out_dir={tmp_path / 'runs'}", "name=warm", "--no-eval"],
    }[command]
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(marker.folder))
        try:
            before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
            _refusal(capsys, argv, marker, str(run / "config.yaml"))
            assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run folder is untouched
            assert not out.exists() and not (tmp_path / "runs").exists()
            assert main([*argv, "--trust-code"]) == 0
            assert marker.imported.exists() and marker.called.exists()
        finally:
            marker.reset()
    if command == "export":
        assert (out / "config.json").is_file()


def test_an_experiment_file_runs_no_code_without_trust_code(code: MarkerCode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_experiments import tiny_experiment, write_experiment

    spec = tiny_experiment(seeds=[0])
    lifted = dict(o.split("=", 1) for o in code.lifted() if not o.startswith(("train.", "eval.", "data.")))
    spec["runs"] = [{"name": "mine", "labels": {"pair": "diffusion"}, "overrides": {k: yaml.safe_load(v) for k, v in lifted.items()}}]
    spec["scales"]["cpu-small"]["train"].update({"steps": 1, "batch_size": 4})
    spec["scales"]["cpu-small"]["eval"] = {"num_images": 8, "batch_size": 8, "metrics": ["swd"]}
    spec["metrics"], spec["plot"] = ["swd_avg"], {"x": "pseudo_video.num_frames", "group_by": ["pair"]}
    path = write_experiment(tmp_path, spec)
    argv = ["experiment", str(path), "--out", str(tmp_path / "exp")]
    _refusal(capsys, argv, code, str(path), "mine-s0")
    assert not (tmp_path / "exp").exists()
    assert main([*argv, "--trust-code"]) == 0
    assert code.imported.exists() and code.called.exists()


@pytest.mark.parametrize("how", ["python -m beside the config", "PYTHONPATH"])
def test_a_module_beside_the_config_is_not_imported(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "shared_folder"
    code = _marker_code(folder, "evil")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"family": "lifted", "lifted": {"base": "python:evil:make"}}}))
    overrides = [o for o in code.lifted() if not o.startswith("model.lifted.base")]
    argv = [sys.executable, "-m", "pseudovideo", "train", "-c", "config.yaml", *overrides, f"out_dir={tmp_path / 'runs'}",
            "name=r", "--no-eval"]
    path = os.pathsep.join([str(SRC), *([str(folder)] if how == "PYTHONPATH" else [])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cwd = folder if how.startswith("python -m") else tmp_path  # python -m puts the working folder on sys.path
    if how == "PYTHONPATH":
        argv[argv.index("config.yaml")] = str(folder / "config.yaml")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "python:evil:make" in lines[0] and "config.yaml" in lines[0] and "--trust-code" in lines[0]
    assert not code.ran()
    if how.startswith("python -m"):  # the same command with the flag imports and runs it
        done = subprocess.run([*argv, "--trust-code"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert code.imported.exists() and code.called.exists()


@pytest.mark.parametrize("spec, says", [("os:getcwd", "returned str, not a torch.nn.Module"),
                                         ("os:system", "calling system() raised TypeError")])
def test_trusted_code_that_is_no_factory_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str,
                                                            says: str) -> None:
    argv = ["train", "model.family=lifted", f"model.lifted.base=python:{spec}", "model.lifted.kind=diffusion", *TINY,
            f"out_dir={tmp_path / 'runs'}", "name=r", "--no-eval", "--trust-code"]
    _assert_one_line_error(capsys, argv, f"python:{spec}", says)


def test_help_of_every_model_building_command_offers_trust_code(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "eval", "sample", "export", "experiment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--trust-code" in capsys.readouterr().out, command


# ------------------------------------------------------------------------------------------ the rest is data


class _MarkerPayload:
    """Pickles to a call writing a marker file: a loader that unpickles it without checks runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (pathlib.Path.write_text, (self.marker, "pwned"))


def test_a_cifar10_root_of_hostile_pickles_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    marker = tmp_path / "unpickled"
    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / name).write_bytes(pickle.dumps(_MarkerPayload(marker)))
    _assert_one_line_error(capsys, ["show", "data.dataset=cifar10", f"data.root={tmp_path / 'cifar'}", "--out", str(tmp_path / "s")],
                           "integrity check")
    assert not marker.exists()


def test_an_eps_file_called_png_runs_no_program(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from PIL import EpsImagePlugin

    from test_hostile_inputs import _data_args, _split_folders

    marker, tools = tmp_path / "ghostscript_ran", tmp_path / "bin"
    tools.mkdir()
    (tools / "gs").write_text(f"#!/bin/sh\necho ran >> '{marker}'\n")  # PIL renders EPS by running gs
    (tools / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look for gs again
    def eps_called_png(folder: Path) -> str:
        (folder / "drawing.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
        return "drawing.png"

    folder, _ = _split_folders(tmp_path / "images", eps_called_png)
    code, lines = _run(capsys, _data_args("show", folder, tmp_path))
    assert not marker.exists(), "a program ran to decode a file of the dataset folder"
    assert code == 2 and len(lines) == 1 and "drawing.png" in lines[0] and "EPS" in lines[0], lines


def test_a_diffusers_base_of_pickled_weights_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    marker = tmp_path / "unpickled"
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "UNet2DModel", "in_channels": 1, "out_channels": 1, "sample_size": 8, "layers_per_block": 1,
        "block_out_channels": [32, 32], "down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2}))
    torch.save({"conv_in.weight": _MarkerPayload(marker)}, folder / "diffusion_pytorch_model.bin")
    code, lines = _run(capsys, ["train", "model.family=lifted", f"model.lifted.base=diffusers:{folder}", *TINY,
                                f"out_dir={tmp_path / 'runs'}", "name=d", "--no-eval"])
    assert not marker.exists()
    assert code == 2 and len(lines) == 1 and f"diffusers:{folder}" in lines[0] and "weights" in lines[0].lower(), lines
