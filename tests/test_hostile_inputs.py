"""A table of hostile inputs, built here, against every command that reads them: each one must end with
exit status 2 and one line on stderr naming the bad file, folder or key, never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from pseudovideo.cli import main
from pseudovideo.data.folders import list_image_files

from test_train_cli import TINY, TOKENIZERS, UNET

NUM_GOOD = 8
FOLDER_TINY = [o for o in TINY if not o.startswith(("data.dataset", "data.max_images", "eval.metrics"))]
FOLDER_TINY += ["data.held_out_fraction=0.5", "eval.metrics=[psnr]", "eval.num_images=2", "train.steps=1", "train.batch_size=4", "train.checkpoint_every=1"]
VQVAE = TOKENIZERS["vqvae"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path) -> None:
    """A valid PNG signature and header claiming 100000 x 100000 RGB pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _good_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(NUM_GOOD):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path / f"img{i}.png")
    return path


def _split_folders(path: Path, *makers: Callable[[Path], str]) -> tuple[Path, list[str]]:
    """``path/train`` and ``path/test`` of good images, each with the files ``makers`` add (whichever split a
    command reads, it meets them); returns ``path`` and the added file names."""
    for split in ("train", "test"):
        good = _good_folder(path / split)
        names = [make(good) for make in makers]
    return path, names


