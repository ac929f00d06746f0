"""Pretrained weights fetched at run time (Inception for FID/KID, ImageNet backbones for LPIPS).

Every such file is looked up the same way: an explicit local path if given, else the torch hub cache
(``<torch hub dir>/checkpoints/<file>``, moved by ``TORCH_HOME``), else a download into that cache. Offline
machines copy the file into the cache or pass its path.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

__all__ = ["hub_cache_path", "find_weights", "safe_load_error", "load_state_dict_file"]


def safe_load_error(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line and without torch's advice to
    retry with ``weights_only=False`` (which would run whatever code the file carries)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().split(". ")[0].strip()
        return f"it holds pickled objects other than tensors and plain values and was refused unread ({reason})"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return f"{type(err).__name__}: {' '.join(lines)[:300]}" if lines else type(err).__name__


def load_state_dict_file(path: str | Path | io.BytesIO, what: str) -> dict[str, Any]:
    """Reads a file that must be a state dict (name -> tensor) with ``weights_only=True``; anything else
    raises ValueError naming ``what`` (e.g. "LPIPS backbone weights file /x/vgg16.pth")."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{what} is not a readable state dict: {safe_load_error(err)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what} is not a state dict (name -> tensor): it holds a {type(state).__name__}")
    return state


def hub_cache_path(file_name: str) -> Path:
    """``<torch hub dir>/checkpoints/<file_name>``, where torch and torchvision cache downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def find_weights(
    file_name: str, url: str, explicit: str | Path | None = None, allow_download: bool = True
) -> tuple[Path | None, str]:
    """``(path, "")`` of weights file ``file_name``, or ``(None, why it is absent)``.

    Looks at ``explicit``, then the hub cache, then downloads ``url`` into the cache when ``allow_download``.
    An explicit path that does not exist raises FileNotFoundError (a user mistake, not a reason to skip).
    """
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"weights file {str(explicit)!r} does not exist (expected a copy of {file_name})")
        return Path(explicit), ""
    cached = hub_cache_path(file_name)
    if cached.is_file():
        return cached, ""
    if not allow_download:
        return None, f"{file_name} is not at {cached} and downloads are disabled"
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
        return cached, ""
    except Exception as err:  # offline, proxy, disk: any failure means "no weights"
        return None, (
            f"{file_name} is not at {cached} and the download from {url} failed ({type(err).__name__}: {err}); "
            f"copy the file there or pass its path"
        )
