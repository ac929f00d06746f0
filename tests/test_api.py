"""The public API: every name of ``pseudovideo.__all__`` imports, and class defaults agree with the config's."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest

import pseudovideo
from pseudovideo.config import CViViTConfig, RunConfig, UNetConfig, VQVAEConfig
from pseudovideo.diffusion.process import GaussianDiffusion
from pseudovideo.training.tasks import diffusion_sample_kwargs


def test_every_public_name_imports() -> None:
    for name in pseudovideo.__all__:
        assert getattr(pseudovideo, name) is not None, name
    assert set(pseudovideo.__all__) <= set(dir(pseudovideo))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pseudovideo.nope  # noqa: B018


def test_public_names_are_the_defining_objects() -> None:
    from pseudovideo.models.cvivit import CViViT
    from pseudovideo.training.runs import train_run

    assert pseudovideo.CViViT is CViViT and pseudovideo.train_run is train_run


def test_import_is_lazy() -> None:
    """``import pseudovideo`` alone does not import torch (the CLI's --help and --version stay fast)."""
    code = "import sys, pseudovideo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _dataclass_defaults(section: type) -> dict[str, object]:
    defaults = {}
    for f in dataclasses.fields(section):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        defaults[f.name] = tuple(value) if isinstance(value, list) else value
    return defaults


@pytest.mark.parametrize(
    "cls, section",
    [(pseudovideo.VQVAE, VQVAEConfig), (pseudovideo.CViViT, CViViTConfig), (pseudovideo.UNet, UNetConfig)],
)
def test_model_constructor_defaults_equal_config_defaults(cls: type, section: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    defaults = _dataclass_defaults(section)
    # Keys the task turns into other constructor arguments (level_conditioning -> num_levels = T).
    task_keys = {"level_conditioning"}
    missing = sorted(set(defaults) - set(params) - task_keys)
    assert not missing, f"{section.__name__} fields that {cls.__name__} does not take: {missing}"
    differing = {k: (params[k].default, v) for k, v in defaults.items() if k not in task_keys and params[k].default != v}
    assert not differing, f"{cls.__name__} default vs {section.__name__} default: {differing}"


def test_sampler_defaults_equal_diffusion_config_defaults() -> None:
    params = inspect.signature(GaussianDiffusion.sample).parameters
    wanted = diffusion_sample_kwargs(RunConfig())
    differing = {k: (params[k].default, v) for k, v in wanted.items() if params[k].default != v}
    assert not differing, f"GaussianDiffusion.sample default vs diffusion config default: {differing}"


def test_pseudo_video_builder_defaults_equal_config_defaults() -> None:
    from pseudovideo.config import PseudoVideoConfig

    params = inspect.signature(pseudovideo.build_pseudo_video_builder).parameters
    section = PseudoVideoConfig()
    assert (params["num_frames"].default, params["construction"].default) == (section.num_frames, section.construction)
