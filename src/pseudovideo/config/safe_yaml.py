"""YAML reading that a hostile file cannot abuse, and values quoted short in error messages.

PyYAML's ``safe_load`` builds no objects but plain data, yet two things still pass through it:

- *alias bombs* ("billion laughs"): ``a: &a [1, 1, ...]``, ``b: &b [*a, *a, ...]``, ... share nodes, so the
  file is small and loads fast, but every later walk of the data (merging, validation, an error quoting
  it) visits the expanded tree: 9 levels of 9 aliases are 9^8 = 43 million values. :func:`load_yaml`
  counts the values aliases add (an alias of a list of 9 values adds 10) and refuses a document whose
  aliases add more than :data:`MAX_ALIAS_VALUES`;
- *duplicate keys*: a mapping that sets the same key twice keeps the last value silently; refused here,
  naming the key and both lines. Keys merged in with ``<<: *anchor`` may be overridden as YAML intends.

:func:`quote` is ``repr`` cut to :data:`QUOTE_LIMIT` characters, for quoting user values in one-line errors.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_ALIAS_VALUES", "QUOTE_LIMIT", "YAMLRefused", "load_yaml", "quote"]

MAX_ALIAS_VALUES = 10_000  # values that aliases (*name) may add to a document; a config needs a few dozen
QUOTE_LIMIT = 200  # characters of a value quoted in an error message

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLRefused(ValueError):
    """A YAML document that parses but is refused (alias bomb, duplicate key); the message says why."""


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Values in ``node`` once every alias in it is expanded (a scalar is 1, a collection 1 + its items)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias (&a [*a]) counts once instead of looping
    if isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    elif isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that bounds the values added by aliases and refuses duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_values = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self.alias_values += _expanded_size(anchored, self._sizes)
                if self.alias_values > MAX_ALIAS_VALUES:
                    raise YAMLRefused(
                        f"its aliases (*{event.anchor} at line {event.start_mark.line + 1}, ...) expand to more than "
                        f"{MAX_ALIAS_VALUES:,} values (an alias bomb?); write the values out instead"
                    )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # noqa: D102
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise YAMLRefused(f"key {quote(key)} is set twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The data of a YAML document, like ``yaml.safe_load``; YAMLRefused for alias bombs and duplicate keys,
    yaml.YAMLError for malformed text."""
    loader = _GuardedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple, _SHORT.maxset = 4, 20, 20, 20, 20
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = QUOTE_LIMIT


def quote(value: Any) -> str:
    """``repr(value)`` cut to about :data:`QUOTE_LIMIT` characters (cheap even for a huge nested value)."""
    text = _SHORT.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."
