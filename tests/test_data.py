"""Tests for pseudovideo.data.images: embedded digits, torchvision CIFAR-10/MNIST/CelebA loaders, image folders."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from pseudovideo.data.datasets import spread_subset
from pseudovideo.data.decoding import read_idx_images
from pseudovideo.data.folders import list_image_files
from pseudovideo.data.images import build_dataset, check_dataset_spec, parse_dataset_spec
from pseudovideo.data.splits import held_out_mask

# Most folder tests read a flat folder whole: a fraction so small that no file is held out.
ALL = dict(held_out_fraction=1e-12)


def to_signed(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1], the dataset's own scaling."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# digits (embedded default)
# ----------------------------------------------------------------------------------------------


def test_digits_shapes_range_and_split_lengths():
    train = build_dataset("digits", resolution=16)
    test = build_dataset("digits", resolution=16, split="test")
    assert (len(train), len(test)) == (1500, 297)
    assert train.channels == 1 and train.name == "digits" and train.bad_files == []
    batch = torch.stack([train[i] for i in range(0, 1500, 50)])  # (30, 1, 16, 16)
    assert batch.shape == (30, 1, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert batch.min() == -1.0 and batch.max() > 0.5  # background is exactly -1, strokes are bright


def test_digits_values_and_split_are_deterministic():
    # At resolution 8 the bilinear upsampling is the identity: items are the raw digits scaled to [-1, 1].
    raw = torch.from_numpy(load_digits().images).float()  # (1797, 8, 8), 0..16
    test = build_dataset("digits", resolution=8, split="test")
    torch.testing.assert_close(test[0], raw[1500:1501] / 8.0 - 1.0)
    torch.testing.assert_close(test[296], raw[1796:1797] / 8.0 - 1.0)
    a = build_dataset("digits", resolution=12)
    b = build_dataset("digits", resolution=12)
    assert torch.equal(a.images, b.images)


def test_digits_channels_and_max_images():
    ds = build_dataset("digits", resolution=8, channels=3, max_images=7)
    assert len(ds) == 7 and ds.channels == 3
    item = ds[3]
    assert item.shape == (3, 8, 8)
    assert torch.equal(item[0], item[1]) and torch.equal(item[1], item[2])
    full = build_dataset("digits", resolution=8)
    # max_images keeps N images evenly spaced over the split, in order: 1500 -> 0, 250, 500, 750, ...
    assert torch.equal(item[:1], full[round(3 * 1499 / 6)])


def test_spread_subset_is_even_and_keeps_the_ends():
    assert spread_subset(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_subset(5, None).tolist() == [0, 1, 2, 3, 4]
    assert spread_subset(3, 10).tolist() == [0, 1, 2]


def test_random_flip_is_deterministic_under_seed():
    ds = build_dataset("digits", resolution=8, random_flip=True, max_images=40)
    torch.manual_seed(0)
    first = [ds[i] for i in range(40)]
    torch.manual_seed(0)
    second = [ds[i] for i in range(40)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    flipped = [torch.equal(x, ds.load(i).flip(-1)) for i, x in enumerate(first)]
    kept = [torch.equal(x, ds.load(i)) for i, x in enumerate(first)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 5 <= sum(f and not k for f, k in zip(flipped, kept)) <= 35  # about half flipped


# ----------------------------------------------------------------------------------------------
# CIFAR-10 through torchvision's own CIFAR10 class
# ----------------------------------------------------------------------------------------------


def write_tiny_cifar10(root: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    """Write torchvision's CIFAR-10 layout with ``per_batch`` random images per batch; returns the pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(per_batch))}, f)
        pixels[name] = data.reshape(per_batch, 3, 32, 32)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return pixels


