"""Where the cfd/ckd feature net comes from: a cache key that holds the split, never an evaluated image in its
training set, one training when two processes need it at once, labels found before training, stale results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo.config import build_config
from pseudovideo.data.images import build_dataset
from pseudovideo.evaluation.inference import held_out_images
from pseudovideo.factory.feature_net import (
    _labelled_training_split,
    cache_lock,
    feature_net_key,
    feature_net_skip_reason,
)
from pseudovideo.metrics.feature_net import FEATURE_NET_VERSION
from pseudovideo.training.runs import stale_feature_net

REPO = Path(__file__).resolve().parents[1]


def _write_noise_folder(root: Path, count: int = 100) -> None:
    """``count`` distinct random 8x8 RGB images in two class sub-folders and no split sub-folders (split by hash)."""
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (8, 8, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def _rows(images: torch.Tensor) -> set[bytes]:
    """Each image (C, H, W) of a batch as bytes of its uint8 pixels (float [-1, 1] or uint8 input)."""
    if images.dtype != torch.uint8:
        images = ((images + 1) * 127.5).round().to(torch.uint8)
    return {image.numpy().tobytes() for image in images}


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_the_net_never_trains_on_an_evaluated_image_and_its_key_holds_the_split(tmp_path: Path, fraction: float) -> None:
    _write_noise_folder(tmp_path / "noise")
    config = build_config(overrides=[f"data.dataset=folder:{tmp_path / 'noise'}", "data.resolution=8",
                                     f"data.held_out_fraction={fraction}", f"eval.cache_dir={tmp_path / 'cache'}"])
    evaluated = _rows(held_out_images(config, 1000))  # the whole evaluation split
    trained, _, _ = _labelled_training_split(config, 8)
    assert evaluated and len(_rows(trained)) + len(evaluated) == 100
    assert not evaluated & _rows(trained)
    key = feature_net_key(config, channels=3)
    assert key.split == f"train-heldout{fraction:g}" and f"-train-heldout{fraction:g}-8px-" in key.filename
    other = build_config(overrides=[f"data.dataset=folder:{tmp_path / 'noise'}", "data.resolution=8",
                                    f"data.held_out_fraction={fraction / 2}"])
    assert feature_net_key(other, channels=3).filename != key.filename


def test_mnist_from_its_lone_test_file_has_labels_and_the_net_skips_its_held_out_part(shared_data: Path) -> None:
    root = str(shared_data / "mnist-test")
    for fraction in (0.1, 0.5):
        config = build_config(overrides=[f"data.dataset=mnist:{root}", "data.resolution=28",
                                         f"data.held_out_fraction={fraction}"])
        train = build_dataset(f"mnist:{root}", resolution=28, split="train", held_out_fraction=fraction)
        assert train.labels is not None and train.labels.shape == (len(train),) and set(train.labels.tolist()) == set(range(10))
        evaluated = held_out_images(config, 100_000)
        trained, _, classes = _labelled_training_split(config, 28)
        assert classes == 10 and evaluated.shape[0] + trained.shape[0] == 10_000
        assert not _rows(evaluated) & _rows(trained)
        key = feature_net_key(config, channels=1)
        assert (key.resolution, key.flips, key.split) == (28, False, f"train-heldout{fraction:g}")
        assert feature_net_skip_reason(config) is None


def test_a_folder_is_keyed_by_its_files_not_its_path(tmp_path: Path) -> None:
    _write_noise_folder(tmp_path / "one" / "data" / "train", count=10)
    _write_noise_folder(tmp_path / "one" / "data" / "test", count=4)
    shutil.copytree(tmp_path / "one", tmp_path / "two")

    def key(where: str, side: int = 8):
        overrides = [f"data.dataset=folder:{tmp_path / where / 'data'}", f"data.resolution={side}"]
        return feature_net_key(build_config(overrides=overrides), channels=3)

    assert key("one") == key("two") and key("one").split == "train" and key("one").resolution == 8
    assert key("one", 16).resolution == 16 and key("one", 64).resolution == 32  # larger images are resized to 32
    assert key("one").flips and "-seed0-auto-" in key("one").filename
    (tmp_path / "two" / "data" / "train" / "a" / "extra.png").write_bytes((tmp_path / "one" / "data" / "train" / "a" / "001.png").read_bytes())
    assert key("two").fingerprint != key("one").fingerprint and key("two").filename != key("one").filename
    digits = feature_net_key(build_config(overrides=["data.dataset=digits", "data.resolution=16"]), channels=1)
    assert (digits.resolution, digits.flips, digits.steps) == (16, False, "auto")


_PREPARE = """
import sys
from pseudovideo.config import build_config
from pseudovideo.factory.feature_net import prepare_feature_net
config = build_config(overrides=["data.dataset=digits", "eval.feature_net_steps=3", f"eval.cache_dir={sys.argv[1]}"])
net = prepare_feature_net(config, 1, log=lambda line: print(line, flush=True))
print("sha256", net.sha256, flush=True)
"""


def test_two_processes_needing_the_net_train_it_once(tmp_path: Path) -> None:
    config = build_config(overrides=["data.dataset=digits", "eval.feature_net_steps=3", f"eval.cache_dir={tmp_path}"])
    path = tmp_path / feature_net_key(config, 1).filename
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    with cache_lock(path):  # both processes find the file missing and its lock held
        procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
        deadline = time.monotonic() + 120
        outputs = ["", ""]
        for i, proc in enumerate(procs):  # read until each says it waits (or fails)
            while "waiting" not in outputs[i] and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                outputs[i] += line
        assert all("waiting" in out for out in outputs), outputs
        assert not path.exists()
    for i, proc in enumerate(procs):
        rest, _ = proc.communicate(timeout=300)
        outputs[i] += rest
        assert proc.returncode == 0, outputs[i]
    trained = [out for out in outputs if "cfd: training the feature classifier" in out]
    loaded = [out for out in outputs if "loading the feature classifier another process trained" in out]
    assert len(trained) == 1 and len(loaded) == 1, outputs
    hashes = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("sha256 ")}
    assert len(hashes) == 1 and path.is_file()


def test_results_of_the_old_feature_net_are_stale(tmp_path: Path) -> None:
    eval_json = tmp_path / "eval.json"

    def write(metrics: dict, protocol: dict) -> Path:
        eval_json.write_text(json.dumps({"metrics": metrics, "protocol": protocol}))
        return eval_json

    old = {"cfd": {"features": "128-d penultimate (global average pool) of a 3-conv CNN (cfd-cnn-v1)"}}
    assert stale_feature_net(write({"psnr": 20.0, "cfd": 3.0}, old))
    assert not stale_feature_net(write({"psnr": 20.0}, {}))
    assert not stale_feature_net(write({"cfd": 3.0, "ckd": 0.1}, {"feature_net": {"version": FEATURE_NET_VERSION}}))
    eval_json.write_text("{truncated")
    assert stale_feature_net(eval_json)


def test_a_finished_run_scored_by_the_old_net_is_evaluated_again(tmp_path: Path) -> None:
    from pseudovideo.config import save_config
    from pseudovideo.training.runs import plan_run

    config = build_config(overrides=[f"out_dir={tmp_path}", "name=old", "train.steps=2", "eval.metrics=[psnr,cfd]"])
    run_dir = config.run_dir  # the files of a finished, evaluated run, as training and evaluation write them
    save_config(config, run_dir / "config.yaml")
    (run_dir / "checkpoints" / "step_0000002").mkdir(parents=True)
    (run_dir / "train_summary.json").write_text(json.dumps({"steps": 2}))
    old = {"cfd": {"features": "128-d penultimate (global average pool) of a 3-conv CNN (cfd-cnn-v1)"}}
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"psnr": 20.0, "cfd": 3.0}, "protocol": old}))
    action, reason = plan_run(config)
    assert action == "evaluate" and FEATURE_NET_VERSION in reason
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"psnr": 20.0, "cfd": 3.0},
                                                   "protocol": {"feature_net": {"version": FEATURE_NET_VERSION}}}))
    assert plan_run(config)[0] == "skip"
