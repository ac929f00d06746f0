"""Warm starts in experiments: ``run:{experiment_dir}/NAME-s{seed}`` bases, their order, and the shipped config."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from pseudovideo import experiments as E
from pseudovideo.config import ConfigError, build_config
from pseudovideo.experiments import scheduler as S
from pseudovideo.factory.models import build_model
from pseudovideo.factory.models import load_run

from test_experiments import TINY_SCALE

REPO_ROOT = Path(__file__).resolve().parents[1]
LIFTED = {"model.family": "lifted", "model.lifted": {"base": "run:{experiment_dir}/pre-s{seed}", "kind": "tokenizer"}}


def _experiment(tmp_path: Path, runs: list[dict]) -> Path:
    data = {
        "name": "warm", "description": "warm start test", "metrics": ["psnr"],
        "plot": {"x": "variant", "group_by": [], "kind": "bar"}, "seeds": [0],
        "scales": {"cpu-small": copy.deepcopy(TINY_SCALE), "paper": {}},
        "base": {"pseudo_video.corruptions": [{"name": "blur", "max_level": 1.0}]},
        "runs": runs,
        "differences": [{"name": "pv_minus_image", "of": {"variant": "pv"}, "minus": {"variant": "image"}}],
    }
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


PRE = {"name": "pre", "overrides": {"model.family": "vqvae", "pseudo_video.num_frames": 1}}
IMAGE = {"name": "image", "overrides": {**LIFTED, "model.lifted.temporal": "none", "pseudo_video.num_frames": 1}}
PV = {"name": "pv", "overrides": {**LIFTED, "pseudo_video.num_frames": 3}}


def test_runs_continue_from_a_run_of_the_experiment_whatever_the_file_order(tmp_path):
    out = tmp_path / "out"
    # The base run is listed last: the runner reads the dependency from the configs and trains it first.
    result = E.run_experiment(_experiment(tmp_path, [IMAGE, PV, PRE]), out_dir=out, log=lambda _: None)
    folder = out / "warm" / "cpu-small"
    assert list(result.actions) == ["pre-s0", "image-s0", "pv-s0"] and set(result.actions.values()) == {"train"}
    assert not result.unfinished
    runs = {r.name: r for r in E.expand_experiment(E.load_experiment(tmp_path / "warm.yaml"), "cpu-small", out)}
    assert runs["pv-s0"].config.model.lifted.base == f"run:{folder}/pre-s0"
    _, pre, _ = load_run(folder / "pre-s0")
    lifted = build_model(runs["pv-s0"].config, 1)  # what the continuation starts from: the pre run's EMA weights
    for key, value in pre.state_dict().items():
        assert torch.equal(lifted.image.state_dict()[key], value), key
    assert result.differences_path is not None and result.differences_path.is_file()


def test_dependencies_come_from_the_configs_and_cycles_or_unknown_runs_are_refused(tmp_path):
    spec = E.load_experiment(_experiment(tmp_path, [IMAGE, PV, PRE]))
    runs = E.expand_experiment(spec, "cpu-small", tmp_path / "o")
    depends = S.run_dependencies(runs, tmp_path / "o" / "warm" / "cpu-small")
    assert depends == {"image-s0": ["pre-s0"], "pv-s0": ["pre-s0"], "pre-s0": []}
    assert S.dependency_order([r.name for r in runs], depends) == ["pre-s0", "image-s0", "pv-s0"]
    first = {"name": "a", "overrides": {**LIFTED, "model.lifted.base": "run:{experiment_dir}/b-s{seed}"}}
    second = {"name": "b", "overrides": {**LIFTED, "model.lifted.base": "run:{experiment_dir}/a-s{seed}"}}
    with pytest.raises(ConfigError, match="a-s0, b-s0 start from each other in a cycle"):
        E.run_experiment(_experiment(tmp_path, [first, second, PRE]), out_dir=tmp_path / "o", log=lambda _: None)
    with pytest.raises(ConfigError, match="names no run of this experiment"):
        E.run_experiment(_experiment(tmp_path, [IMAGE, PV]), out_dir=tmp_path / "o", log=lambda _: None)
    assert not (tmp_path / "o").exists()


def test_a_selected_run_whose_base_is_neither_trained_nor_selected_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="starts from run pre-s0, which is neither trained nor selected"):
        E.run_experiment(_experiment(tmp_path, [PRE, IMAGE, PV]), out_dir=tmp_path / "o", only="pv-*", log=lambda _: None)


def test_shipped_warm_start_pairs_every_continuation_with_its_seeds_pre_run():
    spec = E.load_experiment(REPO_ROOT / "configs" / "experiments" / "warm-start.yaml")
    for scale in ("cpu-small", "paper"):
        runs = {r.name: r for r in E.expand_experiment(spec, scale, "runs/experiments")}
        assert len(runs) == 33 and {r.seed for r in runs.values()} == {0, 1, 2}
        for run in runs.values():
            if run.config.model.family == "lifted":
                pre = "vqvae-pre" if run.variant.startswith("vqvae") else "ddpm-pre"
                assert run.config.model.lifted.base.endswith(f"/{pre}-s{run.seed}")
                assert run.config.train.steps == runs[f"{pre.split('-')[0]}-pv-s{run.seed}"].config.train.steps


def test_shipped_warm_start_continuations_have_equal_training_flops_per_step():
    """The matching rule of warm-start.yaml at cpu-small: (a)'s batch x FLOPs/image = (b)'s within 2 %."""
    spec = E.load_experiment(REPO_ROOT / "configs" / "experiments" / "warm-start.yaml")
    runs = {r.name: r for r in E.expand_experiment(spec, "cpu-small", "runs/experiments")}
    for family, base in (("vqvae", "vqvae"), ("ddpm", "unet")):
        per_step = {}
        for variant in ("image", "pv", "copies"):
            run = runs[f"{family}-{variant}-s0"]
            texts = [t for t in run.overrides if not t.startswith(("model.lifted.base", "model.lifted.kind"))]
            config = build_config(None, [*texts, f"model.lifted.base={base}", "data.channels=3"])  # same architecture
            per_step[variant] = E.training_flops_per_image(config, channels=3, batch_size=1) * config.train.batch_size
        assert per_step["pv"] == pytest.approx(per_step["image"], rel=0.02), family
        assert per_step["copies"] == pytest.approx(per_step["pv"], rel=0.01), family


def test_shipped_warm_start_has_a_data_matched_image_arm_and_both_differences():
    """(a') sees the clean images of (b)/(c): the same batch and steps at T = 1; (b) - (a) is reported against
    the compute-matched and the data-matched image model; the file says which lifted arms are rate-matched."""
    spec = E.load_experiment(REPO_ROOT / "configs" / "experiments" / "warm-start.yaml")
    for scale in ("cpu-small", "paper"):
        runs = {r.name: r.config for r in E.expand_experiment(spec, scale, "runs/experiments")}
        for family in ("vqvae", "ddpm"):
            data, compute, pv = (runs[f"{family}-{arm}-s0"] for arm in ("image-data", "image", "pv"))
            assert data.pseudo_video.num_frames == 1 and data.model.lifted.temporal == "none"
            assert (data.train.batch_size, data.train.steps) == (pv.train.batch_size, pv.train.steps)
            assert compute.train.batch_size > 4 * pv.train.batch_size  # B x T x r: more images, matched FLOPs
            names = {d.name: (d.of["variant"], d.minus["variant"]) for d in spec.differences}
            assert names[f"{family}_pv_minus_image"] == (f"{family}-pv", f"{family}-image")
            assert names[f"{family}_pv_minus_image_data"] == (f"{family}-pv", f"{family}-image-data")
    assert "only the encoder-only" in spec.description and "T times the image model's rate" in spec.description
