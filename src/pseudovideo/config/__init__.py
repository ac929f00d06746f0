"""The typed run config: what a run is, read from YAML and ``key.sub=value`` overrides, checked before any work.

:mod:`~pseudovideo.config.sections` holds the dataclasses (one per config section, each field's comment its
meaning), :mod:`~pseudovideo.config.loading` builds, checks and writes a config, :mod:`~pseudovideo.config.learned`
checks the learned-corruption section, :mod:`~pseudovideo.config.safe_yaml` reads YAML as data only, and
:mod:`~pseudovideo.config.docs` lists every key (``pseudovideo config --list``, docs/config.md). This package imports
no torch at import time. The names below are its API (``from pseudovideo.config import RunConfig, build_config``).
"""

from __future__ import annotations

from pseudovideo.config.loading import (
    config_to_dict,
    flatten_overrides,
    dict_diff,
    describe_diff,
    merge_config_dict,
    read_yaml,
    build_config,
    load_config,
    save_config,
    LOG_SINKS,
    NAME_PATTERN,
    check_name,
    validate_train_config,
    validate_config,
    LIFTED_BASE_FORMS,
    validate_lifted,
    model_kind,
)
from pseudovideo.config.sections import (
    ConfigError,
    CorruptionConfig,
    LearnedCorruptionConfig,
    PseudoVideoConfig,
    DataConfig,
    VQVAEConfig,
    CViViTConfig,
    UNetConfig,
    LiftedConfig,
    ModelConfig,
    LossConfig,
    DiffusionConfig,
    TrainConfig,
    EVAL_METRICS,
    EvalConfig,
    RunConfig,
)

__all__ = [
    "CViViTConfig",
    "ConfigError",
    "CorruptionConfig",
    "DataConfig",
    "DiffusionConfig",
    "EVAL_METRICS",
    "EvalConfig",
    "LIFTED_BASE_FORMS",
    "LOG_SINKS",
    "LearnedCorruptionConfig",
    "LiftedConfig",
    "LossConfig",
    "ModelConfig",
    "NAME_PATTERN",
    "PseudoVideoConfig",
    "RunConfig",
    "TrainConfig",
    "UNetConfig",
    "VQVAEConfig",
    "build_config",
    "check_name",
    "config_to_dict",
    "describe_diff",
    "dict_diff",
    "flatten_overrides",
    "load_config",
    "merge_config_dict",
    "model_kind",
    "read_yaml",
    "save_config",
    "validate_config",
    "validate_lifted",
    "validate_train_config",
]
