"""Shared test fixtures: small thread counts (CI has 2 cores), ../shared data and CIFAR-10 unpacked from it once."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

# Busy-waiting OpenMP threads make tests crawl when the 2 CI cores are shared; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the folder is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only present beside the project in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_jpeg_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """../shared/data/cifar10-jpeg.tar.gz unpacked once per session: the test split only (about 1 s), with an
    empty train/ beside it so that a folder dataset reads test/ as its test split. Returns the cifar10-jpeg folder."""
    out = tmp_path_factory.mktemp("cifar10-jpeg")
    seen_test = False
    with tarfile.open(shared_data / "cifar10-jpeg.tar.gz") as tar:
        for member in tar:  # streamed: the archive lists test/ first, so reading stops after a sixth of it
            if member.name.startswith("cifar10-jpeg/test/"):
                tar.extract(member, out, filter="data")
                seen_test = True
            elif seen_test:
                break
    (out / "cifar10-jpeg" / "train").mkdir()
    return out / "cifar10-jpeg"
