"""Datasets built once per process while an experiment runs, instead of once per run and per use.

An experiment's runs read the same data: without this, every run lists the image folder and decodes its
training subset and evaluation images again. Inside :func:`reuse_datasets`,
:func:`pseudovideo.training.tasks.build_dataset_from_config` returns the dataset built earlier with equal arguments (the
datasets are read-only: items are made on access, flips drawn per item). Outside it nothing is kept, so a
library user who edits a folder between two calls always gets the new files.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterator

__all__ = ["reuse_datasets", "reuse_datasets_for_process", "cached_dataset"]

_cache: dict[Hashable, Any] | None = None


@contextlib.contextmanager
def reuse_datasets() -> Iterator[None]:
    """Within the block, datasets built with equal arguments are built once (nested blocks share the cache)."""
    global _cache
    outer = _cache
    if outer is None:
        _cache = {}
    try:
        yield
    finally:
        if outer is None:
            _cache = None


def reuse_datasets_for_process() -> None:
    """From now on, for the rest of this process (a worker that runs an experiment's runs), as :func:`reuse_datasets`."""
    global _cache
    if _cache is None:
        _cache = {}


def cached_dataset(key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()``, or inside :func:`reuse_datasets` the dataset an earlier call with an equal ``key`` built."""
    if _cache is None:
        return build()
    if key not in _cache:
        _cache[key] = build()
    return _cache[key]
