"""Overheads cut from every run, each with the same result as before: datasets read once per process, only the
evaluated images decoded, SWD's sort along contiguous memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pseudovideo import metrics as M
from pseudovideo.config import build_config
from pseudovideo.data.cache import reuse_datasets
from pseudovideo.data.datasets import spread_images
from pseudovideo.evaluation.inference import held_out_set
from pseudovideo.factory.datasets import build_dataset_from_config
from pseudovideo.metrics.image import _sorted_columns


def _folder(tmp_path: Path, count: int = 40) -> Path:
    """An image folder with train/ and test/ splits of two classes, every image different."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(count):
            folder = tmp_path / "images" / split / ("cat" if i % 2 else "dog")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return tmp_path / "images"


def test_evaluation_decodes_only_the_evaluated_images_and_gets_the_same_ones(tmp_path: Path) -> None:
    data = [f"data.dataset=folder:{_folder(tmp_path)}", "data.resolution=8", "data.channels=3"]
    config = build_config(None, data)
    whole = build_dataset_from_config(config, split="test")
    assert len(whole) == 40
    images, description = held_out_set(config, 7)
    assert torch.equal(images, spread_images(whole, 7)) and description == whole.split_description
    assert len(build_dataset_from_config(config, split="test", spread=7)) == 7  # 7 decoded, not 40
    # the training split keeps its own subset rule (data.max_images), and skipped bad files need the whole split
    assert len(build_dataset_from_config(config, split="train", spread=7)) == 40
    skipping = build_config(None, [*data, "data.skip_bad_files=true"])
    assert len(build_dataset_from_config(skipping, split="test", spread=7)) == 40
    digits = build_config(None, ["data.dataset=digits", "data.resolution=8"])
    assert torch.equal(held_out_set(digits, 50)[0], spread_images(build_dataset_from_config(digits, split="test"), 50))


def test_datasets_are_built_once_inside_reuse_datasets_only(tmp_path: Path) -> None:
    config = build_config(None, [f"data.dataset=folder:{_folder(tmp_path, 6)}", "data.resolution=8"])
    assert build_dataset_from_config(config, split="train") is not build_dataset_from_config(config, split="train")
    with reuse_datasets():
        first = build_dataset_from_config(config, split="train")
        assert build_dataset_from_config(config, split="train") is first
        assert build_dataset_from_config(config, split="test") is not first
        flipped = build_config(None, [f"data.dataset={config.data.dataset}", "data.resolution=8", "data.random_flip=true"])
        assert build_dataset_from_config(flipped, split="train") is not first  # other arguments, another dataset
        with reuse_datasets():  # nested: the same cache
            assert build_dataset_from_config(config, split="train") is first
        assert build_dataset_from_config(config, split="train") is first
    assert build_dataset_from_config(config, split="train") is not first  # nothing kept after the block


def test_swd_sorts_columns_exactly_as_before() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 17, generator=generator)
    x[5:9, 3] = 0.25  # ties
    sorted_columns = _sorted_columns(x)
    reference = torch.sort(x, dim=0).values
    assert torch.equal(sorted_columns, reference) and sorted_columns.stride() == reference.stride()
    # so the distance is bit-identical to the one computed by sorting the strided columns
    a, b = torch.randn(200, 9, generator=generator), torch.randn(200, 9, generator=generator)
    theta = torch.randn(9, 64, generator=torch.Generator().manual_seed(1))
    theta = theta / torch.linalg.vector_norm(theta, dim=0, keepdim=True)
    expected = ((torch.sort(a @ theta, dim=0).values - torch.sort(b @ theta, dim=0).values).abs().mean(dim=0)
                .double().sum() / 64).float()
    assert torch.equal(M.sliced_wasserstein(a, b, num_projections=64, generator=torch.Generator().manual_seed(1)), expected)


def test_starting_an_experiment_imports_neither_scipy_nor_torchmetrics_nor_lpips() -> None:
    """Each of them costs seconds of start-up per process (each worker, each Slurm job); they load when used."""
    code = ("import sys, pseudovideo.experiments.runner, pseudovideo.evaluation.evaluate, pseudovideo.cli; "
            "print(sorted(m for m in ('scipy', 'torchmetrics', 'lpips') if m in sys.modules))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": src})
    assert done.stdout.strip() == "[]"