def _truncated(folder: Path) -> str:
    data = (folder / "img0.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    return "truncated.png"


def _zero_bytes(folder: Path) -> str:
    (folder / "empty.jpg").write_bytes(b"")
    return "empty.jpg"


def _text_as_image(folder: Path) -> str:
    (folder / "notes.png").write_text("this is not a picture\n")
    return "notes.png"


def _bomb(folder: Path) -> str:
    _bomb_png(folder / "huge.png")
    return "huge.png"


HOSTILE_FILES: dict[str, Callable[[Path], str]] = {
    "truncated": _truncated, "zero-byte": _zero_bytes, "text-as-image": _text_as_image, "decompression-bomb": _bomb,
}


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if "error:" in line]


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    code, lines = _run(capsys, argv)
    assert code == 2, f"{argv} exited {code}"
    assert len(lines) == 1, lines
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def _data_args(command: str, folder: Path, tmp_path: Path) -> list[str]:
    overrides = [f"data.dataset=folder:{folder}", *FOLDER_TINY, *VQVAE, f"out_dir={tmp_path / 'runs'}", "name=r"]
    extra = {"show": ["--n", "2"], "diagnose": ["--n-images", "4", "pseudo_video.num_frames=3"], "train": ["--no-eval"]}[command]
    return [command, *overrides, *extra]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VQVAE run trained on a good folder (its config is pointed at hostile folders by the eval cases)."""
    tmp = tmp_path_factory.mktemp("trained")
    folder = _good_folder(tmp / "good")
    assert main(_data_args("train", folder, tmp)) == 0
    return tmp / "runs" / "r"


def _eval_args(run: Path, folder: Path, tmp_path: Path) -> list[str]:
    """A copy of the trained run whose saved config reads ``folder``."""
    copy = tmp_path / "run_copy"
    shutil.copytree(run, copy)
    config = (copy / "config.yaml").read_text()
    config = "\n".join(f"  dataset: folder:{folder}" if line.startswith("  dataset:") else line for line in config.splitlines())
    (copy / "config.yaml").write_text(config.replace(f"out_dir: {run.parent}", f"out_dir: {tmp_path}").replace("name: r\n", "name: run_copy\n"))
    return ["eval", str(copy)]


# ------------------------------------------------------------------------------------------ hostile image files


@pytest.mark.parametrize("command", ["train", "show", "diagnose", "eval"])
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_bad_image_file_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trained_run: Path, command: str, case: str
) -> None:
    folder, (bad,) = _split_folders(tmp_path / "images", HOSTILE_FILES[case])
    argv = _eval_args(trained_run, folder, tmp_path) if command == "eval" else _data_args(command, folder, tmp_path)
    line = _assert_one_line_error(capsys, argv, str(folder), bad)
    assert "BytesIO" not in line
    if case == "decompression-bomb":
        assert "DecompressionBombError" in line


def test_bad_files_are_skipped_and_counted_with_skip_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = _split_folders(tmp_path / "images", *HOSTILE_FILES.values())
    with pytest.warns(UserWarning, match=f"skipped {len(HOSTILE_FILES)} unreadable image file"):
        code, lines = _run(capsys, [*_data_args("show", folder, tmp_path), "data.skip_bad_files=true"])
    assert code == 0 and lines == []


def _named_pipe(folder: Path) -> str:
    os.mkfifo(folder / "pipe.png")
    return "pipe.png"


@contextlib.contextmanager
def _released_if_read(*fifos: Path, after_s: float = 20.0) -> Iterator[None]:
    """After ``after_s``, opens and closes the write end of each FIFO again and again: code that (wrongly) opens
    one to read it is then released with an empty read, so that the test fails instead of hanging the suite."""
    stop = threading.Event()

    def release() -> None:
        if stop.wait(after_s):
            return
        while not stop.is_set():
            for fifo in fifos:
                with contextlib.suppress(OSError):  # ENXIO: nobody reads it
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            stop.wait(0.1)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("command", ["train", "show", "diagnose"])
def test_a_named_pipe_called_png_is_named_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    folder, (pipe,) = _split_folders(tmp_path / "images", _named_pipe)
    with _released_if_read(folder / "train" / pipe, folder / "test" / pipe):
        _assert_one_line_error(capsys, _data_args(command, folder, tmp_path), str(folder / "train" / pipe), "named pipe")


def test_skipped_files_are_listed_in_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, names = _split_folders(tmp_path / "images", *HOSTILE_FILES.values(), _named_pipe)
    with _released_if_read(folder / "train" / "pipe.png", folder / "test" / "pipe.png"):
        with pytest.warns(UserWarning, match=f"skipped {len(names)} unreadable image file.*skipped_files.txt"):
            code, lines = _run(capsys, [*_data_args("train", folder, tmp_path), "data.skip_bad_files=true"])
    assert code == 0 and lines == []
    listed = (tmp_path / "runs" / "r" / "skipped_files.txt").read_text().splitlines()
    assert listed == sorted(str(folder / "train" / name) for name in names)
    main(["config", "--list"])
    meaning = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("data.skip_bad_files "))
    assert "skipped_files.txt" in meaning


# ------------------------------------------------------------------------------------------ hostile folders


def test_a_symlink_loop_visits_each_real_folder_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _good_folder(tmp_path / "images")
    (folder / "sub").mkdir()
    shutil.move(folder / "img7.png", folder / "sub" / "img7.png")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "again").symlink_to(folder / "sub", target_is_directory=True)
    assert len(list_image_files(folder)) == NUM_GOOD
    code, lines = _run(capsys, _data_args("show", folder, tmp_path))
    assert code == 0 and lines == []


def _unreadable_subfolder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``folder/locked`` with an image in it that cannot be listed (chmod 000, or a refusing scandir as root)."""
    locked = folder / "locked"
    locked.mkdir()
    shutil.copy(folder / "img0.png", locked / "hidden.png")
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads any folder: make the listing refuse instead
        real_scandir = os.scandir

        def refusing_scandir(path="."):  # noqa: ANN001, ANN202 - os.scandir's signature
            if os.path.realpath(path) == os.path.realpath(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", refusing_scandir)
    return locked


@pytest.mark.parametrize("command", ["train", "show", "diagnose"])
def test_an_unreadable_subfolder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    folder = _good_folder(tmp_path / "images")
    locked = _unreadable_subfolder(folder, monkeypatch)
    try:
        _assert_one_line_error(capsys, _data_args(command, folder, tmp_path), str(locked), "data.skip_bad_files")
        with pytest.warns(UserWarning, match="skipped 1 unreadable folder"):
            code, _ = _run(capsys, [*_data_args("show", folder, tmp_path), "data.skip_bad_files=true"])
        assert code == 0
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders without permission")
def test_a_dataset_folder_without_permission_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _good_folder(tmp_path / "images")
    folder.chmod(0)
    try:
        _assert_one_line_error(capsys, _data_args("show", folder, tmp_path), str(folder))
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["train", "show", "diagnose"])
def test_a_file_given_as_the_dataset_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    folder = _good_folder(tmp_path / "images")
    _assert_one_line_error(capsys, _data_args(command, folder / "img0.png", tmp_path), str(folder / "img0.png"), "is a file")


