"""All printing goes through here: data to stdout, chatter and errors to stderr.

Plain text (no colour, no escape codes) when ``NO_COLOR`` is set or the stream is not a TTY.
On a terminal that cannot encode the marks (``PYTHONIOENCODING=ascii``, a Latin-1 console),
:func:`install_glyph_fallback` makes both streams write ASCII stand-ins (``✓`` → ``+``, ``…`` →
``...``) instead of raising ``UnicodeEncodeError`` halfway through a report.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
import unicodedata
from typing import Any

#: ASCII stand-ins for the characters qrs prints; anything else is decomposed (é → e) or '?'.
GLYPHS = {
    "✓": "+", "✗": "x", "…": "...", "—": "--", "–": "-", "→": "->", "←": "<-", "≈": "~",
    "≥": ">=", "≤": "<=", "×": "x", "·": "*", "•": "*", "−": "-", "±": "+/-", "√": "sqrt",
    "σ": "sigma", "Φ": "Phi", "χ": "chi", "²": "^2", "µ": "u", "‘": "'", "’": "'", "“": '"',
    "”": '"', "│": "|", "├": "+", "└": "+", "─": "-", "\u00a0": " ",
}  # fmt: skip
_HANDLER = "qrs-glyphs"


def ascii_text(text: str) -> str:
    """``text`` with every non-ASCII character replaced by its stand-in."""
    return "".join(ch if ord(ch) < 128 else _stand_in(ch) for ch in text)


def _stand_in(ch: str) -> str:
    if ch in GLYPHS:
        return GLYPHS[ch]
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return plain or "?"


def _glyph_errors(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return ascii_text(exc.object[exc.start : exc.end]), exc.end


def install_glyph_fallback() -> None:
    """Make stdout and stderr write ASCII stand-ins for what their encoding cannot hold.

    Only streams that fail to encode a check mark are touched (a UTF-8 terminal keeps every
    character), and only through ``reconfigure(errors=…)``: the encoding itself is kept.
    """
    try:
        codecs.lookup_error(_HANDLER)
    except LookupError:
        codecs.register_error(_HANDLER, _glyph_errors)
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "✓✗…—".encode(encoding)
            continue
        except (UnicodeEncodeError, LookupError):
            pass
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=_HANDLER)
            except (ValueError, OSError):  # a closed or detached stream: nothing to print on
                continue


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


class StatusLine:
    """A transient progress line on stderr, for waits that take seconds to minutes.

    On a terminal (and without ``NO_COLOR``) the line is rewritten in place. Otherwise (logs,
    CI, pipes) an update is printed as its own line only when its wording changes (digits are
    ignored, so a ticking counter does not flood the log) or every ``every_s`` seconds, so
    plain output still shows that something is happening without spinners.
    """

    def __init__(self, every_s: float = 15.0) -> None:
        self._live = _use_color(sys.stderr)
        self._every_s = every_s
        self._shown = ""
        self._last_at = 0.0

    def update(self, text: str) -> None:
        import time

        if self._live:
            width = max(20, _terminal_width() - 1)
            sys.stderr.write("\r\033[K" + text[:width])
            sys.stderr.flush()
            self._shown = text
            return
        now = time.monotonic()
        if _wording(text) != _wording(self._shown) or now - self._last_at >= self._every_s:
            sys.stderr.write(text + "\n")
            self._shown, self._last_at = text, now

    def clear(self) -> None:
        """Remove the live line (before a permanent line is printed)."""
        if self._live and self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._shown = "" if self._live else self._shown


def _wording(text: str) -> str:
    return "".join(ch for ch in text if not ch.isdigit())


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns
