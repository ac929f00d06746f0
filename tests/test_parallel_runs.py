"""Experiments in parallel (``--jobs 2``) and as submitit jobs: the same weights and tables as one run after the other."""

from __future__ import annotations

import contextlib
import copy
import csv
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pseudovideo import experiments as E
from pseudovideo.config import ConfigError
from pseudovideo.experiments import launchers
from pseudovideo.experiments.scheduler import RunsFailedError

from test_experiments import TINY_SCALE

# Columns that measure time or memory of the process, not what was computed.
TIMING_COLUMNS = ("train_images_per_s", "train_frames_per_s", "peak_memory_mb", "train_seconds")
LIFTED = {"model.family": "lifted", "model.lifted": {"base": "run:{experiment_dir}/pre-s{seed}", "kind": "tokenizer"}}


def _experiment(tmp_path: Path) -> Path:
    """pre (VQVAE) and cvivit are independent; image continues pre (a dependency, listed first). cfd included."""
    scale = copy.deepcopy(TINY_SCALE)
    scale["eval"].update(metrics=["psnr", "ssim", "swd", "cfd"], feature_net_steps=20, cache_dir=str(tmp_path / "cache"))
    data = {
        "name": "par", "description": "parallel test", "metrics": ["psnr", "ssim", "swd_avg", "cfd"],
        "plot": {"x": "variant", "group_by": [], "kind": "bar"}, "seeds": [0],
        "scales": {"cpu-small": scale, "paper": {}},
        "base": {"pseudo_video.corruptions": [{"name": "blur", "max_level": 1.0}]},
        "runs": [
            {"name": "image", "overrides": {**LIFTED, "model.lifted.temporal": "none", "pseudo_video.num_frames": 1}},
            {"name": "pre", "overrides": {"model.family": "vqvae", "pseudo_video.num_frames": 1}},
            {"name": "cvivit", "overrides": {"model.family": "cvivit", "pseudo_video.num_frames": 3}},
        ],
    }
    path = tmp_path / "par.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "results.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = sorted((run_dir / "checkpoints").iterdir())[-1:]
    return {f"{name}/{key}": value for name in ("model", "ema")
            for key, value in load_file(checkpoint / f"{name}.safetensors").items()}


