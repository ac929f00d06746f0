"""Experiments: grid expansion and validation, the runner (tables, plots, skip, resume), FLOP counts."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from pseudovideo import experiments as E
from pseudovideo.config import ConfigError, build_config, config_to_dict, flatten_overrides, save_config
from pseudovideo.evaluation.stats import Interval, format_interval, mean_interval
from pseudovideo.experiments import scheduler as S
from pseudovideo.training.runs import train_run

T975_2 = 4.30265  # t_{0.975, 2} from a printed table

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

    def counting_train_run(config, *, resume=False, trust_code=False, check_inputs=True):
        calls.append((config.name, resume))
        return train_run(config, resume=resume, trust_code=trust_code, check_inputs=check_inputs)

    monkeypatch.setattr(S, "train_run", counting_train_run)
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
    signals = [r for r in small if r.config.data.dataset.startswith("sktime:")]  # 1-D: sktime's bundled, offline data
    images = [r for r in small if not r.config.data.dataset.startswith("sktime:")]
    # CPU-sized: CIFAR-10 subsets at 16x16 (32x32 for the tokenizer pair, the resolution its issue asks for)
    assert all(r.config.data.dataset == "folder:.data/cifar10-jpeg" and r.config.data.resolution in (16, 32) for r in images)
    assert all(r.config.data.max_images is not None and r.config.data.max_images <= 5000 for r in images)
    assert all(r.config.data.length <= 64 for r in signals)  # CPU-sized signals: short windows


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
    psnr = groups[0]["psnr"]
    assert psnr.mean == pytest.approx(12.0) and psnr.std == pytest.approx(2.0) and psnr.n == 3  # sample std of 10, 12, 14
    assert psnr.half_width == pytest.approx(T975_2 * 2 / math.sqrt(3), rel=1e-5)  # Student-t, 2 degrees of freedom
    assert "fid" not in groups[0]  # empty cells are not numbers
    assert groups[1]["psnr"] == Interval(20.0, None, 1, None) and groups[1]["fid"].mean == 3.0
    assert format_interval(psnr, show_n=False) == "12.0 ± 5.0"


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
    tiny = [f"{k}={json.dumps(v)}" for k, v in flatten_overrides(TINY_SCALE).items()]
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

    # results.md: mean ± 95 % half-width of the two VQVAE seeds, computed from the CSV
    psnr = [float(r["psnr"]) for r in rows[:2]]
    expected = format_interval(mean_interval(psnr), show_n=False)
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


# ------------------------------------------------------------------------------------- summaries, differences, rate
# Finished runs are faked (config.yaml, a checkpoint folder, train_summary.json, eval.json, flops.json): no training.

VQVAE_PSNR = {0: 20.0, 1: 21.0, 2: 23.0}
CVIVIT_PSNR = {0: 21.0, 1: 22.5, 2: 24.0}  # minus the VQVAE's, seed by seed: 1, 1.5, 1


def fake_finished(run: E.ExperimentRun, metrics: dict[str, float], *, rate: dict | None = None,
                  loss_terms: dict | None = None) -> None:
    """Writes the files of a finished, evaluated run into its folder, as training and evaluation would."""
    run_dir = run.config.run_dir
    save_config(run.config, run_dir / "config.yaml")
    (run_dir / "checkpoints" / f"step_{run.config.train.steps:07d}").mkdir(parents=True)
    summary = {"steps": run.config.train.steps, "parameters": {"model": 2_000_000}, "images_per_s": 50.0,
               "wall_time_s": 1.5, "peak_memory_bytes": 2**21, **({"loss_terms": loss_terms} if loss_terms else {})}
    (run_dir / "train_summary.json").write_text(json.dumps(summary))
    result = {"run": str(run_dir), "family": run.config.model.family, "metrics": metrics, "skipped": {},
              "protocol": {"num_images": 16}, "train": summary, **({"rate": rate} if rate else {})}
    (run_dir / "eval.json").write_text(json.dumps(result))
    (run_dir / "flops.json").write_text(json.dumps({"flops_per_image": 3e8}))


def pair_experiment(**changes: Any) -> dict[str, Any]:
    """The tiny experiment over seeds 0, 1, 2 with the difference "C-ViViT minus VQVAE, same seed"."""
    data = tiny_experiment(seeds=[0, 1, 2], differences=[
        {"name": "video_minus_image", "of": {"variant": "cvivit"}, "minus": {"variant": "vqvae"}, "match": ["seed"]}])
    data.update(changes)
    return data


def fake_pair_runs(tmp_path: Path, data: dict[str, Any], overrides: tuple[str, ...] = (), **extra: Any) -> list[E.ExperimentRun]:
    runs = E.expand_experiment(E.parse_experiment(data), "cpu-small", tmp_path / "out", overrides)
    for run in runs:
        table = VQVAE_PSNR if run.variant == "vqvae" else CVIVIT_PSNR
        fake_finished(run, {"psnr": table[run.seed], "ssim": 0.5 + 0.1 * run.seed, "swd_avg": 10.0}, **extra)
    return runs


def test_summary_and_paired_differences_with_hand_computed_intervals(tmp_path: Path, train_calls: list) -> None:
    data = pair_experiment()
    fake_pair_runs(tmp_path, data)
    result = E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == [] and set(result.actions.values()) == {"skip"}
    folder = tmp_path / "out" / "tiny" / "cpu-small"

    summary = {(r["variant"], r["metric"]): r for r in _read_csv(folder / "results_summary.csv")}
    vqvae = summary[("vqvae", "psnr")]  # 20, 21, 23: mean 64/3, s^2 = 7/3
    assert int(vqvae["n"]) == 3 and float(vqvae["mean"]) == pytest.approx(64 / 3)
    half = T975_2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert float(vqvae["ci95_half_width"]) == pytest.approx(half, rel=1e-5)
    assert float(vqvae["ci95_low"]) == pytest.approx(64 / 3 - half, rel=1e-5)
    assert float(summary[("cvivit", "swd_avg")]["std"]) == 0.0
    assert ("vqvae", "flops_per_image") in summary

    (diff,) = [r for r in _read_csv(result.differences_path) if r["metric"] == "psnr"]
    assert result.differences_path == folder / "differences.csv"
    assert diff["difference"] == "video_minus_image" and diff["group"] == "" and int(diff["n"]) == 3
    assert float(diff["mean"]) == pytest.approx(7 / 6)  # per-seed differences 1, 1.5, 1: s^2 = 1/12
    assert float(diff["ci95_half_width"]) == pytest.approx(T975_2 * math.sqrt(1 / 12) / math.sqrt(3), rel=1e-5)
    assert diff["of_runs"] == "cvivit-T3-s0 cvivit-T3-s1 cvivit-T3-s2" and diff["minus_runs"].startswith("vqvae-s0")
    ssim = next(r for r in result.differences if r["metric"] == "ssim")
    assert ssim["mean"] == pytest.approx(0.0) and ssim["ci95_half_width"] == 0.0  # equal in every pair: no spread

    markdown = result.markdown
    vqvae_line = next(line for line in markdown.splitlines() if line.startswith("| vqvae |"))
    assert "| 21.3 ± 3.8 |" in vqvae_line and "| 3 |" in vqvae_line
    diff_line = next(line for line in markdown.splitlines() if line.startswith("| video_minus_image |"))
    assert "variant=cvivit − variant=vqvae" in diff_line and "| 3/3 |" in diff_line and "| 1.17 ± 0.72 |" in diff_line
    # no rate or loss terms in these eval.json files: no such columns, no rate-distortion plots
    assert "bits_per_image" not in _read_csv(result.csv_path)[0] and "loss terms" not in markdown
    assert not list(folder.glob("plot_rd_*.png"))


def test_differences_count_only_finished_pairs(tmp_path: Path) -> None:
    data = pair_experiment()
    runs = fake_pair_runs(tmp_path, data)
    for name in ("cvivit-T3-s2",):  # one run not evaluated yet
        (next(r for r in runs if r.name == name).config.run_dir / "eval.json").unlink()
    result = E.write_results(E.parse_experiment(data), "cpu-small", runs, tmp_path / "tables")
    diff = next(r for r in result.differences if r["metric"] == "psnr")
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(1.25)  # seeds 0 and 1 only
    assert diff["ci95_half_width"] == pytest.approx(12.7062 * math.sqrt(0.125) / math.sqrt(2), rel=1e-5)
    assert "| 2/3 |" in result.markdown and "Not finished yet (1): cvivit-T3-s2" in result.markdown


def test_differences_grouped_by_the_other_match_columns(tmp_path: Path) -> None:
    data = tiny_experiment(seeds=[0, 1])
    data["runs"][1]["grid"] = {"corruption": {"blur": {}, "noise": {"pseudo_video.corruptions": [{"name": "noise"}]}},
                               "pseudo_video.construction": ["first_order", "higher_order"]}
    data["differences"] = [{"name": "first_minus_higher", "match": ["seed", "corruption"],
                            "of": {"variant": "cvivit", "pseudo_video.construction": "first_order"},
                            "minus": {"variant": "cvivit", "pseudo_video": {"construction": "higher_order"}}}]
    spec = E.parse_experiment(data)
    runs = E.expand_experiment(spec, "cpu-small", tmp_path)
    (pairs,) = E.resolve_differences(spec, "cpu-small", runs)
    assert [group for group, _ in pairs.groups] == [{"corruption": "blur"}, {"corruption": "noise"}]
    assert pairs.groups[1][1] == [("cvivit-noise-first_order-s0", "cvivit-noise-higher_order-s0"),
                                  ("cvivit-noise-first_order-s1", "cvivit-noise-higher_order-s1")]
    psnr = {("cvivit", "first_order"): 2.0, ("cvivit", "higher_order"): 1.0}
    for run in runs:
        value = psnr.get((run.variant, run.config.pseudo_video.construction), 0.0) + run.seed
        fake_finished(run, {"psnr": value + (0.5 if run.axes.get("corruption") == "noise" else 0.0)})
    rows = [r for r in E.write_results(spec, "cpu-small", runs, tmp_path / "tables").differences if r["metric"] == "psnr"]
    assert [(r["group"], r["n"], r["mean"]) for r in rows] == [("corruption=blur", 2, 1.0), ("corruption=noise", 2, 1.0)]


def _bad_difference(**fields: Any) -> dict[str, Any]:
    return pair_experiment(differences=[{"name": "d", "of": {"variant": "cvivit"}, "minus": {"variant": "vqvae"}, **fields}])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_bad_difference(of={"variant": "cvivitt"}), r"difference d: of: \{'variant': 'cvivitt'\} matches no run .*cvivit"),
        (_bad_difference(minus={"colour": "red"}), r"minus: unknown column 'colour'"),
        (_bad_difference(of={"pair": "tokenizer"}), r"of: ambiguous: runs vqvae-s0 and cvivit-T3-s0 both have seed=0"),
        (_bad_difference(match=["seed", "pseudo_video.num_frames"]), r"of run\(s\) cvivit-T3-s0.* have no partner"),
        (_bad_difference(minus={"variant": "cvivit"}), r"selected by both of and minus"),
        (_bad_difference(mach=["seed"]), r"did you mean 'match'"),
        (_bad_difference(match=["seed", "corruptoin"]), r"match: unknown column 'corruptoin'"),
        (_bad_difference(only_scales=["gpu"]), r"only_scales.*cpu-small, paper"),
        (pair_experiment(differences=[{"name": "d", "of": {"variant": "cvivit"}}]), r"missing required key 'minus'"),
    ],
)
def test_bad_differences_fail_before_any_training(tmp_path: Path, train_calls: list, data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == [] and not (tmp_path / "out").exists()


def test_only_scales_of_a_difference(tmp_path: Path) -> None:
    spec = E.parse_experiment(_bad_difference(only_scales=["paper"]))
    assert E.resolve_differences(spec, "cpu-small", E.expand_experiment(spec, "cpu-small", tmp_path)) == []


def test_rate_and_loss_term_columns_and_rate_distortion_plots(tmp_path: Path) -> None:
    data = pair_experiment()
    spec = E.parse_experiment(data)
    runs = E.expand_experiment(spec, "cpu-small", tmp_path / "out")
    for run in runs:
        codes = 16 if run.variant == "vqvae" else 48  # 4x4 codes per frame, the C-ViViT's 3 frames
        rate = {"codes_per_image": codes, "bits_per_image": codes * 4, "codebook_size": 16, "num_quantizers": 1,
                "description": f"{codes} codes of a 16-entry codebook"}
        table = VQVAE_PSNR if run.variant == "vqvae" else CVIVIT_PSNR
        fake_finished(run, {"psnr": table[run.seed], "ssim": 0.5, "swd_avg": 10.0}, rate=rate,
                      loss_terms={"reconstruction": {"active": True, "weight": 1.0}, "vq": {"active": True, "weight": 1.0},
                                  "perceptual": {"active": False, "weight": 0.1, "reason": "no weights"},
                                  "adversarial": {"active": True, "weight": 0.1, "start_step": 100}})
    result = E.write_results(spec, "cpu-small", runs, tmp_path / "tables")
    rows = _read_csv(result.csv_path)
    header = list(rows[0])
    assert header.index("bits_per_image") == header.index("swd_avg") + 2  # after the metrics
    assert [(r["codes_per_image"], r["bits_per_image"]) for r in rows[:1] + rows[-1:]] == [("16", "64"), ("48", "192")]
    assert rows[0]["loss_terms"] == "reconstruction:1 vq:1 adversarial:0.1@100"
    cvivit_line = next(line for line in result.markdown.splitlines() if line.startswith("| cvivit |"))
    assert "| 48 | 192 | reconstruction:1 vq:1 adversarial:0.1@100 |" in cvivit_line
    assert "codes/image | bits/image | loss terms" in result.markdown and "cvivit-T3: 48 codes of a 16-entry codebook" in result.markdown
    summary = {(r["variant"], r["metric"]): r for r in _read_csv(result.summary_path)}
    assert float(summary[("cvivit", "bits_per_image")]["mean"]) == 192
    for metric in ("psnr", "ssim", "swd_avg"):
        plot = tmp_path / "tables" / f"plot_rd_{metric}.png"
        assert plot in result.plot_paths and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resolved_sizes_are_stated_and_overrides_show(tmp_path: Path) -> None:
    data = pair_experiment()
    runs = fake_pair_runs(tmp_path, data, overrides=("train.steps=5",))
    sizes = E.describe_sizes(runs)
    assert "train.steps=5" in sizes and "data.resolution=8" in sizes and "eval.num_images=16" in sizes
    assert "pseudo_video.num_frames: 1 (vqvae), 3 (cvivit-T3)" in sizes
    result = E.write_results(E.parse_experiment(data), "cpu-small", runs, tmp_path / "tables")
    assert f"Sizes as run (after every override): {sizes}." in result.markdown


def test_cli_experiment_prints_its_table_once(tmp_path: Path, capsys: pytest.CaptureFixture, train_calls: list) -> None:
    from pseudovideo.cli import main

    data = pair_experiment()
    fake_pair_runs(tmp_path, data)
    assert main(["experiment", str(write_experiment(tmp_path, data)), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("# Experiment tiny (cpu-small)") == 1 and printed.count("| video_minus_image |") == 1
    assert "results_summary.csv" in printed and "differences.csv" in printed and train_calls == []


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_descriptions_state_no_sizes(path: Path) -> None:
    # Sizes change with scales and overrides; results.md states the resolved ones instead.
    description = E.load_experiment(path).description
    assert description and not re.search(r"\d", description), description


def test_difference_names_repeat_only_for_disjoint_scales() -> None:
    twice = [{"name": "d", "of": {"variant": "cvivit"}, "minus": {"variant": "vqvae"}, "only_scales": ["cpu-small"]},
             {"name": "d", "of": {"variant": "cvivit"}, "minus": {"variant": "vqvae"}}]
    with pytest.raises(ConfigError, match="name.s. d repeated at scale cpu-small"):
        E.parse_experiment(pair_experiment(differences=twice))
    twice[1]["only_scales"] = ["paper"]
    assert [d.only_scales for d in E.parse_experiment(pair_experiment(differences=twice)).differences] == [["cpu-small"], ["paper"]]


def test_the_evaluation_line_names_every_dataset_of_a_grid() -> None:
    """A grid over two datasets states both evaluation splits, each with its variants, not only the first run's."""
    from pseudovideo.experiments.tables import _evaluation_line

    def row(label: str, split: str) -> dict:
        return {"run": f"{label}-s0", "_label": label, "_protocol": {"num_images": 200, "split": split, "seed": 1}}

    one = _evaluation_line([row("vqvae", "A test"), row("ddpm", "A test")])
    assert one.startswith("Evaluation: num_images=200, split=A test, seed=1;"), one
    two = _evaluation_line([row("vqvae-a", "A test"), row("vqvae-b", "B test"), row("ddpm-b", "B test")])
    assert "split=A test, seed=1 (vqvae-a)" in two and "split=B test, seed=1 (vqvae-b, ddpm-b)" in two, two
