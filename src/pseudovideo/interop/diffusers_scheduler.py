"""A ``diffusers:PATH`` base and the noise schedule it was trained with.

A diffusers UNet is only a denoiser for the betas and the prediction type it was trained on; ``export`` writes
them to ``OUT/scheduler/scheduler_config.json`` and a diffusers pipeline keeps them in ``PIPELINE/scheduler/``
beside ``PIPELINE/unet/``. :func:`check_diffusers_scheduler` reads that file (with diffusers' own
``DDPMScheduler``, which knows every named beta schedule) and refuses a run whose ``diffusion`` section
differs, naming the keys that match it. Loading also passes ``low_cpu_mem_usage=False`` when ``accelerate`` is
absent, which is what diffusers falls back to anyway, without its "install accelerate" warning.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from pseudovideo.config import ConfigError, RunConfig
from pseudovideo.diffusion.betas import BETA_SCHEDULES, beta_schedule

__all__ = ["check_diffusers_scheduler", "find_scheduler_config", "quiet_loading_kwargs"]

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v"}  # diffusers' prediction_type -> diffusion.prediction


def quiet_loading_kwargs() -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained`` that skip diffusers' "install accelerate" warning (the loading
    without accelerate is the same: diffusers turns ``low_cpu_mem_usage`` off itself, after warning)."""
    from diffusers.utils import is_accelerate_available

    return {} if is_accelerate_available() else {"low_cpu_mem_usage": False}


def find_scheduler_config(path: str | Path) -> Path | None:
    """``PATH/scheduler/scheduler_config.json`` (export's layout) or ``PATH/../scheduler/...`` (a pipeline's)."""
    folder = Path(path).expanduser()
    for candidate in (folder / "scheduler", folder.parent / "scheduler"):
        if (candidate / "scheduler_config.json").is_file():
            return candidate / "scheduler_config.json"
    return None


def _scheduler_betas(settings: dict[str, Any]) -> torch.Tensor:
    """The betas (N,) of a diffusers scheduler config, computed by diffusers' DDPMScheduler."""
    from diffusers import DDPMScheduler

    accepted = inspect.signature(DDPMScheduler.__init__).parameters
    return DDPMScheduler(**{k: v for k, v in settings.items() if k in accepted}).betas.double()


def _matching_schedule(betas: torch.Tensor) -> str | None:
    """Which of our named beta schedules (at the same N) gives ``betas``, if any."""
    for kind in BETA_SCHEDULES:
        try:
            ours = beta_schedule(kind, len(betas))
        except ValueError:
            continue
        if torch.allclose(ours, betas, rtol=1e-4, atol=1e-6):
            return kind
    return None


def check_diffusers_scheduler(path: str | Path, config: RunConfig) -> None:
    """ConfigError when the scheduler saved with the diffusers UNet at ``path`` has other betas or another
    prediction type than the run's ``diffusion`` section (the message names the settings that match it); a
    warning when no scheduler config is found (nothing to check against)."""
    found = find_scheduler_config(path)
    base = f"model.lifted.base=diffusers:{path}"
    if found is None:
        warnings.warn(f"{base}: no scheduler/scheduler_config.json beside it; the UNet is assumed to be trained with "
                      "this run's diffusion section (betas, prediction type)", stacklevel=3)
        return
    try:
        settings = json.loads(found.read_text())
        betas = _scheduler_betas(settings)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{base}: cannot read its scheduler config {found} ({err})") from None
    d = config.diffusion
    prediction = PREDICTIONS.get(str(settings.get("prediction_type", "epsilon")))
    if prediction is None:
        raise ConfigError(f"{base}: its scheduler ({found}) predicts {settings.get('prediction_type')!r}; "
                          f"the diffusion engine supports {', '.join(PREDICTIONS)} (diffusion.prediction eps or v)")
    wanted = {"diffusion.prediction": prediction, "diffusion.num_timesteps": len(betas)}
    kind = _matching_schedule(betas)
    same_betas = len(betas) == d.num_timesteps and torch.allclose(
        beta_schedule(d.beta_schedule, d.num_timesteps), betas, rtol=1e-4, atol=1e-6)
    if same_betas and prediction == d.prediction:
        return
    if kind is None and not same_betas:
        raise ConfigError(f"{base}: its scheduler's betas ({found}, {len(betas)} steps) match none of the beta schedules "
                          f"here ({', '.join(BETA_SCHEDULES)} at any diffusion.num_timesteps); it cannot be trained or sampled as it was")
    if kind is not None:
        wanted["diffusion.beta_schedule"] = kind
    have = {"diffusion.prediction": d.prediction, "diffusion.num_timesteps": d.num_timesteps,
            "diffusion.beta_schedule": d.beta_schedule}
    differ = [f"{key}={value}" for key, value in wanted.items() if have[key] != value]
    raise ConfigError(f"{base}: its scheduler ({found}) differs from this run's diffusion section; "
                      f"set {' '.join(differ)} to train and sample it as it was trained")
