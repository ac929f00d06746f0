"""The cfd / ckd metrics: the residual feature net, its training recipe, its file, the kernel distance, the CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo import metrics as M
from pseudovideo.cli import main
from pseudovideo.config import build_config
from pseudovideo.data.datasets import spread_images
from pseudovideo.data.images import build_dataset
from pseudovideo.factory.feature_net import UnlabelledDatasetError, prepare_feature_net
from pseudovideo.metrics.feature_net import (
    FEATURE_NET_VERSION,
    TrainingRecipe,
    augment,
    classifier_features,
    dead_features,
    file_sha256,
    load_feature_net,
    save_feature_net,
    train_feature_net,
    weights_sha256,
)

SMALL = TrainingRecipe(batch_size=16)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits at their native 8 px: train images (1500, 1, 8, 8), their labels (1500,), test images (297, 1, 8, 8)."""
    train = build_dataset("digits", resolution=8, split="train")
    test = build_dataset("digits", resolution=8, split="test")
    return spread_images(train, len(train)), train.labels, spread_images(test, len(test))


@pytest.fixture(scope="module")
def digits_net(digits) -> tuple[torch.nn.Module, float]:
    """A net trained for 60 steps of 64 digits (about 3 epochs): enough to be far from its initialisation."""
    return train_feature_net(digits[0], digits[1], 10, seed=0, steps=60, flips=False, recipe=TrainingRecipe(batch_size=64))


