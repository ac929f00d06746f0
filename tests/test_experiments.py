"""Experiments: grid expansion and validation, the runner (tables, plots, skip, resume), FLOP counts."""

from __future__ import annotations

import copy
import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from pseudovideo import experiments as E
from pseudovideo.config import ConfigError, build_config, config_to_dict
from pseudovideo.runs import train_run

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO_ROOT / "configs" / "experiments").glob("*.yaml"))

TINY_SCALE = {
    "data.dataset": "digits", "data.resolution": 8, "data.max_images": 64,
    "train": {"steps": 3, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "image_every": 100,
              "warmup_steps": 1, "progress": False, "device": "cpu"},
    "eval": {"num_images": 16, "batch_size": 8, "metrics": ["psnr", "ssim", "swd"]},
    "model.vqvae": {"base_channels": 8, "codebook_size": 16, "codebook_dim": 4},
    "model.cvivit": {"dim": 16, "heads": 2, "dim_head": 8, "spatial_depth": 1, "temporal_depth": 1,
                     "codebook_size": 16, "codebook_dim": 4},
}


def tiny_experiment(**changes: Any) -> dict[str, Any]:
    """A tiny experiment mapping: VQVAE (T=1) and C-ViViT (T=3) on 8x8 digits, seeds 0 and 1, 3 steps."""
    data = {
        "name": "tiny",
        "description": "tiny test experiment",
        "metrics": ["psnr", "ssim", "swd_avg"],
        "plot": {"x": "pseudo_video.num_frames", "group_by": ["pair"]},
        "seeds": [0, 1],
        "scales": {"cpu-small": copy.deepcopy(TINY_SCALE), "paper": {"data.resolution": 16}},
        "base": {"pseudo_video.corruptions": [{"name": "blur", "max_level": 1.0}]},
        "runs": [
            {"name": "vqvae", "labels": {"pair": "tokenizer"},
             "overrides": {"model.family": "vqvae", "pseudo_video.num_frames": 1}},
            {"name": "cvivit", "labels": {"pair": "tokenizer"}, "overrides": {"model.family": "cvivit"},
             "only_scales": ["cpu-small"], "grid": {"pseudo_video.num_frames": [3]}},
        ],
    }
    data.update(changes)
    return data


def write_experiment(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Counts the runner's calls of the real train_run (name, resume)."""
    calls: list[tuple[str, bool]] = []

    def counting_train_run(config, *, resume=False):
        calls.append((config.name, resume))
        return train_run(config, resume=resume)

    monkeypatch.setattr(E, "train_run", counting_train_run)
    return calls


# ------------------------------------------------------------------------------------- expansion


def test_grid_expansion_names_overrides_and_precedence(tmp_path: Path) -> None:
    data = tiny_experiment(seeds={"cpu-small": [0, 1], "paper": [5]})
    data["runs"].append({
        "name": "mix", "overrides": {"model.family": "cvivit", "train.lr": 0.5},
        "scales": {"cpu-small": {"train.lr": 0.25}},
        "grid": {"pseudo_video.num_frames": [2, 5],
                 "corruption": {"noise": {"pseudo_video.corruptions": [{"name": "noise", "max_level": 0.3}]},
                                "blur+noise": {"pseudo_video.corruptions": [{"name": "blur"}, {"name": "noise"}]}}},
    })
    spec = E.parse_experiment(data)
    runs = E.expand_experiment(spec, "cpu-small", tmp_path)
    names = [r.name for r in runs]
    assert names == [
        "vqvae-s0", "vqvae-s1", "cvivit-T3-s0", "cvivit-T3-s1",
        "mix-T2-noise-s0", "mix-T2-noise-s1", "mix-T2-blur+noise-s0", "mix-T2-blur+noise-s1",
        "mix-T5-noise-s0", "mix-T5-noise-s1", "mix-T5-blur+noise-s0", "mix-T5-blur+noise-s1",
    ]
    by_name = {r.name: r for r in runs}
    run = by_name["mix-T5-blur+noise-s1"]
    assert run.axes == {"pseudo_video.num_frames": 5, "corruption": "blur+noise"} and run.seed == 1
    config = run.config
    assert config.name == run.name and config.run_dir == tmp_path / "tiny" / "cpu-small" / run.name
    assert config.train.seed == 1 and config.pseudo_video.num_frames == 5
    assert [c.name for c in config.pseudo_video.corruptions] == ["blur", "noise"]
    assert config.train.lr == 0.25  # the variant's scale overrides win over its plain overrides
    assert config.data.resolution == 8 and config.model.cvivit.dim == 16  # scale (nested mappings flattened)
    assert by_name["vqvae-s0"].config.pseudo_video.corruptions[0].max_level == 1.0  # base
    assert by_name["vqvae-s0"].labels == {"pair": "tokenizer"}
    # paper scale: its own seeds, cvivit left out by only_scales
    assert [r.name for r in E.expand_experiment(spec, "paper", tmp_path)][:1] == ["vqvae-s5"]
    assert not any(r.name.startswith("cvivit") for r in E.expand_experiment(spec, "paper", tmp_path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["runs"][0]["overrides"].update({"model.vqvae.base_chanels": 8}), "model.vqvae.base_chanels"),
        (lambda d: d["runs"][1]["overrides"].update({"model.cvivit.temporal_patch_size": 3}), "temporal_patch_size"),
        (lambda d: d.update(rnus=[]), "did you mean 'runs'"),
        (lambda d: d["runs"][0].update(overides={}), "did you mean 'overrides'"),
        (lambda d: d["base"].update({"train.seed": 3}), "train.seed"),
        (lambda d: d["runs"][1]["overrides"].update({"eval.num_images": 8}), "eval"),
        (lambda d: d.update(plot={"x": "pseudo_video.num_frame"}), "pseudo_video.num_frame"),
        (lambda d: d.update(metrics=["psnr", "fidd"]), "fidd"),
    ],
)
def test_invalid_experiments_fail_before_any_training(
    tmp_path: Path, train_calls: list, change: Any, message: str
) -> None:
    data = tiny_experiment()
    change(data)
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == [] and not (tmp_path / "out").exists()