def _assert_same_runs(folder: Path, reference: Path) -> None:
    assert _rows(folder) == _rows(reference)
    for run in ("pre-s0", "image-s0", "cvivit-s0"):
        mine, theirs = _weights(folder / run), _weights(reference / run)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), run


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The experiment run one run after the other in this process, with one torch thread (as each worker has)."""
    tmp_path = tmp_path_factory.mktemp("sequential")
    with _one_thread():
        E.run_experiment(_experiment(tmp_path), out_dir=tmp_path / "out", log=lambda _: None)
    return tmp_path, tmp_path / "out" / "par" / "cpu-small"


def test_jobs_2_gives_the_weights_and_table_of_one_run_after_the_other(
    sequential: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launchers, "available_cores", lambda: 2)  # one thread per worker, whatever the machine
    lines: list[str] = []
    with _one_thread():  # the feature net, trained here before the runs start, as the sequential run trained it
        result = E.run_experiment(_experiment(tmp_path), out_dir=tmp_path / "out", jobs=2, log=lines.append)
    folder = tmp_path / "out" / "par" / "cpu-small"
    assert result.actions == {"pre-s0": "train", "cvivit-s0": "train", "image-s0": "train"}
    _assert_same_runs(folder, sequential[1])
    text = "\n".join(lines)
    # image starts from pre: it starts only once pre has finished
    assert text.index("pre-s0 finished") < text.index("] image-s0: train")
    # the feature net behind cfd: trained once, here, before any run started; no run trained its own
    assert text.count("training the feature classifier") == 1
    assert text.index("training the feature classifier") < text.index("[1/3]")
    for run in ("pre-s0", "image-s0", "cvivit-s0"):  # one log per run, holding its own output
        log = (folder / "logs" / f"{run}.log").read_text()
        assert f"{run}: train" in log and "training the feature classifier" not in log
    assert "| image |" in result.markdown


def test_submitit_local_jobs_give_the_same_weights_and_table(sequential: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    path = _experiment(tmp_path)
    (tmp_path / "cache").symlink_to(sequential[0] / "cache")
    lines: list[str] = []
    # cluster: local runs each job as a local process through submitit; cpus_per_run 1 = one torch thread per run
    result = E.run_experiment(path, out_dir=tmp_path / "out", launcher="submitit", jobs=2, log=lines.append,
                              overrides=["slurm.cluster=local", "slurm.cpus_per_run=1", "slurm.time_minutes=10"])
    folder = tmp_path / "out" / "par" / "cpu-small"
    assert set(result.actions.values()) == {"train"}
    _assert_same_runs(folder, sequential[1])
    text = "\n".join(lines)
    assert text.index("pre-s0 finished") < text.index("] image-s0: train")
    assert list((folder / "slurm").glob("*_log.out")) and (folder / "logs" / "image-s0.log").is_file()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"partition": ""}, r"slurm.partition: expected a non-empty string"),
        ({"gpus_per_run": -1}, r"slurm.gpus_per_run: expected an integer >= 0"),
        ({"time_minuts": 5}, r"unknown key 'time_minuts' \(did you mean 'time_minutes'\?\)"),
        ({"paper": {"cpus_per_run": 0}}, r"slurm.paper.cpus_per_run: expected an integer >= 1"),
        ({"cluster": "pbs"}, r"slurm.cluster: expected slurm or local"),
    ],
)
def test_slurm_settings_are_checked_with_the_experiment_file(section: dict, message: str) -> None:
    data = {"name": "x", "scales": {"cpu-small": {}, "paper": {}}, "runs": [{"name": "a"}], "slurm": section}
    with pytest.raises(ConfigError, match=message):
        E.parse_experiment(data)


def test_slurm_settings_per_scale_and_from_the_command_line() -> None:
    data = {"name": "x", "scales": {"cpu-small": {}, "paper": {}}, "runs": [{"name": "a"}],
            "slurm": {"paper": {"partition": "gpu", "gpus_per_run": 1}}}
    spec = E.parse_experiment(data)
    settings = launchers.slurm_settings(spec.slurm["paper"], ["slurm.time_minutes=30", "slurm.setup=[module load cuda]"])
    assert (settings.partition, settings.gpus_per_run, settings.time_minutes) == ("gpu", 1, 30)
    assert settings.setup == ["module load cuda"] and settings.cpus_per_run == 4  # the default
    assert launchers.slurm_settings(spec.slurm["cpu-small"], []).partition is None
    with pytest.raises(ConfigError, match="slurm.mem_gb: expected a positive number"):
        launchers.slurm_settings({}, ["slurm.mem_gb=lots"])
    with pytest.raises(ConfigError, match="slurm.partition=gpu: Slurm settings need --launcher submitit"):
        launchers.choose_launcher("local", 2, {}, ["slurm.partition=gpu"], Path("."), print)
    with pytest.raises(ConfigError, match="--jobs: expected a positive number"):
        launchers.choose_launcher("local", 0, {}, [], Path("."), print)


def test_a_failed_run_fails_alone_and_its_dependents_do_not_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launchers, "available_cores", lambda: 2)
    data = yaml.safe_load(_experiment(tmp_path).read_text())
    data["metrics"] = ["psnr"]
    data["scales"]["cpu-small"]["eval"]["metrics"] = ["psnr"]
    data["runs"][1]["overrides"]["train.lr"] = 1.0e30  # pre diverges: its loss becomes NaN
    (tmp_path / "par.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RunsFailedError) as caught:
        E.run_experiment(tmp_path / "par.yaml", out_dir=tmp_path / "out", jobs=2, log=lambda _: None)
    message, folder = str(caught.value), tmp_path / "out" / "par" / "cpu-small"
    assert "2 of 3 runs did not finish" in message and "\n" not in message
    assert "pre-s0 (TrainingDivergedError: " in message and f"log: {folder / 'logs' / 'pre-s0.log'}" in message
    assert "image-s0 (not started: the run it starts from, pre-s0, failed" in message
    assert "Traceback" in (folder / "logs" / "pre-s0.log").read_text()
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [row["run"] for row in rows] == ["cvivit-s0"]  # the run that finished is tabulated


def test_cli_refuses_a_bad_jobs_count_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pseudovideo.cli import main

    assert main(["experiment", str(_experiment(tmp_path)), "--jobs", "0", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "pseudovideo experiment: error: --jobs: expected a positive number, got 0"
    assert not (tmp_path / "out").exists()
