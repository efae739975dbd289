"""An append-only, hash-chained JSONL log that several processes can write at once.

Each call to :meth:`RecordJournal.append` turns records into lines (``chain.py`` has the format)
and writes them with **one** ``os.write`` on an ``O_APPEND`` descriptor, holding an exclusive
``flock`` on a lock file beside the log (``<log>.lock``) while it reads the last line's hash,
writes and, when the file is full, rotates. So:

- lines of different writers never interleave, and each line's ``prev_hash`` is the hash of the
  line that is really before it in the file, whoever wrote it;
- the first line a writer puts into a file (a new file, a file it joins, a file another writer
  rotated to) is its manifest, so every file names the run of every record in it;
- rotation renames the full file to ``<stem>.<index><suffix>`` (``naming.py``) and starts a new
  one whose manifest carries the old file's last hash: the chain runs across files;
- a writer caches the last hash and the file size after its own write; when the size differs
  under the lock, someone else wrote, and it reads the tail again.

A torn last line (an earlier writer died in the middle of a write, or the disk filled up) is
kept as evidence, not truncated: the next writer ends it with ``"\\n"`` and, in the same write,
adds an ``event`` line ``torn_line`` carrying the fragment's length and SHA-256 whose
``prev_hash`` is the hash of the last complete line. ``qrs audit verify`` accepts exactly that
pattern (a warning: a record was lost) and fails on any other unreadable line.

Assumptions: every writer of the log uses this class; the file system supports ``flock``
between processes (local disks do; some network file systems do not). Guarantees: ``append`` and
``close`` never raise on I/O: on the first error the journal switches itself off, logs once,
and ``error`` says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qr_sampler.provenance.chain import ZERO_HASH, encode_body, line_hash, link
from qr_sampler.provenance.manifest import iso_utc
from qr_sampler.provenance.naming import rotated_files, rotated_path

logger = logging.getLogger("qr_sampler.provenance")

SCHEMA_VERSION = 1
#: A line longer than this cannot be the tail of a log we wrote: the reader gives up there.
_MAX_LINE = 64 * 1024 * 1024
_TAIL_BLOCK = 64 * 1024


class RecordJournal:
    """Writes records as hash-chained lines to ``path``, rotating at ``max_bytes`` (0 = never).

    ``manifest`` holds the run's identity (run id, versions, model, settings, source, …, see
    :func:`~qr_sampler.provenance.manifest.build_manifest`); the journal adds ``kind``,
    ``schema``, ``file_index``, ``written_at``, ``pid``, ``host`` and ``prev_hash`` each time it
    writes the manifest line. Thread-safe; meant to be called from one background thread.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int, manifest: Mapping[str, Any]
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max(0, int(max_bytes))
        self.run_id = str(manifest.get("run_id", ""))
        self.error = ""
        #: Lines this journal wrote (manifests and events included).
        self.lines_written = 0
        #: Files this journal rotated away.
        self.rotations = 0
        self._manifest = dict(manifest)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._known_size = -1  # the file's size right after our last write
        self._last_hash = ZERO_HASH.encode()
        self._manifest_in: tuple[int, int] | None = None  # file that has our manifest

    # --- public -------------------------------------------------------------------------------

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append ``records`` as lines (``prev_hash`` is set here). Never raises on I/O."""
        if self.error or not records:
            return
        try:
            bodies = [encode_body(r) for r in records]  # outside the file lock: the costly part
        except (TypeError, ValueError, UnicodeError) as exc:
            self._disable(f"a record cannot be written as JSON: {exc}")
            return
        self.append_encoded(bodies)

    def append_encoded(self, bodies: Sequence[bytes]) -> None:
        """Append lines already serialised as :func:`~qr_sampler.provenance.chain.encode_body`
        would (a writer with a faster encoder for its own records). Never raises on I/O."""
        if self.error or not bodies:
            return
        with self._lock:
            if self.error:
                return
            try:
                self._append_locked(bodies)
            except OSError as exc:
                self._disable(f"{type(exc).__name__}: {exc.strerror or exc}")

    def close(self) -> None:
        """End the chain with a ``journal_closed`` event (so the last record has a successor)
        and release the file. Never raises on I/O."""
        with self._lock:
            if self._fd is not None and not self.error and self.lines_written:
                event = {
                    "kind": "event",
                    "event": "journal_closed",
                    "run_id": self.run_id,
                    "timestamp_ns": time.time_ns(),
                    "lines": self.lines_written,
                }
                try:
                    self._append_locked([encode_body(event)])
                except OSError as exc:
                    self._disable(f"{type(exc).__name__}: {exc.strerror or exc}")
            self._release()

    # --- the write, under the lock ------------------------------------------------------------

    def _append_locked(self, bodies: Sequence[bytes]) -> None:
        lock_fd = self._lock_file()
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            fd, size = self._sync()
            if self.max_bytes and size > 0 and size + _estimate(bodies) > self.max_bytes:
                fd, size = self._rotate()
            if self._manifest_in != self._identity:
                bodies = [self._manifest_body(), *bodies]
            payload, last = link(bodies, self._last_hash)
            _write_all(fd, payload)
            self._manifest_in = self._identity
            self._last_hash = last
            self._known_size = size + len(payload)
            self.lines_written += len(bodies)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _sync(self) -> tuple[int, int]:
        """Open the current file (reopening after another writer rotated it) and make sure the
        cached last hash is the file's; repair a torn tail. Returns (fd, size)."""
        try:
            current = os.stat(self.path)
            identity: tuple[int, int] | None = (current.st_dev, current.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is None or identity != self._identity:
            self._open()
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size != self._known_size:  # someone else wrote (or we just opened): read the tail
            last, fragment = _tail(self._fd, size)
            self._last_hash = line_hash(last) if last is not None else self._start_hash()
            if fragment:
                size = self._repair(fragment, size)
            self._known_size = size
        return self._fd, size

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._identity, self._known_size = fd, (st.st_dev, st.st_ino), -1

    def _repair(self, fragment: bytes, size: int) -> int:
        """End a torn last line and say so in the chain (see the module docstring)."""
        assert self._fd is not None
        event = {
            "kind": "event",
            "event": "torn_line",
            "run_id": self.run_id,
            "timestamp_ns": time.time_ns(),
            "torn_bytes": len(fragment),
            "torn_sha256": hashlib.sha256(fragment).hexdigest(),
        }
        payload, last = link([encode_body(event)], self._last_hash)
        _write_all(self._fd, b"\n" + payload)
        logger.warning(
            "diagnostics file %s ended in a torn line (%d bytes, an interrupted write); "
            "kept and marked with a torn_line event",
            self.path,
            len(fragment),
        )
        self._last_hash = last
        self.lines_written += 1
        return size + 1 + len(payload)

    def _rotate(self) -> tuple[int, int]:
        """Rename the full file to its rotated name and open a fresh one (lock held)."""
        assert self._fd is not None
        index = self._active_index()
        target = rotated_path(self.path, index)
        while target.exists():  # a copy left by hand: never overwrite it
            index += 1
            target = rotated_path(self.path, index)
        os.rename(self.path, target)
        self.rotations += 1
        self._open()
        assert self._fd is not None
        return self._fd, os.fstat(self._fd).st_size

    def _start_hash(self) -> bytes:
        """The link of the active file's first line: the newest rotated file's last hash."""
        rotated = rotated_files(self.path)
        if not rotated:
            return ZERO_HASH.encode()
        fd = os.open(rotated[-1][1], os.O_RDONLY | os.O_CLOEXEC)
        try:
            last, _ = _tail(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return line_hash(last) if last is not None else ZERO_HASH.encode()

    def _active_index(self) -> int:
        rotated = rotated_files(self.path)
        return rotated[-1][0] + 1 if rotated else 0

    def _manifest_body(self) -> bytes:
        now = time.time()
        fields: dict[str, Any] = {
            "kind": "manifest",
            "schema": SCHEMA_VERSION,
            "run_id": self.run_id,
            "file_index": self._active_index(),
            "started_at": self._manifest.get("started_at", ""),
            "written_at": iso_utc(now),
        }
        for key, value in self._manifest.items():
            if key not in fields and key not in ("pid", "host", "prev_hash"):
                fields[key] = value
        fields["pid"] = os.getpid()
        fields["host"] = socket.gethostname()
        return encode_body(fields)

    def _lock_file(self) -> int:
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.path.with_name(self.path.name + ".lock")
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._lock_fd

    # --- failure ------------------------------------------------------------------------------

    def _disable(self, why: str) -> None:
        self.error = why
        logger.error("diagnostics file %s disabled: %s", self.path, why)
        self._release()

    def _release(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None
        self._identity = None


def _estimate(bodies: Sequence[bytes]) -> int:
    """Bytes the bodies take as lines (each gains its 80-byte link and a newline)."""
    return sum(len(b) for b in bodies) + 81 * len(bodies)


def _write_all(fd: int, payload: bytes) -> None:
    """One ``os.write`` of whole lines; loop only if the kernel wrote part (disk nearly full)."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _tail(fd: int, size: int) -> tuple[bytes | None, bytes]:
    """The last complete line of the file (None if there is none) and a torn fragment after it
    (b"" when the file ends with a newline). Reads backwards in blocks until it has seen the
    newline before the last complete line, or the start of the file."""
    buf = b""
    end = size
    while True:
        start = max(0, end - _TAIL_BLOCK)
        buf = os.pread(fd, end - start, start) + buf
        end = start
        cut = buf.rfind(b"\n")  # end of the last complete line, if any
        known = cut >= 0 and buf.rfind(b"\n", 0, cut) >= 0
        if known or end == 0:
            break
        if len(buf) > _MAX_LINE:
            raise OSError(f"a line at the end of the file is longer than {_MAX_LINE} bytes")
    if cut < 0:
        return None, buf
    body = buf[:cut]
    return body[body.rfind(b"\n") + 1 :], buf[cut + 1 :]