def test_a_bad_run_config_names_the_run_and_key(tmp_path: Path) -> None:
    data = tiny_experiment()
    data["runs"][1]["grid"]["pseudo_video.num_frames"] = [3, 0]
    with pytest.raises(ConfigError, match=r"run cvivit-T0-s0: pseudo_video.num_frames"):
        E.expand_experiment(E.parse_experiment(data), "cpu-small", tmp_path)
    with pytest.raises(ConfigError, match="unknown scale 'gpu'.*cpu-small, paper"):
        E.expand_experiment(E.parse_experiment(data), "gpu", tmp_path)


def test_missing_cifar_folder_names_the_tar_command(tmp_path: Path, train_calls: list) -> None:
    data = tiny_experiment()
    data["scales"]["cpu-small"]["data.dataset"] = f"folder:{tmp_path}/nowhere/cifar10-jpeg"
    with pytest.raises(FileNotFoundError, match=r"nowhere/cifar10-jpeg.*tar -xzf \.\./shared/data/cifar10-jpeg\.tar\.gz"):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == []


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_experiments_expand_and_validate_at_both_scales(path: Path) -> None:
    spec = E.load_experiment(path)
    assert set(spec.scales) >= {"cpu-small", "paper"}
    for scale in ("cpu-small", "paper"):
        runs = E.expand_experiment(spec, scale, "runs/experiments")
        assert runs and len({r.name for r in runs}) == len(runs)
        assert len({json.dumps(config_to_dict(r.config)["eval"]) for r in runs}) == 1
    small = E.expand_experiment(spec, "cpu-small", "runs/experiments")
    # CPU-sized: CIFAR-10 subsets at 16x16 (32x32 for the tokenizer pair, the resolution its issue asks for)
    assert all(r.config.data.dataset == "folder:.data/cifar10-jpeg" and r.config.data.resolution in (16, 32) for r in small)
    assert all(r.config.data.max_images is not None and r.config.data.max_images <= 5000 for r in small)


def test_shipped_experiment_names() -> None:
    assert {p.stem for p in SHIPPED} >= {"frames", "markov-order", "data-control", "compute-control"}


# ------------------------------------------------------------------------------------- aggregation


