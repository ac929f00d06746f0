"""The small classifier whose penultimate features the ``cfd`` metric (classifier Fréchet distance) compares.

SWD standardises each image set by its own patch statistics, so it cannot see a global brightness or contrast
change (SWD(x, 0.5 x) = 0). CFD needs no downloaded weights and does see them: a few-layer CNN is trained
reproducibly (seeded, on CPU) on the labelled training split of the run's dataset, and the Fréchet distance
between the Gaussian fits of its 128-d penultimate features of real and evaluated images is reported.

CFD is **not FID**: its network is tiny and trained on the dataset itself, so its values are only comparable
between runs that use the same feature net (same file hash, recorded in every eval.json).

The weights are cached as safetensors in ``eval.cache_dir`` (default ``~/.cache/pseudovideo``), one file per
dataset, image side, channels, seed and step count (``FeatureNetKey``), so every run and experiment on a dataset
reuses one net; ``eval.feature_net: PATH`` names a file explicitly. ``pseudovideo feature-net -c CONFIG`` trains
it; evaluation trains it on first use when ``cfd`` is in ``eval.metrics``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from pseudovideo.config import RunConfig

__all__ = [
    "FEATURE_NET_VERSION",
    "FeatureClassifier",
    "FeatureNet",
    "FeatureNetKey",
    "UnlabelledDatasetError",
    "classifier_features",
    "feature_net_key",
    "file_sha256",
    "weights_sha256",
    "load_feature_net",
    "prepare_feature_net",
    "save_feature_net",
    "train_feature_net",
]

FEATURE_NET_VERSION = "cfd-cnn-v1"  # bump when the architecture or training recipe changes
FEATURE_DIM = 128
HELD_OUT_EVERY = 10  # every 10th training image is held out to measure the net's accuracy


class FeatureClassifier(nn.Module):
    """Three 3x3 conv + ReLU stages (32, 64, 128 channels; the last two stride 2), global average pool, linear.

    ``features``: images (N, C, H, W) in [-1, 1] -> (N, 128) penultimate features; ``forward`` -> (N, classes) logits.
    ``spatial_dims=1``: the same net with 3-tap 1-D convolutions, for signals (N, C, L).
    """

    def __init__(self, channels: int, num_classes: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv, pool = (nn.Conv1d, nn.AdaptiveAvgPool1d) if spatial_dims == 1 else (nn.Conv2d, nn.AdaptiveAvgPool2d)
        self.spatial_dims = spatial_dims
        self.body = nn.Sequential(
            conv(channels, 32, 3, padding=1), nn.ReLU(),
            conv(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            conv(64, FEATURE_DIM, 3, stride=2, padding=1), nn.ReLU(),
            pool(1), nn.Flatten(),  # (N, 128)
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate features (N, 128) of images (N, C, H, W)."""
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (N, num_classes) of images (N, C, H, W)."""
        return self.head(self.body(images))


@dataclass(frozen=True)
class FeatureNetKey:
    """What a cached feature net was trained on and how: dataset spec, image side, channels, seed, steps."""

    dataset: str
    resolution: int
    channels: int
    seed: int
    steps: int

    @property
    def filename(self) -> str:
        """E.g. ``feature-net-cifar10-32px-c3-seed0-1000steps-cfd-cnn-v1.safetensors`` or, for a folder,
        ``feature-net-folder_cifar10-jpeg_<8 hex of its path>-32px-...`` (unsafe characters -> '_')."""
        name, _, location = self.dataset.partition(":")
        if location:  # folder:/long/path -> folder_<last part>_<hash of the path>
            name = f"{name}_{Path(location).name}_{hashlib.sha256(location.encode()).hexdigest()[:8]}"
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return (f"feature-net-{safe}-{self.resolution}px-c{self.channels}-seed{self.seed}-{self.steps}steps-"
                f"{FEATURE_NET_VERSION}.safetensors")

    def metadata(self) -> dict[str, str]:
        """String metadata written beside the weights and checked when a cached file is loaded."""
        return {"dataset": self.dataset, "resolution": str(self.resolution), "channels": str(self.channels),
                "seed": str(self.seed), "steps": str(self.steps), "version": FEATURE_NET_VERSION}


@dataclass
class FeatureNet:
    """A trained feature classifier with its provenance: file, weights and file sha256, held-out accuracy, metadata."""

    model: FeatureClassifier
    path: Path
    sha256: str  # weights_sha256: equal for bit-identical nets
    file_sha256: str
    accuracy: float
    metadata: dict[str, str]

    @property
    def _kind(self) -> str:
        return "1-D CNN" if self.metadata.get("spatial_dims") == "1" else "CNN"

    @property
    def _unit(self) -> str:
        return "samples" if self.metadata.get("spatial_dims") == "1" else "px"

    def describe(self) -> dict[str, str | float]:
        """Protocol entry for eval.json: which net produced the features."""
        return {"file": str(self.path), "weights_sha256": self.sha256, "file_sha256": self.file_sha256,
                "held_out_accuracy": self.accuracy,
                "features": f"{FEATURE_DIM}-d penultimate (global average pool) of a 3-conv {self._kind} ({FEATURE_NET_VERSION})",
                "trained_on": f"{self.metadata.get('dataset')} train split minus every {HELD_OUT_EVERY}th image, "
                f"{self.metadata.get('resolution')} {self._unit}, {self.metadata.get('steps')} steps, seed {self.metadata.get('seed')}",
                "note": "classifier Fréchet distance in this dataset-trained net's features; not FID, comparable "
                "only between evaluations with the same weights_sha256"}


def _held_out_mask(n: int) -> Tensor:
    return torch.arange(n) % HELD_OUT_EVERY == 0  # (N,) bool


@torch.no_grad()
def _accuracy(model: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    batches = zip(images.split(batch_size), labels.split(batch_size))
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / max(1, labels.shape[0])


def train_feature_net(
    images: Tensor, labels: Tensor, num_classes: int, *, seed: int, steps: int, batch_size: int = 128, lr: float = 2e-3
) -> tuple[FeatureClassifier, float]:
    """Trains a ``FeatureClassifier`` on CPU with Adam and cross-entropy; returns it and its held-out accuracy.

    images: (N, C, H, W) in [-1, 1]; labels: (N,) in [0, num_classes). Every ``HELD_OUT_EVERY``-th image is held
    out for the accuracy. Initialisation and batches come from ``seed`` alone (the global RNG is left untouched),
    so the same inputs and seed give bit-identical weights on the same machine and thread count.
    """
    if images.ndim not in (3, 4) or labels.shape != (images.shape[0],):
        raise ValueError(f"expected images (N, C, H, W) or signals (N, C, L) and labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    held_out = _held_out_mask(images.shape[0])
    train_x, train_y = images[~held_out].float().cpu(), labels[~held_out].long().cpu()
    if train_x.shape[0] < 2 or train_y.unique().numel() < 2:
        raise ValueError(f"a classifier needs at least 2 training images of 2 classes, got {train_x.shape[0]} images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], num_classes, spatial_dims=images.ndim - 2)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, train_x.shape[0], (batch_size,), generator=generator)
        loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return model, _accuracy(model, images[held_out].float().cpu(), labels[held_out].long().cpu())


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (what ``sha256sum`` prints)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_sha256(state: dict[str, Tensor]) -> str:
    """Hex sha256 over the tensors' names, dtypes, shapes and bytes in name order: the identity of a net.

    Unlike the file hash it does not depend on the order safetensors writes metadata in (which varies between
    saves), so bit-identical weights always give the same value.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_feature_net(model: FeatureClassifier, accuracy: float, path: str | Path, metadata: dict[str, str]) -> FeatureNet:
    """Writes the weights to a safetensors file with ``metadata`` plus accuracy and class count; returns it loaded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**metadata, "accuracy": repr(float(accuracy)), "num_classes": str(model.head.out_features),
            "channels": str(model.body[0].in_channels), "version": FEATURE_NET_VERSION,
            **({"spatial_dims": "1"} if model.spatial_dims == 1 else {})}  # signals' 1-D net (images' files unchanged)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache file
    return load_feature_net(path)


def load_feature_net(path: str | Path, expected: dict[str, str] | None = None) -> FeatureNet:
    """Loads a file written by ``save_feature_net``; errors name the file.

    Raises FileNotFoundError when it is missing, ValueError when it is not a readable feature-net safetensors
    file or its metadata disagrees with ``expected`` (e.g. another dataset, image side or channel count).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feature-net weights file {str(path)!r} does not exist (train it with "
                                f"`pseudovideo feature-net -c CONFIG` or fix eval.feature_net)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = FeatureClassifier(int(meta["channels"]), int(meta["num_classes"]), int(meta.get("spatial_dims", "2")))
        model.load_state_dict(state)
        accuracy = float(meta["accuracy"])
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as err:
        raise ValueError(f"feature-net weights file {str(path)!r} is not a valid {FEATURE_NET_VERSION} safetensors "
                         f"file ({type(err).__name__}: {err}); delete it to retrain, or fix eval.feature_net") from err
    wrong = {k: (meta.get(k), v) for k, v in (expected or {}).items() if meta.get(k) != v}
    if wrong:
        raise ValueError(f"feature-net weights file {str(path)!r} was trained for other data (stored, expected): {wrong}")
    return FeatureNet(model.eval().requires_grad_(False), path, weights_sha256(state), file_sha256(path), accuracy, meta)


@torch.no_grad()
def classifier_features(images: Tensor, model: FeatureClassifier, batch_size: int = 256) -> Tensor:
    """Penultimate features of images (N, C, H, W) in [-1, 1], batched on the model's device -> (N, 128) float32 CPU."""
    device = next(model.parameters()).device
    return torch.cat([model.features(batch.to(device).float()).float().cpu() for batch in images.split(batch_size)])


# --------------------------------------------------------------------------------------------------------------
# The net of a run's dataset: cached, or trained on first use
# --------------------------------------------------------------------------------------------------------------


class UnlabelledDatasetError(ValueError):
    """The dataset has no class labels, so no feature classifier can be trained on it."""


def feature_net_key(config: "RunConfig", channels: int) -> FeatureNetKey:
    """The cache key of a run config's feature net: dataset (a folder by its resolved path), resolution, ``channels``
    and the eval.feature_net_seed / eval.feature_net_steps keys. data.max_images plays no part: the net always
    trains on the whole training split, so runs on subsets are scored by the same net."""
    from pseudovideo.config.modality import sample_size
    from pseudovideo.data.modality import data_cache_name  # a signal dataset with its windows

    ev, dataset = config.eval, data_cache_name(config.data)
    if dataset.startswith("folder:"):  # one net per real folder, whatever relative path or symlink names it
        dataset = f"folder:{Path(dataset.removeprefix('folder:')).expanduser().resolve()}"
    return FeatureNetKey(dataset, sample_size(config.data), channels, ev.feature_net_seed, ev.feature_net_steps)


def _labelled_training_split(config: "RunConfig") -> tuple[Tensor, Tensor, int]:
    """The whole training split (no max_images subset, no flips): images (N, C, H, W), labels (N,), class count."""
    from pseudovideo.data.datasets import spread_images
    from pseudovideo.data.splits import DEFAULT_HELD_OUT_FRACTION
    from pseudovideo.data.modality import build_split

    data = config.data
    dataset = build_split(data, data.train_split, held_out_fraction=DEFAULT_HELD_OUT_FRACTION)
    if dataset.labels is None or dataset.class_names is None:
        raise UnlabelledDatasetError(
            f"dataset {data.dataset!r} has no class labels (labels exist for digits, cifar10, mnist in torchvision's "
            f"layout, folder:PATH with one sub-folder per class, sktime classification sets and series:PATH with class "
            f"sub-folders), so the cfd feature classifier cannot be trained; "
            f"give a trained one with eval.feature_net=PATH or drop cfd from eval.metrics")
    return spread_images(dataset, len(dataset)), dataset.labels, len(dataset.class_names)


def prepare_feature_net(
    config: "RunConfig", channels: int, *, retrain: bool = False, log: Callable[[str], None] = print
) -> FeatureNet:
    """The feature net for a run config: ``eval.feature_net`` if set, else the cached file, else trained and cached.

    ``channels`` is the image channel count of the evaluated images (checked against the file's). ``retrain``
    trains anew even when the cache file exists. Raises UnlabelledDatasetError (a ValueError) when a net is
    needed but the dataset has no labels; FileNotFoundError / ValueError name a missing or unreadable file.
    """
    from pseudovideo.config.modality import sample_size

    expected = {"resolution": str(sample_size(config.data)), "channels": str(channels)}
    if config.eval.feature_net:
        return load_feature_net(config.eval.feature_net, expected)
    key = feature_net_key(config, channels)
    path = Path(config.eval.cache_dir).expanduser() / key.filename
    if path.is_file() and not retrain:
        return load_feature_net(path, key.metadata())
    log(f"cfd: training the feature classifier for {key.dataset} at {key.resolution} px ({key.steps} steps, "
        f"seed {key.seed}, CPU) -> {path}")
    images, labels, num_classes = _labelled_training_split(config)
    if images.shape[1] != channels:
        raise ValueError(f"training split has {images.shape[1]} channels but the evaluated images have {channels}")
    model, accuracy = train_feature_net(images, labels, num_classes, seed=key.seed, steps=key.steps)
    net = save_feature_net(model, accuracy, path, key.metadata())
    log(f"cfd: feature classifier saved to {path} (held-out accuracy {accuracy:.3f}, weights sha256 {net.sha256[:12]})")
    return net