@pytest.fixture()
def skip_cifar_md5(monkeypatch):
    """torchvision compares each CIFAR file's md5 with the official archive's; our tiny files cannot match.

    Only that integrity check is replaced (by a plain "file exists"); the real CIFAR10 class still
    reads and decodes the pickles.
    """
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar10_reads_torchvision_layout(tmp_path, skip_cifar_md5):
    pixels = write_tiny_cifar10(tmp_path)
    train = build_dataset("cifar10", resolution=32, root=str(tmp_path))
    test = build_dataset("cifar10", resolution=32, root=str(tmp_path), split="test")
    assert (len(train), len(test), train.channels) == (10, 2, 3)
    expected = torch.from_numpy(pixels["data_batch_2"][1]).float() / 127.5 - 1.0  # train item 3
    torch.testing.assert_close(train[3], expected)
    torch.testing.assert_close(test[1], torch.from_numpy(pixels["test_batch"][1]).float() / 127.5 - 1.0)
    # "cifar10:ROOT" spec and a root pointing at the batches folder itself
    same = build_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", resolution=32, split="test")
    assert torch.equal(same[0], test[0])
    small = build_dataset("cifar10", resolution=16, root=str(tmp_path), channels=1, max_images=4)
    assert len(small) == 4 and small[0].shape == (1, 16, 16)


def test_cifar10_corrupt_files_fail_torchvision_integrity_check(tmp_path):
    write_tiny_cifar10(tmp_path)  # real md5 check: the tiny files do not match the official sums
    with pytest.raises(ValueError, match="integrity check"):
        build_dataset("cifar10", resolution=32, root=str(tmp_path))


def test_cifar10_missing_files_error_names_root_layout_and_download(tmp_path):
    root = tmp_path / "nowhere"
    for call in (
        lambda: build_dataset("cifar10", resolution=32, root=str(root)),
        lambda: check_dataset_spec("cifar10", str(root), "train"),
    ):
        with pytest.raises(FileNotFoundError) as err:
            call()
        msg = str(err.value)
        assert str(root) in msg and "cifar-10-batches-py" in msg and "download" in msg
    assert check_dataset_spec("cifar10", str(root), "train", download=True) == ("cifar10", None)


# ----------------------------------------------------------------------------------------------
# MNIST: torchvision's MNIST class, raw IDX .gz files, the real test split
# ----------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    """Write a uint8 array in IDX format (magic 0x0008 + ndim, big-endian sizes)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def test_mnist_from_raw_idx_gz_files(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8), compress=True)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:2], compress=True)
    ds = build_dataset("mnist", resolution=28, root=str(tmp_path), split="test")
    assert len(ds) == 5 and ds.channels == 1 and "official 'test' split" in ds.split_description
    torch.testing.assert_close(ds[4], torch.from_numpy(images[4]).float()[None] / 127.5 - 1.0)
    assert build_dataset("mnist", resolution=32, root=str(tmp_path), split="test", channels=3)[0].shape == (3, 32, 32)
    assert len(build_dataset("mnist", resolution=28, root=str(tmp_path), split="train")) == 2


def _as_rows(dataset) -> set[bytes]:
    return {dataset.load(i).numpy().tobytes() for i in range(len(dataset))}


def test_mnist_with_only_the_test_file_is_split_by_index_hash(tmp_path):
    """MNIST as often shipped (the test split alone) still gives disjoint train / held-out sets."""
    images = np.random.default_rng(3).integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    assert check_dataset_spec("mnist", str(tmp_path), "train") == ("mnist", None)  # no longer refused
    train = build_dataset("mnist", resolution=28, root=str(tmp_path), split="train", held_out_fraction=0.3)
    test = build_dataset("mnist", resolution=28, root=str(tmp_path), split="test", held_out_fraction=0.3)
    assert len(train) + len(test) == 60 and 8 <= len(test) <= 28
    assert not _as_rows(train) & _as_rows(test)
    assert "held-out 30%" in test.split_description and "not held out" in train.split_description
    assert "test" not in train.split_description.replace("t10k", "")