def test_aggregate_over_seeds_on_known_numbers() -> None:
    rows = [
        {"variant": "a", "seed": 0, "psnr": 10.0, "fid": ""},
        {"variant": "a", "seed": 1, "psnr": 12.0, "fid": ""},
        {"variant": "a", "seed": 2, "psnr": 14.0, "fid": ""},
        {"variant": "b", "seed": 0, "psnr": 20.0, "fid": 3.0},
    ]
    groups = E.aggregate_over_seeds(rows, ["variant"], ["psnr", "fid"])
    assert [g["variant"] for g in groups] == ["a", "b"] and [g["seeds"] for g in groups] == [3, 1]
    mean, std = groups[0]["psnr"]
    assert mean == pytest.approx(12.0) and std == pytest.approx(2.0)  # sample std of 10, 12, 14
    assert "fid" not in groups[0]  # empty cells are not numbers
    assert groups[1]["psnr"] == (20.0, None) and groups[1]["fid"] == (3.0, None)
    assert E._format_mean_std(groups[0]["psnr"]) == "12 ± 2"


# ------------------------------------------------------------------------------------- FLOPs


def test_count_flops_of_a_linear_layer_forward_and_backward() -> None:
    batch, d_in, d_out = 4, 6, 5
    layer = nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=True)
    forward = E.count_flops(lambda: layer(x))
    assert forward == 2 * batch * d_in * d_out
    total = E.count_flops(lambda: layer(x).sum().backward())
    assert total == 3 * forward  # backward = grad input + grad weight, each as costly as the forward


def test_count_flops_of_a_convolution() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    assert E.count_flops(lambda: conv(x)) == 2 * 2 * 8 * 5 * 5 * 3 * 3 * 3


def test_training_flops_per_image_scales_with_the_frames_seen() -> None:
    tiny = [f"{k}={json.dumps(v)}" for k, v in E.flatten_overrides(TINY_SCALE).items()]
    image = build_config(overrides=[*tiny, "model.family=vqvae", "pseudo_video.num_frames=1"])
    frames = build_config(overrides=[*tiny, "model.family=vqvae", "pseudo_video.num_frames=3", "pseudo_video.frames_as_images=true"])
    per_image = E.training_flops_per_image(image, channels=1)
    assert per_image > 0
    assert E.training_flops_per_image(image, channels=1, batch_size=4) == pytest.approx(per_image)
    # T separate images cost T times one image, up to the codebook's own per-step work (independent of the batch)
    assert E.training_flops_per_image(frames, channels=1) == pytest.approx(3 * per_image, rel=1e-3)
    video = build_config(overrides=[*tiny, "model.family=cvivit", "pseudo_video.num_frames=3"])
    video5 = build_config(overrides=[*tiny, "model.family=cvivit", "pseudo_video.num_frames=5"])
    assert E.training_flops_per_image(video5, channels=1) > E.training_flops_per_image(video, channels=1)


