"""Networks of other libraries as the image network of ``model.family: lifted`` (``model.lifted.base``).

- ``diffusers:PATH``: a diffusers ``UNet2DModel`` folder written by ``save_pretrained`` (needs diffusers); the
  scheduler saved with it (``PATH/scheduler`` or a pipeline's ``PATH/../scheduler``) must match the run's
  ``diffusion`` section (:mod:`pseudovideo.interop.diffusers_scheduler`);
- ``python:package.module:factory``: ``factory()`` returning an ``nn.Module`` on (N, C, H, W) frames, called with
  the keywords ``in_channels`` / ``resolution`` when it accepts them. This imports and runs code, so it is done
  only with ``trust_code=True`` (``--trust-code``), never because a config says so (see :mod:`pseudovideo.interop.trust`).

Our own bases (``unet``, ``vqvae``, ``run:RUN_DIR``) are built by :mod:`pseudovideo.factory.models`, which lifts
them all. A diffusion base is called ``net(frames (N, C, H, W), t (N,))`` and returns (N, C, H, W) (or a diffusers
output); a tokenizer base must be a :class:`~pseudovideo.models.tokenizer.VideoTokenizer`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from pseudovideo.config import ConfigError, RunConfig, model_kind
from pseudovideo.config.modality import sample_size
from pseudovideo.interop.diffusers_scheduler import check_diffusers_scheduler, quiet_loading_kwargs
from pseudovideo.interop.trust import refuse_untrusted
from pseudovideo.models.tokenizer import VideoTokenizer

__all__ = ["check_base", "load_diffusers_unet", "load_external_base"]


class _Records(logging.Handler):
    """Keeps the log records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _diffusers_quiet() -> Iterator[_Records]:
    """diffusers' log lines and warnings held back (its advice, e.g. to install accelerate, is not ours to print)."""
    logger = logging.getLogger("diffusers")
    kept = _Records()
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [kept], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield kept
    finally:
        logger.handlers, logger.propagate = handlers, propagate


def load_diffusers_unet(path: str | Path) -> nn.Module:
    """A diffusers ``UNet2DModel`` from a local ``save_pretrained`` folder; ConfigError (one line, without diffusers'
    own log lines) when diffusers is missing or the folder does not load."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError(
            f"model.lifted.base=diffusers:{path} needs the diffusers package: pip install '.[diffusers]'"
        ) from None
    with _diffusers_quiet() as log:
        try:
            net = diffusers.UNet2DModel.from_pretrained(str(Path(path).expanduser()), local_files_only=True,
                                                       **quiet_loading_kwargs())
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ConfigError(f"model.lifted.base=diffusers:{path}: not a loadable diffusers UNet2DModel folder ({reason})") from None
    for record in log.records:  # what diffusers said about a folder that loaded (e.g. unused weights), in one line each
        message = " ".join(record.getMessage().split())
        if "accelerate" not in message:
            warnings.warn(f"diffusers: {message}", stacklevel=2)
    return net


def _from_python(spec: str, channels: int, resolution: int, trust_code: bool) -> nn.Module:
    refuse_untrusted(spec, trust_code)  # before anything is imported
    module_name, factory_name = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"model.lifted.base=python:{spec}: cannot import {factory_name} from {module_name} ({err})") from None
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # not a function (a module, a constant) or a builtin without a signature
        accepted = {}
    kwargs = {k: v for k, v in (("in_channels", channels), ("resolution", resolution)) if k in accepted}
    try:
        net = factory(**kwargs)
    except Exception as err:  # the user's code failed: one line (--debug shows its traceback)
        reason = " ".join(str(err).split())
        raise ConfigError(f"model.lifted.base=python:{spec}: calling {factory_name}({', '.join(kwargs)}) raised "
                          f"{type(err).__name__}: {reason}") from err
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model.lifted.base=python:{spec} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def check_base(net: nn.Module, config: RunConfig, channels: int) -> None:
    """ConfigError when the base ``net`` of ``model.lifted.base`` does not fit the run (kind, channels)."""
    base = config.model.lifted.base
    if model_kind(config.model) == "tokenizer" and not isinstance(net, VideoTokenizer):
        raise ConfigError(f"model.lifted.base={base} is a {type(net).__name__}, not a VideoTokenizer; a tokenizer base "
                          "must implement pseudovideo.models.tokenizer.VideoTokenizer (e.g. our VQVAE)")
    if model_kind(config.model) == "diffusion" and isinstance(net, VideoTokenizer):
        raise ConfigError(f"model.lifted.base={base} is a tokenizer ({type(net).__name__}); set model.lifted.kind: tokenizer")
    in_channels: Any = getattr(getattr(net, "config", None), "in_channels", None) or getattr(net, "in_channels", None)
    if isinstance(in_channels, int) and in_channels != channels:
        raise ConfigError(f"model.lifted.base={base} takes {in_channels}-channel images, the data has {channels} "
                          "(set data.channels)")


def load_external_base(config: RunConfig, channels: int, *, trust_code: bool = False) -> nn.Module:
    """The image network of a ``diffusers:PATH`` or ``python:module:factory`` base (``model.lifted.base``), checked to
    fit the run; a diffusers base's saved scheduler must match a diffusion run's ``diffusion`` section. A ``python:``
    base only with ``trust_code=True``, else UntrustedCodeError before anything is imported."""
    kind, rest = config.model.lifted.base.split(":", 1)
    if kind == "diffusers":
        net = load_diffusers_unet(rest)
        if model_kind(config.model) == "diffusion":
            check_diffusers_scheduler(rest, config)  # its betas and prediction type
    elif kind == "python":
        net = _from_python(rest, channels, sample_size(config.data), trust_code)  # the image side or signal length
    else:
        raise ValueError(f"model.lifted.base={config.model.lifted.base} is not a diffusers: or python: base")
    check_base(net, config, channels)
    return net
