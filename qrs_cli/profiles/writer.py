"""Writing a rendered profile to disk, atomically.

A new profile is built in a hidden temporary folder next to its destination and renamed into
place, so a failure (disk full, Ctrl-C) never leaves a half-written profile. Overwriting
(``--force``) replaces each file with ``os.replace``; the secrets file is kept unless a new key
was given, because it holds what no template can recreate. Secret files get mode 0600 from the
moment they exist (``mkstemp`` creates them so), never a looser mode first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from qrs_cli.errors import EXIT_FAILED
from qrs_cli.profiles.discovery import OVERRIDE_FILE, ProjectLayout
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.types import RenderedFile

SECRET_MODE = 0o600
FILE_MODE = 0o644
DIR_MODE = 0o755


def refuse_existing(layout: ProjectLayout, name: str, *, force: bool) -> None:
    """Raise ProfileError when the profile exists and ``force`` is off (checked before prompts)."""
    folder = layout.profile_dir(name)
    if folder.exists() and not force:
        raise ProfileError(
            f"profile {name!r} already exists in {layout.relative(folder)}",
            "pass --force to update it (values you do not give are kept, and the changes are "
            "shown first), `qrs profile set-key NAME` to store only its API key, or choose "
            "another name",
        )


def write_profile(
    layout: ProjectLayout, name: str, files: list[RenderedFile], *, force: bool
) -> list[Path]:
    """Write ``files`` into ``deployments/<name>/``; return the paths written."""
    refuse_existing(layout, name, force=force)
    folder = layout.profile_dir(name)
    try:
        if folder.exists():
            return _overwrite(folder, files)
        return _create(layout, folder, files)
    except OSError as exc:
        raise ProfileError(
            f"cannot write {layout.relative(folder)}: {exc.strerror or exc}",
            "check that the deployments/ folder is writable",
            EXIT_FAILED,
        ) from exc


def _create(layout: ProjectLayout, folder: Path, files: list[RenderedFile]) -> list[Path]:
    layout.deployments.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=layout.deployments))
    try:
        for f in files:
            atomic_write(staging / f.name, f.content, secret=f.secret)
        staging.chmod(DIR_MODE)  # mkdtemp makes it 0700
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [folder / f.name for f in files]


def _overwrite(folder: Path, files: list[RenderedFile]) -> list[Path]:
    written = []
    for f in files:
        path = folder / f.name
        atomic_write(path, f.content, secret=f.secret)
        written.append(path)
    stale = folder / OVERRIDE_FILE
    if OVERRIDE_FILE not in {f.name for f in files} and stale.is_file():
        stale.unlink()  # the new answers have no co-located server
    return written


def atomic_write(path: Path, content: str, *, secret: bool) -> None:
    """Write ``content`` to ``path`` all at once (temp file, fsync, rename); mode 0600 when
    ``secret``. A crash or Ctrl-C leaves the old file and no temp file behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if not secret:
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