def test_mnist_through_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    for prefix, images in (("train", train), ("t10k", train[:3])):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(len(images), np.uint8), compress=False)
    ds = build_dataset("mnist", resolution=28, root=str(tmp_path))
    assert len(ds) == 4
    torch.testing.assert_close(ds[2], torch.from_numpy(train[2]).float()[None] / 127.5 - 1.0)
    assert len(build_dataset("mnist", resolution=28, root=str(tmp_path), split="test")) == 3


def test_mnist_missing_and_bad_idx(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("mnist", resolution=28, root=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "MNIST/raw" in str(err.value) and "download" in str(err.value)
    (tmp_path / "bad-idx").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 28, 28) + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx_images(tmp_path / "bad-idx")


def test_mnist_real_test_split(shared_data):
    root = str(shared_data / "mnist-test")
    ds = build_dataset("mnist", resolution=28, root=root, split="test")
    assert 900 <= len(ds) <= 1100 and ds[0].shape == (1, 28, 28)  # the held-out 10 % of the 10,000
    assert "held-out 10%" in ds.split_description
    batch = torch.stack([ds[i] for i in range(500)])  # (500, 1, 28, 28)
    assert batch.min() == -1.0 and batch.max() == 1.0
    assert -0.8 < batch.mean().item() < -0.65  # MNIST's mean intensity is about 0.13 of full scale
    train = build_dataset("mnist", resolution=28, root=root, split="train")
    assert len(train) + len(ds) == 10_000
    assert not _as_rows(train) & _as_rows(ds)


# ----------------------------------------------------------------------------------------------
# CelebA through torchvision's CelebA class
# ----------------------------------------------------------------------------------------------


def write_tiny_celeba(root: Path) -> None:
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 8)]  # torchvision fails on a 1-image split, so 2+ per split
    for i, name in enumerate(names):
        Image.new("RGB", (20, 24), (40 * i, 100, 200)).save(base / "img_align_celeba" / name, quality=100)
    (base / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, (0, 0, 0, 1, 1, 2, 2))))
    (base / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    (base / "list_bbox_celeba.txt").write_text("7\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 1 2 3 4\n" for n in names))
    header = " ".join(f"p{j}" for j in range(10))
    (base / "list_landmarks_align_celeba.txt").write_text(f"7\n{header}\n" + "".join(f"{n} {' 1' * 10}\n" for n in names))
    (base / "list_attr_celeba.txt").write_text("7\nSmiling Young\n" + "".join(f"{n} 1 -1\n" for n in names))


