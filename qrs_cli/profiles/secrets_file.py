"""A profile's ``secrets.env``: store one secret in it without touching anything else.

``qrs profile set-key`` and ``qrs profile new --force --api-key-env VAR`` on an existing profile
both come here, so a key is stored the same way whichever command a hint named: the line of that
key is replaced (or added at the end), every other line — another secret such as ``HF_TOKEN``, a
comment — is kept byte for byte, and the file is written atomically with mode 0600 (a file that
had a looser mode gets 0600 too). No other file of the profile is opened for writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qr_sampler.envfile import parse_env_text
from qr_sampler.errors import SettingsError
from qrs_cli.errors import EXIT_FAILED
from qrs_cli.profiles.discovery import SECRETS_FILE, ProjectLayout, existing_profile
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.render import env_quote
from qrs_cli.profiles.sources import normalize_key
from qrs_cli.profiles.writer import atomic_write

_HEADER = "# Secrets of profile {name}: git-ignored, mode 0600. Never commit this file.\n"


@dataclass(frozen=True)
class StoredSecret:
    """Where a secret went and whether it replaced an earlier value (the value is not kept)."""

    profile: str
    key: str
    path: Path
    replaced: bool

    def to_dict(self) -> dict[str, object]:
        return {"profile": self.profile, "key": self.key, "path": str(self.path),
                "replaced": self.replaced, "mode": "0600"}


def with_secret(text: str, key: str, value: str, *, profile: str) -> tuple[str, bool]:
    """``text`` (a secrets file, '' for a new one) with ``key`` set to ``value``.

    Returns the new text and whether the key was set before. Every line that does not assign
    ``key`` stays as it was; a key assigned on several lines keeps one line, at the first place.
    """
    line = f"{key}={env_quote(key, value)}\n"
    if not text.strip():
        return _HEADER.format(name=profile) + line, False
    kept: list[str] = []
    replaced = False
    for raw in text.splitlines(keepends=True):
        if _assigns(raw, key):
            if not replaced:
                kept.append(line)
            replaced = True
            continue
        kept.append(raw)
    if not replaced:
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        kept.append(line)
    return "".join(kept), replaced


def _assigns(raw: str, key: str) -> bool:
    try:
        entries = parse_env_text(raw)
    except SettingsError:
        return False  # a malformed line is the user's to fix; never dropped here
    return any(normalize_key(e.key) == key for e in entries)


def store_secret(layout: ProjectLayout, name: str, key: str, value: str) -> StoredSecret:
    """Set ``key`` in profile ``name``'s secrets file (created with mode 0600 if missing)."""
    if not value:
        raise ProfileError(f"the new {key} is empty", "pass a non-empty key")
    folder = existing_profile(layout, name)
    path = folder / SECRETS_FILE
    try:
        old = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"cannot read {layout.relative(path)}: {getattr(exc, 'strerror', None) or exc}",
            f"fix or remove {layout.relative(path)} (it is yours: qrs never rewrites it "
            "blindly)",
        ) from exc
    text, replaced = with_secret(old, key, value, profile=name)
    try:
        atomic_write(path, text, secret=True)
    except OSError as exc:
        raise ProfileError(
            f"cannot write {layout.relative(path)}: {exc.strerror or exc}",
            f"check that {layout.relative(folder)} is writable",
            EXIT_FAILED,
        ) from exc
    return StoredSecret(name, key, path, replaced)
