"""The Python code blocks of docs/api.md run as written (in order, in one namespace, in a fresh folder)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_api_doc_has_an_example_per_task() -> None:
    text = (DOCS / "api.md").read_text()
    for heading in ("Pseudo videos from your own tensor", "Train a model from Python", "Load a trained run",
                    "Metrics on your own tensors"):
        assert heading in text
    assert len(python_blocks(DOCS / "api.md")) >= 4


def test_api_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write runs/ into the current folder
    namespace: dict[str, object] = {"__name__": "api_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the FID/KID weights being absent offline
        for i, block in enumerate(python_blocks(DOCS / "api.md")):
            exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "api_cvivit" / "eval.json").is_file()
    assert (tmp_path / "runs" / "api_mine" / "config.yaml").is_file()
    assert namespace["generated_images"].shape == (4, 1, 16, 16)  # type: ignore[attr-defined]