def test_cfd_and_ckd_see_a_contrast_change_that_swd_cannot(digits, digits_net) -> None:
    model, accuracy = digits_net
    assert accuracy > 0.5  # 10 classes: chance is 0.1
    test_x = digits[2]

    def distances(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        fa, fb = classifier_features(a, model), classifier_features(b, model)
        return M.feature_frechet_distance(fa, fb), M.feature_kernel_distance(fa, fb)[0]

    cfd_halves, ckd_halves = distances(test_x[::2], test_x[1::2])  # two samples of one distribution
    cfd_contrast, ckd_contrast = distances(test_x[::2], 0.5 * test_x[1::2])
    assert abs(distances(test_x, test_x)[0]) < 0.01 * cfd_halves  # float64 round-off only
    # measured: CFD 8-15x and CKD 5-25x the halves' values (1 or 2 threads)
    assert cfd_contrast > 4 * cfd_halves > 0 and ckd_contrast > 3 * abs(ckd_halves)
    # the motivating bug: SWD standardises each set, so halving the contrast is invisible to it
    swd = M.sliced_wasserstein_distance(test_x, 0.5 * test_x, generator=torch.Generator().manual_seed(0))["swd_avg"]
    swd_halves = M.sliced_wasserstein_distance(test_x[:148], test_x[148:296], generator=torch.Generator().manual_seed(0))
    assert swd < 1e-3 < swd_halves["swd_avg"]


def test_the_pooled_features_have_no_dead_unit(digits, digits_net) -> None:
    features = classifier_features(digits[2], digits_net[0])
    assert features.shape == (297, 448)
    assert dead_features(features) == 0 and features.std(0).min() > 1e-3
    constant = torch.cat([features[:, :5], torch.full((297, 2), 0.7)], dim=1)
    assert dead_features(constant) == 2


def test_kernel_distance_matches_a_hand_computed_value() -> None:
    # 1-d features, k(a, b) = (a b + 1)^3: x = {0, 1}, y = {1, 2}
    # within x: k(0, 1) = 1; within y: k(1, 2) = 27; across: 1 + 1 + 8 + 27 = 37
    # MMD^2_u = 2*1/2 + 2*27/2 - 2*37/4 = 1 + 27 - 18.5 = 9.5 (the subset size is capped at the 2 images)
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    mean, std, size = M.feature_kernel_distance(x, y)
    assert (mean, std, size) == (pytest.approx(9.5), 0.0, 2)
    # capped by the smaller set; every subset of 2 of x = {0, 1, 1} against y is {0, 1} or {1, 1}:
    # {1, 1} vs y: 8 + 27 - 2 * (8 + 27 + 8 + 27) / 4 = 0, so the mean lies between 0 and 9.5
    mean, std, size = M.feature_kernel_distance(torch.tensor([[0.0], [1.0], [1.0]]), y, subsets=50,
                                                generator=torch.Generator().manual_seed(0))
    assert size == 2 and 0 < mean < 9.5 and std > 0


def test_augment_crops_shifted_windows_and_flips_from_the_generator() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    out = augment(images, torch.Generator().manual_seed(0), flips=True, padding=2)
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(0), flips=True, padding=2))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    for i in range(2):  # each output is one 6x6 window of the padded image, possibly mirrored
        windows = [padded[i, :, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    unflipped = augment(images, torch.Generator().manual_seed(1), flips=False, padding=0)
    assert torch.equal(unflipped, images)


def test_training_twice_with_one_seed_gives_bit_identical_weights(tmp_path: Path, digits) -> None:
    x, y = digits[0][:200], digits[1][:200]
    rng_before = torch.random.get_rng_state()
    first, acc1 = train_feature_net(x, y, 10, seed=3, steps=6, flips=True, recipe=SMALL)
    second, acc2 = train_feature_net(x, y, 10, seed=3, steps=6, flips=True, recipe=SMALL)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the global RNG is left alone
    other, _ = train_feature_net(x, y, 10, seed=4, steps=6, flips=True, recipe=SMALL)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other.head.weight)
    meta = {"dataset": "digits", "resolution": "8"}
    a = save_feature_net(first, acc1, tmp_path / "a.safetensors", meta)
    b = save_feature_net(second, acc2, tmp_path / "b.safetensors", meta)
    assert a.sha256 == b.sha256 == weights_sha256(first.state_dict()) and a.accuracy == acc1
    assert a.file_sha256 == file_sha256(tmp_path / "a.safetensors")
    assert a.metadata["version"] == FEATURE_NET_VERSION != "cfd-cnn-v1"


def test_first_use_training_shows_a_progress_bar_with_eta(digits, capsys: pytest.CaptureFixture[str]) -> None:
    train_feature_net(digits[0][:64], digits[1][:64], 10, seed=0, steps=3, flips=False, recipe=SMALL, progress=True)
    err = capsys.readouterr().err
    assert "cfd feature net" in err and "3/3" in err and "<" in err  # tqdm's [elapsed<remaining]


def test_features_resize_images_to_the_side_the_net_was_trained_at(tmp_path: Path, digits) -> None:
    model, accuracy = train_feature_net(digits[0][:64], digits[1][:64], 10, seed=0, steps=2, flips=False, recipe=SMALL)
    net = save_feature_net(model, accuracy, tmp_path / "n.safetensors", {"resolution": "8"})
    big = torch.nn.functional.interpolate(digits[2][:20], size=16, mode="nearest")  # (20, 1, 16, 16)
    assert net.features(big).shape == (20, 448)
    resized = torch.nn.functional.interpolate(big, size=8, mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(net.features(big), classifier_features(resized, net.model), atol=1e-5)
    assert "resized from 16 to 8 px" in net.describe(evaluated_side=16)["resize"]


def test_missing_corrupt_old_or_mismatched_weights_files_are_named(tmp_path: Path, digits) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_feature_net(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        load_feature_net(corrupt)
    model, accuracy = train_feature_net(digits[0][:40], digits[1][:40], 10, seed=0, steps=1, flips=False, recipe=SMALL)
    save_feature_net(model, accuracy, tmp_path / "grey.safetensors", {"resolution": "8"})
    with pytest.raises(ValueError, match=r"grey.safetensors.*channels"):
        load_feature_net(tmp_path / "grey.safetensors", {"resolution": "8", "channels": "3"})
    from safetensors.torch import (
        save_file,  # a file of the old version is refused, never scored with
    )

    save_file({"w": torch.zeros(1)}, str(tmp_path / "old.safetensors"), metadata={"version": "cfd-cnn-v1"})
    with pytest.raises(ValueError, match=r"old.safetensors.*cfd-cnn-v1"):
        load_feature_net(tmp_path / "old.safetensors")


def _write_image_folder(root: Path, labelled: bool) -> None:
    """A tiny folder dataset: two classes of flat-coloured 8x8 RGB images (dark / bright), in train/ and test/."""
    for split, count in (("train", 10), ("test", 4)):
        for i in range(count):
            cls, value = ("dark", 40 + i) if i % 2 else ("bright", 200 - i)
            folder = root / split / cls if labelled else root / split
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (value, value // 2, 255 - value)).save(folder / f"{cls}{i}.png")


TINY_RUN = [
    "data.resolution=8", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
    "train.image_every=2", "train.warmup_steps=1", "train.progress=false", "train.device=cpu",
    "model.family=vqvae", "pseudo_video.num_frames=1", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16",
    "model.vqvae.codebook_dim=4", "eval.num_images=8", "eval.batch_size=4", "eval.feature_net_steps=5",
]


def test_cfd_and_ckd_are_default_metrics_written_with_their_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert {"cfd", "ckd"} <= set(build_config().eval.metrics)
    _write_image_folder(tmp_path / "images", labelled=True)
    cache = tmp_path / "cache"
    common = [f"data.dataset=folder:{tmp_path / 'images'}", f"eval.cache_dir={cache}", *TINY_RUN,
              "eval.metrics=[swd,cfd,ckd]"]
    assert main(["feature-net", "name=fn", f"out_dir={tmp_path / 'runs'}", *common]) == 0
    printed = capsys.readouterr().out
    assert "cfd: training the feature classifier" in printed and "dead features" in printed
    (net_file,) = cache.glob(f"feature-net-folder_images-train-8px-c3-seed0-5steps-{FEATURE_NET_VERSION}-*.safetensors")
    assert str(net_file) in printed and file_sha256(net_file) in printed

    assert main(["train", "name=run", f"out_dir={tmp_path / 'runs'}", *common]) == 0
    assert "cfd: training" not in capsys.readouterr().out  # the cached net is reused
    run = tmp_path / "runs" / "run"
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"]["cfd"] >= 0 and "ckd" in result["metrics"] and result["metrics"]["ckd_std"] == 0
    net = result["protocol"]["feature_net"]
    assert net["file_sha256"] == file_sha256(net_file) and net["weights_sha256"] == load_feature_net(net_file).sha256
    assert net["version"] == FEATURE_NET_VERSION and 0 <= net["held_out_accuracy"] <= 1 and net["dead_features"] >= 0
    assert "one subset: the whole sets" in result["protocol"]["ckd"] and "Fréchet" in result["protocol"]["cfd"]
    markdown = (run / "eval.md").read_text()
    assert "| cfd |" in markdown and "| ckd |" in markdown and FEATURE_NET_VERSION in markdown

    bad = tmp_path / "broken.safetensors"
    bad.write_text("garbage")
    assert main(["eval", str(run), f"eval.feature_net={bad}"]) == 2
    assert "broken.safetensors" in capsys.readouterr().err


def test_a_missing_explicit_feature_net_stops_train_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data.dataset=digits", f"eval.feature_net={tmp_path / 'absent.safetensors'}", *TINY_RUN, "eval.metrics=[ckd]"]
    assert main(["train", "name=x", f"out_dir={tmp_path / 'runs'}", *args]) == 2
    assert "absent.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "x" / "checkpoints").exists()


def test_unlabelled_data_is_found_before_any_image_is_read(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _write_image_folder(flat, labelled=False)
    (flat / "train" / "broken.png").write_bytes(b"not a png")  # decoding the split would fail on it
    config = build_config(overrides=[f"data.dataset=folder:{flat}", "data.resolution=8", f"eval.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(UnlabelledDatasetError, match="no class labels"):
        prepare_feature_net(config, channels=3)


def test_cfd_and_ckd_on_an_unlabelled_folder_are_skipped_with_the_reason_said_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_image_folder(tmp_path / "flat", labelled=False)
    args = [f"data.dataset=folder:{tmp_path / 'flat'}", f"eval.cache_dir={tmp_path / 'cache'}", *TINY_RUN,
            "eval.metrics=[swd,cfd,ckd]", "train.log_every=1"]
    with pytest.warns(UserWarning, match="cfd/ckd will be skipped.*no class labels"):
        assert main(["train", "name=flat", f"out_dir={tmp_path / 'runs'}", *args]) == 0
    result = json.loads((tmp_path / "runs" / "flat" / "eval.json").read_text())
    assert not {"cfd", "ckd"} & set(result["metrics"]) and "swd_avg" in result["metrics"]
    assert "no class labels" in result["skipped"]["cfd"] and "no class labels" in result["skipped"]["ckd"]
    assert not (tmp_path / "cache").exists()  # no net was trained
