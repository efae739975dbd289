"""The raw-byte archive: every fetch's bytes, compressed, so z and u can be re-derived later.

Layout of the archive directory (``QR_ENTROPY_ARCHIVE_PATH``)::

    <run_id>-<seq>.zst     segments: each fetch is one compressed frame appended to the
                           writer's current segment (zstd with a content checksum; ``.gz``
                           members where zstandard is not installed)
    events.jsonl           a hash-chained log (same format as the diagnostics file) of what the
                           archive did on its own: ``archive_segment_dropped`` when the size
                           bound removed a segment
    archive.lock           serialises pruning between processes sharing the directory

A row's reference (``entropy_ref`` in its token record) is
``<segment>:<frame offset>:<frame length>:<row offset>:<row length>``: reading one row decodes
one frame, never the whole segment. Treat it as opaque; :func:`read_archived` reads it.

Size bound (``QR_ENTROPY_ARCHIVE_MAX_BYTES``): whenever a writer starts a segment it deletes the
oldest segments (by modification time) of the whole directory until the total plus one new
segment fits. Each deletion is said three ways: a log line, an event in ``events.jsonl``, and
the ``on_event`` callback (the engine routes it into the diagnostics chain). So a verifier tells
"dropped by policy" (a segment named in a drop event) from "missing" or "tampered" (absent
without an event, or failing to decode or to match its record's ``entropy_sha256``). With
several writer processes the total can exceed the bound by up to one segment per extra writer.

Codec (measured by ``benchmarks/bench_audit.py``, figures in the README): zstd is about ten
times faster than gzip at the same ratio on random bytes (≈ 1.0: quantum bytes do not compress)
and compresses a broken, low-entropy source better, so it is the default.

Guarantees: :meth:`EntropyArchive.append` and :meth:`~EntropyArchive.close` never raise on I/O;
the archive switches itself off, logs once, and ``error`` says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qr_sampler.provenance.errors import ArchiveError, AuditInputError
from qr_sampler.provenance.journal import RecordJournal
from qr_sampler.provenance.manifest import iso_utc

logger = logging.getLogger("qr_sampler.provenance")

EVENTS_FILE = "events.jsonl"
LOCK_FILE = "archive.lock"
#: ``event`` value of a segment removed by the size bound.
DROP_EVENT = "archive_segment_dropped"
#: zstd level: a fast negative level; random bytes are stored raw by zstd at any level, and a
#: low-entropy (broken) source still compresses about 4x.
ZSTD_LEVEL = -3
GZIP_LEVEL = 1
SEGMENT_RE = re.compile(r"^(?P<run>[A-Za-z0-9_]{1,64})-(?P<seq>\d{6,})\.(?P<ext>zst|gz)$")
_MAX_SEGMENT = 64 * 1024 * 1024
_MIN_SEGMENT = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")

EventCallback = Callable[[dict[str, Any]], None]


def default_codec() -> str:
    """``zstd`` when the zstandard package is installed, else ``gzip`` (standard library)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return "gzip"
    return "zstd"


