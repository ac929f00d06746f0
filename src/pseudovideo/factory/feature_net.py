"""The feature net of a run config (the network is :mod:`pseudovideo.metrics.feature_net`): its cache key, the label
check, and training it once under a file lock.

One net per dataset split, side, channels, seed, steps and flips, cached as safetensors in ``eval.cache_dir``
(default ``~/.cache/pseudovideo``, shared by all runs so an experiment's runs are scored by one net);
``eval.feature_net: PATH`` names a file explicitly. The key holds what the net was trained on:

- the training split, and for a split chosen by hash (a folder without split sub-folders, a lone MNIST file)
  the held-out fraction, so the net never trains on an image that is evaluated;
- for a folder, a fingerprint of its files (relative paths and sizes) rather than its path, so the same data
  unpacked in two places shares one net.

Two processes that need the same missing net do not both train it: the first takes an ``flock`` on
``<file>.lock`` and trains; the other waits for the lock, then loads the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
import torch
from torch import Tensor

from pseudovideo.config import RunConfig
from pseudovideo.config.modality import spatial_dims
from pseudovideo.data.datasets import TensorImageDataset, spread_images
from pseudovideo.data.images import SplitSource, build_dataset, parse_dataset_spec, split_source
from pseudovideo.data.signals import signal_labels_exist, signal_training_split
from pseudovideo.factory.datasets import build_split, data_cache_name
from pseudovideo.metrics.feature_net import (
    FEATURE_NET_VERSION,
    MIN_RESOLUTION,
    RECIPE,
    FeatureNet,
    classifier_features,
    dead_features,
    epochs_of,
    held_out_mask,
    load_feature_net,
    save_feature_net,
    to_unit,
    train_feature_net,
    resize_to,
)

__all__ = [
    "FeatureNetKey",
    "UnlabelledDatasetError",
    "feature_net_key",
    "feature_net_skip_reason",
    "prepare_feature_net",
]

# The automatic side: the evaluated images' own, at most this (CPU cost grows with its square). Not the data's
# native side with evaluated images resized to it, as FID does: on CIFAR-10 images at 16 px, a 32 px net on images
# resized to 32 classifies 0.44 of them (a 16 px net: 0.73) and barely sees noise (1.1x the real-vs-real CFD at
# 30 dB PSNR, 500 images; the 16 px net 2.0x); see results/feature_distance_calibration.md.
MAX_AUTO_SIDE = 32
AUTO_EPOCHS = 5  # eval.feature_net_steps: null trains this many passes over the training images ...
AUTO_MIN_STEPS = 400  # ... and at least this many steps (small datasets need more passes)
NO_FLIP_DATASETS = ("digits", "mnist")  # a mirrored digit is another symbol


class UnlabelledDatasetError(ValueError):
    """The dataset has no class labels, so no feature classifier can be trained on it."""


@dataclass(frozen=True)
class FeatureNetKey:
    """What a cached feature net is trained on and how (every field is in the file name or its hash)."""

    dataset: str  # the spec's name, e.g. "cifar10" or "folder:cifar10-jpeg" (a folder by its last path part)
    fingerprint: str  # a folder's file fingerprint (see data.split_source); "" for the named datasets
    split: str  # e.g. "train", or "train-heldout0.1" for a hash-chosen training part
    resolution: int
    channels: int
    seed: int
    steps: str  # a number, or "auto" (AUTO_EPOCHS epochs, at least AUTO_MIN_STEPS steps)
    flips: bool

    @property
    def filename(self) -> str:
        """E.g. ``feature-net-folder_cifar10-jpeg-train-32px-c3-seed0-auto-cfd-resnet-v2-1a2b3c4d.safetensors``
        (unsafe characters -> '_'; the last 8 hex digits hash every field)."""
        digest = hashlib.sha256(repr(sorted(self.metadata().items())).encode()).hexdigest()[:8]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset.replace(":", "_"))
        steps = self.steps if self.steps == "auto" else f"{self.steps}steps"
        return (f"feature-net-{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.split)}-{self.resolution}px-"
                f"c{self.channels}-seed{self.seed}-{steps}-{FEATURE_NET_VERSION}-{digest}.safetensors")

    def metadata(self) -> dict[str, str]:
        """String metadata written beside the weights and checked when a cached file is loaded."""
        meta = {k: str(v) for k, v in asdict(self).items()}
        meta["steps_setting"] = meta.pop("steps")  # "steps" itself holds the resolved count
        return {**meta, "version": FEATURE_NET_VERSION}


def _split_facts(config: RunConfig, fingerprint: bool = True) -> SplitSource:
    data = config.data
    return split_source(data.dataset, data.root, data.train_split, download=data.download,
                        skip_bad_files=data.skip_bad_files, held_out_fraction=data.held_out_fraction,
                        fingerprint=fingerprint)


def feature_net_key(config: RunConfig, channels: int) -> FeatureNetKey:
    """The cache key of a run config's feature net (cheap: a file listing at most, no image is decoded).

    ``channels`` is the evaluated images' channel count. The side is ``eval.feature_net_resolution``, or
    data.resolution capped at ``MAX_AUTO_SIDE`` (at least 8); flips follow ``eval.feature_net_flips``, or are on
    except for digits and MNIST. data.max_images plays no part: the net trains on the whole training split.
    """
    data, ev = config.data, config.eval
    if spatial_dims(data) == 1:  # signals: the data's windows and length name the net, never flipped
        steps = "auto" if ev.feature_net_steps is None else str(ev.feature_net_steps)
        side = ev.feature_net_resolution or max(MIN_RESOLUTION, data.length)
        return FeatureNetKey(data_cache_name(data), "", signal_training_split(data.dataset, data.train_split,
                             data.held_out_fraction), side, channels, ev.feature_net_seed, steps, False)
    name, arg = parse_dataset_spec(data.dataset)
    facts = _split_facts(config)
    dataset = f"folder:{Path(arg).expanduser().resolve().name}" if name == "folder" else name
    split = f"{data.train_split}-heldout{data.held_out_fraction:g}" if facts.hashed else data.train_split
    side = ev.feature_net_resolution or max(MIN_RESOLUTION, min(MAX_AUTO_SIDE, data.resolution))
    flips = ev.feature_net_flips if ev.feature_net_flips is not None else name not in NO_FLIP_DATASETS
    steps = "auto" if ev.feature_net_steps is None else str(ev.feature_net_steps)
    return FeatureNetKey(dataset, facts.fingerprint, split, side, channels, ev.feature_net_seed, steps, flips)


def feature_net_skip_reason(config: RunConfig) -> str | None:
    """Why ``cfd`` / ``ckd`` cannot be computed for a run config (the dataset has no class labels and no
    ``eval.feature_net`` is given), or None when they can. Cheap: decided before any training."""
    if config.eval.feature_net:
        return None
    if spatial_dims(config.data) == 1:
        data = config.data
        labelled = signal_labels_exist(data.dataset, data.train_split, data.held_out_fraction)
    else:
        labelled = _split_facts(config, fingerprint=False).labelled
    if labelled:
        return None
    return (f"dataset {config.data.dataset!r} has no class labels (labels exist for digits, cifar10, mnist with its "
            f"label files, and folder:PATH with one sub-folder per class), so no feature classifier can be trained "
            f"for cfd/ckd; give a trained one with eval.feature_net=PATH")


def auto_steps(num_train: int) -> int:
    """Steps of ``eval.feature_net_steps: null``: AUTO_EPOCHS passes over ``num_train`` images, >= AUTO_MIN_STEPS."""
    return max(AUTO_MIN_STEPS, math.ceil(AUTO_EPOCHS * num_train / RECIPE.batch_size))


@contextmanager
def cache_lock(path: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``<path>.lock`` (waiting, with one line of notice, while another holds it).

    The operating system drops the lock when its holder exits, even by ``kill -9``, so it is never stale.
    """
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"cfd: another process is training {path.name}; waiting for it to finish (lock {lock_path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _labelled_training_split(config: RunConfig, side: int) -> tuple[Tensor, Tensor, int]:
    """The whole training split at ``side`` px (no max_images subset, no flips), held-out fraction applied:
    images (N, C, side, side) as uint8 or float in [-1, 1], labels (N,), class count."""
    data = config.data
    if spatial_dims(data) == 1:  # signals (N, C, L) at data.length, resampled to the net's side if it differs
        signals = build_split(data, data.train_split)
        if signals.labels is None or signals.class_names is None:
            raise UnlabelledDatasetError(f"dataset {data.dataset!r} has no class labels in its {data.train_split!r} split")
        return resize_to(signals.signals, side), signals.labels, len(signals.class_names)
    dataset = build_dataset(data.dataset, resolution=side, split=data.train_split, root=data.root,
                            channels=data.channels, download=data.download, skip_bad_files=data.skip_bad_files,
                            held_out_fraction=data.held_out_fraction)
    if dataset.labels is None or dataset.class_names is None:
        raise UnlabelledDatasetError(f"dataset {data.dataset!r} has no class labels in its {data.train_split!r} split")
    plain = (isinstance(dataset, TensorImageDataset) and dataset.images.shape[1:] == (dataset.channels, side, side))
    images = dataset.images if plain else spread_images(dataset, len(dataset))  # uint8 stays uint8 (4x less memory)
    return images, dataset.labels, len(dataset.class_names)


