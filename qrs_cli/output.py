"""All printing goes through here: data to stdout, chatter and errors to stderr.

Plain text (no colour, no escape codes) when ``NO_COLOR`` is set or the stream is not a TTY.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _use_color(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def data(text: str) -> None:
    """A result line for stdout."""
    sys.stdout.write(text + "\n")


def json_data(obj: Any) -> None:
    """A result as pretty JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def info(text: str) -> None:
    """Progress or chatter for stderr (keeps stdout parseable)."""
    sys.stderr.write(text + "\n")


def error(message: str, hint: str = "") -> None:
    color = _use_color(sys.stderr)
    red, bold, reset = ("\033[31m", "\033[1m", "\033[0m") if color else ("", "", "")
    sys.stderr.write(f"{red}{bold}Error:{reset} {message}\n")
    if hint:
        sys.stderr.write(f"{bold}Hint:{reset} {hint}\n")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain, aligned text table (no box drawing, so it pastes and greps well)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