def test_celeba_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.celeba as celeba

    # torchvision checks each annotation file's md5 against the official one; ours are tiny stand-ins.
    monkeypatch.setattr(celeba, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    write_tiny_celeba(tmp_path)
    train = build_dataset("celeba", resolution=16, root=str(tmp_path))
    assert len(train) == 3 and train.channels == 3
    item = train[1]  # constant colour (40, 100, 200) survives resize + crop up to JPEG error
    assert item.shape == (3, 16, 16)
    torch.testing.assert_close(item.mean(dim=(1, 2)), torch.tensor([40, 100, 200]) / 127.5 - 1.0, atol=0.03, rtol=0)
    assert len(build_dataset("celeba", resolution=16, root=str(tmp_path), split="valid")) == 2
    # max_images keeps images spread over the split (first and last here), as for every other dataset
    two = build_dataset("celeba", resolution=16, root=str(tmp_path), max_images=2)
    torch.testing.assert_close(two[1], build_dataset("celeba", resolution=16, root=str(tmp_path))[2], atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        build_dataset("celeba", resolution=16, root=str(tmp_path / "missing"))


# ----------------------------------------------------------------------------------------------
# folder:PATH
# ----------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_folder(tmp_path) -> Path:
    """png + jpg (upper-case extension) + jpeg in nested folders, one greyscale, plus ignored files."""
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    top_red_bottom_blue = np.zeros((16, 8, 3), np.uint8)  # H=16, W=8
    top_red_bottom_blue[:8, :, 0] = 255
    top_red_bottom_blue[8:, :, 2] = 255
    Image.fromarray(top_red_bottom_blue).save(root / "a.png")
    Image.new("RGB", (12, 10), (0, 200, 0)).save(root / "sub" / "b.JPG", quality=95)
    Image.new("L", (9, 9), 77).save(root / "sub" / "deeper" / "c.jpeg", quality=95)
    (root / "notes.txt").write_text("not an image, ignored by extension")
    (root / ".hidden.png").write_bytes(b"macOS resource fork, ignored as hidden")
    return root


def test_folder_loader_tiny_tree(tiny_folder):
    ds = build_dataset(f"folder:{tiny_folder}", resolution=8, **ALL)
    assert len(ds) == 3 and ds.channels == 3 and ds.bad_files == []
    assert [p.relative_to(tiny_folder).as_posix() for p in list_image_files(tiny_folder)] == [
        "a.png",
        "sub/b.JPG",
        "sub/deeper/c.jpeg",
    ]
    # a.png: shorter side already 8, centre crop keeps rows 4..11: 4 red rows over 4 blue rows.
    expected = np.zeros((8, 8, 3), np.uint8)
    expected[:4, :, 0] = 255
    expected[4:, :, 2] = 255
    torch.testing.assert_close(ds[0], to_signed(expected))
    torch.testing.assert_close(ds[1].mean(dim=(1, 2)), torch.tensor([0, 200, 0]) / 127.5 - 1.0, atol=0.03, rtol=0)
    grey = ds[2]  # greyscale JPEG repeated over RGB
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert abs(grey.mean().item() - (77 / 127.5 - 1)) < 0.03


def test_folder_channels_and_splits(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        (tmp_path / split / "cls").mkdir(parents=True)
        for i in range(count):
            Image.new("L", (6, 6), 30 * i).save(tmp_path / split / "cls" / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # split subfolders exist: no warning
        test = build_dataset(f"folder:{tmp_path}", resolution=6, split="test")
    assert len(test) == 2 and test.channels == 1  # all greyscale -> 1 channel
    torch.testing.assert_close(test[1], torch.full((1, 6, 6), 30 / 127.5 - 1.0))
    rgb = build_dataset(f"folder:{tmp_path}", resolution=4, split="train", channels=3, max_images=2)
    assert len(rgb) == 2 and rgb[1].shape == (3, 4, 4)


def test_folder_rgb_to_grey_uses_luma(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    ds = build_dataset(f"folder:{tmp_path}", resolution=4, channels=1, split="train", **ALL)
    # ITU-R 601 luma of pure red: 0.299 * 255 = 76.2 -> 76
    torch.testing.assert_close(ds[0], torch.full((1, 4, 4), 76 / 127.5 - 1.0))


def test_folder_loader_real_cifar10_jpeg(cifar_jpeg_root):
    ds = build_dataset(f"folder:{cifar_jpeg_root}", resolution=32, split="test", max_images=300)
    assert len(ds) == 300 and ds.channels == 3 and ds.images.shape == (300, 3, 32, 32)
    first = np.array(Image.open(cifar_jpeg_root / "test" / "airplane" / "0000.jpg").convert("RGB"))
    torch.testing.assert_close(ds[0], to_signed(first))
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    batch = next(iter(loader))
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.float32
    assert -1.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.2
    assert len(list_image_files(cifar_jpeg_root / "test")) == 10_000
    small = build_dataset(f"folder:{cifar_jpeg_root}", resolution=16, split="test", channels=1, max_images=50)
    assert small.images.shape == (50, 1, 16, 16) and small[49].shape == (1, 16, 16)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def good_png(path: Path, value: int = 128) -> None:
    Image.new("RGB", (8, 8), (value, 0, 255 - value)).save(path)


def noisy_bytes(fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    pixels = np.random.default_rng(3).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def test_missing_path_and_empty_folder(tmp_path):
    missing = tmp_path / "missing"
    for call in (
        lambda: build_dataset(f"folder:{missing}", resolution=8),
        lambda: check_dataset_spec(f"folder:{missing}", None, "train"),
    ):
        with pytest.raises(FileNotFoundError, match="missing"):
            call()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    for call in (
        lambda: build_dataset(f"folder:{empty}", resolution=8, split="test"),
        lambda: check_dataset_spec(f"folder:{empty}", None, "test"),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(empty) in str(err.value) and ".png" in str(err.value) and ".jpeg" in str(err.value)


@pytest.mark.parametrize(
    "name, content",
    [
        ("not_an_image.png", b"this is text, not a PNG"),
        ("truncated.jpg", noisy_bytes("JPEG")[:-300]),
        ("truncated.png", noisy_bytes("PNG")[:-500]),
        ("no_iend.png", noisy_bytes("PNG")[:-12]),  # pixel data complete, IEND chunk cut off
    ],
)
def test_bad_file_is_named_in_error(tmp_path, name, content):
    good_png(tmp_path / "a_good.png")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as err:
        build_dataset(f"folder:{tmp_path}", resolution=8, split="train", **ALL)
    assert name in str(err.value) and "skip_bad_files" in str(err.value)


def test_skip_bad_files_counts_and_warns_once(tmp_path):
    good_png(tmp_path / "1.png", 10)
    good_png(tmp_path / "3.png", 200)
    (tmp_path / "2.jpg").write_bytes(noisy_bytes("JPEG")[:200])
    (tmp_path / "4.png").write_bytes(noisy_bytes("PNG")[:100])
    (tmp_path / "5.webp").write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(f"folder:{tmp_path}", resolution=8, split="train", **ALL, skip_bad_files=True)
    skip_warnings = [w for w in caught if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1 and "skipped 3 " in str(skip_warnings[0].message)
    assert len(ds) == 2 and [Path(p).name for p in ds.bad_files] == ["2.jpg", "4.png", "5.webp"]
    assert ds[1][0, 0, 0].item() == pytest.approx(200 / 127.5 - 1.0)


@pytest.mark.parametrize("resolution", [0, 3, -8, 4.5, "32", True, None])
def test_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution"):
        build_dataset("digits", resolution=resolution)


def test_bad_spec_split_and_arguments():
    with pytest.raises(ValueError) as err:
        build_dataset("imagenet", resolution=8)
    assert "imagenet" in str(err.value) and "digits" in str(err.value) and "folder:PATH" in str(err.value)
    with pytest.raises(ValueError, match="folder:PATH"):
        parse_dataset_spec("folder:")
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", resolution=8, split="valid")
    with pytest.raises(ValueError, match="max_images"):
        build_dataset("digits", resolution=8, max_images=0)
    with pytest.raises(ValueError, match="channels"):
        build_dataset("digits", resolution=8, channels=2)
    with pytest.raises(ValueError, match="differs"):
        build_dataset("mnist:/a", resolution=8, root="/b")
    assert parse_dataset_spec("Folder:/x/y") == ("folder", "/x/y")
    assert parse_dataset_spec("mnist") == ("mnist", None)
    assert parse_dataset_spec("cifar10:/data") == ("cifar10", "/data")
    assert check_dataset_spec("digits") == ("digits", None)


def test_folder_16bit_greyscale_png(tmp_path):
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16).repeat(2, 0).repeat(2, 1)  # (4, 4)
    Image.fromarray(values).save(tmp_path / "deep.png")
    ds = build_dataset(f"folder:{tmp_path}", resolution=4, split="train", **ALL)
    assert ds.channels == 1
    expected = torch.tensor([[0, 100], [200, 255]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(ds[0], expected[None].float() / 127.5 - 1.0)


# ----------------------------------------------------------------------------------------------
# Held-out split of folders without split sub-folders
# ----------------------------------------------------------------------------------------------


def _grey_pngs(folder: Path, names: list[str]) -> None:
    """One flat grey PNG per name, the i-th of value i (so images of one call are told apart by value)."""
    for value, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), value % 256).save(path)


def test_flat_folder_is_split_by_path_hash_disjoint_and_deterministic(tmp_path):
    names = [f"cls{i % 3}/{i:03d}.png" for i in range(200)]
    _grey_pngs(tmp_path, names)
    train = build_dataset(f"folder:{tmp_path}", resolution=4, split="train")
    test = build_dataset(f"folder:{tmp_path}", resolution=4, split="test")
    assert len(train) + len(test) == 200
    assert 10 <= len(test) <= 32  # 10 % of 200 = 20, binomial sd about 4
    assert "held-out 10%" in test.split_description and "by hash" in test.split_description
    assert "not held out" in train.split_description
    assert not _as_rows(train) & _as_rows(test)  # disjoint (every image has its own grey value)
    # deterministic: the held-out set is a function of the relative paths alone
    keys = [Path(n).as_posix() for n in names]
    assert held_out_mask(keys, 0.1) == held_out_mask(list(keys), 0.1)
    again = build_dataset(f"folder:{tmp_path}", resolution=4, split="test")
    assert torch.equal(again.images, test.images)
    held = {k for k, h in zip(keys, held_out_mask(keys, 0.1)) if h}
    assert set(test.images[:, 0, 0, 0].tolist()) == {names.index(k) for k in held}  # uint8 grey value = index
    big = held_out_mask([f"x/{i}.png" for i in range(20_000)], 0.25)
    assert abs(sum(big) / 20_000 - 0.25) < 0.015  # the fraction is right on large sets


def test_folder_hash_split_is_stable_when_files_are_added(tmp_path):
    names = [f"{i:03d}.png" for i in range(120)]
    _grey_pngs(tmp_path, names)
    before = held_out_mask(names, 0.1)
    _grey_pngs(tmp_path, [f"new_{i:03d}.png" for i in range(80)])
    files = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    after = dict(zip(files, held_out_mask(files, 0.1)))
    assert [after[n] for n in names] == before  # no existing file changed sides
    test = build_dataset(f"folder:{tmp_path}", resolution=4, split="test")
    assert len(test) == sum(after.values())


def test_folder_with_only_a_train_subfolder_holds_out_part_of_it(tmp_path):
    _grey_pngs(tmp_path / "train", [f"{i:02d}.png" for i in range(60)])
    train = build_dataset(f"folder:{tmp_path}", resolution=4, split="train", held_out_fraction=0.5)
    test = build_dataset(f"folder:{tmp_path}", resolution=4, split="test", held_out_fraction=0.5)
    assert len(train) + len(test) == 60 and len(test) > 0
    assert str(tmp_path / "train") in test.split_description
    (tmp_path / "test").mkdir()
    _grey_pngs(tmp_path / "test", ["a.png"])
    assert len(build_dataset(f"folder:{tmp_path}", resolution=4, split="train")) == 60  # real split folders now
    sub = build_dataset(f"folder:{tmp_path}", resolution=4, split="test")
    assert len(sub) == 1 and sub.split_description == f"the 'test' sub-folder of {tmp_path}"
    with pytest.raises(FileNotFoundError, match="no 'valid'"):
        build_dataset(f"folder:{tmp_path}", resolution=4, split="valid")


def test_held_out_fraction_is_validated_and_an_empty_part_is_refused(tmp_path):
    _grey_pngs(tmp_path, ["only.png"])
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="held_out_fraction"):
            build_dataset(f"folder:{tmp_path}", resolution=4, held_out_fraction=bad)
    with pytest.raises(ValueError, match="is empty; change data.held_out_fraction"):
        build_dataset(f"folder:{tmp_path}", resolution=4, split="test", held_out_fraction=1e-12)
    with pytest.raises(ValueError, match="is empty"):
        check_dataset_spec(f"folder:{tmp_path}", None, "test", held_out_fraction=1e-12)
