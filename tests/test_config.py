"""Config loading, overrides and validation: every error names the key before work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pseudovideo.config import (
    ConfigError,
    RunConfig,
    build_config,
    load_config,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_valid_and_typed() -> None:
    config = build_config()
    assert isinstance(config, RunConfig)
    assert config.pseudo_video.num_frames == 8
    assert [c.name for c in config.pseudo_video.corruptions] == ["blur", "noise"]
    assert config.run_dir == Path("runs") / "run"


def test_overrides_parse_yaml_values_and_list_indices() -> None:
    config = build_config(
        overrides=[
            "train.steps=7",
            "train.lr=1e-3",
            "pseudo_video.corruptions.1.max_level=0.5",
            "data.dataset=folder:/tmp/x",
            "model.unet.channel_mult=[1,2]",
            "data.root=null",
        ]
    )
    assert config.train.steps == 7
    assert config.train.lr == pytest.approx(1e-3)
    assert config.pseudo_video.corruptions[1].max_level == 0.5
    assert config.data.dataset == "folder:/tmp/x"
    assert config.model.unet.channel_mult == [1, 2]
    assert config.data.root is None


def test_int_is_accepted_where_a_float_is_expected() -> None:
    config = build_config(overrides=["train.lr=1"])
    assert isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.stpes=3", "unknown config key 'train.stpes' (did you mean 'train.steps'?)"),
        ("trian.steps=3", "unknown config key 'trian' (did you mean 'train.steps'?)"),
        ("modle.family=cvivit", "unknown config key 'modle' (did you mean 'model.family'?)"),
        ("model.cvivt.dim=8", "unknown config key 'model.cvivt' (did you mean 'model.cvivit.dim'?)"),
        ("xyzzy.steps=3", "unknown config key 'xyzzy'; valid keys here: name, out_dir, data"),
        ("train.steps=many", "train.steps: expected an integer, got 'many'"),
        ("train.steps=2.5", "train.steps: expected an integer"),
        ("train.compile=maybe", "train.compile: expected auto, true or false"),
        ("pseudo_video.construction=second_order",
         "pseudo_video.construction: expected one of first_order, higher_order, copies"),
        ("pseudo_video.corruptions.5.max_level=1", "not an index of a list of 2"),
        ("pseudo_video.corruptions.0.name=sharpen", "pseudo_video.corruptions.0.name: expected one of blur"),
        ("train.steps", "not of the form key.sub=value"),
        ("data.resolution=2", "data.resolution: expected an integer >= 4, got 2"),
        ("eval.metrics=[psnr,inception_score]", "unknown metric 'inception_score'"),
        ("train.steps.deep=1", "'train.steps' is a value, not a section"),
        ("data.held_out_fraction=0", "data.held_out_fraction: expected a number in (0, 1)"),
        ("data.held_out_fraction=1.0", "data.held_out_fraction: expected a number in (0, 1)"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        build_config(overrides=[override])
    assert needle in str(excinfo.value)


def test_first_order_downsample_levels_must_nest_at_config_time() -> None:
    fractional = ["pseudo_video.construction=first_order", "pseudo_video.num_frames=5",
                  "pseudo_video.corruptions=[{name: downsample, max_level: 2.0}]"]  # levels 2, 1.5, 1, 0.5, 0
    with pytest.raises(ConfigError, match=r"pseudo_video\.corruptions\.0 .*first_order: downsample levels "
                                          r"\[0\.5, 1\.5\] are not whole octaves.*integer levels"):
        build_config(overrides=fractional)
    build_config(overrides=[*fractional[1:], "pseudo_video.construction=higher_order"])  # direct frames: fine
    octaves = ["pseudo_video.construction=first_order", "pseudo_video.num_frames=4",
               "pseudo_video.corruptions=[{name: downsample, max_level: 3.0}]"]  # levels 3, 2, 1, 0
    build_config(overrides=[*octaves, "data.resolution=16"])
    with pytest.raises(ConfigError, match=r"data\.resolution=20.*grids \[20, 10, 5, 3\].*divisible by 2\*\*3 = 8"):
        build_config(overrides=[*octaves, "data.resolution=20"])


def test_copies_construction_needs_no_corruption() -> None:
    config = build_config(overrides=["pseudo_video.construction=copies", "pseudo_video.corruptions=[]"])
    assert config.pseudo_video.construction == "copies"
    with pytest.raises(ConfigError, match="at least one corruption is needed"):
        build_config(overrides=["pseudo_video.construction=higher_order", "pseudo_video.corruptions=[]"])


def test_cvivit_frames_must_fit_temporal_patch() -> None:
    with pytest.raises(ConfigError, match="T-1=3 frames in groups of 2"):
        build_config(overrides=["model.family=cvivit", "model.cvivit.temporal_patch_size=2", "pseudo_video.num_frames=4"])
    build_config(overrides=["model.family=cvivit", "model.cvivit.temporal_patch_size=2", "pseudo_video.num_frames=5"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = build_config(overrides=["name=abc", "pseudo_video.num_frames=4", "train.betas=[0.5,0.9]"])
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert yaml.safe_load(path.read_text())["pseudo_video"]["num_frames"] == 4


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  steps: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(unknown)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    load_config(path)


def test_each_operator_gets_only_its_own_parameters_from_the_config() -> None:
    from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder

    config = build_config(overrides=[
        "pseudo_video.corruptions=[{name: blur, max_level: 1.0}, {name: mask, max_level: 0.5, patch_size: 2, fill_value: 0.25}]",
    ])
    blur, mask = build_pseudo_video_builder(config.pseudo_video).operators
    assert type(blur).__name__ == "GaussianBlur" and not hasattr(blur, "patch_size")
    assert (mask.patch_size, mask.fill_value) == (2, 0.25)