def _train_and_save(config: RunConfig, key: FeatureNetKey, path: Path, log: Callable[[str], None]) -> FeatureNet:
    images, labels, num_classes = _labelled_training_split(config, key.resolution)
    if images.shape[1] != key.channels:
        raise ValueError(f"training split has {images.shape[1]} channels but the evaluated images have {key.channels}")
    num_train = int((~held_out_mask(images.shape[0])).sum())
    steps = auto_steps(num_train) if key.steps == "auto" else int(key.steps)
    log(f"cfd: training the feature classifier for {key.dataset} ({key.split} split, {num_train} images) at "
        f"{key.resolution} px: {steps} steps ({epochs_of(steps, num_train):.1f} epochs), seed {key.seed}, CPU -> {path}")
    model, accuracy = train_feature_net(images, labels, num_classes, seed=key.seed, steps=steps, flips=key.flips,
                                        progress=True)
    held = held_out_mask(images.shape[0])
    probe = images[held] if int(held.sum()) >= 2 else images  # images the net never trained on, when there are 2
    dead = dead_features(classifier_features(to_unit(probe), model))
    meta = {**key.metadata(), "steps": str(steps), "epochs": f"{epochs_of(steps, num_train):.3f}",
            "dead_features": str(dead), "recipe": RECIPE.describe(key.flips), "trained_from": config.data.dataset,
            "torch_threads": str(torch.get_num_threads()), "torch": torch.__version__}  # what bit-identity depends on
    net = save_feature_net(model, accuracy, path, meta)
    log(f"cfd: feature classifier saved to {path} (held-out accuracy {accuracy:.3f}, {dead} dead features, "
        f"weights sha256 {net.sha256[:12]})")
    return net


