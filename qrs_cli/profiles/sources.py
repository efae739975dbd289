"""Reading a profile's files and resolving every key with its origin.

A profile's values come from four layers, lowest first: schema defaults, the profile ``.env``,
its ``secrets.env`` (git-ignored, mode 0600) and the process environment — the precedence of
DESIGN.md. Reading is lenient here (a malformed line is recorded, the other lines still count)
so that validation can report every problem at once; each line is parsed by the sampler's strict
``.env`` reader, so what is accepted is exactly what the plugin accepts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qr_sampler.envfile import EnvEntry, parse_env_text
from qr_sampler.errors import SettingsError
from qr_sampler.settings import ENV_PREFIX, SECRET_MASK, setting_specs
from qrs_cli.profiles.discovery import (
    ENV_FILE,
    OVERRIDE_FILE,
    SECRETS_FILE,
    ProjectLayout,
    existing_profile,
)
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.stack import stack_keys, stack_specs
from qrs_cli.profiles.types import Origin, ResolvedSetting

ENVIRONMENT = "environment"


@dataclass(frozen=True)
class EnvFileContent:
    """The assignments of one ``.env``-style file plus its malformed lines (1-based)."""

    path: Path
    exists: bool
    entries: tuple[EnvEntry, ...] = ()
    bad_lines: tuple[tuple[int, str], ...] = ()
    raw_lines: tuple[str, ...] = ()

    def values(self) -> dict[str, str]:
        """``KEY -> value``; a key set twice keeps its last value, as Compose does."""
        return {normalize_key(e.key): e.value for e in self.entries}

    def last_entry(self, key: str) -> EnvEntry | None:
        found = None
        for e in self.entries:
            if normalize_key(e.key) == key:
                found = e
        return found


@dataclass(frozen=True)
class ProfileSources:
    """Everything that decides a profile's values, read once."""

    name: str
    folder: Path
    env: EnvFileContent
    secrets: EnvFileContent
    environ: Mapping[str, str]

    @property
    def co_located_server(self) -> bool:
        """The override defines the reference ``entropy-server`` service (as rendered: a
        two-space key under ``services:``; an override can exist for other reasons too)."""
        try:
            text = (self.folder / OVERRIDE_FILE).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            return False
        return re.search(r"(?m)^  entropy-server:\s*$", text) is not None

    def layers(self) -> list[tuple[Origin, dict[str, str]]]:
        """The non-default layers, lowest precedence first."""
        return [
            ("profile .env", self.env.values()),
            ("secrets file", self.secrets.values()),
            ("process env", self.environ_values()),
        ]

    def environ_values(self) -> dict[str, str]:
        """Process variables that are sampler (``QR_*``) or stack keys."""
        stack = stack_keys()
        return {
            normalize_key(k): v
            for k, v in self.environ.items()
            if k.upper().startswith(ENV_PREFIX) or k in stack
        }

    def merged(self) -> dict[str, str]:
        """Every key set by a file or the environment, after precedence."""
        values: dict[str, str] = {}
        for _origin, layer in self.layers():
            values.update(layer)
        return values

    def origin_of(self, key: str) -> Origin:
        origin: Origin = "default"
        for name, layer in self.layers():
            if key in layer:
                origin = name
        return origin

    def where(self, key: str) -> tuple[str, int]:
        """(file, line) of the layer that decided ``key``; ('', 0) for a default."""
        origin = self.origin_of(key)
        if origin == "process env":
            return ENVIRONMENT, 0
        content = self.secrets if origin == "secrets file" else self.env
        entry = content.last_entry(key)
        return (str(content.path), entry.line) if entry else ("", 0)

    def secret_values(self) -> list[str]:
        """Every configured secret value (for redaction); never printed."""
        secret_keys = {s.env_key for s in setting_specs() if s.secret} | {"HF_TOKEN"}
        found = set()
        for _origin, layer in self.layers():
            found |= {v for k, v in layer.items() if k in secret_keys and v}
        found |= {v for v in self.secrets.values().values() if len(v) >= 4}
        return sorted(found, key=len, reverse=True)


def normalize_key(key: str) -> str:
    """Sampler keys are case-insensitive (as in the schema); everything else keeps its case."""
    return key.upper() if key.upper().startswith(ENV_PREFIX) else key


def read_env_lenient(path: Path) -> EnvFileContent:
    """Parse ``path`` line by line with the strict reader, keeping good lines and bad ones."""
    if not path.is_file():
        return EnvFileContent(path=path, exists=False)
    try:
        # utf-8-sig: editors on Windows start files with a byte order mark; Compose ignores it,
        # so must we (it would otherwise glue itself to the first key).
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        return EnvFileContent(path=path, exists=True, bad_lines=((0, f"cannot read: {reason}"),))
    entries: list[EnvEntry] = []
    bad: list[tuple[int, str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            parsed = parse_env_text(line, path=str(path))
        except SettingsError as exc:
            bad.append((number, exc.problems[0].message))
            continue
        entries += [EnvEntry(e.key, e.value, str(path), number) for e in parsed]
    return EnvFileContent(path, True, tuple(entries), tuple(bad), tuple(lines))


def load_sources(
    layout: ProjectLayout, name: str, environ: Mapping[str, str] | None = None
) -> ProfileSources:
    """Read an existing profile's ``.env`` and secrets file (missing secrets file = empty)."""
    folder = existing_profile(layout, name)
    env = read_env_lenient(folder / ENV_FILE)
    return ProfileSources(
        name=name,
        folder=folder,
        env=env,
        secrets=read_env_lenient(folder / SECRETS_FILE),
        environ=dict(os.environ if environ is None else environ),
    )


def require_readable(sources: ProfileSources) -> None:
    """Raise ProfileError when the profile's files cannot be used as they are (for ``show``)."""
    for content in (sources.env, sources.secrets):
        if content.bad_lines:
            line, message = content.bad_lines[0]
            more = f" (and {len(content.bad_lines) - 1} more)" if len(content.bad_lines) > 1 else ""
            raise ProfileError(
                f"{content.path}:{line}: {message}{more}",
                f"fix the file, then run `qrs profile validate {sources.name}`",
            )
    if not sources.env.exists:
        raise ProfileError(
            f"profile {sources.name!r} has no {ENV_FILE} file",
            f"recreate it with `qrs profile new {sources.name} --force --yes`",
        )


def resolve_settings(sources: ProfileSources) -> list[ResolvedSetting]:
    """Every stack and sampler key with its value after precedence and its origin.

    Secret values are replaced by the mask; the raw value never leaves this function.
    """
    merged = sources.merged()
    resolved = []
    for st in stack_specs():
        resolved.append(
            ResolvedSetting(
                key=st.env_key,
                value=merged.get(st.env_key, st.default),
                origin=sources.origin_of(st.env_key),
                kind="stack",
                description=st.description,
            )
        )
    for spec in setting_specs():
        value = merged.get(spec.env_key, spec.default)
        if spec.secret:
            value = SECRET_MASK if value else ""
        resolved.append(
            ResolvedSetting(
                key=spec.env_key,
                value=value,
                origin=sources.origin_of(spec.env_key),
                kind="sampler",
                secret=spec.secret,
                description=spec.description,
            )
        )
    return resolved
