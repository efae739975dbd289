"""Findings about secrets: where they sit, whether git would publish them, who can read them.

Profiles are meant to be committed, their ``secrets.env`` never. A secret in a file git tracks
is an error (it is published with the next push, if not already): a secret line in a tracked
``.env``, a configured secret value in any other tracked file of the profile, a tracked
``secrets.env``. Warnings (validation still passes): a secret in a ``.env`` that git does not
track yet, a secrets file git would not ignore, one other users can read. Git is asked through
``git ls-files`` and ``git check-ignore``; outside a repository (or without git) those checks
are skipped. No message ever contains a secret value.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

from qr_sampler.settings import setting_specs
from qrs_cli.profiles.discovery import SECRETS_FILE, ProjectLayout
from qrs_cli.profiles.sources import ProfileSources, normalize_key
from qrs_cli.profiles.types import Finding

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY)$")
_MIN_SECRET_LEN = 8  # shorter values would match ordinary text by chance


def secret_key_names() -> set[str]:
    """Keys whose values are secret: the schema's secret fields plus well-known token names."""
    return {s.env_key for s in setting_specs() if s.secret} | {"HF_TOKEN"}


def is_secret_key(key: str) -> bool:
    key = normalize_key(key)
    return key in secret_key_names() or bool(_SECRET_NAME.search(key))


def secret_findings(layout: ProjectLayout, sources: ProfileSources) -> list[Finding]:
    """Every secrets problem of one profile."""
    tracked = _tracked_files(layout, sources.folder)
    findings = _inline_secrets(layout, sources, tracked)
    findings += _leaked_values(layout, sources, tracked)
    findings += _secrets_file(layout, sources, tracked)
    return findings


def _inline_secrets(
    layout: ProjectLayout, sources: ProfileSources, tracked: set[Path] | None
) -> list[Finding]:
    env_path = sources.env.path
    is_tracked = bool(tracked and env_path in tracked)
    state = "tracked by git" if is_tracked else "meant to be committed"
    secrets_rel = layout.relative(sources.folder / SECRETS_FILE)
    move = (f"`qrs profile set-key {sources.name} --stdin` stores the API key in {secrets_rel} "
            "(git-ignored, mode 0600); then delete the line here")
    if is_tracked:
        move += " and remove the key from git history (and rotate it: it may be published)"
    return [
        Finding(
            "error" if is_tracked else "warning",
            "secrets",
            f"{normalize_key(e.key)} holds a secret in .env ({state})",
            hint=move if normalize_key(e.key) == "QR_GRPC_API_KEY" else
            f"move it to {secrets_rel} (git-ignored, mode 0600) or the environment"
            + (" and rotate it: it may be published" if is_tracked else ""),
            key=normalize_key(e.key),
            file=layout.relative(env_path),
            line=e.line,
        )
        for e in sources.env.entries
        if e.value and is_secret_key(e.key)
    ]


def _leaked_values(
    layout: ProjectLayout, sources: ProfileSources, tracked: set[Path] | None
) -> list[Finding]:
    values = [v for v in sources.secret_values() if len(v) >= _MIN_SECRET_LEN]
    if not values or not tracked:
        return []
    findings = []
    for path in sorted(tracked):
        if path.name == SECRETS_FILE or path == sources.env.path or not path.is_file():
            continue  # the secrets file has its own check; .env is covered line by line
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if any(v in text for v in values):
            findings.append(
                Finding(
                    "error",
                    "secrets",
                    "a configured secret value appears in a file tracked by git",
                    hint="remove it from the file (and from git history); keep it in "
                    f"{SECRETS_FILE} only",
                    file=layout.relative(path),
                )
            )
    return findings


def _secrets_file(
    layout: ProjectLayout, sources: ProfileSources, tracked: set[Path] | None
) -> list[Finding]:
    path = sources.secrets.path
    if not sources.secrets.exists:
        return []
    rel = layout.relative(path)
    findings = []
    if tracked is not None and path in tracked:
        findings.append(
            Finding(
                "error",
                "secrets",
                f"{SECRETS_FILE} is tracked by git",
                file=rel,
                hint=f"run `git rm --cached {rel}`; deployments/.gitignore ignores it",
            )
        )
    elif tracked is not None and _ignored(layout, path) is False:
        findings.append(
            Finding(
                "warning",
                "secrets",
                f"{SECRETS_FILE} is not ignored by git",
                file=rel,
                hint=f"add `*/{SECRETS_FILE}` to deployments/.gitignore",
            )
        )
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return findings
    if mode & 0o077:
        findings.append(
            Finding(
                "warning",
                "secrets",
                f"{SECRETS_FILE} is readable by others (mode {mode:04o})",
                file=rel,
                hint=f"run `chmod 600 {rel}`",
            )
        )
    return findings


def _git(layout: ProjectLayout, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(
            ["git", "-C", str(layout.root), *args], check=False, capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _tracked_files(layout: ProjectLayout, folder: Path) -> set[Path] | None:
    """Files of ``folder`` that git tracks; None when not in a repository or git is missing."""
    proc = _git(layout, "ls-files", "-z", "--full-name", "--", str(folder))
    if proc is None or proc.returncode != 0:
        return None
    top = _git(layout, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0:
        return None
    root = Path(top.stdout.decode().strip())
    names = [n for n in proc.stdout.decode("utf-8", "replace").split("\0") if n]
    return {(root / n).resolve() for n in names}


def _ignored(layout: ProjectLayout, path: Path) -> bool | None:
    proc = _git(layout, "check-ignore", "-q", "--", str(path))
    if proc is None or proc.returncode not in (0, 1):
        return None
    return proc.returncode == 0
