"""The layout of docs/architecture.md holds: the import contracts of pyproject.toml (import-linter's layers,
forbidden and acyclic contracts) pass, they catch an import that breaks them, and every module and function stays
readable in one sitting (at most 500 and 60 lines)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "pseudovideo"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # from `def` to the last line, docstring included

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filenames=(sys.argv[1],), no_cache=True, no_logo=True))")


def _lint(src: Path) -> subprocess.CompletedProcess:
    """lint-imports with this repository's contracts on the package found in ``src``."""
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          env=env, cwd=src, timeout=300)


def test_the_import_contracts_hold() -> None:
    done = _lint(PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("models/layers.py", "from pseudovideo.training import losses", "Models never import training"),  # upward + forbidden
    ("pseudo_video/schedules.py", "import pseudovideo.config", "Layers"),  # a building block importing the config
    ("training/ema.py", "from pseudovideo.evaluation import stats", "Layers"),  # training must not import evaluation
    ("models/layers.py", "from pseudovideo.models import unet", "No cycles"),  # unet imports layers
])
def test_the_contracts_catch_an_import_that_breaks_them(tmp_path: Path, module: str, line: str, broken: str) -> None:
    copy = tmp_path / "src" / "pseudovideo"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # the import under test\n")
    done = _lint(copy.parent)
    assert done.returncode != 0 and broken in done.stdout and "BROKEN" in done.stdout, done.stdout + done.stderr


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_at_most_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _python_files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"


def test_every_function_is_at_most_60_lines() -> None:
    long = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (cut them into named steps): {long}"
