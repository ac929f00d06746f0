"""CLI run folders and defaults: `train` without -c, unnamed runs never replace earlier results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pseudovideo.cli import main
from pseudovideo.config import load_config
from pseudovideo.factory.run_folder import first_free_name, keep_previous

from test_train_cli import TINY

TINY_VQVAE = ["model.vqvae.base_channels=8", "model.vqvae.codebook_size=16", "model.vqvae.codebook_dim=4",
              "eval.metrics=[psnr]", "train.steps=2"]


def test_first_free_name_and_keep_previous(tmp_path: Path) -> None:
    assert first_free_name(tmp_path) == "run"
    (tmp_path / "run").mkdir()
    assert first_free_name(tmp_path) == "run"  # an empty folder holds nothing to replace
    (tmp_path / "run" / "x").write_text("1")
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "x").write_text("2")
    assert first_free_name(tmp_path) == "run-3"
    result = tmp_path / "eval.json"
    assert keep_previous(result) is None
    result.write_text("first")
    assert keep_previous(result) == tmp_path / "eval-1.json" and not result.exists()
    result.write_text("second")
    assert keep_previous(result) == tmp_path / "eval-2.json"
    assert (tmp_path / "eval-1.json").read_text() == "first" and (tmp_path / "eval-2.json").read_text() == "second"


def test_train_without_config_trains_the_image_baseline_in_fresh_folders(tmp_path: Path, capsys) -> None:
    args = ["train", f"out_dir={tmp_path}", *TINY, *TINY_VQVAE]
    assert main(args) == 0
    first = load_config(tmp_path / "run" / "config.yaml")
    assert first.model.family == "vqvae" and first.pseudo_video.num_frames == 1  # the image baseline, T = 1
    assert "no -c CONFIG: training model.family=vqvae at pseudo_video.num_frames=1" in capsys.readouterr().out
    eval_before = (tmp_path / "run" / "eval.json").read_text()
    assert main(args) == 0  # the same command again: a new folder, the first result untouched
    assert (tmp_path / "run-2" / "eval.json").is_file()
    assert (tmp_path / "run" / "eval.json").read_text() == eval_before


def test_train_without_config_keeps_frames_of_video_families_and_explicit_frames() -> None:
    from pseudovideo.cli.commands import _train_defaults
    from pseudovideo.cli.parser import build_parser

    def defaults(*overrides: str) -> list[str]:
        return _train_defaults(build_parser().parse_args(["train", *overrides]))

    assert defaults() == ["pseudo_video.num_frames=1"]
    assert defaults("model.family=unet") == ["pseudo_video.num_frames=1"]
    assert defaults("model.family=cvivit") == []
    assert defaults("model.family=vqvae", "pseudo_video.num_frames=4") == []
    assert _train_defaults(build_parser().parse_args(["train", "-c", "configs/digits_vqvae.yaml"])) == []


def test_named_run_refusal_names_the_resume_command(tmp_path: Path, capsys) -> None:
    args = ["train", "--no-eval", f"out_dir={tmp_path}", "name=named", *TINY, *TINY_VQVAE]
    assert main(args) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pseudovideo train --resume {tmp_path / 'named'}" in err and "resume it (resume=True)" not in err


def test_eval_keeps_the_earlier_result(tmp_path: Path, capsys) -> None:
    assert main(["train", f"out_dir={tmp_path}", "name=r", *TINY, *TINY_VQVAE]) == 0
    first = json.loads((tmp_path / "r" / "eval.json").read_text())
    note = first["protocol"]["pseudo_video"]  # a T = 1 run lists no corruption it did not apply
    assert note.startswith("T=1") and "blur" not in note and "noise" not in note
    assert main(["eval", str(tmp_path / "r"), "eval.num_images=8"]) == 0
    assert json.loads((tmp_path / "r" / "eval-1.json").read_text()) == first
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["protocol"]["num_images"] == 8
    assert (tmp_path / "r" / "eval-1.md").is_file()
    assert f"earlier eval.json kept as {tmp_path / 'r' / 'eval-1.json'}" in capsys.readouterr().out


def test_unnamed_show_and_diagnose_write_fresh_folders(tmp_path: Path) -> None:
    small = [f"out_dir={tmp_path}", "data.resolution=8", "pseudo_video.num_frames=3"]
    assert main(["show", "--n", "2", *small]) == 0
    assert main(["show", "--n", "2", *small]) == 0
    assert (tmp_path / "show" / "run").is_dir() and (tmp_path / "show" / "run-2").is_dir()
    assert main(["diagnose", "--n-images", "40", *small]) == 0
    saved = json.loads((tmp_path / "diagnose" / "run" / "diagnose.json").read_text())
    assert saved["config"] is None  # null, not "None"
    assert not (tmp_path / "run").exists()  # the name a training run would take first stays free
    out = tmp_path / "explicit"
    assert main(["diagnose", "--n-images", "40", "--out", str(out), *small]) == 0
    assert main(["diagnose", "--n-images", "40", "--out", str(out), *small]) == 0
    assert (out / "diagnose.json").is_file() and (out / "diagnose-1.json").is_file()


def test_show_and_diagnose_of_a_trained_config_do_not_write_into_its_run_folder(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"name: trained\nout_dir: {tmp_path}\ndata: {{resolution: 8}}\npseudo_video: {{num_frames: 3}}\n")
    assert main(["train", "--no-eval", "-c", str(config), *TINY, *TINY_VQVAE]) == 0
    before = sorted(p.relative_to(tmp_path / "trained") for p in (tmp_path / "trained").rglob("*"))
    assert main(["show", "--n", "2", "-c", str(config), "data.max_images=20"]) == 0  # other data: still its own folder
    assert main(["diagnose", "--n-images", "20", "-c", str(config)]) == 0
    assert sorted(p.relative_to(tmp_path / "trained") for p in (tmp_path / "trained").rglob("*")) == before
    assert (tmp_path / "show" / "trained" / "config.yaml").is_file()
    assert (tmp_path / "diagnose" / "trained" / "diagnose.json").is_file()


def test_training_into_a_folder_holding_another_run_suggests_a_name_not_resume(tmp_path: Path, capsys) -> None:
    args = ["train", "--no-eval", f"out_dir={tmp_path}", "name=sweep", *TINY, *TINY_VQVAE]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "model.vqvae.codebook_size=8"]) == 2  # another run: --resume would refuse it
    err = capsys.readouterr().err
    assert "name=sweep-2" in err and "model.vqvae.codebook_size" in err and "--resume" not in err
    assert main([*args, "model.vqvae.codebook_size=8", "name=sweep-2"]) == 0  # the suggestion works
    assert main([*args, "train.steps=3"]) == 2  # the same run, longer: --resume works, and is suggested
    err = capsys.readouterr().err
    assert f"pseudovideo train --resume {tmp_path / 'sweep'}" in err
    assert main(["train", "--no-eval", "--resume", str(tmp_path / "sweep"), "train.steps=3"]) == 0


def test_eval_of_a_missing_folder_or_a_folder_of_runs(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert f"run folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    for name in ("a", "b"):
        assert main(["train", "--no-eval", f"out_dir={tmp_path}", f"name={name}", *TINY, *TINY_VQVAE]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 run(s)" in err and str(tmp_path / "a") in err and str(tmp_path / "b") in err


def test_evaluate_run_from_python_keeps_the_earlier_result(tmp_path: Path) -> None:
    from pseudovideo.config import build_config
    from pseudovideo.evaluation.evaluate import evaluate_run

    assert main(["train", "--no-eval", f"out_dir={tmp_path}", "name=py", *TINY, *TINY_VQVAE]) == 0
    first = evaluate_run(tmp_path / "py", build_config(overrides=["eval.num_images=8", "eval.metrics=[psnr]"]).eval)
    evaluate_run(tmp_path / "py", build_config(overrides=["eval.num_images=4", "eval.metrics=[psnr]"]).eval)
    assert json.loads((tmp_path / "py" / "eval-1.json").read_text()) == json.loads(json.dumps(first))
    assert json.loads((tmp_path / "py" / "eval.json").read_text())["protocol"]["num_images"] == 4
    assert (tmp_path / "py" / "eval-1.md").is_file()


@pytest.mark.parametrize("name", ["digits_vqvae", "digits_ddpm"])
def test_shipped_digits_baselines_are_image_models(name: str) -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert config.pseudo_video.num_frames == 1 and config.model.family in ("vqvae", "unet") and config.name == name


def test_eval_note_of_a_video_run_lists_its_corruptions() -> None:
    from pseudovideo.config import build_config
    from pseudovideo.factory.pseudo_videos import describe_pseudo_video

    note = describe_pseudo_video(build_config(overrides=["pseudo_video.num_frames=5"]).pseudo_video)
    assert note == "T=5, higher_order, blur(linear, max 2.0)+noise(linear, max 0.2)"
