"""A strict reader for ``.env`` files.

Why not python-dotenv: it silently skips malformed lines and its ``${VAR}`` expansion differs from
Docker Compose's, so a profile could validate here and mean something else at launch. This reader
accepts the subset both agree on (``KEY=value``, optional ``export``, quotes, ``#`` comments) and
reports anything else with its line number instead of guessing. Values are never expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qr_sampler.errors import SettingProblem, SettingsError

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvEntry:
    """One assignment read from a ``.env`` file."""

    key: str
    value: str
    path: str
    line: int


def parse_env_text(text: str, path: str = "<text>") -> list[EnvEntry]:
    """Parse ``.env`` text; raise SettingsError listing every malformed line (1-based numbers)."""
    entries: list[EnvEntry] = []
    problems: list[SettingProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        where = f"{path}:{number}"
        if not sep:
            problems.append(
                SettingProblem(
                    where, "", "expected KEY=value (line content not shown: it may hold a secret)"
                )
            )
            continue
        if not _KEY_RE.match(key):
            problems.append(
                SettingProblem(where, "", f"{_clip(key)!r} is not a valid variable name")
            )
            continue
        value, error = _parse_value(rest.strip())
        if error:
            problems.append(SettingProblem(where, "", f"{key}: {error}"))
            continue
        entries.append(EnvEntry(key=key, value=value, path=path, line=number))
    if problems:
        raise SettingsError(problems, hint="fix the lines named above (format: KEY=value)")
    return entries


def read_env_file(path: str | Path) -> list[EnvEntry]:
    """Read and parse a ``.env`` file; OSError becomes SettingsError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsError(
            [SettingProblem(str(p), "", f"cannot read file: {reason}")],
            hint="check the path and its permissions",
        ) from exc
    return parse_env_text(text, path=str(p))


def _parse_value(rest: str) -> tuple[str, str]:
    """Return (value, error). Quoted values keep inner spaces; unquoted drop `` #comment``."""
    if rest[:1] in {'"', "'"}:
        quote = rest[0]
        end = rest.find(quote, 1)
        if end < 0:
            return "", f"missing closing {quote} quote"
        trailing = rest[end + 1 :].strip()
        if trailing and not trailing.startswith("#"):
            return "", "unexpected text after the closing quote"
        return rest[1:end], ""
    value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
    return value, ""


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
