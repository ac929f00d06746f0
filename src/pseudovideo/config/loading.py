"""A run config built from YAML and ``key.sub=value`` overrides, checked, and written back.

Types are coerced and checked field by field (unknown keys refused with the closest key named), then the
cross-field checks that types alone cannot express run (:func:`validate_config`), all before any work starts; each
problem raises ConfigError naming the key and what was expected. Reading and checking live together because a
``run:`` model base is told apart (diffusion or tokenizer) by loading that run's saved config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from pseudovideo.config.learned import validate_learned
from pseudovideo.config.modality import sample_size, spatial_dims, validate_modality
from pseudovideo.config.safe_yaml import YAMLRefused, load_yaml, quote
from pseudovideo.config.sections import (
    EVAL_METRICS,
    CViViTConfig,
    ConfigError,
    LiftedConfig,
    ModelConfig,
    PseudoVideoConfig,
    RunConfig,
    TrainConfig,
    VQVAEConfig,
)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it converted (int -> float, ...)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return _coerce(value, arg, key)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {quote(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {quote(value)}")
        return _from_dict(tp, value, key)
    if origin in (list, tuple, Sequence):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {quote(value)}")
        return [_coerce(item, item_tp, f"{key}.{i}") for i, item in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {quote(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {quote(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {quote(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {quote(value)}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; valid keys here: {', '.join(fields)}")
        value = _coerce(value, hints[key], full)
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{full}: expected one of {', '.join(choices)}, got {quote(value)}")
        kwargs[key] = value
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (what is saved as YAML)."""
    return dataclasses.asdict(config)


def flatten_overrides(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{a: {b: 1}, c.d: 2}`` -> ``{a.b: 1, c.d: 2}`` (lists are values, not sections)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_overrides(value, full))
        else:
            flat[full] = value
    return flat


def dict_diff(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config trees: key -> (saved, wanted)."""
    a, b = flatten_overrides(saved, prefix), flatten_overrides(wanted, prefix)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_diff(diff: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    """One line naming the first ``limit`` differing keys of :func:`dict_diff` (saved "there", wanted "here")."""
    items = [f"{k}: {quote(old)} there vs {quote(new)} here" for k, (old, new) in list(diff.items())[:limit]]
    more = f", and {len(diff) - limit} more" if len(diff) > limit else ""
    return "; ".join(items) + more


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {quote(text)} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {quote(text)} has an empty key part")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except YAMLRefused as err:
        raise ConfigError(f"override {quote(text)}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {quote(text)}: value is not valid YAML ({err})") from None
    return key.split("."), value


def _set_path(tree: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {quote(text)}: '{where}' is not an index of a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                close = difflib.get_close_matches(part, [str(k) for k in node], n=1)
                hint = f" (did you mean '{'.'.join([*path[:i], close[0], *path[i + 1:]])}'?)" if close else ""
                raise ConfigError(f"override {quote(text)}: unknown config key '{where}'{hint}; valid keys here: {', '.join(map(str, node))}")
            node = node[part]
        else:
            raise ConfigError(f"override {quote(text)}: '{where}' is a value, not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {quote(text)}: '{'.'.join(path)}' is not an index of a list of {len(node)}")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value  # unknown keys are caught by _from_dict with a did-you-mean hint
    else:
        raise ConfigError(f"override {quote(text)}: '{'.'.join(path[:-1])}' is a value, not a section")


def merge_config_dict(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merges ``update`` into a copy of ``base`` (lists are replaced, not merged)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config_dict(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YAMLRefused as err:
        raise ConfigError(f"config file {path} is refused: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not a UTF-8 text file (binary?): {err.reason} at byte {err.start}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build_config(data: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Builds and validates a RunConfig from defaults, a nested dict, then ``key=value`` overrides."""
    tree = merge_config_dict(config_to_dict(RunConfig()), data or {})
    for text in overrides:
        path, value = _parse_override(text)
        _set_path(tree, path, value, text)
    config = _from_dict(RunConfig, tree)
    validate_config(config)
    return config


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Loads a YAML config file (or the defaults when ``path`` is None) and applies overrides."""
    return build_config(read_yaml(path) if path is not None else {}, overrides)


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Writes the resolved config as YAML (key order as in the dataclasses)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path


_BASES_BEING_READ: list[str] = []  # run folders whose saved config _lifted_base_kind is reading, outermost first


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


LOG_SINKS = ("csv", "tensorboard", "wandb")


NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+=-]+$")


def check_name(name: Any, where: str) -> str:
    """``name`` when it is one folder name of letters, digits and _ . + = - (not ``.`` or ``..``), so that a run
    (or experiment) folder ``out_dir/name`` stays inside ``out_dir``; ConfigError naming ``where`` otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or set(name) == {"."}:
        raise ConfigError(f"{where}: expected a name of letters, digits and _ . + = - (one folder inside out_dir, "
                          f"not . or ..), got {quote(name)}")
    return name


def validate_train_config(train: TrainConfig) -> None:
    """Range checks of a ``train`` section (also run by the engine, which takes it without a RunConfig)."""
    _require(train.steps >= 1, f"train.steps: expected >= 1, got {train.steps}")
    _require(train.batch_size >= 1, f"train.batch_size: expected >= 1, got {train.batch_size}")
    _require(train.lr > 0, f"train.lr: expected > 0, got {train.lr}")
    _require(len(train.betas) == 2 and all(0 <= b < 1 for b in train.betas),
             f"train.betas: expected two numbers in [0, 1), got {train.betas}")
    _require(train.warmup_steps >= 0, f"train.warmup_steps: expected >= 0, got {train.warmup_steps}")
    _require(0 <= train.ema_decay < 1, f"train.ema_decay: expected in [0, 1), got {train.ema_decay}")
    _require(train.grad_clip >= 0, f"train.grad_clip: expected >= 0 (0 = off), got {train.grad_clip}")
    _require(train.checkpoint_every >= 1, f"train.checkpoint_every: expected >= 1, got {train.checkpoint_every}")
    _require(train.keep_last >= 1, f"train.keep_last: expected >= 1, got {train.keep_last}")
    _require(train.divergence_factor >= 0, f"train.divergence_factor: expected >= 0 (0 = off), got {train.divergence_factor}")
    _require(train.log_every >= 1, f"train.log_every: expected >= 1, got {train.log_every}")
    for sink in train.log_to:
        _require(sink in LOG_SINKS, f"train.log_to: unknown destination {quote(sink)}; valid: {', '.join(LOG_SINKS)}")
    _require("wandb" not in train.log_to or importlib.util.find_spec("wandb") is not None,
             "train.log_to: wandb is not installed; pip install '.[wandb]' (or pip install wandb), or remove it")
    _require(train.num_workers >= 0, f"train.num_workers: expected >= 0, got {train.num_workers}")
    _require(train.compile in (True, False, "auto"),
             f"train.compile: expected auto, true or false, got {quote(train.compile)}")
    _require(train.device == "auto" or train.device == "cpu" or train.device.startswith("cuda"),
             f"train.device: expected auto, cpu, cuda or cuda:N, got {quote(train.device)}")


def _validate_first_order_downsample(pv: PseudoVideoConfig, resolution: int) -> None:
    """ConfigError when a downsample corruption's first-order chain would not reproduce its direct frames."""
    from pseudovideo.pseudo_video.corruptions import Downsample  # torch-heavy; only needed for this check
    from pseudovideo.pseudo_video.builder import corruption_levels

    for i, corruption in enumerate(pv.corruptions):
        if corruption.name != "downsample":
            continue
        key = f"pseudo_video.corruptions.{i}"
        try:
            levels = corruption_levels(dataclasses.asdict(corruption), pv.num_frames).tolist()
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
        problem = Downsample.first_order_problem(levels, (resolution,))
        _require(problem is None, f"{key} (schedule {quote(corruption.schedule)}, max_level {corruption.max_level}, "
                                  f"T={pv.num_frames}, data.resolution={resolution}) with construction first_order: {problem}")


def _validate_modality(config: RunConfig) -> None:
    """The data's modality (images or 1-D signals) and the keys and models that belong to it; the channels."""
    data = config.data
    problems = validate_modality(data, config)
    _require(not problems, problems[0] if problems else "")
    _require(data.channels in (None, 1, 3) or spatial_dims(data) == 1,
             f"data.channels: expected 1, 3 or null, got {data.channels}")


def validate_config(config: RunConfig) -> None:
    """Cross-field checks that types alone cannot express; raises ConfigError naming the key."""
    pv, data, train = config.pseudo_video, config.data, config.train
    check_name(config.name, "name")
    _require(pv.num_frames >= 1, f"pseudo_video.num_frames: expected >= 1, got {pv.num_frames}")
    _require(len(pv.corruptions) >= 1 or pv.num_frames == 1 or pv.construction in ("copies", "noise_frames"),
             "pseudo_video.corruptions: at least one corruption is needed when num_frames > 1 "
             "(or construction copies or noise_frames)")
    for i, corruption in enumerate(pv.corruptions):
        key = f"pseudo_video.corruptions.{i}"
        _require(corruption.max_level >= 0, f"{key}.max_level: expected >= 0, got {corruption.max_level}")
        if corruption.schedule == "explicit":
            _require(corruption.levels is not None, f"{key}.levels: required by schedule 'explicit'")
            _require(all(level >= 0 for level in corruption.levels),
                     f"{key}.levels: expected levels >= 0, got {corruption.levels}")
        if corruption.schedule == "geometric":
            _require(corruption.min_level is not None and corruption.min_level > 0,
                     f"{key}.min_level: schedule 'geometric' needs a positive min_level, got {corruption.min_level}")
        if corruption.name == "mask":
            _require(corruption.max_level <= 1, f"{key}.max_level: a mask probability must be <= 1, got {corruption.max_level}")
    _require(data.resolution >= 4, f"data.resolution: expected an integer >= 4, got {data.resolution}")
    _validate_modality(config)
    if pv.construction == "first_order":
        _validate_first_order_downsample(pv, sample_size(data))
    validate_learned(pv)
    _require(0 < data.held_out_fraction < 1,
             f"data.held_out_fraction: expected a number in (0, 1) (e.g. 0.1), got {data.held_out_fraction}")
    validate_train_config(train)
    family = config.model.family
    for name in ("vqvae", "cvivit"):
        section = getattr(config.model, name)
        key = f"model.{name}"
        _require(section.num_quantizers >= 1, f"{key}.num_quantizers: expected an integer >= 1, got {section.num_quantizers}")
        _require(section.num_quantizers == 1 or not section.cosine_codes,
                 f"{key}.num_quantizers={section.num_quantizers} needs {key}.cosine_codes=false: residual "
                 "quantization subtracts codes from tokens, and the residual of a unit vector is not one")
        _validate_quantizer(section, key)
    if family == "lifted":
        validate_lifted(config.model.lifted)
    if family == "cvivit":
        tp = config.model.cvivit.temporal_patch_size
        _require((pv.num_frames - 1) % tp == 0,
                 f"pseudo_video.num_frames={pv.num_frames} does not fit model.cvivit.temporal_patch_size={tp}: "
                 f"C-ViViT embeds the first frame alone and the other T-1={pv.num_frames - 1} frames in groups of {tp}, "
                 f"so T-1 must be divisible by {tp}")
    if model_kind(config.model) == "diffusion":
        steps = config.diffusion.sample_steps
        _require(1 <= steps <= config.diffusion.num_timesteps,
                 f"diffusion.sample_steps: expected 1..{config.diffusion.num_timesteps}, got {steps}")
    _require(config.eval.num_images >= 1, f"eval.num_images: expected >= 1, got {config.eval.num_images}")
    _require(config.eval.batch_size >= 1, f"eval.batch_size: expected >= 1, got {config.eval.batch_size}")
    for metric in config.eval.metrics:
        _require(metric in EVAL_METRICS, f"eval.metrics: unknown metric {quote(metric)}; valid: {', '.join(EVAL_METRICS)}")
    ev = config.eval
    _require(ev.feature_net_steps is None or ev.feature_net_steps >= 1,
             f"eval.feature_net_steps: expected null or an integer >= 1, got {ev.feature_net_steps}")
    _require(ev.feature_net_resolution is None or ev.feature_net_resolution >= 8,
             f"eval.feature_net_resolution: expected null or an integer >= 8, got {ev.feature_net_resolution}")
    _require(ev.ckd_subsets >= 1, f"eval.ckd_subsets: expected an integer >= 1, got {ev.ckd_subsets}")


# Codebook options of a VQ section that FSQ (which has no codebook) does not use; the VQVAE's codebook_dim stays
# meaningful under FSQ (the channels of its latent map, projected to the FSQ levels).
_CODEBOOK_ONLY_KEYS = ("commitment_weight", "ema_codebook", "ema_decay", "dead_code_threshold", "kmeans_init",
                       "cosine_codes", "lookup_dim")


def _validate_quantizer(section: VQVAEConfig | CViViTConfig, key: str) -> None:
    """The quantizer keys of a tokenizer section: FSQ levels against codebook_size, and no key set that is unused."""
    lookup_dim = getattr(section, "lookup_dim", None)
    _require(lookup_dim is None or lookup_dim >= 1, f"{key}.lookup_dim: expected an integer >= 1 or null, got {lookup_dim}")
    if section.quantizer == "vq":
        _require(section.fsq_levels is None,
                 f"{key}.fsq_levels={section.fsq_levels} is used only with {key}.quantizer=fsq (it is vq)")
        return
    from pseudovideo.models.quantizer import check_fsq_levels  # torch-heavy; only needed for FSQ

    _require(section.fsq_levels is not None, f"{key}.quantizer=fsq needs {key}.fsq_levels (e.g. [4, 4, 4, 4] for 256 codes)")
    problem = check_fsq_levels(section.fsq_levels, section.codebook_size)
    _require(problem is None, f"{key}.fsq_levels: {problem}")
    names = [*_CODEBOOK_ONLY_KEYS, *(["codebook_dim"] if isinstance(section, CViViTConfig) else [])]
    defaults = {f.name: f.default for f in dataclasses.fields(section)}
    for name in names:
        value = getattr(section, name, defaults.get(name))
        _require(value == defaults.get(name), f"{key}.{name}={value} has no effect with {key}.quantizer=fsq (no codebook, "
                                              f"no VQ loss); leave it at its default {defaults.get(name)} or use quantizer vq")


LIFTED_BASE_FORMS = "unet, vqvae, run:RUN_DIR, diffusers:PATH or python:package.module:factory"


def _lifted_base_kind(lifted: LiftedConfig) -> str | None:
    """diffusion / tokenizer as read from ``model.lifted.base``; None when it cannot be told from the text."""
    base = lifted.base
    if base in ("unet", "vqvae"):
        return "diffusion" if base == "unet" else "tokenizer"
    if base.startswith("diffusers:"):
        return "diffusion"
    if base.startswith("run:"):
        saved = Path(base[len("run:"):]) / "config.yaml"
        if not saved.is_file():
            return None
        folder = os.path.realpath(saved.parent)
        if folder in _BASES_BEING_READ:  # run A's base is run A (or B whose base is A): no end to follow
            raise ConfigError(f"model.lifted.base={quote(base)}: the chain of run: bases loops back to {saved.parent}")
        _BASES_BEING_READ.append(folder)
        try:
            return model_kind(load_config(saved).model)
        finally:
            _BASES_BEING_READ.pop()
    return None


def validate_lifted(lifted: LiftedConfig) -> None:
    """Checks of ``model.lifted`` that need no model: the base's form and the kind it implies."""
    base, key = lifted.base, "model.lifted.base"
    forms = ("run:", "diffusers:", "python:")
    _require(base in ("unet", "vqvae") or (base.startswith(forms) and base.split(":", 1)[1] != ""),
             f"{key}: expected {LIFTED_BASE_FORMS}, got {quote(base)}")
    if base.startswith("python:"):
        _require(base.count(":") == 2 and all(base.split(":")[1:]),
                 f"{key}: expected python:package.module:factory (a function returning the image network), got {quote(base)}")
    if base.startswith("diffusers:"):
        folder = Path(base[len("diffusers:"):]).expanduser()
        _require((folder / "config.json").is_file(),
                 f"{key}: {folder} is not a diffusers model folder (no config.json; write one with save_pretrained)")
    _require(lifted.num_heads is None or lifted.num_heads >= 1,
             f"model.lifted.num_heads: expected >= 1 or null, got {lifted.num_heads}")
    _require(lifted.where is None or len(lifted.where) >= 1, "model.lifted.where: expected a non-empty list or null")
    told = _lifted_base_kind(lifted)
    _require(lifted.kind != "auto" or told is not None,
             f"model.lifted.kind: cannot tell whether base {quote(base)} is a diffusion model or a tokenizer "
             "(a python: factory, or a run folder not trained yet); set model.lifted.kind to diffusion or tokenizer")
    _require(lifted.kind == "auto" or told in (None, lifted.kind),
             f"model.lifted.kind={quote(lifted.kind)} contradicts model.lifted.base={quote(base)}, a {told} model")


def model_kind(model: ModelConfig) -> str:
    """``"diffusion"`` or ``"tokenizer"``: which task trains ``model.family`` (for lifted: what its base is)."""
    if model.family in ("vqvae", "cvivit"):
        return "tokenizer"
    if model.family in ("unet", "video_unet"):
        return "diffusion"
    kind = model.lifted.kind if model.lifted.kind != "auto" else _lifted_base_kind(model.lifted)
    if kind is None:
        raise ConfigError(f"model.lifted.kind: cannot tell the kind of base {quote(model.lifted.base)}; set it")
    return kind
