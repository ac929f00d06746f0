"""The CLI's top level: one-line errors (exit 2) for expected failures, tracebacks behind --debug,
warnings without source lines, a full disk named with what was kept, and honest resume summaries."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pseudovideo import checkpoint as checkpoint_module
from pseudovideo.checkpoint import list_checkpoints
from pseudovideo.cli import main

from test_train_cli import TINY, TOKENIZERS

SRC = Path(__file__).resolve().parents[1] / "src"
VQVAE = [*TINY, *TOKENIZERS["vqvae"], "eval.metrics=[psnr]"]


def test_debug_shows_the_traceback_of_an_expected_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    missing = ["eval", str(tmp_path / "nowhere")]
    assert main(missing) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(FileNotFoundError):
        main(["--debug", *missing])
    with pytest.raises(FileNotFoundError):
        main([*missing, "--debug"])
    monkeypatch.setenv("PSEUDOVIDEO_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(missing)


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    import pseudovideo.cli as cli

    def broken(args):  # noqa: ANN001, ANN202
        raise KeyError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["show"].set_defaults(func=broken)  # noqa: SLF001
    with pytest.raises(KeyError):
        main(["show"])


def test_warnings_print_one_line_without_a_source_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # a warning raised while a command runs prints as one line, without the line of code that raised it
    script = (
        "import sys, warnings; from pseudovideo import cli\n"
        "def noisy(args):\n    warnings.warn('careful: something odd')\n    return 0\n"
        "parser = cli.build_parser(); cli.build_parser = lambda: parser\n"
        "parser._subparsers._group_actions[0].choices['show'].set_defaults(func=noisy)\n"
        "sys.exit(cli.main(['show']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0
    assert done.stderr.strip().splitlines() == ["pseudovideo: UserWarning: careful: something odd"]


def test_a_full_disk_names_the_file_and_what_was_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    real_save = checkpoint_module.save_model
    calls = []

    def filling_save(module, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(filename)
        if len(calls) > 2:  # the first checkpoint (model + ema) fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save(module, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_model", filling_save)
    assert main(["train", *VQVAE, "name=r", f"out_dir={tmp_path}", "--no-eval"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # warnings aside
    assert len(err) == 1
    assert "no space left on device" in err[0] and "model.safetensors" in err[0]
    assert "step_0000002 is kept" in err[0] and "resume" in err[0]
    assert [step for step, _ in list_checkpoints(tmp_path / "r" / "checkpoints")] == [2]
    assert not any(p.name.startswith(".tmp_") for p in (tmp_path / "r" / "checkpoints").iterdir())


def test_resume_summaries_say_what_this_process_trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = [*VQVAE, "name=r", f"out_dir={tmp_path}", "--no-eval"]
    assert main(["train", *run]) == 0
    assert "trained 4 steps in" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-eval", "train.steps=6"]) == 0
    assert "trained 2 steps (4 -> 6) in" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-eval", "train.steps=6"]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "is already at step 6" in out and "images/s" not in out
