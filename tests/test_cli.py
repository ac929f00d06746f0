"""End-to-end runs of the CLI's picture and diagnostic commands on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pseudovideo.cli import main


def test_show_writes_grid_and_gif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["show", "--n", "3", "--out", str(tmp_path), "pseudo_video.num_frames=5", "data.resolution=16"])
    assert code == 0
    printed = capsys.readouterr().out
    png = tmp_path / "digits_higher_order_T5.png"
    gif = tmp_path / "digits_higher_order_T5.gif"
    assert str(png) in printed and str(gif) in printed
    with Image.open(png) as grid:
        # 3 rows x 5 columns of 16x16 images upscaled 4x, with thin borders
        assert grid.width > grid.height > 3 * 64
        assert 5 * 64 <= grid.width < 5 * 64 + 40
    with Image.open(gif) as animation:
        assert animation.n_frames >= 2
    assert (tmp_path / "config.yaml").is_file()


def test_diagnose_reports_every_k_for_both_constructions(tmp_path: Path) -> None:
    code = main(
        [
            "diagnose", "--n-images", "200", "--out", str(tmp_path),
            "pseudo_video.num_frames=4",
            "pseudo_video.corruptions=[{name: noise, max_level: 0.5}]",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "diagnose.json").read_text())["results"]
    assert set(results) == {"first_order", "higher_order"}
    for rows in results.values():
        assert [row["k"] for row in rows] == [1, 2, 3]
    higher = [row["mse"] for row in results["higher_order"]]
    assert higher[2] < higher[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "train.stpes=1"], "unknown config key 'train.stpes'"),
        (["show", "data.dataset=folder:/no/such/folder"], "/no/such/folder"),
        (["show", "data.dataset=imagenet"], "imagenet"),
        (["diagnose", "pseudo_video.construction=zeroth_order"], "pseudo_video.construction"),
        (["diagnose", "pseudo_video.corruptions=[{name: downsample, max_level: 2.0}]"],
         "first_order: downsample levels"),  # checked for the constructions diagnose builds, before any work
        (["show", "-c", "/no/such/config.yaml"], "/no/such/config.yaml"),
    ],
)
def test_user_errors_exit_2_with_a_clear_message(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_module_entry_point_prints_help() -> None:
    result = subprocess.run([sys.executable, "-m", "pseudovideo", "--help"], capture_output=True, text=True, check=True)
    assert "show" in result.stdout and "diagnose" in result.stdout


@pytest.mark.parametrize("command", ["show", "diagnose", "train", "eval", "sample", "feature-net", "export",
                                     "experiment", "demo", "config"])
def test_every_command_help_has_a_description_and_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]  # after the usage block
    assert "\n" not in description.strip() and description.strip().endswith(".")  # one line
    examples = text.split("examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith(f"  pseudovideo {command}") for line in examples if line.strip())
    assert "RUN_DIR/show" not in text and "RUN_DIR/diagnose" not in text


def test_help_of_train_and_eval_says_what_a_newcomer_needs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "name=NAME" in text and "eval.metrics" in text and "cfd" in text and "OUT_DIR/NAME" in text
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    positional = capsys.readouterr().out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    for name in ("run_dir", "eval.key=value"):  # each positional argument has a help text on its line
        (line,) = [line for line in positional.splitlines() if line.split()[:1] == [name]]
        assert len(line.split()) > 2


def test_overrides_may_follow_options(tmp_path: Path) -> None:
    assert main(["show", "--n", "2", "data.resolution=8", "--out", str(tmp_path), "pseudo_video.num_frames=3"]) == 0
    assert (tmp_path / "digits_higher_order_T3.png").is_file()


def test_unknown_options_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["show", "--frames", "3"])
    assert "unrecognized arguments: --frames" in capsys.readouterr().err
