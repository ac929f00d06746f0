"""The Python code blocks of docs/api.md and of the README's "Python API" run as written, each on its own: in a
fresh interpreter and an empty folder, as a reader who copies one block would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Runs a block file and writes the shapes of the tensors it left behind (what the tests check).
DRIVER = (
    "import json, runpy, sys, torch\n"
    "names = runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "shapes = {k: list(v.shape) for k, v in names.items() if isinstance(v, torch.Tensor)}\n"
    "open('shapes.json', 'w').write(json.dumps(shapes))\n"
)


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_alone(block: str, folder: Path, label: str) -> dict[str, list[int]]:
    """Runs ``block`` in a fresh interpreter inside the empty ``folder``; returns the shapes of its tensors."""
    folder.mkdir(parents=True)
    (folder / "block.py").write_text(block)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", DRIVER, "block.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{label} fails when run on its own:\n{done.stderr[-3000:]}"
    return json.loads((folder / "shapes.json").read_text())


def test_api_doc_has_an_example_per_task() -> None:
    text = (DOCS / "api.md").read_text()
    for heading in ("Pseudo videos from your own tensor", "Train a model from Python", "Load a trained run",
                    "Metrics on your own tensors"):
        assert heading in text
    assert len(python_blocks(DOCS / "api.md")) >= 4


@pytest.mark.parametrize("index", range(len(python_blocks(DOCS / "api.md"))))
def test_every_api_doc_block_runs_on_its_own(index: int, tmp_path: Path) -> None:
    block = python_blocks(DOCS / "api.md")[index]
    shapes = run_alone(block, tmp_path / "fresh", f"docs/api.md block {index + 1}")
    if "api_cvivit" in block:
        assert (tmp_path / "fresh" / "runs" / "api_cvivit" / "eval.json").is_file()
    if "api_mine" in block:
        assert (tmp_path / "fresh" / "runs" / "api_mine" / "config.yaml").is_file()
    if "generated_images" in block:
        assert shapes["generated_images"] == [4, 1, 16, 16]


def test_readme_python_api_example_runs_on_its_own(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- readme-example: python-api -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    shapes = run_alone(block, tmp_path / "fresh", "the README's Python API example")
    assert shapes["video"] == [8, 5, 3, 32, 32]
    assert (tmp_path / "fresh" / "runs" / "mine" / "train_summary.json").is_file()
