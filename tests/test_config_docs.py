"""`pseudovideo config --list` / docs/config.md document every key; --version; --help shows defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

import pseudovideo
from pseudovideo.cli import main
from pseudovideo.config import RunConfig, config_to_dict, flatten_overrides
from pseudovideo.config.docs import config_markdown, config_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_every_key_is_listed_with_a_meaning() -> None:
    rows = {row.key: row for row in config_reference()}
    assert set(flatten_overrides(config_to_dict(RunConfig()))) <= set(rows)
    assert not [key for key, row in rows.items() if not row.meaning.strip()], "keys without a meaning"
    assert rows["train.steps"].type == "int" and rows["train.steps"].default == 1000
    assert rows["data.channels"].type == "int | None" and rows["data.channels"].default is None
    assert rows["pseudo_video.corruptions.N.name"].choices == ("blur", "noise", "downsample", "mask")


def test_docs_config_md_is_up_to_date() -> None:
    assert DOC.read_text() == config_markdown(), "regenerate: pseudovideo config --markdown > docs/config.md"


def test_config_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--list"]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if line.startswith("train.steps "))
    assert line.split()[1:3] == ["int", "1000"] and "optimisation steps" in line
    assert main(["config", "train.steps=7"]) == 0  # a resolved config as YAML
    assert "steps: 7" in capsys.readouterr().out


def test_version_and_help_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"pseudovideo {pseudovideo.__version__}"
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in text and "(default: auto)" in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "(default: runs/demo)" in " ".join(capsys.readouterr().out.split())
