"""Code named by a config runs only when the user says so: ``--trust-code`` / ``trust_code=True``.

``model.lifted.base: python:package.module:factory`` imports ``package.module`` and calls ``factory()`` while
the model is built. A config file, a run folder's ``config.yaml`` (read by ``eval``, ``sample``, ``export``
and by ``run:RUN_DIR`` bases) or an experiment file can name such a base, and a run folder is often someone
else's. So, as with transformers' ``trust_remote_code``, such code runs only when the user passes
``--trust-code`` on the command line or ``trust_code=True`` in Python, never because a file says so.
Without it, :func:`check_trusted` raises :class:`UntrustedCodeError`, one line naming the module and
function, the file (or override) that named them and how to allow them, before anything is imported.

This is the only way a config names code: everything else a config names is data, read as data
(YAML by a SafeLoader, weights with safetensors or ``torch.load(weights_only=True)``, CIFAR-10's pickles only
after torchvision's md5 check of every file, image files only in the raster formats of
:data:`pseudovideo.data.decoding.DECODED_FORMATS`, since PIL renders EPS by running Ghostscript).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pseudovideo.config import ConfigError, RunConfig, config_to_dict, read_yaml

__all__ = ["NamedCode", "UntrustedCodeError", "check_trusted", "named_code", "refuse_untrusted"]

TRUST_HINT = "pass --trust-code (trust_code=True in Python) if you trust it"


class UntrustedCodeError(ConfigError):
    """A config names code (a ``python:`` base) and the user did not pass ``--trust-code`` / ``trust_code=True``."""


@dataclass(frozen=True)
class NamedCode:
    """A ``python:`` base: ``spec`` is ``package.module:factory``; ``source`` the file or override naming it."""

    spec: str
    source: str

    def describe(self) -> str:
        """One line: what would have run, who named it, how to allow it."""
        module, _, function = self.spec.partition(":")
        return (f"{self.source} sets model.lifted.base=python:{self.spec}, which would import {module} and call "
                f"{function}(); nothing was imported or run: {TRUST_HINT}")


def _lifted_base(tree: Mapping[str, Any]) -> str | None:
    """``model.lifted.base`` of a config tree when its model is a lifted one, else None."""
    model = tree.get("model")
    if not isinstance(model, Mapping) or model.get("family") != "lifted":
        return None
    lifted = model.get("lifted")
    base = lifted.get("base") if isinstance(lifted, Mapping) else None
    return base if isinstance(base, str) else None


def named_code(config: RunConfig | Mapping[str, Any], source: str = "the config") -> NamedCode | None:
    """The ``python:`` base that building the model of ``config`` would import and call, or None.

    Follows ``run:RUN_DIR`` bases into their saved ``config.yaml`` (read as YAML, nothing built), so a run
    folder whose base is another run whose base is code is found too; ``source`` names where ``config``
    came from (a file, an override) and becomes the saved file's path along the chain.
    """
    tree = config_to_dict(config) if isinstance(config, RunConfig) else config
    seen: set[str] = set()
    while (base := _lifted_base(tree)) is not None:
        if base.startswith("python:"):
            return NamedCode(base[len("python:"):], source)
        if not base.startswith("run:"):
            return None
        saved = Path(base[len("run:"):]).expanduser() / "config.yaml"
        if not saved.is_file() or os.path.realpath(saved) in seen:
            return None
        seen.add(os.path.realpath(saved))
        tree, source = read_yaml(saved), str(saved)
    return None


def check_trusted(config: RunConfig | Mapping[str, Any], *, trust_code: bool, source: str = "the config") -> None:
    """UntrustedCodeError when building ``config``'s model would run code and ``trust_code`` is False."""
    if trust_code:
        return
    code = named_code(config, source)
    if code is not None:
        raise UntrustedCodeError(code.describe())


def refuse_untrusted(spec: str, trust_code: bool) -> None:
    """The last guard before ``import``: UntrustedCodeError for ``python:spec`` unless ``trust_code``."""
    if not trust_code:
        raise UntrustedCodeError(NamedCode(spec, "the config").describe())