def test_mixed_modes_and_sizes_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _good_folder(tmp_path / "images")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 7), dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (9, 20, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (10, 10), dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(rng.integers(0, 256, (5, 40, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    code, lines = _run(capsys, _data_args("show", folder, tmp_path))
    assert code == 0 and lines == []


# ------------------------------------------------------------------------------------------ bad configs and arguments


def test_a_binary_yaml_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "weird.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    _assert_one_line_error(capsys, ["show", "-c", str(config)], str(config))


def test_a_directory_given_as_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_error(capsys, ["train", "-c", str(tmp_path)], str(tmp_path), "is a directory")


def _alias_bomb(levels: int = 8) -> str:
    """A config whose train.steps is 9 aliases of 9 aliases of ... (9**levels values), anchored under an unknown key."""
    lines = ["defs:", "  - &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels - 1)]
    lines += ["train:", "  steps: [" + ", ".join([f"*a{levels - 2}"] * 9) + "]"]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_a_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    line = _assert_one_line_error(capsys, ["train", "-c", str(bomb), f"out_dir={tmp_path / 'runs'}"], str(bomb), "alias")
    assert len(line) < 500
    small = tmp_path / "anchors.yaml"  # anchors and merge keys as people use them still work
    small.write_text("common: &common {steps: 3, batch_size: 4}\ntrain:\n  <<: *common\n  steps: 2\n")
    from pseudovideo.config import read_yaml

    assert read_yaml(small)["train"] == {"steps": 2, "batch_size": 4}


@pytest.mark.parametrize("how", ["config file", "override"])
def test_a_huge_value_is_quoted_short(tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    value = "[" + ", ".join(["12345"] * 100_000) + "]"
    argv = ["train", f"out_dir={tmp_path / 'runs'}"]
    if how == "config file":
        config = tmp_path / "long.yaml"
        config.write_text(f"train:\n  steps: {value}\n")
        argv += ["-c", str(config)]
    else:
        argv.append(f"train.steps={value}")
    line = _assert_one_line_error(capsys, argv, "train.steps", "12345")
    assert len(line) < 500


def test_a_key_set_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  steps: 5\n  batch_size: 4\n  steps: 7\n")
    _assert_one_line_error(capsys, ["train", "-c", str(config), f"out_dir={tmp_path / 'runs'}"], str(config), "'steps'",
                           "lines 2 and 4")
    assert not (tmp_path / "runs").exists()


def test_an_impossible_size_is_refused_before_allocating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pseudovideo.config import build_config
    from pseudovideo.training.memory import estimate_training_memory

    line = _assert_one_line_error(capsys, ["train", "data.resolution=100000", f"out_dir={tmp_path / 'runs'}"],
                                  "data.resolution=100000", "train.batch_size=32", "memory")
    assert "60.0 TB" in line  # the 1,500 digits at 100000 x 100000 in float32
    assert not (tmp_path / "runs").exists()
    # by hand, batch 8 of 3-frame 8x8 grey videos, VQVAE width 8: 8*3*1*64 floats (4 bytes); output and gradient of
    # 8*3*8*64 numbers (2 bytes); the 1500 digits, 64 floats each
    config = build_config(overrides=["data.resolution=8", "train.batch_size=8", "pseudo_video.num_frames=3",
                                     "model.vqvae.base_channels=8"])
    assert estimate_training_memory(config) == {"batch": 6144, "activations": 49152, "dataset": 384000}


def test_a_bad_diffusers_base_prints_only_our_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "in_channels": 1, "out_channels": 1}))
    capsys.readouterr()
    code = main(["train", "model.family=lifted", f"model.lifted.base=diffusers:{folder}", "data.resolution=8",
                 f"out_dir={tmp_path / 'runs'}", "name=d", "--no-eval"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert f"model.lifted.base=diffusers:{folder}" in err[0] and "accelerate" not in err[0]


def test_negative_explicit_levels_blame_levels(capsys: pytest.CaptureFixture[str]) -> None:
    line = _assert_one_line_error(
        capsys, ["show", "data.dataset=digits", "pseudo_video.num_frames=3",
                 "pseudo_video.corruptions=[{name: blur, schedule: explicit, levels: [-1.0, 0.5]}]"],
        "pseudo_video.corruptions.0.levels",
    )
    assert "max_level" not in line


@pytest.mark.parametrize(
    "argv, key",
    [
        (["show", "data.dataset=digits", "--n", "0"], "--n"),
        (["show", "data.dataset=digits", "--n", "-3"], "--n"),
        (["diagnose", "data.dataset=digits", "--n-images", "0"], "--n-images"),
        (["train", "data.dataset=digits", "eval.num_images=0"], "eval.num_images"),
        (["train", "data.dataset=digits", "eval.num_images=-5"], "eval.num_images"),
        (["train", "data.dataset=digits", "eval.batch_size=0"], "eval.batch_size"),
        (["train", "data.dataset=digits", "train.unknown_key=1"], "train.unknown_key"),
    ],
)
def test_bad_numbers_and_keys_are_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], key: str
) -> None:
    _assert_one_line_error(capsys, [*argv, f"out_dir={tmp_path}"], key)
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diffusion")
    argv = ["train", *TINY, "model.family=unet", "pseudo_video.num_frames=1", *UNET, "train.steps=1",
            "train.checkpoint_every=1", f"out_dir={tmp}", "name=d", "--no-eval"]
    assert main(argv) == 0
    return tmp / "d"


@pytest.mark.parametrize(
    "args, key",
    [(["--n", "0"], "--n"), (["--n", "-2"], "--n"), (["--batch-size", "0"], "--batch-size"),
     (["eval.num_images=0"], None)],
)
def test_bad_sample_and_eval_numbers(
    diffusion_run: Path, capsys: pytest.CaptureFixture[str], args: list[str], key: str | None
) -> None:
    if key is None:  # an eval override
        _assert_one_line_error(capsys, ["eval", str(diffusion_run), *args], "eval.num_images")
    else:
        _assert_one_line_error(capsys, ["sample", str(diffusion_run), *args], key)
    assert not (diffusion_run / "samples").exists()


# ------------------------------------------------------------------------------------------ hostile checkpoints


def _copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` at ``tmp_path/copies/r`` whose saved config names its new place."""
    copy = tmp_path / "copies" / "r"
    shutil.copytree(run, copy)
    text = (copy / "config.yaml").read_text().replace(f"out_dir: {run.parent}\n", f"out_dir: {copy.parent}\n")
    (copy / "config.yaml").write_text(text)
    return copy


def _rewrite_manifest(checkpoint: Path, name: str) -> None:
    """Makes the manifest agree with a replaced file (what a deliberate attacker would do)."""
    import hashlib

    manifest = json.loads((checkpoint / "manifest.json").read_text())
    data = (checkpoint / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


class _Payload:
    """Pickles to a call of ``os.system``: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo pwned > /dev/null",))


def _malicious_state(checkpoint: Path) -> str:
    torch.save({"step": 1, "payload": _Payload()}, checkpoint / "state.pt")
    _rewrite_manifest(checkpoint, "state.pt")
    return "state.pt"


def _malicious_safetensors(checkpoint: Path) -> str:
    header = b'{"w": {"dtype": "F32", "shape": [100000000000], "data_offsets": [0, 400000000000]}}'
    (checkpoint / "ema.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    _rewrite_manifest(checkpoint, "ema.safetensors")
    return "ema.safetensors"


def _every_checkpoint_corrupt(checkpoint: Path) -> str:
    for folder in checkpoint.parent.iterdir():
        with open(folder / "model.safetensors", "r+b") as handle:
            handle.truncate(10)
    return "model.safetensors"


@pytest.mark.parametrize("damage,command", [  # eval reads weights only, never state.pt: no eval case for it
    (_malicious_state, "resume"), (_malicious_safetensors, "eval"), (_malicious_safetensors, "resume"),
    (_every_checkpoint_corrupt, "eval"), (_every_checkpoint_corrupt, "resume")])
def test_a_hostile_checkpoint_is_named_in_one_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, command: str
) -> None:
    run = _copy_run(trained_run, tmp_path)
    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    name = damage(checkpoint)
    argv = ["eval", str(run)] if command == "eval" else ["train", "--resume", str(run), "--no-eval", "train.steps=2"]
    line = _assert_one_line_error(capsys, argv, name)
    assert "weights_only" not in line


def test_a_config_family_that_does_not_match_the_weights(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(trained_run, tmp_path)
    config = (run / "config.yaml").read_text().replace("family: vqvae", "family: cvivit")
    (run / "config.yaml").write_text(config)
    _assert_one_line_error(capsys, ["eval", str(run)], "ema.safetensors", "model.family")


def test_lpips_weights_that_are_not_a_state_dict_are_named(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(trained_run, tmp_path)
    weights = tmp_path / "lpips.pth"
    torch.save([1, 2, 3], weights)
    _assert_one_line_error(capsys, ["eval", str(run), "eval.metrics=[lpips]", f"eval.lpips_weights={weights}"], str(weights))


# ------------------------------------------------------------------------------------------ experiments


@pytest.mark.parametrize("case", ["truncated", "decompression-bomb", "file-as-folder"])
def test_an_experiment_on_hostile_data_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    from test_experiments import tiny_experiment, write_experiment

    folder = _good_folder(tmp_path / "images")
    if case == "file-as-folder":
        dataset, bad = folder / "img0.png", folder / "img0.png"
    else:
        dataset, (name,) = _split_folders(tmp_path / "split_images", HOSTILE_FILES[case])
        bad = dataset / "train" / name
    spec = tiny_experiment(seeds=[0])
    spec["runs"] = spec["runs"][:1]  # the VQVAE alone
    spec["scales"]["cpu-small"].update({"data.dataset": f"folder:{dataset}", "data.max_images": None})
    spec["scales"]["cpu-small"]["train"].update({"steps": 1, "batch_size": 4})
    spec["scales"]["cpu-small"]["eval"].update({"num_images": 4, "batch_size": 4})
    path = write_experiment(tmp_path, spec)
    _assert_one_line_error(capsys, ["experiment", str(path), "--out", str(tmp_path / "exp")], str(bad))


@pytest.mark.parametrize("damage", [_malicious_safetensors, _every_checkpoint_corrupt])
def test_sample_from_a_hostile_checkpoint_is_named_in_one_line(
    diffusion_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage
) -> None:
    run = _copy_run(diffusion_run, tmp_path)
    name = damage(sorted((run / "checkpoints").iterdir())[-1])
    line = _assert_one_line_error(capsys, ["sample", str(run), "--n", "2"], name)
    assert "weights_only" not in line
    assert not (run / "samples").exists()
