"""Which images a split holds: the splits each dataset has, and the hash split that holds out a fixed share of a
dataset without a split of its own (the same images on every machine)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence



SPLITS = {
    "digits": ("train", "test"),
    "cifar10": ("train", "test"),
    "mnist": ("train", "test"),
    "celeba": ("train", "valid", "test"),
    "folder": ("train", "valid", "test"),
}


DEFAULT_HELD_OUT_FRACTION = 0.1  # share of a split-less folder (or lone MNIST file) held out for evaluation


def held_out_mask(keys: Sequence[str], fraction: float) -> list[bool]:
    """True for the keys (relative paths, indices) held out for evaluation: ``fraction`` of them, by hash.

    Each key's fate depends on the key alone (the first 8 bytes of its SHA-256 read as a number in
    [0, 1)), so the split is the same on every machine and adding files never moves existing ones.
    """
    _check_fraction(fraction)
    return [int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction for key in keys]


def _check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction must be a number in (0, 1) (e.g. 0.1), got {fraction!r}")


def _hash_part(keys: Sequence[str], split: str, fraction: float, what: str) -> tuple[list[int], str]:
    """Indices of ``keys`` in ``split`` (evaluation splits: the held-out ones; train: the rest) and its description."""
    held = held_out_mask(keys, fraction)
    evaluating = split != "train"
    chosen = [i for i, h in enumerate(held) if h == evaluating]
    share = f"{fraction:.0%}" if evaluating else f"{1 - fraction:.0%}"
    part = "held-out" if evaluating else "training part (not held out)"
    if not chosen:
        raise ValueError(
            f"the {part} {share} of {what} ({len(keys)} images) is empty; change data.held_out_fraction "
            f"(now {fraction}) or give the data its own split sub-folders"
        )
    return chosen, f"{part} {share} of {what} by hash ({len(chosen)} of {len(keys)} images)"


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; expected one of {SPLITS[name]}")