class EntropyArchive:
    """Appends each fetch's bytes to compressed segments in ``directory``, bounded in size.

    ``max_bytes`` bounds the directory's segments (0 = no bound); ``segment_bytes`` (default:
    an eighth of the bound, between 64 KiB and 64 MiB) is the size at which a segment is closed.
    ``on_event`` receives each event dict (e.g. a dropped segment) to put into another log.
    Thread-safe; meant to be called from one background thread.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        run_id: str,
        segment_bytes: int | None = None,
        codec: str | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max(0, int(max_bytes))
        self.run_id = run_id
        self.codec = codec or default_codec()
        if self.codec not in ("zstd", "gzip"):
            raise ValueError(f"unknown archive codec {self.codec!r}; use zstd or gzip")
        if segment_bytes is None:
            segment_bytes = self.max_bytes // 8 if self.max_bytes else _MAX_SEGMENT
            segment_bytes = min(_MAX_SEGMENT, max(_MIN_SEGMENT, segment_bytes))
        if self.max_bytes:
            segment_bytes = min(segment_bytes, self.max_bytes)
        self.segment_bytes = max(1, segment_bytes)
        self.on_event = on_event
        self.error = ""
        #: Bytes given to :meth:`append`, bytes written to segments, segments this writer dropped.
        self.bytes_in = 0
        self.bytes_stored = 0
        self.segments_dropped = 0
        self._name = _UNSAFE.sub("_", run_id)[:64] or "run"
        self._ext = "zst" if self.codec == "zstd" else "gz"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment = ""
        self._segment_size = 0
        self._seq = -1
        self._events: RecordJournal | None = None
        self._warned_counts = False
        self._compress = _compressor(self.codec)

    def append(self, data: bytes, counts: Sequence[int]) -> list[str]:
        """Archive one fetch (rows' bytes concatenated; row i has ``counts[i]``) and return one
        reference per row ("" for an empty row, or for every row once the archive is off)."""
        if self.error or not data:
            return [""] * len(counts)
        if sum(counts) != len(data):  # a caller's bug: refs would point past the frame
            if not self._warned_counts:
                self._warned_counts = True
                logger.error(
                    "entropy archive: %d bytes given for rows needing %d; not archived",
                    len(data),
                    sum(counts),
                )
            return [""] * len(counts)
        with self._lock:
            if self.error:
                return [""] * len(counts)
            try:
                frame = self._compress(data)
                full = self._segment_size + len(frame) > self.segment_bytes
                if self._fd is None or (self._segment_size and full):
                    self._new_segment()
                assert self._fd is not None
                offset = self._segment_size
                _write_all(self._fd, frame)
                self._segment_size += len(frame)
            except OSError as exc:
                self._disable(f"{type(exc).__name__}: {exc.strerror or exc}")
                return [""] * len(counts)
            self.bytes_in += len(data)
            self.bytes_stored += len(frame)
            prefix = f"{self._segment}:{offset}:{len(frame)}"
        refs, start = [], 0
        for n in counts:
            refs.append(f"{prefix}:{start}:{n}" if n else "")
            start += n
        return refs

    def close(self) -> None:
        """Close the current segment and the events log. Never raises on I/O."""
        with self._lock:
            self._close_segment()
            if self._events is not None:
                self._events.close()
                self._events = None

    # --- segments -----------------------------------------------------------------------------

    def _new_segment(self) -> None:
        self._close_segment()
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if self.max_bytes:
                self._prune()
            if self._seq < 0:
                self._seq = self._highest_seq() + 1
            while True:
                name = f"{self._name}-{self._seq:06d}.{self._ext}"
                self._seq += 1
                try:
                    fd = os.open(
                        self.directory / name,
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                        0o644,
                    )
                except FileExistsError:
                    continue
                break
        finally:
            os.close(lock_fd)  # closing releases the flock
        self._fd, self._segment, self._segment_size = fd, name, 0

    def _close_segment(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _highest_seq(self) -> int:
        highest = -1
        for entry in self.directory.iterdir():
            match = SEGMENT_RE.match(entry.name)
            if match and match["run"] == self._name:
                highest = max(highest, int(match["seq"]))
        return highest

    def _prune(self) -> None:
        """Drop the oldest segments until the total plus one new segment fits (lock held)."""
        segments = []
        for entry in self.directory.iterdir():
            if SEGMENT_RE.match(entry.name):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                segments.append((st.st_mtime_ns, entry.name, st.st_size))
        segments.sort()
        total = sum(size for _, _, size in segments)
        for _, name, size in segments:
            if total + self.segment_bytes <= self.max_bytes:
                break
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                continue
            total -= size
            self._dropped(name, size, total)

    def _dropped(self, name: str, size: int, remaining: int) -> None:
        self.segments_dropped += 1
        event = {
            "kind": "event",
            "event": DROP_EVENT,
            "run_id": self.run_id,
            "timestamp_ns": time.time_ns(),
            "segment": name,
            "bytes": size,
            "reason": f"QR_ENTROPY_ARCHIVE_MAX_BYTES={self.max_bytes}",
            "archive_bytes_left": remaining,
        }
        level = logging.WARNING if self.segments_dropped == 1 else logging.INFO
        logger.log(
            level,
            "entropy archive %s is full (QR_ENTROPY_ARCHIVE_MAX_BYTES=%d): dropped the oldest "
            "segment %s (%d bytes)%s",
            self.directory,
            self.max_bytes,
            name,
            size,
            "; further drops are logged at INFO" if self.segments_dropped == 1 else "",
        )
        if self._events is None:
            self._events = RecordJournal(
                self.directory / EVENTS_FILE,
                max_bytes=0,
                manifest={
                    "run_id": self.run_id,
                    "started_at": iso_utc(),
                    "archive": {
                        "codec": self.codec,
                        "max_bytes": self.max_bytes,
                        "segment_bytes": self.segment_bytes,
                    },
                },
            )
        self._events.append([event])
        if self.on_event is not None:
            try:
                self.on_event(dict(event))
            except Exception:  # the caller's code must not switch the archive off
                logger.exception("the archive's on_event callback failed")

    def _disable(self, why: str) -> None:
        self.error = why
        logger.error("entropy archive %s disabled: %s", self.directory, why)
        self._close_segment()


# --- reading ----------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, int, int, int, int]:
    """Split a reference into (segment, frame offset, frame length, row offset, row length)."""
    parts = ref.rsplit(":", 4)
    if len(parts) != 5 or not SEGMENT_RE.match(parts[0]):
        raise ArchiveError(f"not an archive reference: {ref[:80]!r}", reason="bad_ref")
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise ArchiveError(f"not an archive reference: {ref[:80]!r}", reason="bad_ref") from None
    if min(numbers) < 0 or numbers[1] == 0:
        raise ArchiveError(f"not an archive reference: {ref[:80]!r}", reason="bad_ref")
    return parts[0], numbers[0], numbers[1], numbers[2], numbers[3]


class ArchiveReader:
    """Reads rows from an archive directory, decoding each frame once for consecutive rows."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._frame_key: tuple[str, int, int] | None = None
        self._frame = b""
        self._zstd: Any = None

    def read(self, ref: str) -> bytes:
        """Exactly the bytes of the row ``ref`` points to; :class:`ArchiveError` if it cannot."""
        segment, offset, length, row_offset, row_length = parse_ref(ref)
        key = (segment, offset, length)
        if key != self._frame_key:
            self._frame = self._decode(segment, self._read_frame(segment, offset, length))
            self._frame_key = key
        row = self._frame[row_offset : row_offset + row_length]
        if len(row) != row_length:
            raise ArchiveError(
                f"{segment}: frame at {offset} holds {len(self._frame)} bytes, fewer than the "
                f"reference needs",
                reason="corrupt",
                segment=segment,
            )
        return row

    def _read_frame(self, segment: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.directory / segment, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ArchiveError(
                f"segment {segment} is not in {self.directory}", reason="missing", segment=segment
            ) from None
        except OSError as exc:
            raise AuditInputError(
                f"cannot read {self.directory / segment}: {exc.strerror or exc}"
            ) from exc
        try:
            frame = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(frame) != length:
            raise ArchiveError(
                f"{segment}: the frame at {offset} is cut short ({len(frame)} of {length} bytes)",
                reason="corrupt",
                segment=segment,
            )
        return frame

    def _decode(self, segment: str, frame: bytes) -> bytes:
        try:
            if segment.endswith(".gz"):
                return gzip.decompress(frame)
            return self._zstd_decompressor().decompress(frame)  # type: ignore[no-any-return]
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(
                f"{segment}: a frame does not decode ({exc})", reason="corrupt", segment=segment
            ) from None
        except Exception as exc:  # zstandard.ZstdError: imported lazily, so matched by name
            if type(exc).__name__ != "ZstdError":
                raise
            raise ArchiveError(
                f"{segment}: a frame does not decode ({exc})", reason="corrupt", segment=segment
            ) from None

    def _zstd_decompressor(self) -> Any:
        if self._zstd is None:
            try:
                import zstandard
            except ImportError:
                raise AuditInputError(
                    "reading .zst archive segments needs the zstandard package",
                    hint="pip install 'qr-sampler[audit]'",
                ) from None
            self._zstd = zstandard.ZstdDecompressor()
        return self._zstd


def read_archived(directory: str | os.PathLike[str], ref: str) -> bytes:
    """Exactly the bytes of one archived row (see the module docstring for the reference).

    Raises :class:`ArchiveError` with ``reason`` ``bad_ref``, ``missing`` or ``corrupt``.
    """
    return ArchiveReader(directory).read(ref)


def dropped_segments(directory: str | os.PathLike[str]) -> dict[str, Mapping[str, Any]]:
    """Segments the size bound removed, by name, from the directory's ``events.jsonl``.

    Lines that do not parse are skipped here; ``qrs audit verify`` checks that file's chain.
    """
    import json

    found: dict[str, Mapping[str, Any]] = {}
    path = Path(directory) / EVENTS_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("event") == DROP_EVENT:
            found[str(value.get("segment", ""))] = value
    return found


# --- codecs -----------------------------------------------------------------------------------


def _compressor(codec: str) -> Callable[[bytes], bytes]:
    if codec == "gzip":
        return lambda data: gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    import zstandard

    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_checksum=True, write_content_size=True
    )
    return compressor.compress


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
