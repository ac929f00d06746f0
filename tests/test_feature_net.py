"""The cfd metric (classifier Fréchet distance): its feature net, cache, errors, and the CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo import metrics as M
from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.data.images import build_dataset
from pseudovideo.data.datasets import spread_images
from pseudovideo.evaluation.feature_net import (
    UnlabelledDatasetError,
    classifier_features,
    file_sha256,
    load_feature_net,
    prepare_feature_net,
    save_feature_net,
    train_feature_net,
    weights_sha256,
)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits at 16 px: train images (1500, 1, 16, 16), their labels (1500,), test images (297, 1, 16, 16)."""
    train = build_dataset("digits", resolution=16, split="train")
    test = build_dataset("digits", resolution=16, split="test")
    return spread_images(train, len(train)), train.labels, spread_images(test, len(test))


def test_cfd_sees_a_contrast_change_that_swd_cannot(digits) -> None:
    train_x, train_y, test_x = digits
    model, accuracy = train_feature_net(train_x, train_y, 10, seed=0, steps=10, batch_size=64)
    assert 0.0 <= accuracy <= 1.0

    def cfd(a: torch.Tensor, b: torch.Tensor) -> float:
        return M.feature_frechet_distance(classifier_features(a, model), classifier_features(b, model))

    halves = cfd(test_x[::2], test_x[1::2])  # two samples of one distribution: sampling noise only
    assert abs(cfd(test_x, test_x)) < 1e-5
    assert cfd(test_x, 0.5 * test_x) > 20 * halves > 0  # measured ~100x
    # the motivating bug: SWD standardises each set, so halving the contrast is invisible to it
    swd = M.sliced_wasserstein_distance(test_x, 0.5 * test_x, generator=torch.Generator().manual_seed(0))["swd_avg"]
    swd_halves = M.sliced_wasserstein_distance(test_x[:148], test_x[148:296], generator=torch.Generator().manual_seed(0))
    assert swd < 1e-3 < swd_halves["swd_avg"]


def test_training_twice_with_one_seed_gives_bit_identical_weights(tmp_path: Path, digits) -> None:
    x, y = digits[0][:200], digits[1][:200]
    rng_before = torch.random.get_rng_state()
    first, acc1 = train_feature_net(x, y, 10, seed=3, steps=6, batch_size=16)
    second, acc2 = train_feature_net(x, y, 10, seed=3, steps=6, batch_size=16)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the global RNG is left alone
    other, _ = train_feature_net(x, y, 10, seed=4, steps=6, batch_size=16)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other.head.weight)
    meta = {"dataset": "digits", "resolution": "16"}
    a = save_feature_net(first, acc1, tmp_path / "a.safetensors", meta)
    b = save_feature_net(second, acc2, tmp_path / "b.safetensors", meta)
    assert a.sha256 == b.sha256 == weights_sha256(first.state_dict()) and a.accuracy == acc1
    assert a.file_sha256 == file_sha256(tmp_path / "a.safetensors")


def test_missing_corrupt_or_mismatched_weights_files_are_named(tmp_path: Path, digits) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_feature_net(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        load_feature_net(corrupt)
    model, accuracy = train_feature_net(digits[0][:40], digits[1][:40], 10, seed=0, steps=1, batch_size=8)
    save_feature_net(model, accuracy, tmp_path / "grey.safetensors", {"resolution": "16"})
    with pytest.raises(ValueError, match=r"grey.safetensors.*channels"):
        load_feature_net(tmp_path / "grey.safetensors", {"resolution": "16", "channels": "3"})


def _write_image_folder(root: Path, labelled: bool) -> None:
    """A tiny folder dataset: two classes of flat-coloured 8x8 RGB images (dark / bright), in train/ and test/."""
    for split, count in (("train", 10), ("test", 4)):
        for i in range(count):
            cls, value = ("dark", 40 + i) if i % 2 else ("bright", 200 - i)
            folder = root / split / cls if labelled else root / split
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (value, value // 2, 255 - value)).save(folder / f"{cls}{i}.png")


def test_folder_labels_come_from_class_sub_folders(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "labelled", labelled=True)
    _write_image_folder(tmp_path / "flat", labelled=False)
    ds = build_dataset(f"folder:{tmp_path / 'labelled'}", resolution=8, split="train")
    assert ds.class_names == ["bright", "dark"]
    assert ds.labels.tolist() == [0] * 5 + [1] * 5  # sorted files: bright0, bright2, ..., dark1, dark3, ...
    assert build_dataset(f"folder:{tmp_path / 'flat'}", resolution=8, split="train").labels is None
    config = build_config(overrides=[f"data.dataset=folder:{tmp_path / 'flat'}", "data.resolution=8",
                                     f"eval.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(UnlabelledDatasetError, match="no class labels"):
        prepare_feature_net(config, channels=3)


TINY_RUN = [
    "data.resolution=8", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
    "train.image_every=2", "train.warmup_steps=1", "train.progress=false", "train.device=cpu",
    "model.family=vqvae", "pseudo_video.num_frames=1", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16",
    "model.vqvae.codebook_dim=4", "eval.num_images=8", "eval.batch_size=4", "eval.metrics=[swd,cfd]",
    "eval.feature_net_steps=5",
]


def test_eval_with_cfd_through_the_cli_writes_the_metric_and_its_net(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_image_folder(tmp_path / "images", labelled=True)
    cache = tmp_path / "cache"
    common = [f"data.dataset=folder:{tmp_path / 'images'}", f"eval.cache_dir={cache}", *TINY_RUN]
    assert main(["feature-net", "name=fn", f"out_dir={tmp_path / 'runs'}", *common]) == 0
    printed = capsys.readouterr().out
    assert "cfd: training the feature classifier" in printed
    (net_file,) = cache.glob("feature-net-*-8px-c3-seed0-5steps-*.safetensors")
    assert str(net_file) in printed

    assert main(["train", "name=run", f"out_dir={tmp_path / 'runs'}", *common]) == 0
    assert "cfd: training" not in capsys.readouterr().out  # the cached net is reused
    result = json.loads((tmp_path / "runs" / "run" / "eval.json").read_text())
    assert result["metrics"]["cfd"] >= 0 and "swd_avg" in result["metrics"]
    assert result["protocol"]["cfd"]["file_sha256"] == file_sha256(net_file)
    assert result["protocol"]["cfd"]["weights_sha256"] == load_feature_net(net_file).sha256
    assert 0 <= result["protocol"]["cfd"]["held_out_accuracy"] <= 1

    bad = tmp_path / "broken.safetensors"
    bad.write_text("garbage")
    assert main(["eval", str(tmp_path / "runs" / "run"), f"eval.feature_net={bad}"]) == 2
    assert "broken.safetensors" in capsys.readouterr().err


def test_cfd_on_an_unlabelled_folder_is_skipped_with_the_reason(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "flat", labelled=False)
    args = [f"data.dataset=folder:{tmp_path / 'flat'}", f"eval.cache_dir={tmp_path / 'cache'}", *TINY_RUN]
    assert main(["train", "name=flat", f"out_dir={tmp_path / 'runs'}", *args]) == 0
    result = json.loads((tmp_path / "runs" / "flat" / "eval.json").read_text())
    assert "cfd" not in result["metrics"] and "no class labels" in result["skipped"]["cfd"]


def test_a_missing_explicit_feature_net_stops_train_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data.dataset=digits", f"eval.feature_net={tmp_path / 'absent.safetensors'}", *TINY_RUN]
    assert main(["train", "name=x", f"out_dir={tmp_path / 'runs'}", *args]) == 2
    assert "absent.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "x" / "checkpoints").exists()
