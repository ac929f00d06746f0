"""``model.family: lifted``: the image network named by ``model.lifted.base``, lifted to the run's frames.

Bases (``model.lifted.base``):
- ``unet`` / ``vqvae``: our image UNet / VQVAE, built from ``model.unet`` / ``model.vqvae`` (fresh weights);
- ``run:RUN_DIR``: the image model of a trained run of ours (its EMA weights when it has them); a lifted run
  without temporal layers (``temporal: none``) gives its image network back;
- ``diffusers:PATH``: a diffusers ``UNet2DModel`` folder written by ``save_pretrained`` (needs diffusers); the
  scheduler saved with it (``PATH/scheduler`` or a pipeline's ``PATH/../scheduler``) must match the run's
  ``diffusion`` section (:mod:`pseudovideo.interop.diffusers_scheduler`);
- ``python:package.module:factory``: ``factory()`` returning an ``nn.Module`` on (N, C, H, W) frames, called with
  the keywords ``in_channels`` / ``resolution`` when it accepts them. This imports and runs code, so it is done
  only with ``trust_code=True`` (``--trust-code``), never because a config says so (see :mod:`pseudovideo.interop.trust`).

A diffusion base is called ``net(frames (N, C, H, W), t (N,))`` and returns (N, C, H, W) (or a diffusers output);
a tokenizer base must be a :class:`~pseudovideo.models.tokenizer.VideoTokenizer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from pseudovideo.config import ConfigError, RunConfig, model_kind
from pseudovideo.config.modality import sample_size
from pseudovideo.models.lift import LiftedNet, LiftedTokenizer, LiftError, lift
from pseudovideo.models.tokenizer import VideoTokenizer
from pseudovideo.interop.trust import refuse_untrusted

__all__ = ["build_base", "build_lifted_model", "load_diffusers_unet"]


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
    from pseudovideo.interop.diffusers_scheduler import quiet_loading_kwargs

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


def _from_run(run_dir: str, channels: int, trust_code: bool) -> nn.Module:
    from pseudovideo.training.runs import load_run  # runs imports tasks, which imports this module lazily

    if not (Path(run_dir) / "config.yaml").is_file():
        raise ConfigError(f"model.lifted.base=run:{run_dir}: no run there (no config.yaml); train it first")
    config, model, run_channels = load_run(run_dir, use_ema=True, trust_code=trust_code)
    if run_channels != channels:
        raise ConfigError(f"model.lifted.base=run:{run_dir} was trained on {run_channels}-channel images, this run has {channels}")
    if isinstance(model, (LiftedNet, LiftedTokenizer)):
        if model.lifted_blocks:
            raise ConfigError(f"model.lifted.base=run:{run_dir} is already a lifted video model ({len(model.lifted_blocks)} "
                              "temporal layers); lift its image model (a run with model.lifted.temporal: none) instead")
        model = model.unlift()
    if config.model.family in ("video_unet", "cvivit"):
        raise ConfigError(f"model.lifted.base=run:{run_dir} is a {config.model.family} run, a video model; "
                          "lifting needs an image model (unet, vqvae or a lifted run with temporal: none)")
    return model.train()


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


def build_base(config: RunConfig, channels: int, *, trust_code: bool = False) -> nn.Module:
    """The image network named by ``model.lifted.base`` (see the module docstring); a ``python:`` base (or a
    ``run:`` base built from one) only with ``trust_code=True``, else UntrustedCodeError before any import."""
    from pseudovideo.training.tasks import build_model

    base = config.model.lifted.base
    if base in ("unet", "vqvae"):
        return build_model(dataclasses.replace(config, model=dataclasses.replace(config.model, family=base)), channels)
    kind, rest = base.split(":", 1)
    if kind == "run":
        net = _from_run(rest, channels, trust_code)
    elif kind == "diffusers":
        net = load_diffusers_unet(rest)
        from pseudovideo.interop.diffusers_scheduler import check_diffusers_scheduler  # its betas and prediction type

        if model_kind(config.model) == "diffusion":
            check_diffusers_scheduler(rest, config)
    else:
        net = _from_python(rest, channels, sample_size(config.data), trust_code)  # the image side or signal length
    _check_base(net, config, channels)
    return net


def _check_base(net: nn.Module, config: RunConfig, channels: int) -> None:
    """ConfigError when the base does not fit the run (kind, channels)."""
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


def build_lifted_model(
    config: RunConfig, channels: int, num_frames: int, *, trust_code: bool = False
) -> LiftedNet | LiftedTokenizer:
    """The base of ``model.lifted`` lifted to ``num_frames`` frames; ConfigError naming the key when it cannot be
    (``trust_code``: see :func:`build_base`)."""
    lifted = config.model.lifted
    net = build_base(config, channels, trust_code=trust_code)
    try:
        return lift(net, num_frames, where=lifted.where, causal=lifted.causal, temporal=lifted.temporal,
                    num_heads=lifted.num_heads)
    except LiftError as err:
        raise ConfigError(f"model.lifted.where (base {lifted.base}): {err}") from None
