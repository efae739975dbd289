"""Writing a render into its output folder, safely.

Rules, in order:

- a folder that does not exist is built as a hidden sibling and renamed into place, so a crash
  leaves either nothing or the complete set;
- an existing empty folder is filled, each file written atomically;
- a folder holding an earlier render (it has our marker file, ``.qrs-render.json``) is
  overwritten only with ``--force``: every file atomically, files of the earlier render that the
  new one lacks are removed (``kubectl apply -f`` would otherwise still apply them, e.g. a
  Deployment left over after a switch to a LeaderWorkerSet), files we never wrote are kept, and
  the marker is rewritten last;
- any other non-empty folder is someone else's and is refused, ``--force`` or not.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from qrs_cli.errors import EXIT_FAILED
from qrs_cli.k8s.errors import RenderError
from qrs_cli.k8s.types import K8sRender
from qrs_cli.profiles.writer import DIR_MODE, atomic_write

MARKER = ".qrs-render.json"


def write_render(render: K8sRender, out: Path, *, force: bool) -> list[Path]:
    """Write ``render`` into ``out`` by the rules above; the paths written."""
    files = render.files()
    marker = json.dumps(
        {"made_by": "qrs render k8s", "profile": render.profile, "files": sorted(files)},
        indent=2,
    )
    try:
        if not out.exists():
            return _create(out, files, marker)
        if not out.is_dir():
            raise RenderError(f"{out} exists and is not a folder", "choose a new folder for --out")
        earlier = _earlier_files(out)
        if earlier is None:
            raise RenderError(
                f"{out} is not empty and was not made by `qrs render`",
                "choose a new or empty folder for --out; nothing was written",
            )
        if earlier and not force:
            raise RenderError(
                f"{out} holds an earlier render ({len(earlier)} files)",
                "pass --force to replace it (files qrs did not write are kept)",
            )
        written = []
        for name, text in files.items():
            atomic_write(out / name, text, secret=False)
            written.append(out / name)
        for stale in sorted(set(earlier) - set(files)):
            with contextlib.suppress(FileNotFoundError):
                (out / stale).unlink()
        atomic_write(out / MARKER, marker + "\n", secret=False)
        return written
    except OSError as exc:
        raise RenderError(
            f"cannot write {out}: {exc.strerror or exc}",
            "check that the folder is writable",
            EXIT_FAILED,
        ) from exc


def _earlier_files(out: Path) -> list[str] | None:
    """Files of an earlier render in ``out``; [] when ``out`` is empty; None when it holds
    anything else (no marker, or a marker we cannot read)."""
    entries = list(out.iterdir())
    if not entries:
        return []
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = data.get("files") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    # Only plain names: a marker must not make us delete anything outside the folder.
    return [n for n in names if n and "/" not in n and n not in (".", "..")]


def _create(out: Path, files: dict[str, str], marker: str) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            atomic_write(staging / name, text, secret=False)
        atomic_write(staging / MARKER, marker + "\n", secret=False)
        staging.chmod(DIR_MODE)  # mkdtemp makes it 0700
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / name for name in files]