# ------------------------------------------------------------------------------------- the runner


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_runner_tables_plots_and_skipping_finished_runs(tmp_path: Path, train_calls: list) -> None:
    data = tiny_experiment()
    data["runs"][1]["grid"] = {}
    data["runs"][1]["overrides"]["pseudo_video.num_frames"] = 3
    data["seeds"] = [0, 1]
    data["runs"][1]["overrides"]["model.cvivit.temporal_patch_size"] = 2
    path = write_experiment(tmp_path, data)
    out = tmp_path / "out"
    result = E.run_experiment(path, out_dir=out, only="vqvae-*", log=lambda _: None)  # 2 of 4 runs
    assert sorted(name for name, _ in train_calls) == ["vqvae-s0", "vqvae-s1"]
    assert result.unfinished == ["cvivit-s0", "cvivit-s1"]
    result = E.run_experiment(path, out_dir=out, only="*-s0", log=lambda _: None)
    assert result.actions == {"vqvae-s0": "skip", "cvivit-s0": "train"}
    assert result.unfinished == ["cvivit-s1"]
    folder = out / "tiny" / "cpu-small"
    assert result.out_dir == folder and result.csv_path == folder / "results.csv"

    rows = _read_csv(result.csv_path)
    assert [r["run"] for r in rows] == ["vqvae-s0", "vqvae-s1", "cvivit-s0"]
    assert {r["pseudo_video.num_frames"] for r in rows} == {"1", "3"} and rows[2]["model.family"] == "cvivit"
    for row in rows:
        assert 0 < float(row["psnr"]) < 100 and -1 <= float(row["ssim"]) <= 1 and float(row["swd_avg"]) >= 0
        assert float(row["flops_per_image"]) > 0 and float(row["train_images_per_s"]) > 0
        assert int(row["parameters"]) > 0 and float(row["peak_memory_mb"]) > 0 and float(row["train_seconds"]) > 0
        assert row["pair"] == "tokenizer"
    flops = json.loads((folder / "cvivit-s0" / "flops.json").read_text())["flops_per_image"]
    assert float(rows[2]["flops_per_image"]) == flops

    # results.md: mean ± sample std of the two VQVAE seeds, hand-computed from the CSV
    psnr = [float(r["psnr"]) for r in rows[:2]]
    expected = f"{statistics.fmean(psnr):.4g} ± {statistics.stdev(psnr):.2g}"
    markdown = result.markdown_path.read_text()
    assert markdown == result.markdown
    vqvae_line = next(line for line in markdown.splitlines() if line.startswith("| vqvae |"))
    assert expected in vqvae_line and "| 2 |" in vqvae_line
    cvivit_line = next(line for line in markdown.splitlines() if line.startswith("| cvivit |"))
    assert f"| {float(rows[2]['psnr']):.4g} |" in cvivit_line  # one seed: no ± part
    assert "Not finished yet (1): cvivit-s1" in markdown
    for metric in ("psnr", "ssim", "swd_avg"):
        plot = folder / f"plot_{metric}.png"
        assert plot in result.plot_paths and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second invocation trains nothing and leaves finished runs untouched.
    stamps = {r["run"]: (folder / r["run"] / "train_summary.json").stat().st_mtime_ns for r in rows}
    evals = {r["run"]: (folder / r["run"] / "eval.json").stat().st_mtime_ns for r in rows}
    calls_before = len(train_calls)
    again = E.run_experiment(path, out_dir=out, only="*-s0", log=lambda _: None)
    assert len(train_calls) == calls_before and set(again.actions.values()) == {"skip"}
    assert {r: (folder / r / "train_summary.json").stat().st_mtime_ns for r in stamps} == stamps
    assert {r: (folder / r / "eval.json").stat().st_mtime_ns for r in evals} == evals
    assert _read_csv(again.csv_path) == rows

    # A changed eval section re-evaluates without retraining.
    data["scales"]["cpu-small"]["eval"]["metrics"] = ["psnr"]
    data["metrics"] = ["psnr"]
    again = E.run_experiment(write_experiment(tmp_path, data), out_dir=out, only="vqvae-s0", log=lambda _: None)
    assert again.actions == {"vqvae-s0": "evaluate"} and len(train_calls) == calls_before
    # The other runs now differ in their eval section, so they are no longer counted as finished.
    assert [r["run"] for r in _read_csv(again.csv_path)] == ["vqvae-s0"]


def test_runner_resumes_an_interrupted_run(tmp_path: Path, train_calls: list) -> None:
    data = tiny_experiment(seeds=[0])
    data["runs"] = data["runs"][:1]
    data["scales"]["cpu-small"]["train"].update(steps=4, checkpoint_every=2)
    path = write_experiment(tmp_path, data)
    (run,) = E.expand_experiment(E.parse_experiment(data), "cpu-small", tmp_path / "out")
    # "Interrupted" after its first checkpoint: the same run trained for 2 of its 4 steps.
    short = build_config(None, [*run.overrides, "train.steps=2"])
    train_run(short)
    first_rows = _read_csv(run.config.run_dir / "log.csv")
    assert [r["step"] for r in first_rows] == ["1", "2"]

    plans = E.plan_runs([run])
    assert plans[0].action == "resume" and "step 2" in plans[0].reason
    result = E.run_experiment(path, out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == [("vqvae-s0", True)] and result.actions == {"vqvae-s0": "resume"}
    summary = json.loads((run.config.run_dir / "train_summary.json").read_text())
    assert summary["start_step"] == 2 and summary["steps"] == 4
    rows = _read_csv(run.config.run_dir / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"] and rows[:2] == first_rows  # kept, not restarted
    assert len(_read_csv(result.csv_path)) == 1


def test_a_folder_holding_another_run_is_refused(tmp_path: Path, train_calls: list) -> None:
    data = tiny_experiment(seeds=[0])
    data["runs"] = data["runs"][:1]
    (run,) = E.expand_experiment(E.parse_experiment(data), "cpu-small", tmp_path / "out")
    train_run(build_config(None, [*run.overrides, "model.vqvae.base_channels=4", "train.steps=2"]))
    with pytest.raises(ConfigError, match=r"holds a different run \(model.vqvae.base_channels: 4 there vs 8 here"):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == []
    assert math.isfinite(json.loads((run.config.run_dir / "train_summary.json").read_text())["wall_time_s"])
