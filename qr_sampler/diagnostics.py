"""Where token records go: a bounded in-memory window, a JSONL file, and the logger.

Memory stays bounded however long the server runs: only the last ``capacity`` records are kept
in memory; the JSONL file receives every record (append-only, flushed once per step so a crash
loses at most one step). Writing never raises into the engine: an I/O error is logged once and
the file sink is switched off, which the health dict reports.

Log levels (``QR_LOG_LEVEL``): ``none``; ``summary`` — one INFO line per ``summary_every`` tokens
with totals; ``full`` — one INFO line per token (for debugging; slow).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from qr_sampler.types import TokenRecord

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

logger = logging.getLogger("qr_sampler.tokens")


class TokenRecorder:
    """Receives each step's records; thread-safe."""

    def __init__(
        self,
        log_level: str = "summary",
        diagnostics_path: str | Path = "",
        capacity: int = 1024,
        summary_every: int = 1000,
    ) -> None:
        self.log_level = log_level
        self.path = Path(diagnostics_path) if diagnostics_path else None
        self.summary_every = summary_every
        self._recent: deque[TokenRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self.file_error = ""
        self.total = 0
        self.fallback_total = 0
        self._since_summary = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRecorder:
        return cls(log_level=settings.log_level, diagnostics_path=settings.diagnostics_path)

    def record(self, records: Sequence[TokenRecord]) -> None:
        """Keep, write and log one step's records. Never raises on I/O problems."""
        if not records:
            return
        with self._lock:
            self._recent.extend(records)
            self.total += len(records)
            self.fallback_total += sum(r.fallback for r in records)
            self._since_summary += len(records)
            to_file = self.path is not None and not self.file_error
            full = self.log_level == "full"
            # Serialise once for both sinks.
            lines = [_json_line(r) for r in records] if to_file or full else []
            if to_file:
                self._write(lines)
            if full:
                for line in lines:
                    logger.info("token %s", line)
            elif self.log_level == "summary" and self._since_summary >= self.summary_every:
                self._since_summary = 0
                logger.info(
                    "qr_sampler: %d tokens, %d served by fallback, last source %s",
                    self.total,
                    self.fallback_total,
                    records[-1].source,
                )

    def recent(self) -> list[TokenRecord]:
        """The most recent records (at most ``capacity``), oldest first."""
        with self._lock:
            return list(self._recent)

    def health(self) -> dict[str, Any]:
        return {
            "tokens": self.total,
            "fallback_tokens": self.fallback_total,
            "diagnostics_path": str(self.path) if self.path else "",
            "diagnostics_error": self.file_error,
        }

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write(self, lines: Sequence[str]) -> None:
        assert self.path is not None
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        except OSError as exc:
            self.file_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            logger.error(
                "diagnostics file %s disabled after a write error: %s", self.path, self.file_error
            )


def _json_line(record: TokenRecord) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":"))
