"""Reading the native runtime's log files: the last lines, and following them as they grow.

Only the end of a file is read (vLLM's log can be large), and following is bounded by the
stack's life: it stops when none of the processes writing the files is alive any more (or on
Ctrl-C), so ``qrs logs --follow`` never outlives what it follows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_TAIL_CHUNK = 64 * 1024


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path`` ([] if missing), without reading the whole file."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            data = b""
            while size > 0 and data.count(b"\n") <= count:
                step = min(_TAIL_CHUNK, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [ln.rstrip() for ln in lines[-count:]]


def last_line(path: Path, width: int = 100) -> str:
    """The last non-empty line of ``path``, shortened to ``width`` (for progress lines)."""
    for line in reversed(tail_lines(path, 5)):
        if line.strip():
            text = " ".join(line.split())
            return text if len(text) <= width else text[: width - 1] + "…"
    return ""


def follow(
    files: Sequence[tuple[str, Path]],
    emit: Callable[[str, str], None],
    *,
    alive: Callable[[], bool],
    poll_s: float = 0.5,
) -> None:
    """Emit ``(service, line)`` for every line appended to ``files`` until ``alive()`` is False.

    Starts at the current end of each file (the caller prints the tail first). A file that is
    truncated (a new launch) is read again from its start.
    """
    offsets = {path: _size(path) for _name, path in files}
    pending = {path: "" for _name, path in files}
    while True:
        running = alive()  # asked before reading, so the lines of a last gasp are still read
        for name, path in files:
            size = _size(path)
            if size < offsets[path]:
                offsets[path] = 0
            if size == offsets[path]:
                continue
            with path.open("rb") as fh:
                fh.seek(offsets[path])
                chunk = fh.read(size - offsets[path])
            offsets[path] = size
            text = pending[path] + chunk.decode("utf-8", errors="replace")
            *complete, pending[path] = text.split("\n")
            for line in complete:
                emit(name, line.rstrip("\r"))
        if not running:
            return
        time.sleep(poll_s)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
