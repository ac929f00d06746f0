"""The code record of runs (git commit of the package's own tree, dirty or not) and tables that never mix code silently."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pseudovideo import experiments as E
from pseudovideo.config import ConfigError, flatten_overrides
from pseudovideo.training.provenance import code_identity, run_code

from test_experiments import fake_finished, pair_experiment, train_calls, write_experiment  # noqa: F401 - fixture

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pseudovideo"
RECORD = "import json; from pseudovideo.training.provenance import code_record; print(json.dumps(code_record()))"


def _record_of(src: Path, cwd: Path) -> dict:
    """code_record() of a fresh interpreter importing pseudovideo from ``src`` (as PYTHONPATH does), run in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(src), "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    done = subprocess.run([sys.executable, "-c", RECORD], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_the_record_names_the_commit_of_the_package_tree_not_of_the_current_folder(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "pinned"  # a checkout pinned at a commit, imported through PYTHONPATH
    shutil.copytree(PACKAGE, repo / "src" / "pseudovideo", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("__pycache__/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "pinned")
    head = _git(repo, "rev-parse", "HEAD")
    elsewhere = tmp_path / "elsewhere"  # the current folder: another git tree, which must not be the one recorded
    elsewhere.mkdir()
    _git(elsewhere, "init", "-q")
    (repo / "README.md").write_text("outside the package: does not make its tree dirty\n")

    clean = _record_of(repo / "src", elsewhere)
    assert clean["commit"] == head and clean["dirty"] is False and clean["changes_sha256"] is None
    assert clean["source"] == str(repo / "src" / "pseudovideo")

    config = repo / "src" / "pseudovideo" / "config" / "sections.py"
    config.write_text(config.read_text() + "\n# an edit\n")
    edited = _record_of(repo / "src", elsewhere)
    assert edited["commit"] == head and edited["dirty"] is True and edited["changes_sha256"]
    assert _record_of(repo / "src", elsewhere)["changes_sha256"] == edited["changes_sha256"]  # same edit, same hash
    (repo / "src" / "pseudovideo" / "new_module.py").write_text("X = 1\n")  # an untracked file counts too
    untracked = _record_of(repo / "src", elsewhere)
    assert untracked["dirty"] is True and untracked["changes_sha256"] != edited["changes_sha256"]
    assert code_identity(untracked) == f"{head[:7]}+dirty.{untracked['changes_sha256'][:8]}"


def test_outside_git_the_record_holds_the_package_version(tmp_path: Path) -> None:
    installed = tmp_path / "site-packages"  # like an installed wheel: no git tree around it
    shutil.copytree(PACKAGE, installed / "pseudovideo", ignore=shutil.ignore_patterns("__pycache__"))
    record = _record_of(installed, tmp_path)
    from pseudovideo import __version__

    assert record["commit"] is None and record["version"] == __version__
    assert code_identity(record) == f"version {__version__}"


def test_training_and_evaluation_record_the_code_and_the_table_shows_it(tmp_path: Path) -> None:
    from pseudovideo.training.provenance import code_record
    from test_experiments import tiny_experiment

    data = tiny_experiment(seeds=[0])
    data["runs"] = data["runs"][:1]
    result = E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    run_dir = tmp_path / "out" / "tiny" / "cpu-small" / "vqvae-s0"
    current = code_record()
    assert json.loads((run_dir / "train_summary.json").read_text())["code"] == current
    assert json.loads((run_dir / "eval.json").read_text())["code"] == current
    (row,) = list(csv.DictReader(result.csv_path.open()))
    assert row["commit"] == code_identity(current) and row["evaluated_at"] == ""
    assert row["dirty"] == {True: "yes", False: "no", None: ""}[current["dirty"]]
    assert f"Code: every run at {code_identity(current)}" in result.markdown


RECORD_A = {"commit": "a" * 40, "dirty": False, "changes_sha256": None, "version": "0.1.0"}
RECORD_B = {"commit": "b" * 40, "dirty": True, "changes_sha256": "c" * 64, "version": "0.1.0"}


def _with_code(run_dir: Path, train: dict | None, evaluation: dict | None) -> None:
    """Adds code records to a faked finished run (None: a run made before commits were recorded)."""
    for name, key in (("train_summary.json", train), ("eval.json", evaluation)):
        content = json.loads((run_dir / name).read_text())
        content.pop("code", None)
        if key is not None:
            content["code"] = key
        if name == "eval.json" and train is not None:
            content["train"]["code"] = train
        (run_dir / name).write_text(json.dumps(content))


def _pair_runs(tmp_path: Path, codes: dict[int, dict | None]) -> tuple[dict, list]:
    data = pair_experiment()
    runs = E.expand_experiment(E.parse_experiment(data), "cpu-small", tmp_path / "out")
    for run in runs:
        fake_finished(run, {"psnr": 20.0 + run.seed, "ssim": 0.5, "swd_avg": 10.0})
        _with_code(run.config.run_dir, codes[run.seed], codes[run.seed])
    return data, runs


def test_runs_of_different_commits_are_refused_in_one_line_unless_allowed(tmp_path: Path) -> None:
    data, runs = _pair_runs(tmp_path, {0: RECORD_A, 1: RECORD_A, 2: RECORD_B})
    spec = E.parse_experiment(data)
    with pytest.raises(ConfigError) as caught:
        E.write_results(spec, "cpu-small", runs, tmp_path / "tables")
    message = str(caught.value)
    assert "\n" not in message and "--allow-mixed" in message
    assert "aaaaaaa (4 runs" in message and "bbbbbbb+dirty.cccccccc (2 runs: vqvae-s2, cvivit-T3-s2)" in message
    assert not (tmp_path / "tables").exists()  # nothing written

    result = E.write_results(spec, "cpu-small", runs, tmp_path / "tables", allow_mixed=True)
    assert "**Mixed code** (allowed by --allow-mixed)" in result.markdown
    vqvae_line = next(line for line in result.markdown.splitlines() if line.startswith("| vqvae |"))
    assert vqvae_line.endswith("| aaaaaaa / bbbbbbb+dirty.cccccccc |")  # the code column of the mixed table
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [(r["commit"], r["dirty"]) for r in rows if r["seed"] == "2"] == [("bbbbbbb+dirty.cccccccc", "yes")] * 2


def test_runs_without_a_record_are_unknown_and_can_be_stated(tmp_path: Path) -> None:
    data, runs = _pair_runs(tmp_path, {0: None, 1: None, 2: None})
    spec = E.parse_experiment(data)
    result = E.write_results(spec, "cpu-small", runs, tmp_path / "tables")  # all unknown: one (unknown) code
    assert "Code: every run at unknown (runs made before commits were recorded)." in result.markdown
    _with_code(runs[0].config.run_dir, RECORD_A, RECORD_A)  # one new run beside old ones: mixed
    with pytest.raises(ConfigError, match=r"unknown \(5 runs.*--unrecorded-commit COMMIT"):
        E.write_results(spec, "cpu-small", runs, tmp_path / "tables")
    stated = E.write_results(spec, "cpu-small", runs, tmp_path / "tables", unrecorded_commit="aaaaaaa")
    assert "Code: every run at" in stated.markdown
    commits = [r["commit"] for r in csv.DictReader(stated.csv_path.open())]
    assert commits.count("aaaaaaa (stated)") == 5 and commits.count("aaaaaaa") == 1


def test_a_mixed_table_is_refused_before_anything_trains(tmp_path: Path, train_calls: list) -> None:  # noqa: F811
    data, runs = _pair_runs(tmp_path, {0: RECORD_A, 1: RECORD_A, 2: RECORD_A})
    shutil.rmtree(runs[-1].config.run_dir)  # one run to train, by this process's code (not aaaaaaa)
    with pytest.raises(ConfigError, match="different code"):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", log=lambda _: None)
    assert train_calls == []
    with pytest.raises(ConfigError, match="--unrecorded-commit: expected a git commit hash"):
        E.run_experiment(write_experiment(tmp_path, data), out_dir=tmp_path / "out", unrecorded_commit="main",
                         log=lambda _: None)


def test_a_run_resumed_at_other_code_or_evaluated_at_other_code_says_so() -> None:
    summary = {"code": RECORD_B, "code_history": [RECORD_A, RECORD_B]}
    columns = run_code(summary, {"code": RECORD_B})
    assert columns["commit"] == "aaaaaaa then bbbbbbb+dirty.cccccccc" and columns["dirty"] == "yes"
    columns = run_code({"code": RECORD_A}, {"code": RECORD_B})
    assert columns["evaluated_at"] == "bbbbbbb+dirty.cccccccc" and columns["_code"] == "aaaaaaa, evaluated at bbbbbbb+dirty.cccccccc"
    assert run_code({}, {}, unrecorded="0123abc")["commit"] == "0123abc (stated)"


def test_a_run_resumed_by_other_code_records_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pseudovideo.training import engine as training
    from pseudovideo.config import build_config
    from pseudovideo.training.provenance import code_record
    from pseudovideo.training.runs import train_run
    from test_experiments import TINY_SCALE

    tiny = [f"{k}={json.dumps(v)}" for k, v in flatten_overrides(TINY_SCALE).items()]
    short = build_config(None, [*tiny, "model.family=vqvae", "pseudo_video.num_frames=1", f"out_dir={tmp_path}",
                                "name=run", "train.steps=2"])
    train_run(short)
    monkeypatch.setattr(training, "code_record", lambda: RECORD_A)  # the run continued by the code of commit aaaaaaa
    train_run(build_config(None, [*tiny, "model.family=vqvae", "pseudo_video.num_frames=1", f"out_dir={tmp_path}",
                                  "name=run", "train.steps=4"]), resume=True)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["code"] == RECORD_A and summary["code_history"] == [code_record(), RECORD_A]
    assert run_code(summary, {"code": RECORD_A})["commit"] == f"{code_identity(code_record())} then aaaaaaa"
