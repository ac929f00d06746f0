"""The training data order, a pure function of the step (so that a resumed run sees the batches an uninterrupted one
would): the epoch's permutation, each rank's slice of the global batch, and augmentation seeded per item."""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pseudovideo.config import TrainConfig
from pseudovideo.training.distributed import DistributedContext

__all__ = ["batch_indices", "epoch_permutation"]


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The order of dataset items in ``epoch``: a permutation of ``range(num_items)`` seeded by (seed, epoch)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(num_items)


def batch_indices(
    step: int, *, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Dataset indices that rank ``rank`` trains on at update ``step`` (0-based).

    The global batch of ``batch_size`` items is the ``b``-th slice of the epoch's permutation
    (incomplete last batches dropped); rank ``r`` takes items ``r * B/W .. (r + 1) * B/W`` of it.
    """
    sampler = _StepBatchSampler(num_items, batch_size, seed, rank, world_size, start=step, end=step + 1)
    [(_, items)] = list(sampler)  # the production sampler's one batch: (step, [(position, index), ...])
    return [index for _, index in items]


def _check_batch(num_items: int, batch_size: int, world_size: int) -> None:
    if batch_size % world_size != 0:
        raise ValueError(
            f"train.batch_size={batch_size} (the global batch) must be divisible by the number of processes "
            f"WORLD_SIZE={world_size}"
        )
    if num_items < batch_size:
        raise ValueError(f"the dataset has {num_items} images, fewer than train.batch_size={batch_size}")


class _StepBatchSampler(Sampler):
    """Yields ``(step, [(position in global batch, dataset index), ...])`` for steps ``start .. end - 1``."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int, world_size: int, start: int, end: int):
        _check_batch(num_items, batch_size, world_size)
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start, self.end = rank, world_size, start, end
        self._epoch: int | None = None
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        batches_per_epoch = self.num_items // self.batch_size
        local = self.batch_size // self.world_size
        for step in range(self.start, self.end):
            epoch, b = divmod(step, batches_per_epoch)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, epoch_permutation(self.num_items, self.seed, epoch)
            first = b * self.batch_size + self.rank * local
            positions = range(self.rank * local, (self.rank + 1) * local)
            yield step, list(zip(positions, self._order[first : first + local].tolist()))


def _item_seeds(seed: int, step: int, count: int) -> list[int]:
    """Augmentation seeds of global-batch positions ``0 .. count - 1`` at ``step`` (a prefix-stable stream)."""
    return np.random.SeedSequence([seed, step, 0xDA7A]).generate_state(count).tolist()


class _BatchFetcher(Dataset):
    """Loads one (local) batch with augmentation randomness that is a pure function of the step.

    Torch's global RNG (what this project's datasets draw flips from) is seeded per item from
    (seed, step, position in the global batch), so flips do not depend on DataLoader workers, on the
    number of ranks, or on a resume; numpy's and Python's RNGs (for third-party transforms) are seeded
    once per local batch. The training process's own RNG states are left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, list[tuple[int, int]]]) -> Tensor:
        step, items = key
        seeds = _item_seeds(self.seed, step, max(position for position, _ in items) + 1)
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seeds[items[0][0]])
        np.random.seed(seeds[items[0][0]])
        images = []
        try:
            with torch.random.fork_rng(devices=[]):
                for position, index in items:
                    torch.default_generator.manual_seed(seeds[position])
                    images.append(self.dataset[index])
        finally:  # also when the dataset raises (a corrupt image): the caller's RNGs stay as they were
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.stack(images)  # (B_local, C, H, W)


def _batches(dataset: Dataset, settings: TrainConfig, ctx: DistributedContext, start: int) -> Iterator[Tensor]:
    sampler = _StepBatchSampler(len(dataset), settings.batch_size, settings.seed, ctx.rank, ctx.world_size, start, settings.steps)
    loader = DataLoader(
        _BatchFetcher(dataset, settings.seed),
        sampler=sampler,
        batch_size=None,
        num_workers=settings.num_workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(settings.seed),  # keeps the loader off the global RNG
    )
    return iter(loader)
