"""Every hint in an error or warning message names a real CLI flag (``--x``) or config key (``key.sub=``)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from pseudovideo.cli.parser import build_parser
from pseudovideo.config import RunConfig, config_to_dict, flatten_overrides

SRC = Path(__file__).resolve().parents[1] / "src" / "pseudovideo"
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
KEY = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)=")
PLACEHOLDER_KEY = re.compile(r"(?<![\w.])([a-z_][a-z0-9_.]*)=<")  # 'eval.lpips_weights=<path>' must be a full key
GENERIC = {"key.sub"}  # "override ... is not of the form key.sub=value"
MESSAGE_CALLS = {"warn", "error", "UsageError", "ConfigError"}  # warnings.warn, parser.error, ...
EXTERNAL_FLAGS = {"--nproc_per_node", "--nnodes"}  # torchrun's own


def cli_flags() -> set[str]:
    """Every option string of the parser and of its sub-commands."""
    flags: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return flags


def config_keys() -> set[str]:
    """Dotted keys of RunConfig (a corruption's fields as pseudo_video.corruptions.N.field)."""
    keys = set(flatten_overrides(config_to_dict(RunConfig())))
    corruption = config_to_dict(RunConfig().pseudo_video.corruptions[0])
    keys |= {f"pseudo_video.corruptions.N.{k}" for k in corruption}
    return keys


def _text(node: ast.AST) -> str:
    """The literal text of a string or f-string ('{}' for each placeholder); '' for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return ""


def message_texts() -> list[tuple[str, str]]:
    """(where, text) of every string in a raise statement or a warn/error/UsageError/ConfigError call."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            roots: list[ast.AST] = []
            if isinstance(node, ast.Raise) and node.exc is not None:
                roots.append(node.exc)
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in MESSAGE_CALLS:
                    roots.append(node)
            for root in roots:
                for sub in ast.walk(root):
                    if text := _text(sub):
                        found.append((f"{path.name}:{getattr(sub, 'lineno', '?')}", text))
    return found


def test_the_scan_sees_messages() -> None:
    texts = [text for _, text in message_texts()]
    assert any("eval.inception_weights=" in t for t in texts)  # a known hint is found
    assert any("--resume" in t for t in texts)


def test_every_hint_names_a_real_flag_or_config_key() -> None:
    flags, keys = cli_flags() | EXTERNAL_FLAGS, config_keys()
    digits = re.compile(r"\.\d+(?=\.|$)")
    bad = []
    for where, text in message_texts():
        bad += [f"{where}: flag {f}" for f in FLAG.findall(text) if f not in flags]
        named = set(KEY.findall(text)) | set(PLACEHOLDER_KEY.findall(text))
        bad += [f"{where}: key {k}" for k in sorted(named - GENERIC) if digits.sub(".N", k) not in keys]
    bad = sorted(set(bad))
    assert not bad, "hints naming options that do not exist:\n" + "\n".join(bad)
