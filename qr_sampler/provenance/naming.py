"""Names of rotated diagnostics files, and how to list one log's files in chain order.

The file being written keeps the configured name (``diag.jsonl``). When it is full it is renamed
to ``<stem>.<index>.<suffix>`` (``diag.000000.jsonl``, ``diag.000001.jsonl``, …): ``index`` is
that file's ``file_index`` (the one its manifests carry), at least six digits, counting up from 0
for the first file of the log. So the chain order is: rotated files by ascending index (compared
as numbers, so ``diag.1000000.jsonl`` follows ``diag.999999.jsonl``), then the active file. The
active file's index is one more than the highest rotated index (0 when there is none).
"""

from __future__ import annotations

import re
from pathlib import Path

_INDEX_RE = re.compile(r"^(?P<stem>.+)\.(?P<index>\d{6,})(?P<suffix>\.[^.]*)?$")


def _split(name: str) -> tuple[str, str]:
    path = Path(name)
    return (path.stem, path.suffix) if path.suffix else (name, "")


def rotated_path(path: Path, index: int) -> Path:
    """Where the active file ``path`` goes when it is rotated with ``file_index`` = ``index``."""
    stem, suffix = _split(path.name)
    return path.with_name(f"{stem}.{index:06d}{suffix}")


def rotated_index(active: Path, candidate: Path) -> int | None:
    """``candidate``'s index if it is a rotated sibling of ``active``, else None."""
    stem, suffix = _split(active.name)
    match = _INDEX_RE.match(candidate.name)
    if match is None or match["stem"] != stem or (match["suffix"] or "") != suffix:
        return None
    return int(match["index"])


def rotated_files(active: Path) -> list[tuple[int, Path]]:
    """Rotated siblings of ``active`` as (index, path), oldest first."""
    try:
        entries = list(active.parent.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        index = rotated_index(active, entry)
        if index is not None and entry.is_file():
            found.append((index, entry))
    return sorted(found)


def active_path_of(path: Path) -> Path:
    """The active file of the log ``path`` belongs to (``diag.000003.jsonl`` → ``diag.jsonl``)."""
    match = _INDEX_RE.match(path.name)
    if match is None:
        return path
    return path.with_name(match["stem"] + (match["suffix"] or ""))


def chain_files(path: Path) -> list[Path]:
    """Every file of the log that ``path`` (active or rotated) belongs to, in chain order.

    A rotated file with neither its active file nor any sibling is returned alone.
    """
    active = active_path_of(path)
    files = [p for _, p in rotated_files(active)]
    if active.is_file():
        files.append(active)
    if not files and path.is_file():
        files.append(path)
    return files
