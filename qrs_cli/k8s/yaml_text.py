"""A small block-style YAML writer for manifests, so ``qrs render k8s`` needs no PyYAML.

Manifests are plain data: mappings (insertion order kept), lists, strings, integers, booleans.
Strings are written bare only when a YAML 1.1 or 1.2 reader cannot take them for anything else
(a number, a boolean, null, an anchor, a flow collection, a comment…); otherwise they are
written as JSON strings, which every YAML reader parses as the same double-quoted scalar. A
test round-trips tricky values through PyYAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

# A command-line flag or a word starting with a letter, '/' or '_'; then letters, digits and
# ``_ . / - @ = +``, and ':' anywhere but at the end (no spaces, so never ': ' or ' #').
_BARE = re.compile(r"^(--?)?[A-Za-z_/]([A-Za-z0-9_./:@=+-]*[A-Za-z0-9_./@=+-])?$")
# Words some YAML reader turns into a boolean or null.
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"})


def to_yaml(data: Mapping[str, Any]) -> str:
    """``data`` as a YAML document (no leading ``---``), ending with a newline."""
    return "\n".join(_mapping(data, 0)) + "\n"


def scalar(value: Any) -> str:
    """One scalar as YAML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} to a manifest")
    if _BARE.match(value) and value.lower() not in _RESERVED:
        return value
    return json.dumps(value, ensure_ascii=False)


def _mapping(data: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, value in data.items():
        head = f"{pad}{scalar(key)}:"
        if isinstance(value, Mapping):
            lines += [f"{head} {{}}"] if not value else [head, *_mapping(value, indent + 2)]
        elif _is_list(value):
            # Block lists sit at the key's own indentation, the style kubectl prints.
            lines += [f"{head} []"] if not value else [head, *_sequence(value, indent)]
        else:
            lines.append(f"{head} {scalar(value)}")
    return lines


def _sequence(items: Sequence[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in items:
        if isinstance(item, Mapping) and item:
            nested = _mapping(item, indent + 2)
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines += nested[1:]
        elif _is_list(item) and item:
            nested = _sequence(item, indent + 2)
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines += nested[1:]
        elif isinstance(item, Mapping):
            lines.append(f"{pad}- {{}}")
        elif _is_list(item):
            lines.append(f"{pad}- []")
        else:
            lines.append(f"{pad}- {scalar(item)}")
    return lines


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)