def prepare_feature_net(
    config: RunConfig, channels: int, *, retrain: bool = False, log: Callable[[str], None] = print
) -> FeatureNet:
    """The feature net for a run config: ``eval.feature_net`` if set, else the cached file, else trained and cached.

    ``channels`` is the channel count of the evaluated images (checked against the file's). ``retrain`` trains
    anew even when the cache file exists. Raises UnlabelledDatasetError (a ValueError) before reading any image
    when a net must be trained but the dataset has no labels; FileNotFoundError / ValueError name a missing or
    unreadable file.
    """
    if config.eval.feature_net:
        expected = {"channels": str(channels)}
        if config.eval.feature_net_resolution:
            expected["resolution"] = str(config.eval.feature_net_resolution)
        return load_feature_net(config.eval.feature_net, expected)
    reason = feature_net_skip_reason(config)
    if reason:
        raise UnlabelledDatasetError(reason)
    key = feature_net_key(config, channels)
    path = Path(config.eval.cache_dir).expanduser() / key.filename
    expected = {k: v for k, v in key.metadata().items()}
    if path.is_file() and not retrain:
        return load_feature_net(path, expected)
    with cache_lock(path, log):
        if path.is_file() and not retrain:  # trained by the process we waited for
            log(f"cfd: loading the feature classifier another process trained: {path}")
            return load_feature_net(path, expected)
        return _train_and_save(config, key, path, log)
